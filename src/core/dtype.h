// Element types and the bf16/f16 <-> f32 conversions every component shares.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace sa2va {

enum class DType : uint8_t { F32, BF16, F16, U8, I32, I64, BOOL, F64 };  // F64: statistics in training files

size_t dtype_size(DType t);
const char* dtype_name(DType t);               // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(const std::string& name, DType* out);  // false for unknown names

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as torch does when casting to bfloat16.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t v);
uint16_t f32_to_f16(float f);

// Bulk conversions (vectorised where the CPU allows).
void convert_bf16_to_f32(const uint16_t* src, float* dst, size_t n);
void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void convert_f16_to_f32(const uint16_t* src, float* dst, size_t n);

}  // namespace sa2va
