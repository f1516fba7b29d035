// Numbers read from untrusted JSON: nlohmann converts any number to any arithmetic type, and a value
// out of the target's range (1e300 as a float, 2^40 as an int) is undefined behaviour or silently
// wrong. These return the value only when it is of the right kind and fits.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace sa2va {

// An integer (not a float, even a whole one) within [lo, hi].
inline std::optional<int64_t> json_integer(const nlohmann::json& v, int64_t lo = std::numeric_limits<int64_t>::min(),
                                           int64_t hi = std::numeric_limits<int64_t>::max()) {
  if (!v.is_number_integer()) return std::nullopt;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (hi < 0 || u > static_cast<uint64_t>(hi)) return std::nullopt;
    const int64_t i = static_cast<int64_t>(u);
    return i >= lo ? std::optional<int64_t>(i) : std::nullopt;
  }
  const int64_t i = v.get<int64_t>();
  return (i >= lo && i <= hi) ? std::optional<int64_t>(i) : std::nullopt;
}

// Any finite number a float can hold.
inline std::optional<float> json_float(const nlohmann::json& v) {
  if (!v.is_number()) return std::nullopt;
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) return std::nullopt;
  return static_cast<float>(d);
}

}  // namespace sa2va
