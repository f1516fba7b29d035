#include "io/video.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/mem.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace sa2va {
namespace {

namespace fs = std::filesystem;

std::string av_error_text(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, text, sizeof(text));
  return text;
}

std::string size_text(int width, int height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

std::atomic<bool> g_allocation_limit_chosen{false};

// Before FFmpeg's first use. It prints at "info" level by default (encoder statistics and the like);
// its errors reach the caller as exceptions naming the file, so it prints only fatal ones, unless
// the program chose a level itself. Its allocations are capped (set_ffmpeg_allocation_limit).
void init_ffmpeg() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_FATAL);
    if (!g_allocation_limit_chosen) av_max_alloc(kDefaultFfmpegAllocationLimit);
  });
}

// "PNG" or "JPEG" when the file starts as one: a still image given where a video was expected.
const char* still_image_kind(const std::string& path) {
  unsigned char head[8] = {};
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return nullptr;
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  if (n >= 8 && std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0) return "PNG";
  if (n >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return "JPEG";
  return nullptr;
}

bool is_frame_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// ---- Folder of frame images ------------------------------------------------------------------

class FrameFolderSource final : public VideoSource {
 public:
  FrameFolderSource(const std::string& dir, int64_t max_pixels) : max_pixels_(max_pixels) {
    path_ = dir;
    files_ = list_frame_files(dir);
    check(!files_.empty(), dir + ": no frame images (.jpg, .jpeg, .png) in the folder");
    frame_count_ = static_cast<int64_t>(files_.size());
    Image first = load_image(files_[0], max_pixels_);
    width_ = first.width;
    height_ = first.height;
  }

  Image frame(int64_t index) override {
    check(index >= 0 && index < frame_count_, path_ + ": frame " + std::to_string(index) +
                                                  " out of range (the folder has " +
                                                  std::to_string(frame_count_) + " frames)");
    cursor_ = index + 1;
    return load_checked(index);
  }

  bool next(Image& out) override {
    if (cursor_ >= frame_count_) return false;
    out = load_checked(cursor_++);
    return true;
  }

  void rewind() override { cursor_ = 0; }

 private:
  Image load_checked(int64_t index) {
    const std::string& file = files_[static_cast<size_t>(index)];
    // Frames may differ in size from the first one (see video.h).
    return load_image(file, max_pixels_);
  }

  int64_t max_pixels_;
  std::vector<std::string> files_;
  int64_t cursor_ = 0;
};

// ---- Video file (FFmpeg) ---------------------------------------------------------------------

// Clockwise rotation the ffmpeg program applies for a stream's display matrix (0, 90, 180, 270).
int display_rotation(const AVStream* stream) {
  const uint8_t* matrix = nullptr;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 31, 100)
  const AVPacketSideData* side = av_packet_side_data_get(
      stream->codecpar->coded_side_data, stream->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
  if (side && side->size >= 9 * sizeof(int32_t)) matrix = side->data;
#else
  size_t size = 0;
  matrix = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, &size);
  if (size < 9 * sizeof(int32_t)) matrix = nullptr;
#endif
  if (!matrix) return 0;
  double counter_clockwise = av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
  if (std::isnan(counter_clockwise)) return 0;
  double clockwise = -std::round(counter_clockwise);
  clockwise -= 360 * std::floor(clockwise / 360 + 0.9 / 360);  // into [0, 360)
  for (int angle : {90, 180, 270})
    if (std::fabs(clockwise - angle) < 1.0) return angle;
  return 0;
}

Image rotate_clockwise(const Image& in, int degrees) {
  if (degrees == 0) return in;
  const int w = in.width, h = in.height;
  Image out = degrees == 180 ? Image(w, h) : Image(h, w);
  for (int y = 0; y < out.height; ++y) {
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out.width; ++x) {
      int sx, sy;
      if (degrees == 90) {
        sx = y, sy = h - 1 - x;
      } else if (degrees == 180) {
        sx = w - 1 - x, sy = h - 1 - y;
      } else {  // 270
        sx = w - 1 - y, sy = x;
      }
      std::memcpy(dst + 3 * x, in.row(sy) + 3 * sx, 3);
    }
  }
  return out;
}

// A frame's colour tags as stored: containers copy them from the file unchecked (a Matroska file
// can say 50), and loading such a value as its enum type is undefined behaviour.
template <typename Enum>
int stored_tag(const Enum& tag) {
  static_assert(sizeof(Enum) == sizeof(int));
  int value = 0;
  std::memcpy(&value, &tag, sizeof(value));
  return value;
}

// The matrix the ffmpeg program's scale filter uses for a frame: its tag when known, BT.601 otherwise.
const int* yuv_coefficients(int space) {
  switch (space) {
    case AVCOL_SPC_BT709:
    case AVCOL_SPC_FCC:
    case AVCOL_SPC_BT470BG:
    case AVCOL_SPC_SMPTE170M:
    case AVCOL_SPC_SMPTE240M:
      return sws_getCoefficients(space);
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL:
      return sws_getCoefficients(SWS_CS_BT2020);
    default:
      return sws_getCoefficients(SWS_CS_ITU601);
  }
}

class FileVideoSource final : public VideoSource {
 public:
  FileVideoSource(const std::string& file, int64_t max_pixels) {
    path_ = file;
    try {
      init(max_pixels);
    } catch (...) {
      // The destructor does not run for a constructor that throws: free what was opened.
      close_decoder();
      sws_freeContext(scaler_);
      throw;
    }
  }

  void init(int64_t max_pixels) {
    max_pixels_ = max_pixels;
    open_decoder();
    const AVStream* stream = format_->streams[stream_index_];
    check(decoder_->width > 0 && decoder_->height > 0, path_ + ": the video stream has no frame size");
    rotation_ = display_rotation(stream);
    AVRational rate = av_guess_frame_rate(format_, const_cast<AVStream*>(stream), nullptr);
    fps_ = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
    frame_count_ = count_packets();
    check(frame_count_ > 0, path_ + ": the video stream has no frames");
    // The size is the first frame's as decoded: a container's header may say otherwise (the
    // ffmpeg program, too, goes by the decoded frames). That frame is held for the first next().
    reopen();
    check(decode_next(), path_ + ": the first frame could not be decoded");
    check_frame_size(decoded_->width, decoded_->height, 0);
    coded_width_ = decoded_->width;
    coded_height_ = decoded_->height;
    width_ = rotation_ % 180 == 0 ? coded_width_ : coded_height_;
    height_ = rotation_ % 180 == 0 ? coded_height_ : coded_width_;
    held_ = true;
  }

  ~FileVideoSource() override {
    close_decoder();
    sws_freeContext(scaler_);
  }

  Image frame(int64_t index) override {
    check(index >= 0 && index < frame_count_, path_ + ": frame " + std::to_string(index) +
                                                  " out of range (the video has " +
                                                  std::to_string(frame_count_) + " frames)");
    if (index < next_index()) reopen();
    while (next_index() < index) {
      if (held_) {
        held_ = false;
        continue;
      }
      check(decode_next(), path_ + ": frame " + std::to_string(cursor_) + " could not be decoded");
    }
    Image out;
    next(out);
    return out;
  }

  bool next(Image& out) override {
    if (next_index() >= frame_count_) return false;
    if (held_) {
      held_ = false;
    } else if (!decode_next()) {
      throw Error(path_ + ": only " + std::to_string(cursor_) + " of " + std::to_string(frame_count_) +
                  " frames could be decoded (truncated or corrupt file)");
    }
    out = rotate_clockwise(to_rgb(), rotation_);
    return true;
  }

  void rewind() override { reopen(); }

 private:
  void open_decoder() {
    init_ffmpeg();
    // Only the container formats of video files, read from this one file: playlists, concat lists
    // and image-sequence patterns (which open further files or URLs named inside) are refused, so
    // a video sent to a service cannot make it read anything else.
    AVDictionary* options = nullptr;
    av_dict_set(&options, "protocol_whitelist", "file", 0);
    av_dict_set(&options, "format_whitelist",
                "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf,gif,h264,hevc,mjpeg,ivf,"
                "yuv4mpegpipe,m4v",
                0);
    int rc = avformat_open_input(&format_, path_.c_str(), nullptr, &options);
    av_dict_free(&options);
    if (rc < 0) {
      if (const char* kind = still_image_kind(path_))
        throw Error(path_ + ": is a still image (" + kind + "), not a video (give it as an image)");
      throw Error(path_ + ": cannot open as a video (" + av_error_text(rc) + ")");
    }
    // The probe decodes frames with decoders of its own (H.264 and others): the same cap for them.
    std::vector<AVDictionary*> probe_options(format_->nb_streams, nullptr);
    for (AVDictionary*& o : probe_options) av_dict_set_int(&o, "max_pixels", decoder_pixel_limit(), 0);
    rc = avformat_find_stream_info(format_, probe_options.data());
    for (AVDictionary*& o : probe_options) av_dict_free(&o);
    if (rc < 0) throw Error(path_ + ": cannot read the stream information (" + av_error_text(rc) + ")");
    const AVCodec* codec = nullptr;
    stream_index_ = av_find_best_stream(format_, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (stream_index_ == AVERROR_STREAM_NOT_FOUND) throw Error(path_ + ": no video stream in the file");
    if (stream_index_ < 0 || !codec)
      throw Error(path_ + ": no decoder for the video stream (" + av_error_text(stream_index_) + ")");
    AVStream* stream = format_->streams[stream_index_];
    check(!(stream->disposition & AV_DISPOSITION_ATTACHED_PIC),
          path_ + ": the only picture is a cover image, not a video stream");
    for (unsigned i = 0; i < format_->nb_streams; ++i)
      if (static_cast<int>(i) != stream_index_) format_->streams[i]->discard = AVDISCARD_ALL;
    decoder_ = avcodec_alloc_context3(codec);
    check(decoder_ != nullptr, path_ + ": out of memory allocating the decoder");
    rc = avcodec_parameters_to_context(decoder_, stream->codecpar);
    if (rc < 0) throw Error(path_ + ": bad codec parameters (" + av_error_text(rc) + ")");
    // A size the file declares over the limit is refused here (the frames, which the video's size
    // comes from, are checked again as they are decoded).
    const int declared_width = decoder_->width, declared_height = decoder_->height;
    check(declared_width <= kMaxImageSide && declared_height <= kMaxImageSide &&
              static_cast<int64_t>(declared_width) * declared_height <= max_pixels_,
          path_ + ": frames of " + size_text(declared_width, declared_height) + " pixels exceed the limit (" +
              std::to_string(max_pixels_) + " pixels)");
    decoder_->thread_count = 0;  // let the codec choose
    decoder_->max_pixels = decoder_pixel_limit();
    rc = avcodec_open2(decoder_, codec, nullptr);
    if (rc < 0) throw Error(path_ + ": cannot open the " + codec->name + " decoder (" + av_error_text(rc) + ")");
    packet_ = av_packet_alloc();
    decoded_ = av_frame_alloc();
    check(packet_ && decoded_, path_ + ": out of memory");
    cursor_ = 0;
    draining_ = false;
    held_ = false;
  }

  void close_decoder() {
    av_frame_free(&decoded_);
    av_packet_free(&packet_);
    avcodec_free_context(&decoder_);
    avformat_close_input(&format_);
  }

  // Restarting from scratch (rather than seeking) gives exactly the frames of the first pass.
  void reopen() {
    close_decoder();
    open_decoder();
  }

  // Packets of the video stream, without those the demuxer marks as discarded (edit lists):
  // one packet decodes to one frame.
  int64_t count_packets() {
    int64_t count = 0;
    while (true) {
      int rc = av_read_frame(format_, packet_);
      if (rc == AVERROR_EOF) break;
      if (rc < 0) throw Error(path_ + ": read error (" + av_error_text(rc) + ")");
      if (packet_->stream_index == stream_index_ && !(packet_->flags & AV_PKT_FLAG_DISCARD)) ++count;
      av_packet_unref(packet_);
    }
    return count;
  }

  // The codec itself refuses frames far over the limit before allocating them (a few bytes of a
  // hostile stream can declare 65535x65535); those up to 4x reach to_rgb, whose error names the
  // size. The 2^24 pixels on top cover the codecs' padding of each side to their block size.
  int64_t decoder_pixel_limit() const {
    constexpr int64_t kMost = std::numeric_limits<int>::max();
    return max_pixels_ >= kMost / 4 ? kMost : std::min(kMost, max_pixels_ * 4 + (int64_t{1} << 24));
  }

  // The index of the frame next() returns.
  int64_t next_index() const { return held_ ? cursor_ - 1 : cursor_; }

  // Decodes the next frame into decoded_; false at the end of the stream.
  bool decode_next() {
    while (true) {
      int rc = avcodec_receive_frame(decoder_, decoded_);
      if (rc == 0) {
        ++cursor_;
        return true;
      }
      if (rc == AVERROR_EOF) return false;
      if (rc != AVERROR(EAGAIN))
        throw Error(path_ + ": decoding failed at frame " + std::to_string(cursor_) + " (" + decode_error_text(rc) + ")");
      if (draining_) return false;
      rc = av_read_frame(format_, packet_);
      if (rc == AVERROR_EOF) {
        draining_ = true;
        rc = avcodec_send_packet(decoder_, nullptr);
      } else if (rc < 0) {
        throw Error(path_ + ": read error at frame " + std::to_string(cursor_) + " (" + av_error_text(rc) + ")");
      } else {
        if (packet_->stream_index != stream_index_) {
          av_packet_unref(packet_);
          continue;
        }
        rc = avcodec_send_packet(decoder_, packet_);
        av_packet_unref(packet_);
      }
      if (rc < 0 && rc != AVERROR_EOF)
        throw Error(path_ + ": corrupt data at frame " + std::to_string(cursor_) + " (" + decode_error_text(rc) + ")");
    }
  }

  // The codec answers EINVAL for a frame over its max_pixels too (open_decoder).
  std::string decode_error_text(int rc) const {
    std::string text = av_error_text(rc);
    if (rc == AVERROR(EINVAL))
      text += ", or a frame size far over the limit of " + std::to_string(max_pixels_) + " pixels";
    return text;
  }

  void check_frame_size(int width, int height, int64_t index) const {
    check(width > 0 && height > 0 && width <= kMaxImageSide && height <= kMaxImageSide &&
              static_cast<int64_t>(width) * height <= max_pixels_,
          path_ + ": frame " + std::to_string(index) + " has size " + size_text(width, height) +
              ", outside the limits (1 to " + std::to_string(kMaxImageSide) + " per side, at most " +
              std::to_string(max_pixels_) + " pixels)");
  }

  // Converts decoded_ to RGB24 exactly as configured in the header comment.
  Image to_rgb() {
    const AVFrame* f = decoded_;
    // A stream may change size midway; such frames come out at their own size (see video.h).
    if (f->width != coded_width_ || f->height != coded_height_) check_frame_size(f->width, f->height, cursor_ - 1);
    constexpr int kFlags = SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT;
    auto format = static_cast<AVPixelFormat>(f->format);
    scaler_ = sws_getCachedContext(scaler_, f->width, f->height, format, f->width, f->height, AV_PIX_FMT_RGB24,
                                   kFlags, nullptr, nullptr, nullptr);
    check(scaler_ != nullptr, path_ + ": cannot convert pixel format " +
                                  std::string(av_get_pix_fmt_name(format) ? av_get_pix_fmt_name(format) : "?") +
                                  " to RGB");
    // As the ffmpeg program's scale filter: the frame's matrix and (when tagged) range.
    int* inv_table = nullptr;
    int* table = nullptr;
    int src_full = 0, dst_full = 0, brightness = 0, contrast = 0, saturation = 0;
    sws_getColorspaceDetails(scaler_, &inv_table, &src_full, &table, &dst_full, &brightness, &contrast, &saturation);
    const int range = stored_tag(f->color_range);
    if (range != AVCOL_RANGE_UNSPECIFIED) src_full = range == AVCOL_RANGE_JPEG;
    sws_setColorspaceDetails(scaler_, yuv_coefficients(stored_tag(f->colorspace)), src_full, table, dst_full, brightness,
                             contrast, saturation);
    // swscale output goes to an aligned, padded buffer (it may write past the row), then is packed.
    const int line = FFALIGN(f->width * 3, 64);
    staging_.resize(static_cast<size_t>(line) * (f->height + 1) + 64);
    uint8_t* dst[4] = {staging_.data(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {line, 0, 0, 0};
    sws_scale(scaler_, f->data, f->linesize, 0, f->height, dst, dst_stride);
    Image out(f->width, f->height);
    for (int y = 0; y < f->height; ++y)
      std::memcpy(out.row(y), staging_.data() + static_cast<size_t>(y) * line, static_cast<size_t>(f->width) * 3);
    return out;
  }

 public:
  FileVideoSource(const FileVideoSource&) = delete;
  FileVideoSource& operator=(const FileVideoSource&) = delete;

 private:
  AVFormatContext* format_ = nullptr;
  AVCodecContext* decoder_ = nullptr;
  AVPacket* packet_ = nullptr;
  AVFrame* decoded_ = nullptr;
  SwsContext* scaler_ = nullptr;
  std::vector<uint8_t> staging_;
  int stream_index_ = -1;
  int coded_width_ = 0, coded_height_ = 0;
  int64_t max_pixels_ = 0;
  int rotation_ = 0;
  int64_t cursor_ = 0;  // index of the frame decode_next() produces next
  bool draining_ = false;
  bool held_ = false;  // decoded_ holds frame cursor_ - 1, not yet returned (the first, decoded at open)
};

}  // namespace

void set_ffmpeg_allocation_limit(size_t bytes) {
  g_allocation_limit_chosen = true;
  av_max_alloc(bytes);
}

std::vector<std::string> list_frame_files(const std::string& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw Error(dir + ": cannot read the folder (" + ec.message() + ")");
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : it) {
    if (!entry.is_regular_file(ec) || !is_frame_extension(entry.path())) continue;
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());  // byte-wise, as Python sorts str names (UTF-8 preserves order)
  std::vector<std::string> files;
  files.reserve(names.size());
  for (const std::string& name : names) files.push_back((fs::path(dir) / name).string());
  return files;
}

std::unique_ptr<VideoSource> VideoSource::open(const std::string& path_or_dir, int64_t max_pixels) {
  check(max_pixels >= 1, path_or_dir + ": the pixel limit must be at least 1 (got " + std::to_string(max_pixels) + ")");
  std::error_code ec;
  if (fs::is_directory(path_or_dir, ec)) return std::make_unique<FrameFolderSource>(path_or_dir, max_pixels);
  check(fs::exists(path_or_dir, ec), path_or_dir + ": no such file or folder");
  return std::make_unique<FileVideoSource>(path_or_dir, max_pixels);
}

// ---- Video writer --------------------------------------------------------------------------

struct VideoWriter::Impl {
  std::string path;
  int width = 0, height = 0;               // frames accepted
  int coded_width = 0, coded_height = 0;   // even, as 4:2:0 needs
  AVFormatContext* output = nullptr;
  AVCodecContext* encoder = nullptr;
  AVStream* stream = nullptr;
  AVFrame* yuv = nullptr;
  AVPacket* packet = nullptr;
  SwsContext* scaler = nullptr;
  std::vector<uint8_t> padded;  // RGB frame padded to the coded size
  int64_t frames_written = 0;
  bool header_written = false;
  bool closed = false;

  ~Impl() {
    sws_freeContext(scaler);
    av_packet_free(&packet);
    av_frame_free(&yuv);
    avcodec_free_context(&encoder);
    if (output) {
      if (!(output->oformat->flags & AVFMT_NOFILE)) avio_closep(&output->pb);
      avformat_free_context(output);
    }
  }

  void fail(const std::string& what, int rc) const {
    throw Error(path + ": " + what + (rc < 0 ? " (" + av_error_text(rc) + ")" : std::string()));
  }

  // Sends one frame (nullptr = flush) and writes every packet the encoder has ready.
  void encode(const AVFrame* frame) {
    int rc = avcodec_send_frame(encoder, frame);
    if (rc < 0) fail("encoding failed", rc);
    while (true) {
      rc = avcodec_receive_packet(encoder, packet);
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      if (rc < 0) fail("encoding failed", rc);
      // Every frame lasts one tick; without a duration the mp4 edit list would cut the last frame.
      if (packet->duration <= 0) packet->duration = 1;
      av_packet_rescale_ts(packet, encoder->time_base, stream->time_base);
      packet->stream_index = stream->index;
      rc = av_interleaved_write_frame(output, packet);
      if (rc < 0) fail("cannot write", rc);
    }
  }
};

VideoWriter::VideoWriter(const std::string& path, int width, int height, double fps)
    : impl_(std::make_unique<Impl>()) {
  init_ffmpeg();
  Impl& w = *impl_;
  w.path = path;
  check(width > 0 && height > 0, path + ": bad video size " + size_text(width, height));
  check(fps > 0 && std::isfinite(fps), path + ": bad frame rate " + std::to_string(fps));
  w.width = width;
  w.height = height;
  w.coded_width = (width + 1) & ~1;
  w.coded_height = (height + 1) & ~1;

  if (avformat_alloc_output_context2(&w.output, nullptr, nullptr, path.c_str()) < 0 || !w.output) {
    int rc = avformat_alloc_output_context2(&w.output, nullptr, "mp4", path.c_str());
    if (rc < 0 || !w.output) w.fail("cannot create the output container", rc);
  }
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (!codec || avformat_query_codec(w.output->oformat, codec->id, FF_COMPLIANCE_NORMAL) != 1)
    codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
  if (!codec) w.fail("no H.264 or MPEG-4 encoder available", 0);

  w.encoder = avcodec_alloc_context3(codec);
  if (!w.encoder) w.fail("out of memory", 0);
  AVRational rate = av_d2q(fps, 100000);
  w.encoder->width = w.coded_width;
  w.encoder->height = w.coded_height;
  w.encoder->pix_fmt = AV_PIX_FMT_YUV420P;
  w.encoder->time_base = av_inv_q(rate);
  w.encoder->framerate = rate;
  w.encoder->gop_size = 12;
  // RGB is converted with the BT.601 limited-range matrix; say so, so that players invert it.
  w.encoder->colorspace = AVCOL_SPC_SMPTE170M;
  w.encoder->color_range = AVCOL_RANGE_MPEG;
  if (std::string(codec->name) == "libx264") {
    av_opt_set(w.encoder->priv_data, "preset", "veryfast", 0);
    av_opt_set(w.encoder->priv_data, "crf", "18", 0);
  } else {
    w.encoder->flags |= AV_CODEC_FLAG_QSCALE;
    w.encoder->global_quality = FF_QP2LAMBDA * 3;
  }
  if (w.output->oformat->flags & AVFMT_GLOBALHEADER) w.encoder->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  int rc = avcodec_open2(w.encoder, codec, nullptr);
  if (rc < 0) w.fail(std::string("cannot open the ") + codec->name + " encoder", rc);

  w.stream = avformat_new_stream(w.output, nullptr);
  if (!w.stream) w.fail("out of memory", 0);
  w.stream->time_base = w.encoder->time_base;
  rc = avcodec_parameters_from_context(w.stream->codecpar, w.encoder);
  if (rc < 0) w.fail("bad encoder parameters", rc);
  if (!(w.output->oformat->flags & AVFMT_NOFILE)) {
    rc = avio_open(&w.output->pb, path.c_str(), AVIO_FLAG_WRITE);
    if (rc < 0) w.fail("cannot create the file", rc);
  }
  rc = avformat_write_header(w.output, nullptr);
  if (rc < 0) w.fail("cannot write the header", rc);
  w.header_written = true;

  w.yuv = av_frame_alloc();
  w.packet = av_packet_alloc();
  if (!w.yuv || !w.packet) w.fail("out of memory", 0);
  w.yuv->format = AV_PIX_FMT_YUV420P;
  w.yuv->width = w.coded_width;
  w.yuv->height = w.coded_height;
  rc = av_frame_get_buffer(w.yuv, 0);
  if (rc < 0) w.fail("out of memory", rc);
  w.scaler = sws_getContext(w.coded_width, w.coded_height, AV_PIX_FMT_RGB24, w.coded_width, w.coded_height,
                            AV_PIX_FMT_YUV420P, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr,
                            nullptr, nullptr);
  if (!w.scaler) w.fail("cannot set up the RGB to YUV conversion", 0);
  w.padded.resize(static_cast<size_t>(w.coded_width) * w.coded_height * 3 + 64);
}

VideoWriter::~VideoWriter() {
  try {
    close();
  } catch (const Error&) {
    // A destructor cannot report; callers who care call close() themselves.
  }
}

std::string VideoWriter::encoder_name() const { return impl_->encoder->codec->name; }

void VideoWriter::write(const Image& frame) {
  Impl& w = *impl_;
  check(!w.closed, w.path + ": write after close");
  check(frame.width == w.width && frame.height == w.height &&
            frame.rgb.size() == static_cast<size_t>(frame.width) * frame.height * 3,
        w.path + ": frame of " + size_text(frame.width, frame.height) + ", the video is " +
            size_text(w.width, w.height));
  const size_t src_row = static_cast<size_t>(w.width) * 3, dst_row = static_cast<size_t>(w.coded_width) * 3;
  for (int y = 0; y < w.coded_height; ++y) {
    const uint8_t* src = frame.row(std::min(y, w.height - 1));
    uint8_t* dst = w.padded.data() + y * dst_row;
    std::memcpy(dst, src, src_row);
    if (w.coded_width > w.width) std::memcpy(dst + src_row, src + src_row - 3, 3);
  }
  int rc = av_frame_make_writable(w.yuv);
  if (rc < 0) w.fail("out of memory", rc);
  const uint8_t* src[4] = {w.padded.data(), nullptr, nullptr, nullptr};
  int src_stride[4] = {static_cast<int>(dst_row), 0, 0, 0};
  sws_scale(w.scaler, src, src_stride, 0, w.coded_height, w.yuv->data, w.yuv->linesize);
  w.yuv->pts = w.frames_written++;
  w.encode(w.yuv);
}

void VideoWriter::close() {
  Impl& w = *impl_;
  if (w.closed || !w.header_written) return;
  w.closed = true;
  w.encode(nullptr);
  int rc = av_write_trailer(w.output);
  if (rc < 0) w.fail("cannot finish the file", rc);
  if (!(w.output->oformat->flags & AVFMT_NOFILE)) {
    rc = avio_closep(&w.output->pb);
    if (rc < 0) w.fail("cannot finish the file", rc);
  }
}

}  // namespace sa2va
