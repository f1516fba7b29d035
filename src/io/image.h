// Image files: JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, PNG encoding.
// Decoding reproduces PIL's `Image.open(path).convert('RGB')` bit for bit: the same libjpeg
// settings (islow DCT, fancy upsampling), Adobe-inverted CMYK, alpha dropped (not composited),
// 16-bit PNG samples reduced to their high byte, 16-bit grayscale clipped to 255 (PIL mode I).
// No EXIF rotation and no colour management, as PIL does not apply them on convert('RGB').
#pragma once
#include "sa2va/sa2va.h"
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sa2va {

// 8-bit RGB image, rows top to bottom, pixels interleaved (H x W x 3).
// struct Image (8-bit RGB, HWC) is defined in the public header sa2va/sa2va.h.

// Images larger than this are refused (decompression bombs); width and height must also be <= 65535.
constexpr int64_t kDefaultMaxPixels = 100'000'000;
constexpr int kMaxImageSide = 65535;

// Reads and decodes a JPEG or PNG file (format chosen by its signature, not its extension).
// Throws sa2va::Error naming the file for missing, empty, corrupt, truncated, unsupported or too large files.
Image load_image(const std::string& path, int64_t max_pixels);  // default limit: see sa2va.h
// Same, from memory; `name_for_errors` is what error messages call the data. `before_pixels`, when
// given, is called with the size the header gives, within the limits, before the pixels are
// allocated and decoded; an exception it throws ends the decoding and is passed on.
Image decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors,
                   int64_t max_pixels = kDefaultMaxPixels,
                   const std::function<void(int width, int height)>& before_pixels = {});

// Writes an 8-bit PNG: one channel (masks) or RGB (overlays). Throws sa2va::Error naming the path on failure.
void save_png_gray(const std::string& path, const uint8_t* data, int width, int height);
// The same PNG bytes in memory (channels 1 or 3).
std::vector<uint8_t> encode_png(const uint8_t* data, int width, int height, int channels);
void save_png_rgb(const std::string& path, const Image& image);

}  // namespace sa2va
