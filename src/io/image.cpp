#include "io/image.h"

// clang-format off
#include <cstdio>   // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace sa2va {
namespace {

// libjpeg and libpng report errors by longjmp. Every decoder below therefore keeps its C++ objects
// in a state struct owned by the caller, and does the setjmp in a function that has no C++ locals
// of its own: a longjmp then skips no destructor and reads no indeterminate local.
constexpr size_t kMessageSize = 200;

void set_message(char* dst, const char* text) {
  std::snprintf(dst, kMessageSize, "%s", text);
}

std::string describe_limit(int width, int height, int64_t max_pixels) {
  return "image of " + std::to_string(width) + "x" + std::to_string(height) +
         " pixels exceeds the limit (" + std::to_string(kMaxImageSide) + " per side, " +
         std::to_string(max_pixels) + " pixels in all)";
}

bool within_limits(int64_t width, int64_t height, int64_t max_pixels) {
  return width > 0 && height > 0 && width <= kMaxImageSide && height <= kMaxImageSide &&
         width * height <= max_pixels;
}

// ---- JPEG --------------------------------------------------------------------------------------

struct JpegState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr error_mgr;
  jpeg_source_mgr source;
  std::jmp_buf jump;
  char message[kMessageSize] = {};
  bool too_large = false;
  bool all_rows_read = false;  // once every row is out, a missing EOI marker is harmless
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t max_pixels = 0;
  Image* out = nullptr;
  const std::function<void(int, int)>* before_pixels = nullptr;
  std::exception_ptr refused;  // what before_pixels threw
};

JpegState* jpeg_state(j_common_ptr cinfo) { return static_cast<JpegState*>(cinfo->client_data); }

void jpeg_on_error(j_common_ptr cinfo) {
  JpegState* state = jpeg_state(cinfo);
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  set_message(state->message, text);
  std::longjmp(state->jump, 1);
}

// PIL prints nothing for libjpeg warnings (e.g. extraneous bytes) and decodes on.
void jpeg_on_message(j_common_ptr, int) {}

void jpeg_source_init(j_decompress_ptr) {}
void jpeg_source_term(j_decompress_ptr) {}

// The whole file is the first buffer, so being asked for more means the data ended early.
// PIL refuses such files ("image file is truncated"); so do we, unless only the EOI marker is missing.
boolean jpeg_source_fill(j_decompress_ptr cinfo) {
  JpegState* state = jpeg_state(reinterpret_cast<j_common_ptr>(cinfo));
  if (!state->all_rows_read) {
    set_message(state->message, "truncated JPEG data");
    std::longjmp(state->jump, 1);
  }
  static const JOCTET fake_eoi[2] = {0xFF, JPEG_EOI};
  cinfo->src->next_input_byte = fake_eoi;
  cinfo->src->bytes_in_buffer = 2;
  return TRUE;
}

void jpeg_source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  jpeg_source_mgr* src = cinfo->src;
  while (count > static_cast<long>(src->bytes_in_buffer)) {
    count -= static_cast<long>(src->bytes_in_buffer);
    (*src->fill_input_buffer)(cinfo);
  }
  src->next_input_byte += count;
  src->bytes_in_buffer -= static_cast<size_t>(count);
}

// Adobe CMYK (stored inverted, as PIL assumes with rawmode "CMYK;I") to RGB with PIL's cmyk2rgb:
// each channel = nk - nk*c/255 (rounded as PIL's MULDIV255), nk = 255 - k.
inline uint8_t mul_div_255(int a, int b) {
  int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}
void inverted_cmyk_to_rgb(const uint8_t* cmyk, uint8_t* rgb, int width) {
  for (int x = 0; x < width; ++x, cmyk += 4, rgb += 3) {
    const int nk = cmyk[3];  // 255 - (255 - stored k)
    for (int c = 0; c < 3; ++c) {
      const int value = nk - mul_div_255(255 - cmyk[c], nk);
      rgb[c] = static_cast<uint8_t>(std::clamp(value, 0, 255));
    }
  }
}

// Returns false with state->message set on failure. Owns no C++ objects (see the note above).
bool decode_jpeg_into(JpegState* state) {
  j_decompress_ptr cinfo = &state->cinfo;
  cinfo->err = jpeg_std_error(&state->error_mgr);
  state->error_mgr.error_exit = jpeg_on_error;
  state->error_mgr.emit_message = jpeg_on_message;
  if (setjmp(state->jump)) {
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  jpeg_create_decompress(cinfo);
  cinfo->client_data = state;
  state->source.next_input_byte = state->data;
  state->source.bytes_in_buffer = state->size;
  state->source.init_source = jpeg_source_init;
  state->source.fill_input_buffer = jpeg_source_fill;
  state->source.skip_input_data = jpeg_source_skip;
  state->source.resync_to_restart = jpeg_resync_to_restart;
  state->source.term_source = jpeg_source_term;
  cinfo->src = &state->source;

  jpeg_read_header(cinfo, TRUE);
  if (!within_limits(cinfo->image_width, cinfo->image_height, state->max_pixels)) {
    state->too_large = true;
    set_message(state->message,
                describe_limit(static_cast<int>(cinfo->image_width), static_cast<int>(cinfo->image_height),
                               state->max_pixels).c_str());
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  if (*state->before_pixels) {
    try {
      (*state->before_pixels)(static_cast<int>(cinfo->image_width), static_cast<int>(cinfo->image_height));
    } catch (...) {  // not through libjpeg's frames: destroyed here, thrown again by the caller
      state->refused = std::current_exception();
      jpeg_destroy_decompress(cinfo);
      return false;
    }
  }
  bool cmyk = false;
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case JCS_YCbCr:
    case JCS_RGB: cinfo->out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK: cinfo->out_color_space = JCS_CMYK; cmyk = true; break;
    default:
      set_message(state->message, "unsupported JPEG colour space");
      jpeg_destroy_decompress(cinfo);
      return false;
  }
  // PIL's settings (libjpeg defaults, stated so they cannot drift): accurate integer DCT, fancy upsampling.
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);

  const int width = static_cast<int>(cinfo->output_width);
  const int height = static_cast<int>(cinfo->output_height);
  const int components = cinfo->output_components;
  Image* out = state->out;
  out->width = width;
  out->height = height;
  out->rgb.assign(static_cast<size_t>(width) * height * 3, 0);  // bounded by max_pixels above
  // Scratch row for gray / CMYK, freed by jpeg_destroy_decompress.
  JSAMPARRAY scratch =
      (*cinfo->mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(cinfo), JPOOL_IMAGE,
                                  static_cast<JDIMENSION>(width * components), 1);
  while (cinfo->output_scanline < cinfo->output_height) {
    uint8_t* dst = out->row(static_cast<int>(cinfo->output_scanline));
    if (components == 3) {
      JSAMPROW row = dst;
      jpeg_read_scanlines(cinfo, &row, 1);
      continue;
    }
    jpeg_read_scanlines(cinfo, scratch, 1);
    const uint8_t* src = scratch[0];
    if (cmyk) {
      inverted_cmyk_to_rgb(src, dst, width);
    } else {
      for (int x = 0; x < width; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
    }
  }
  state->all_rows_read = true;
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  return true;
}

// ---- PNG ---------------------------------------------------------------------------------------

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[kMessageSize] = {};
  bool too_large = false;
  const uint8_t* data = nullptr;
  size_t size = 0, position = 0;
  int64_t max_pixels = 0;
  Image* out = nullptr;
  const std::function<void(int, int)>* before_pixels = nullptr;
  std::exception_ptr refused;  // what before_pixels threw
  std::vector<uint8_t> pixels;        // decoded rows before the conversion to RGB
  std::vector<png_bytep> row_pointers;
};

void png_on_error(png_structp png, png_const_charp text) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  set_message(state->message, text);
  png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep dst, png_size_t count) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (count > state->size - state->position) png_error(png, "truncated PNG data");
  std::memcpy(dst, state->data + state->position, count);
  state->position += count;
}

// Converts one decoded row to RGB as PIL's convert('RGB') would.
void png_row_to_rgb(const uint8_t* src, uint8_t* dst, int width, int channels, int bit_depth,
                    const png_color* palette, int palette_size) {
  for (int x = 0; x < width; ++x, dst += 3) {
    if (palette != nullptr) {
      // PIL starts from a gray ramp and overwrites the first palette_size entries.
      const int index = src[x];
      if (index < palette_size) {
        dst[0] = palette[index].red, dst[1] = palette[index].green, dst[2] = palette[index].blue;
      } else {
        dst[0] = dst[1] = dst[2] = static_cast<uint8_t>(index);
      }
    } else if (bit_depth == 16) {
      // Only 16-bit gray stays 16-bit: PIL opens it as mode I and clips to 0..255 on convert('RGB').
      const int value = (src[2 * x] << 8) | src[2 * x + 1];
      dst[0] = dst[1] = dst[2] = static_cast<uint8_t>(std::min(value, 255));
    } else if (channels <= 2) {
      dst[0] = dst[1] = dst[2] = src[x * channels];
    } else {
      const uint8_t* p = src + x * channels;
      dst[0] = p[0], dst[1] = p[1], dst[2] = p[2];
    }
  }
}

bool decode_png_into(PngState* state) {
  state->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, png_on_error, png_on_warning);
  if (state->png == nullptr) {
    set_message(state->message, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(state->png))) {
    png_destroy_read_struct(&state->png, &state->info, nullptr);
    return false;
  }
  state->info = png_create_info_struct(state->png);
  if (state->info == nullptr) png_error(state->png, "out of memory");
  png_set_read_fn(state->png, state, png_read_from_memory);
  png_read_info(state->png, state->info);

  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(state->png, state->info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (!within_limits(width, height, state->max_pixels)) {
    state->too_large = true;
    set_message(state->message,
                describe_limit(static_cast<int>(width), static_cast<int>(height), state->max_pixels).c_str());
    png_destroy_read_struct(&state->png, &state->info, nullptr);
    return false;
  }
  if (*state->before_pixels) {
    try {
      (*state->before_pixels)(static_cast<int>(width), static_cast<int>(height));
    } catch (...) {  // not through libpng's frames: destroyed here, thrown again by the caller
      state->refused = std::current_exception();
      png_destroy_read_struct(&state->png, &state->info, nullptr);
      return false;
    }
  }

  png_colorp palette = nullptr;
  int palette_size = 0;
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    // Keep the indices (one per byte) and look them up ourselves: no tRNS-to-alpha expansion.
    if (png_get_PLTE(state->png, state->info, &palette, &palette_size) == 0) png_error(state->png, "missing PLTE");
    png_set_packing(state->png);
  } else if (color_type == PNG_COLOR_TYPE_GRAY) {
    if (bit_depth < 8) png_set_expand_gray_1_2_4_to_8(state->png);  // scales 1/2/4-bit to 0..255 as PIL does
  } else {
    png_set_strip_16(state->png);     // PIL reads 16-bit RGB(A)/LA by their high byte
    png_set_strip_alpha(state->png);  // convert('RGB') drops alpha without compositing
  }
  png_set_interlace_handling(state->png);
  png_read_update_info(state->png, state->info);

  const int channels = png_get_channels(state->png, state->info);
  const int out_depth = png_get_bit_depth(state->png, state->info);
  const size_t row_bytes = png_get_rowbytes(state->png, state->info);
  state->pixels.resize(row_bytes * height);
  state->row_pointers.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) state->row_pointers[y] = state->pixels.data() + row_bytes * y;
  png_read_image(state->png, state->row_pointers.data());
  // The trailing chunks (and IEND) are not needed for the pixels; PIL does not read them either.

  Image* out = state->out;
  out->width = static_cast<int>(width);
  out->height = static_cast<int>(height);
  out->rgb.resize(static_cast<size_t>(width) * height * 3);
  for (png_uint_32 y = 0; y < height; ++y) {
    png_row_to_rgb(state->row_pointers[y], out->row(static_cast<int>(y)), static_cast<int>(width), channels,
                   out_depth, palette, palette_size);
  }
  png_destroy_read_struct(&state->png, &state->info, nullptr);
  return true;
}

// ---- PNG writing ---------------------------------------------------------------------------------

struct PngWriteState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[kMessageSize] = {};
  FILE* file = nullptr;              // the PNG goes to this file,
  std::vector<uint8_t>* memory = nullptr;  // or to this buffer
  const uint8_t* data = nullptr;
  int width = 0, height = 0, channels = 0;
};

void png_write_to_memory(png_structp png, png_bytep bytes, png_size_t count) {
  auto* state = static_cast<PngWriteState*>(png_get_io_ptr(png));
  state->memory->insert(state->memory->end(), bytes, bytes + count);
}

void png_flush_memory(png_structp) {}

void png_write_on_error(png_structp png, png_const_charp text) {
  auto* state = static_cast<PngWriteState*>(png_get_error_ptr(png));
  set_message(state->message, text);
  png_longjmp(png, 1);
}

bool encode_png_into(PngWriteState* state) {
  state->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, state, png_write_on_error, png_on_warning);
  if (state->png == nullptr) {
    set_message(state->message, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(state->png))) {
    png_destroy_write_struct(&state->png, &state->info);
    return false;
  }
  state->info = png_create_info_struct(state->png);
  if (state->info == nullptr) png_error(state->png, "out of memory");
  if (state->memory != nullptr) png_set_write_fn(state->png, state, png_write_to_memory, png_flush_memory);
  else png_init_io(state->png, state->file);
  png_set_IHDR(state->png, state->info, static_cast<png_uint_32>(state->width),
               static_cast<png_uint_32>(state->height), 8,
               state->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(state->png, state->info);
  const size_t stride = static_cast<size_t>(state->width) * state->channels;
  for (int y = 0; y < state->height; ++y) {
    png_write_row(state->png, const_cast<png_bytep>(state->data + stride * y));
  }
  png_write_end(state->png, nullptr);
  png_destroy_write_struct(&state->png, &state->info);
  return true;
}

void save_png(const std::string& path, const uint8_t* data, int width, int height, int channels) {
  check(width > 0 && height > 0 && width <= kMaxImageSide && height <= kMaxImageSide,
        path + ": cannot write a PNG of " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
  check(data != nullptr, path + ": no pixels to write");
  PngWriteState state;
  state.file = std::fopen(path.c_str(), "wb");
  check(state.file != nullptr, path + ": cannot open for writing: " + std::strerror(errno));
  state.data = data;
  state.width = width;
  state.height = height;
  state.channels = channels;
  const bool ok = encode_png_into(&state);
  const bool closed = std::fclose(state.file) == 0;
  if (!ok || !closed) {
    std::remove(path.c_str());
    throw Error(path + ": cannot write PNG: " + (ok ? "write failed" : state.message));
  }
}

bool has_prefix(const uint8_t* data, size_t size, const uint8_t* prefix, size_t length) {
  return size >= length && std::memcmp(data, prefix, length) == 0;
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels,
                   const std::function<void(int, int)>& before_pixels) {
  check(data != nullptr && size > 0, name + ": empty image file");
  static const uint8_t kJpegSignature[3] = {0xFF, 0xD8, 0xFF};
  static const uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Image image;
  if (has_prefix(data, size, kJpegSignature, sizeof kJpegSignature)) {
    JpegState state;
    state.data = data;
    state.size = size;
    state.max_pixels = max_pixels;
    state.out = &image;
    state.before_pixels = &before_pixels;
    if (!decode_jpeg_into(&state)) {
      if (state.refused) std::rethrow_exception(state.refused);
      throw Error(name + (state.too_large ? ": " : ": invalid JPEG: ") + state.message);
    }
    return image;
  }
  if (has_prefix(data, size, kPngSignature, sizeof kPngSignature)) {
    PngState state;
    state.data = data;
    state.size = size;
    state.max_pixels = max_pixels;
    state.out = &image;
    state.before_pixels = &before_pixels;
    if (!decode_png_into(&state)) {
      if (state.refused) std::rethrow_exception(state.refused);
      throw Error(name + (state.too_large ? ": " : ": invalid PNG: ") + state.message);
    }
    return image;
  }
  throw Error(name + ": unsupported image format (JPEG and PNG are supported)");
}

Image load_image(const std::string& path, int64_t max_pixels) {
  std::error_code ec;
  check(!std::filesystem::is_directory(path, ec), path + ": a folder, not an image file");
  std::ifstream file(path, std::ios::binary);
  check(file.good(), path + ": cannot open image file");
  std::vector<uint8_t> bytes;
  try {  // the stream buffer throws for what opens but does not read (EIO, a special file)
    bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read image file: " + e.what());
  }
  check(!file.bad(), path + ": cannot read image file");
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

std::vector<uint8_t> encode_png(const uint8_t* data, int width, int height, int channels) {
  check(width > 0 && height > 0 && width <= kMaxImageSide && height <= kMaxImageSide && (channels == 1 || channels == 3),
        "cannot encode a PNG of " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
  check(data != nullptr, "no pixels to encode as PNG");
  std::vector<uint8_t> bytes;
  PngWriteState state;
  state.memory = &bytes;
  state.data = data;
  state.width = width;
  state.height = height;
  state.channels = channels;
  if (!encode_png_into(&state)) throw Error(std::string("cannot encode PNG: ") + state.message);
  return bytes;
}

void save_png_gray(const std::string& path, const uint8_t* data, int width, int height) {
  save_png(path, data, width, height, 1);
}

void save_png_rgb(const std::string& path, const Image& image) {
  check(image.rgb.size() == static_cast<size_t>(image.width) * image.height * 3,
        path + ": image buffer does not match its size");
  save_png(path, image.rgb.data(), image.width, image.height, 3);
}

}  // namespace sa2va
