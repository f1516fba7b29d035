// The Python module sa2va._sa2va: sa2va.Model with upstream Sa2VA's predict_forward, over the
// public C++ API (include/sa2va/sa2va.h). Arguments are converted here with the GIL held; the
// prediction itself runs with the GIL released, so several Python threads can predict at once.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sa2va/sa2va.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace py = pybind11;

namespace {

// ---- argument conversion -------------------------------------------------------------------------

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

[[noreturn]] void wrong_type(const std::string& arg, const std::string& expected, py::handle got) {
  throw py::type_error(arg + ": expected " + expected + ", got " + type_name(got));
}

bool is_path(py::handle obj) { return py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__"); }

// The file system's bytes of a path (os.fsencode), so that names that are not UTF-8 open too.
std::string path_of(py::handle obj, const std::string& arg) {
  std::string path = py::bytes(py::module_::import("os").attr("fsencode")(obj)).cast<std::string>();
  if (path.find('\0') != std::string::npos) throw py::value_error(arg + ": embedded null byte in the path");
  return path;
}

std::string text_argument(py::handle obj, const std::string& arg) {
  if (!py::isinstance<py::str>(obj)) wrong_type(arg, "str", obj);
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
  if (utf8 == nullptr) {  // a lone surrogate, e.g. from bytes decoded with errors="surrogateescape"
    PyErr_Clear();
    throw py::value_error(arg + ": the text cannot be encoded as UTF-8 (it holds a lone surrogate)");
  }
  return std::string(utf8, static_cast<size_t>(size));
}

// Python ints and anything with __index__ (numpy integers), but not bool.
int64_t int_argument(py::handle obj, const std::string& arg) {
  if (!PyIndex_Check(obj.ptr()) || py::isinstance<py::bool_>(obj)) wrong_type(arg, "int", obj);
  const py::int_ value(py::reinterpret_borrow<py::object>(obj));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0) throw sa2va::Error(arg + ": the value is out of range (64-bit integers)");
  return static_cast<int64_t>(v);
}

// A seed: any int that fits 64 bits, signed or not (as torch.manual_seed takes).
uint64_t seed_argument(py::handle obj, const std::string& arg) {
  if (!PyIndex_Check(obj.ptr()) || py::isinstance<py::bool_>(obj)) wrong_type(arg, "int", obj);
  const py::int_ value(py::reinterpret_borrow<py::object>(obj));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0) return static_cast<uint64_t>(v);
  if (overflow > 0) {
    const unsigned long long u = PyLong_AsUnsignedLongLong(value.ptr());
    if (!PyErr_Occurred()) return u;
    PyErr_Clear();
  }
  throw sa2va::Error(arg + ": the value does not fit 64 bits");
}

int int32_argument(py::handle obj, const std::string& arg) {
  const int64_t v = int_argument(obj, arg);
  if (v < INT32_MIN || v > INT32_MAX) throw sa2va::Error(arg + ": " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

// Python floats and ints, and anything with __float__ or __index__ (numpy scalars), but not bool.
double float_argument(py::handle obj, const std::string& arg) {
  const PyNumberMethods* number = Py_TYPE(obj.ptr())->tp_as_number;
  const bool numeric = PyFloat_Check(obj.ptr()) || PyIndex_Check(obj.ptr()) || (number && number->nb_float);
  if (!numeric || py::isinstance<py::bool_>(obj)) wrong_type(arg, "float", obj);
  const double v = PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) {  // an int too large for a float, or a __float__ that raised
    PyErr_Clear();
    throw sa2va::Error(arg + ": the value cannot be taken as a float");
  }
  return v;
}

// stop=: a string or a list of strings (OpenAI's form); None = none.
std::vector<std::string> stop_argument(py::handle obj) {
  if (obj.is_none()) return {};
  if (py::isinstance<py::str>(obj)) return {text_argument(obj, "stop")};
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj)) wrong_type("stop", "str or a list of str", obj);
  std::vector<std::string> stops;
  size_t i = 0;
  for (py::handle item : obj) stops.push_back(text_argument(item, "stop[" + std::to_string(i++) + "]"));
  return stops;
}

bool bool_argument(py::handle obj, const std::string& arg) {
  if (!py::isinstance<py::bool_>(obj)) wrong_type(arg, "bool", obj);
  return obj.cast<bool>();
}

bool is_pil_image(py::handle obj) {
  return py::hasattr(obj, "convert") && py::hasattr(obj, "mode") && py::hasattr(obj, "size");
}

bool is_array_like(py::handle obj) { return py::isinstance<py::array>(obj) || py::hasattr(obj, "__array__"); }

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// An HxWx3 uint8 array (C order) copied into an Image.
sa2va::Image image_from_array(const py::array& array, const std::string& arg) {
  if (array.dtype().kind() != 'u' || array.dtype().itemsize() != 1)  // by kind: a dtype with metadata is not `is` uint8
    throw py::type_error(arg + ": expected a uint8 array, got dtype " + std::string(py::str(array.dtype())));
  if (array.ndim() != 3 || array.shape(2) != 3)
    throw py::type_error(arg + ": expected an HxWx3 RGB array, got shape " + shape_text(array));
  if (array.shape(0) == 0 || array.shape(1) == 0) throw sa2va::Error(arg + ": the image is empty (0 pixels)");
  if (array.shape(0) > 65535 || array.shape(1) > 65535)
    throw sa2va::Error(arg + ": " + std::to_string(array.shape(1)) + "x" + std::to_string(array.shape(0)) +
                       " is too large (at most 65535 pixels a side)");
  const auto pixels = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(array);
  sa2va::Image image(static_cast<int>(array.shape(1)), static_cast<int>(array.shape(0)));
  std::copy_n(pixels.data(), image.rgb.size(), image.rgb.data());
  return image;
}

// image=: a path, a PIL image (converted to RGB, as upstream's images are) or an HxWx3 uint8 array.
sa2va::Image image_argument(py::handle obj, const std::string& arg) {
  if (is_path(obj)) {
    const std::string path = path_of(obj, arg);
    py::gil_scoped_release nogil;
    return sa2va::load_image(path);
  }
  py::object array_source = py::reinterpret_borrow<py::object>(obj);
  if (is_pil_image(obj)) array_source = obj.attr("convert")("RGB");
  else if (!is_array_like(obj)) wrong_type(arg, "a PIL image, an HxWx3 uint8 numpy array or a path", obj);
  return image_from_array(py::array(py::module_::import("numpy").attr("asarray")(array_source)), arg);
}

// video=: a video file or a folder of frames (path), a list of frames (each as image=), or a
// TxHxWx3 uint8 array.
std::unique_ptr<sa2va::Video> video_argument(py::handle obj) {
  if (is_path(obj)) {
    const std::string path = path_of(obj, "video");
    py::gil_scoped_release nogil;
    return sa2va::Video::open(path);
  }
  std::vector<sa2va::Image> frames;
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    size_t i = 0;
    for (py::handle frame : obj) frames.push_back(image_argument(frame, "video[" + std::to_string(i++) + "]"));
  } else if (is_array_like(obj) && !is_pil_image(obj)) {
    const py::array array(py::module_::import("numpy").attr("asarray")(obj));
    if (array.ndim() != 4)
      throw py::type_error("video: expected a TxHxWx3 uint8 array, got shape " + shape_text(array));
    for (py::ssize_t t = 0; t < array.shape(0); ++t)
      frames.push_back(image_from_array(py::array(array.attr("__getitem__")(t)), "video[" + std::to_string(t) + "]"));
  } else {
    wrong_type("video", "a list of frames, a TxHxWx3 uint8 array, or the path of a video file or frame folder", obj);
  }
  if (frames.empty()) throw sa2va::Error("video: no frames");
  return sa2va::Video::from_frames(std::move(frames));
}

void append_masks(const py::array& array, const std::string& arg, std::vector<sa2va::Mask>& out) {
  const char kind = array.dtype().kind();
  if (kind != 'b' && kind != 'u' && kind != 'i')
    throw py::type_error(arg + ": expected boolean (or integer) masks, got dtype " + std::string(py::str(array.dtype())));
  if (array.ndim() != 2 && array.ndim() != 3)
    throw py::type_error(arg + ": expected an HxW mask or KxHxW masks, got shape " + shape_text(array));
  const py::array as_u8(array.attr("__ne__")(0).attr("astype")("uint8"));
  const auto bytes = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(as_u8);
  const py::ssize_t regions = array.ndim() == 3 ? array.shape(0) : 1;
  const py::ssize_t h = array.shape(array.ndim() - 2), w = array.shape(array.ndim() - 1);
  if (h == 0 || w == 0 || regions == 0) throw sa2va::Error(arg + ": the mask is empty (shape " + shape_text(array) + ")");
  for (py::ssize_t k = 0; k < regions; ++k) {
    sa2va::Mask m;
    m.width = static_cast<int>(w);
    m.height = static_cast<int>(h);
    const uint8_t* src = bytes.data() + k * h * w;
    m.data.assign(src, src + h * w);
    out.push_back(std::move(m));
  }
}

// mask_prompts=: upstream passes [array KxHxW]; a list of HxW masks, or one HxW / KxHxW array, is
// taken too. Nonzero = inside the region.
std::vector<sa2va::Mask> mask_prompts_argument(py::handle obj) {
  std::vector<sa2va::Mask> masks;
  if (obj.is_none()) return masks;
  const py::module_ np = py::module_::import("numpy");
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    size_t i = 0;
    for (py::handle item : obj) {
      const std::string arg = "mask_prompts[" + std::to_string(i++) + "]";
      if (!is_array_like(item)) wrong_type(arg, "a boolean numpy array", item);
      append_masks(py::array(np.attr("asarray")(item)), arg, masks);
    }
  } else if (is_array_like(obj)) {
    append_masks(py::array(np.attr("asarray")(obj)), "mask_prompts", masks);
  } else {
    wrong_type("mask_prompts", "a list of boolean numpy arrays", obj);
  }
  return masks;
}

sa2va::Precision precision_argument(py::handle obj) {
  const std::string v = text_argument(obj, "precision");
  if (v == "bf16" || v == "bfloat16") return sa2va::Precision::BF16;
  if (v == "f32" || v == "fp32" || v == "float32") return sa2va::Precision::F32;
  throw sa2va::Error("precision: '" + v + "' is not one of bf16, f32");
}

sa2va::WeightFormat weights_argument(py::handle obj) {
  const std::string v = text_argument(obj, "weights");
  if (v == "bf16") return sa2va::WeightFormat::BF16;
  if (v == "q8_0") return sa2va::WeightFormat::Q8_0;
  if (v == "q4_0") return sa2va::WeightFormat::Q4_0;
  throw sa2va::Error("weights: '" + v + "' is not one of bf16, q8_0, q4_0");
}

// Everything one prediction needs, converted from Python while the GIL is held.
struct PreparedRequest {
  sa2va::Request request;
  std::unique_ptr<sa2va::Video> video;
};

PreparedRequest prepare_request(const char* function, py::handle image, py::handle video, py::handle text,
                                py::handle past_text, py::handle mask_prompts, const py::kwargs& generation) {
  PreparedRequest p;
  sa2va::Request& r = p.request;
  if (text.is_none()) throw py::type_error("text: expected str, got NoneType (text is required)");
  r.text = text_argument(text, "text");
  r.past_text = text_argument(past_text, "past_text");
  if (!image.is_none() && !video.is_none()) throw sa2va::Error("pass an image or a video, not both");
  if (!image.is_none()) r.image = image_argument(image, "image");
  if (!video.is_none()) {
    p.video = video_argument(video);
    r.video = p.video.get();
  }
  r.mask_prompts = mask_prompts_argument(mask_prompts);
  for (const auto& [key_handle, value] : generation) {
    const std::string key = py::str(key_handle);
    if (key == "max_new_tokens") r.generation.max_new_tokens = int32_argument(value, key);
    else if (key == "temperature") r.generation.temperature = static_cast<float>(float_argument(value, key));
    else if (key == "top_k") r.generation.top_k = int32_argument(value, key);
    else if (key == "top_p") r.generation.top_p = static_cast<float>(float_argument(value, key));
    else if (key == "seed") r.generation.seed = seed_argument(value, key);
    else if (key == "max_tiles") r.max_tiles = int32_argument(value, key);
    else if (key == "video_llm_frames") r.video_llm_frames = int32_argument(value, key);
    else if (key == "uniform_frames") r.video_uniform_frames = bool_argument(value, key);
    else if (key == "answer") r.forced_answer = value.is_none() ? "" : text_argument(value, key);
    else if (key == "stop") r.generation.stop = stop_argument(value);
    else if (key == "tokenizer") continue;  // upstream's signature takes one; the model has its own
    else throw py::type_error(std::string(function) + "() got an unexpected keyword argument '" + key + "'");
  }
  if (r.generation.max_new_tokens < 1) throw sa2va::Error("max_new_tokens must be at least 1");
  if (r.generation.temperature < 0.f) throw sa2va::Error("temperature must not be negative");
  if (r.generation.top_k < 0) throw sa2va::Error("top_k must not be negative");
  if (!(r.generation.top_p > 0.f && r.generation.top_p <= 1.f)) throw sa2va::Error("top_p must be in (0, 1]");
  return p;
}

// ---- results --------------------------------------------------------------------------------------

// A numpy bool array that owns `bytes` (0/1 values), without a copy.
py::array bool_array(std::vector<uint8_t>&& bytes, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<uint8_t>(std::move(bytes));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
  return py::array(py::dtype::of<bool>(), std::move(shape), owned->data(), free_when_done);
}

py::array mask_array(sa2va::Mask&& m) {
  const py::ssize_t h = m.height, w = m.width;
  return bool_array(std::move(m.data), {h, w});
}

// The answer fields of a prediction, as predict_forward returns them (masks apart).
py::dict answer_dict(const sa2va::Prediction& p) {
  py::dict d;
  d["prediction"] = p.text;
  d["phrases"] = p.phrases;
  d["caption"] = p.caption;
  d["past_text"] = p.past_text;
  d["generated_ids"] = p.generated_ids;
  d["content"] = p.content;
  d["finish_reason"] = p.finish_reason;
  d["prompt_tokens"] = p.prompt_tokens;
  return d;
}

// Video masks gathered per [SEG] straight into [frames, H, W] buffers as they are produced.
class VideoMaskCollector {
 public:
  VideoMaskCollector(int64_t frames, int width, int height) : frames_(frames), width_(width), height_(height) {}
  void add(int seg, int64_t frame, const sa2va::Mask& m) {
    if (m.width != width_ || m.height != height_ || frame < 0 || frame >= frames_)
      throw sa2va::Error("internal: a video mask of unexpected size or frame index");
    if (static_cast<size_t>(seg) >= buffers_.size()) buffers_.resize(static_cast<size_t>(seg) + 1);
    std::vector<uint8_t>& b = buffers_[static_cast<size_t>(seg)];
    const size_t plane = static_cast<size_t>(width_) * static_cast<size_t>(height_);
    if (b.empty()) b.assign(plane * static_cast<size_t>(frames_), 0);
    std::copy(m.data.begin(), m.data.end(), b.begin() + static_cast<std::ptrdiff_t>(plane * static_cast<size_t>(frame)));
  }
  py::list arrays(size_t num_seg) {
    py::list out;
    buffers_.resize(num_seg);
    const size_t plane = static_cast<size_t>(width_) * static_cast<size_t>(height_);
    for (auto& b : buffers_) {
      if (b.empty()) b.assign(plane * static_cast<size_t>(frames_), 0);
      out.append(bool_array(std::move(b), {frames_, height_, width_}));
    }
    return out;
  }

 private:
  py::ssize_t frames_;
  int width_, height_;
  std::vector<std::vector<uint8_t>> buffers_;
};

// ---- Ctrl+C -----------------------------------------------------------------------------------------

// Python runs signal handlers (KeyboardInterrupt) only when the interpreter gets control, which a
// call waiting in C++ without the GIL never gives it. So the main thread, which alone runs them,
// takes the GIL every kSignalCheck to run what is pending; an exception raised there stops the
// work and is raised to the caller.
constexpr auto kSignalCheck = std::chrono::milliseconds(100);

bool on_main_thread() {
  return PyThread_get_thread_ident() ==
         py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
}

// Request::should_stop for a prediction run on the calling thread (with the GIL released).
class InterruptCheck {
 public:
  InterruptCheck() : main_(on_main_thread()) {}
  bool operator()() {
    if (!main_ || interrupted_) return interrupted_;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + kSignalCheck;
    py::gil_scoped_acquire gil;
    interrupted_ = PyErr_CheckSignals() != 0;  // the handler's exception stays set for the caller
    return interrupted_;
  }
  bool interrupted() const { return interrupted_; }

 private:
  bool main_;
  bool interrupted_ = false;
  std::chrono::steady_clock::time_point next_{};
};

// ---- streaming --------------------------------------------------------------------------------------

// Runs one prediction on its own thread and hands the masks over frame by frame: the iterator
// behind Model.predict_stream. At most kMaxQueuedFrames wait to be taken, so a long video uses
// bounded memory however slowly the caller reads. Dropping the iterator early cancels the work at
// the next frame.
class MaskStream {
 public:
  MaskStream(std::shared_ptr<const sa2va::Model> model, PreparedRequest prepared)
      : model_(std::move(model)), prepared_(std::move(prepared)) {
    sa2va::Request& r = prepared_.request;
    r.on_answer = [this](const sa2va::Prediction& p) {
      std::lock_guard<std::mutex> lock(mutex_);
      answer_ = p;
      changed_.notify_all();
    };
    r.on_mask = [this](int seg, int64_t frame, const sa2va::Mask& m) {
      if (pending_.size() <= static_cast<size_t>(seg)) pending_.resize(static_cast<size_t>(seg) + 1);
      pending_[static_cast<size_t>(seg)] = m;
      pending_frame_ = frame;
    };
    r.on_progress = [this](int64_t, int64_t) { push_frame(pending_frame_, std::exchange(pending_, {})); };
    r.should_stop = [this] { return stop_requested_.load(); };
    worker_ = std::thread([this] { run(); });
  }

  ~MaskStream() {
    stop_requested_ = true;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      changed_.notify_all();
    }
    py::gil_scoped_release nogil;
    if (worker_.joinable()) worker_.join();
  }

  // The next (frame_index, [mask per [SEG]]) or StopIteration; the prediction's error, if any.
  py::tuple next() {
    std::optional<Frame> frame;
    std::exception_ptr error;
    wait_interruptibly([&] { return !queue_.empty() || finished_; }, [&] {
      if (!queue_.empty()) {
        frame = std::move(queue_.front());
        queue_.pop_front();
        changed_.notify_all();
      } else if (!error_raised_) {  // raised once by the iteration, which then is over
        error = error_;
        error_raised_ = true;
      }
    });
    if (!frame) {
      if (error) std::rethrow_exception(error);
      throw py::stop_iteration();
    }
    py::list masks;
    for (auto& m : frame->masks) masks.append(mask_array(std::move(m)));
    return py::make_tuple(frame->index, masks);
  }

  // The answer (text, phrases, caption, past_text, generated_ids), waiting until it is known.
  py::dict answer() {
    std::optional<sa2va::Prediction> answer;
    std::optional<std::vector<float>> scores;
    std::exception_ptr error;
    wait_interruptibly([&] { return answer_.has_value() || finished_; }, [&] {
      answer = answer_;
      if (result_) scores = result_->scores;
      error = error_;
    });
    if (!answer) {
      if (error) std::rethrow_exception(error);
      throw sa2va::Error("the prediction was cancelled before its answer was known");
    }
    py::dict d = answer_dict(*answer);
    if (scores) d["scores"] = *scores;
    return d;
  }

 private:
  struct Frame {
    int64_t index = 0;
    std::vector<sa2va::Mask> masks;
  };
  struct Cancelled {};
  static constexpr size_t kMaxQueuedFrames = 8;

  // Waits (GIL released) until ready(), then calls take() under the lock. Every kSignalCheck the main
  // thread runs Python's pending signal handlers: one that raises (Ctrl+C) cancels the prediction and
  // its exception is raised here. The lock is never held while the GIL is taken.
  template <typename Ready, typename Take>
  void wait_interruptibly(Ready ready, Take take) {
    const bool main = on_main_thread();
    for (;;) {
      {
        py::gil_scoped_release nogil;
        std::unique_lock<std::mutex> lock(mutex_);
        const bool done = main ? changed_.wait_for(lock, kSignalCheck, ready) : (changed_.wait(lock, ready), true);
        if (done) {
          take();
          return;
        }
      }
      if (PyErr_CheckSignals() != 0) {
        stop_requested_ = true;
        std::lock_guard<std::mutex> lock(mutex_);
        cancelled_ = true;  // a worker waiting for room in the queue stops too
        changed_.notify_all();
        throw py::error_already_set();
      }
    }
  }

  void push_frame(int64_t index, std::vector<sa2va::Mask> masks) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return queue_.size() < kMaxQueuedFrames || cancelled_; });
    if (cancelled_) throw Cancelled{};
    queue_.push_back(Frame{index, std::move(masks)});
    changed_.notify_all();
  }

  void run() {
    std::exception_ptr error;
    std::optional<sa2va::Prediction> result;
    try {
      sa2va::Prediction p = model_->predict(prepared_.request);
      // An image's masks come with the result: one frame.
      if (!prepared_.request.video && !p.masks.empty()) {
        std::vector<sa2va::Mask> masks;
        for (auto& per_frame : p.masks) masks.push_back(std::move(per_frame.front()));
        push_frame(0, std::move(masks));
      }
      result = std::move(p);
    } catch (const Cancelled&) {
    } catch (const sa2va::Cancelled&) {
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = error;
    result_ = std::move(result);
    finished_ = true;
    changed_.notify_all();
  }

  std::shared_ptr<const sa2va::Model> model_;
  PreparedRequest prepared_;
  std::vector<sa2va::Mask> pending_;  // the frame being completed (worker thread only)
  int64_t pending_frame_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Frame> queue_;
  std::optional<sa2va::Prediction> answer_, result_;
  std::exception_ptr error_;
  bool finished_ = false, cancelled_ = false, error_raised_ = false;
  std::atomic<bool> stop_requested_{false};  // the model polls it between tokens and frames
  std::thread worker_;
};

// ---- the model --------------------------------------------------------------------------------------

class PyModel {
 public:
  PyModel(py::handle path, py::handle device, py::handle precision, py::handle weights, py::handle threads) {
    if (!is_path(path)) wrong_type("path", "str or os.PathLike", path);
    const std::string dir = path_of(path, "path");
    sa2va::ModelOptions options;
    options.device = text_argument(device, "device");
    options.precision = precision_argument(precision);
    options.weights = weights_argument(weights);
    options.threads = int32_argument(threads, "threads");
    if (options.threads < 0) throw sa2va::Error("threads must be 0 (all cores) or more");
    py::gil_scoped_release nogil;
    model_ = sa2va::Model::load(dir, options);
  }

  py::dict predict_forward(py::handle image, py::handle video, py::handle text, py::handle past_text,
                           py::handle mask_prompts, const py::kwargs& generation) const {
    PreparedRequest prepared = prepare_request("predict_forward", image, video, text, past_text, mask_prompts, generation);
    sa2va::Request& r = prepared.request;
    std::optional<VideoMaskCollector> collector;
    if (r.video) {
      collector.emplace(r.video->frame_count(), r.video->width(), r.video->height());
      r.on_mask = [&](int seg, int64_t frame, const sa2va::Mask& m) { collector->add(seg, frame, m); };
    }
    InterruptCheck interrupt;
    r.should_stop = [&interrupt] { return interrupt(); };
    sa2va::Prediction p;
    try {
      py::gil_scoped_release nogil;
      p = model_->predict(r);
    } catch (const sa2va::Cancelled&) {
      if (interrupt.interrupted()) throw py::error_already_set();  // KeyboardInterrupt, as Python raised it
      throw;
    }
    py::dict d = answer_dict(p);
    // Upstream returns no masks when none were made (no [SEG], or a text-only turn).
    const size_t num_seg = p.scores.size();
    if (collector && num_seg > 0) {
      d["prediction_masks"] = collector->arrays(num_seg);
    } else {
      py::list masks;
      for (auto& per_seg : p.masks) {
        sa2va::Mask& m = per_seg.front();
        const py::ssize_t h = m.height, w = m.width;
        masks.append(bool_array(std::move(m.data), {1, h, w}));
      }
      d["prediction_masks"] = masks;
    }
    d["scores"] = p.scores;
    return d;
  }

  std::unique_ptr<MaskStream> predict_stream(py::handle image, py::handle video, py::handle text,
                                             py::handle past_text, py::handle mask_prompts,
                                             const py::kwargs& generation) const {
    return std::make_unique<MaskStream>(model_, prepare_request("predict_stream", image, video, text, past_text,
                                                                mask_prompts, generation));
  }

  std::string template_name() const { return model_->template_name(); }

 private:
  std::shared_ptr<const sa2va::Model> model_;
};

// ---- documentation: help(sa2va.Model) is the manual ------------------------------------------------

constexpr const char* kModelDoc = R"doc(Model(path, device="cpu", precision="bf16", weights="bf16", threads=0)

A Sa2VA model, loaded once from a Hugging Face folder (config.json, *.safetensors, tokenizer files)
of Sa2VA-1B / 4B / 8B or Sa2VA-InternVL3-2B / 8B / 14B, or from a folder written by `sa2va quantize`.
The weights are shared, read-only, by every call: one Model serves any number of threads.

Arguments:
  path       the model folder (str or os.PathLike)
  device     "cpu" ("cuda[:N]" where the library is built with CUDA)
  precision  "bf16" (default: bf16 weights and attention operands, f32 accumulation, as upstream runs)
             or "f32" (the reference mode, matched against upstream at 1e-4)
  weights    the language model's linear layers: "bf16" (as the checkpoint), or quantized at load to
             "q8_0" / "q4_0" (blocks of 32 weights with one f16 scale)
  threads    threads of this model's own pool; 0 = all cores

Example:
  >>> import sa2va
  >>> from PIL import Image
  >>> model = sa2va.Model("Sa2VA-1B")
  >>> out = model.predict_forward(image=Image.open("girl.jpg"),
  ...                             text="<image>Please segment the girl in the yellow dress.")
  >>> out["prediction"]            # 'Sure, [SEG].<|im_end|>'
  >>> out["prediction_masks"][0]   # numpy bool array [1, H, W]: the mask of the first [SEG]

Errors (unreadable or corrupt files, a folder that is not a Sa2VA checkpoint, bad requests) raise
sa2va.Error with a one-line message; arguments of the wrong type raise TypeError naming the argument.
)doc";

constexpr const char* kPredictForwardDoc = R"doc(predict_forward(image=None, video=None, text=None, past_text="", mask_prompts=None, **generation) -> dict

Answers one turn, as upstream Sa2VA's predict_forward does. The GIL is released while the model runs;
Ctrl+C stops it (within ~0.1 s of the next token or frame) and KeyboardInterrupt is raised.

  image         a PIL image (converted to RGB), an HxWx3 uint8 numpy array, or the path of a JPEG/PNG
  video         a list of frames (each as image), a TxHxWx3 uint8 array, or the path of a video file
                (mp4, webm, ...) or of a folder of frames (sorted by name). At most one of image / video;
                neither = text-only chat.
  text          the user's turn; put "<image>" where the visual tokens go (first turn only)
  past_text     the "past_text" of the previous turn's result ("" for the first turn). A later turn
                about an image passes the image again.
  mask_prompts  visual prompts: upstream's [array KxHxW], or a list of HxW boolean arrays (one per
                region, any size); refer to them as region1, region2, ... in the text. Given with
                the first turn; a later turn passes the same ones again with the image

Generation keywords: max_new_tokens=2048, temperature=0.0 (greedy, as upstream), top_k=0, top_p=1.0,
seed=0; max_tiles=12 (image tiling), video_llm_frames=5 (video frames the language model sees),
uniform_frames=False (spread those over the video); answer=None (teacher forcing: use this answer as
if generated, to get its masks); stop=None (a string or a list: the answer ends where one appears, and
"content" before it). tokenizer= is accepted and ignored (upstream's signature).

Returns a dict:
  prediction        the answer text, special tokens kept ("Sure, [SEG].<|im_end|>")
  prediction_masks  one numpy bool array [frames, H, W] per [SEG] (frames = 1 for an image), at the
                    size of the image / first frame; [] when no [SEG] or no visual input
  phrases           per [SEG], the phrase of a grounded caption ("<p>phrase</p> [SEG]"), "" if none
  caption           the answer without tags and [SEG]
  scores            per [SEG], SAM2's predicted IoU of the chosen mask (0 for videos)
  past_text         pass as past_text for the next turn
  generated_ids     token ids of the answer
  content           the answer without its end-of-turn marker ("Sure, [SEG].")
  finish_reason     "stop" (end of turn, or a forced answer) or "length" (max_new_tokens reached)
  prompt_tokens     tokens the model read before answering (past_text and visual tokens included)
)doc";

constexpr const char* kPredictStreamDoc = R"doc(predict_stream(image=None, video=None, text=None, past_text="", mask_prompts=None, **generation) -> MaskStream

predict_forward that hands the masks over frame by frame while a video is being segmented, without
keeping them all: iterate over the result for (frame_index, [HxW bool mask per [SEG]]) in frame
order; .answer() returns the answer fields (prediction, phrases, caption, past_text, generated_ids)
as soon as the text is known. An image yields one frame. Same arguments as predict_forward. The
prediction runs on its own thread; dropping the stream stops it at the next token or frame.
)doc";

}  // namespace

PYBIND11_MODULE(_sa2va, m) {
  py::options options;
  options.disable_function_signatures();  // each docstring starts with the Python signature

  m.doc() = "Sa2VA (dense grounded understanding of images and videos) without a Python stack: see help(sa2va.Model).";
  m.attr("__version__") = SA2VA_VERSION;

  // sa2va.Error, with the message decoded leniently: it may quote a path whose bytes are not UTF-8.
  // (A reference kept for the life of the process: no destructor runs after the interpreter's end.)
  static PyObject* error_type = py::exception<sa2va::Error>(m, "Error", PyExc_RuntimeError).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sa2va::Error& e) {
      const std::string what = e.what();
      PyObject* message = PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()), "surrogateescape");
      if (message == nullptr) return;  // the decoding error stays set
      PyErr_SetObject(error_type, message);
      Py_DECREF(message);
    }
  });
  m.attr("Error").attr("__doc__") =
      "Every error the library reports: unreadable or corrupt files, unusable model folders, bad requests.";

  // An object made by __new__ without __init__ (or a stream not made by predict_stream) has memory
  // but no C++ object in it: its methods raise TypeError instead of reading that memory.
  const auto made = [](auto* self, py::handle object, const char* type) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(self)>>;
    auto* inst = reinterpret_cast<py::detail::instance*>(object.ptr());
    if (!inst->get_value_and_holder(py::detail::get_type_info(typeid(T))).holder_constructed())
      throw py::type_error(std::string(type) + " object is not initialised (made without __init__)");
    return self;
  };
  py::class_<MaskStream>(m, "MaskStream",
                         "The frames of one prediction's masks, as predict_stream hands them over: iterate for "
                         "(frame_index, [mask per [SEG]]); answer() for the text.")
      .def("__iter__", [](py::object self) { return self; }, "__iter__(self) -> MaskStream")
      .def("__next__", [made](py::handle object) { return made(object.cast<MaskStream*>(), object, "MaskStream")->next(); },
           "__next__(self) -> tuple[int, list[numpy.ndarray]]")
      .def("answer", [made](py::handle object) { return made(object.cast<MaskStream*>(), object, "MaskStream")->answer(); },
           "answer(self) -> dict\n\nThe answer fields (prediction, phrases, caption, past_text, generated_ids; "
           "scores once the stream is done), waiting until the text is known.");

  py::class_<PyModel>(m, "Model", kModelDoc)
      .def(py::init<py::handle, py::handle, py::handle, py::handle, py::handle>(), py::arg("path"),
           py::arg("device") = "cpu", py::arg("precision") = "bf16", py::arg("weights") = "bf16",
           py::arg("threads") = 0, "__init__(self, path, device=\"cpu\", precision=\"bf16\", weights=\"bf16\", threads=0)")
      .def("predict_forward",
           [made](py::handle self, py::handle image, py::handle video, py::handle text, py::handle past_text,
                  py::handle mask_prompts, const py::kwargs& generation) {
             return made(self.cast<const PyModel*>(), self, "Model")
                 ->predict_forward(image, video, text, past_text, mask_prompts, generation);
           },
           py::arg("image") = py::none(), py::arg("video") = py::none(),
           py::arg("text") = py::none(), py::arg("past_text") = "", py::arg("mask_prompts") = py::none(),
           kPredictForwardDoc)
      .def("predict_stream",
           [made](py::handle self, py::handle image, py::handle video, py::handle text, py::handle past_text,
                  py::handle mask_prompts, const py::kwargs& generation) {
             return made(self.cast<const PyModel*>(), self, "Model")
                 ->predict_stream(image, video, text, past_text, mask_prompts, generation);
           },
           py::arg("image") = py::none(), py::arg("video") = py::none(),
           py::arg("text") = py::none(), py::arg("past_text") = "", py::arg("mask_prompts") = py::none(),
           kPredictStreamDoc)
      .def_property_readonly("template_name",
                             [made](py::handle self) { return made(self.cast<const PyModel*>(), self, "Model")->template_name(); },
                             "The chat template: \"qwen_chat\" (1B), \"phi3_chat\" (4B), \"internlm2_chat\" (8B).");

  m.def("extract_phrases", &sa2va::extract_phrases, py::arg("answer"),
        "extract_phrases(answer: str) -> list[str]\n\nThe <p>...</p> phrases of a grounded caption, as upstream's GCG "
        "evaluation extracts them.");
  m.def("clean_caption", &sa2va::clean_caption, py::arg("answer"),
        "clean_caption(answer: str) -> str\n\nThe caption without tags and [SEG], as upstream's GCG evaluation cleans it.");
  m.def("set_profiling", &sa2va::set_profiling, py::arg("enabled"),
        "set_profiling(enabled: bool) -> None\n\nTurns the built-in profiler (process-wide) on or off.");
  m.def("profiling_report", &sa2va::profiling_report,
        "profiling_report() -> str\n\nWall time and calls per stage since profiling was enabled, one stage per line.");
}
