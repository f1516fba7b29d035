// The execution context of one request: where and how its kernels run. Created by the model for
// each predict() and passed down to the components, in place of process-wide settings:
//   device     where tensors are allocated and kernels run (the CPU or a GPU)
//   precision  the compute precision the model was loaded for (f32 reference or bf16)
//   pool       the model's thread pool (installed as the current pool while the request runs)
//   recorder   named intermediate tensors for `sa2va dump` (null: nothing is recorded)
// The built-in stage profiler (core/profile.h) stays process-wide, as the public API exposes it.
#pragma once
#include "core/allocator.h"
#include "core/device.h"
#include "core/stages.h"
#include "core/threadpool.h"
#include "sa2va/sa2va.h"

namespace sa2va {

struct ExecContext {
  Device device = Device::cpu();
  Precision precision = Precision::BF16;
  ThreadPool* pool = nullptr;
  StageRecorder* recorder = nullptr;

  // A context on the CPU and the current pool that records into `recorder` (tests and tools that
  // run one component).
  static ExecContext recording(StageRecorder* recorder) {
    ExecContext ctx;
    ctx.recorder = recorder;
    return ctx;
  }
  // The same context without its recorder (work that must not be recorded twice).
  ExecContext silent() const {
    ExecContext ctx = *this;
    ctx.recorder = nullptr;
    return ctx;
  }

  Allocator& allocator() const { return allocator_for(device); }
  // The end of one repeated unit of work (a video frame): the device's allocator may return
  // buffers that stayed idle during all of it.
  void end_of_period() const { allocator().end_of_period(); }
  void record(const std::string& name, const Tensor& t) const { sa2va::record(recorder, name, t); }
};

// Makes a context current on the calling thread for its lifetime: its device runs the kernels
// (its pool, on the CPU).
class ContextScope {
 public:
  explicit ContextScope(const ExecContext& ctx)
      : device_(ctx.device), use_(ctx.pool ? *ctx.pool : current_thread_pool()) {}

 private:
  DeviceScope device_;
  ThreadPool::Use use_;
};

}  // namespace sa2va
