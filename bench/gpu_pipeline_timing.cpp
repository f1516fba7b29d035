// Sa2VA on one GPU, timed the way the upstream figures in bench/README.md were: a random-weight
// model of the real shapes (make-model's preset, 1b by default) in bf16 on cuda:0, and
//   - a 1344x896 image (7 tiles, 1810 prompt tokens), "Please segment the girl in the yellow
//     dress." with the answer "Sure, [SEG]." teacher-forced: end to end, preprocessing to masks;
//   - the language model alone: a prefill of 1810 tokens, and decode steps (ms per token, logits
//     back on the host each step, as generation needs them);
//   - 48 frames of 640x360 video with the same prompt: end to end, and frames per second;
//   - the memory pool's peak per case (the CUDA context is not counted, nor the scratch buffers
//     allocated outside the pool: cuBLASLt's workspace, bf16 copies of operands, split partials);
//   - the stage profile of one more image and video (sa2va --profile's table).
// Medians of --reps runs after one warm-up. Prints one table; exits non-zero on any error.
//
//   sa2va_gpu_bench [--preset 1b] [--model DIR] [--reps 5] [--frames 48] [--tokens 64]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/error.h"
#include "core/profile.h"
#include "models/make_model.h"
#include "models/sa2va_model.h"
#include "ops/ops.h"
#include "ops/cuda/runtime.h"

namespace {

using namespace sa2va;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A picture that is not flat (tiles and SAM2 see structure): gradients and a disc.
Image picture(int width, int height, int shift) {
  Image im(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t* p = im.row(y) + 3 * x;
      const int dx = x - width / 2 - shift, dy = y - height / 2;
      const bool disc = dx * dx + dy * dy < (height / 4) * (height / 4);
      p[0] = static_cast<uint8_t>(disc ? 230 : x * 255 / width);
      p[1] = static_cast<uint8_t>(disc ? 200 : y * 255 / height);
      p[2] = static_cast<uint8_t>(disc ? 30 : (x + y) % 256);
    }
  return im;
}

cudaMemPool_t pool_of_gpu0() {
  cudaMemPool_t pool = nullptr;
  cuda::check(cudaDeviceGetDefaultMemPool(&pool, 0), "opening the memory pool");
  return pool;
}

void reset_peak() {
  uint64_t zero = 0;
  cuda::check(cudaMemPoolSetAttribute(pool_of_gpu0(), cudaMemPoolAttrReservedMemHigh, &zero), "resetting the peak");
  cuda::check(cudaMemPoolSetAttribute(pool_of_gpu0(), cudaMemPoolAttrUsedMemHigh, &zero), "resetting the peak");
}

double peak_gib() {
  uint64_t used = 0;
  cuda::check(cudaMemPoolGetAttribute(pool_of_gpu0(), cudaMemPoolAttrUsedMemHigh, &used), "reading the peak");
  return static_cast<double>(used) / (1u << 30);
}

struct Row {
  std::string what;
  double ms;
  std::string extra;
};

// Median wall time of `reps` calls of `f` after one warm-up; the peak pool memory of them all.
double timed(int reps, const std::function<void()>& f, double* peak) {
  f();
  reset_peak();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    f();
    times.push_back(ms_since(start));
  }
  *peak = peak_gib();
  return median(times);
}

// Microseconds per call of `f` queued `calls` times back to back on the thread's stream (launch
// costs included, host waits excluded), after a few warm-up calls.
double queued_us(int calls, const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  cuda::synchronize();
  const auto start = Clock::now();
  for (int i = 0; i < calls; ++i) f();
  cuda::synchronize();
  return ms_since(start) * 1000 / calls;
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "1b", model_dir;
  int reps = 5, frames = 48, tokens = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--preset") preset = value;
    else if (flag == "--model") model_dir = value;
    else if (flag == "--reps") reps = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--frames") frames = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--tokens") tokens = std::max(2, std::atoi(value.c_str()));
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    std::vector<Row> rows;
    if (model_dir.empty()) {
      model_dir = (std::filesystem::temp_directory_path() / ("sa2va-gpu-bench-" + preset)).string();
      if (!std::filesystem::exists(model_dir + "/config.json")) {
        const auto start = Clock::now();
        MakeModelOptions make;
        make.preset = preset;
        make.out_dir = model_dir;
        make_model(make);
        std::printf("make-model %s: %.0f ms\n", preset.c_str(), ms_since(start));
      }
    }
    ModelOptions options;
    options.precision = Precision::BF16;
    options.device = "cuda:0";
    auto start = Clock::now();
    const std::unique_ptr<Sa2vaModel> model = Sa2vaModel::load(model_dir, options);
    rows.push_back({"load (" + preset + ", bf16, cuda:0)", ms_since(start), ""});
    double peak = 0;

    Request image;
    image.image = picture(1344, 896, 0);
    image.text = "<image>Please segment the girl in the yellow dress.";
    image.forced_answer = "Sure, [SEG].";
    size_t masks = 0;
    const double image_ms = timed(reps, [&] { masks = model->predict(image).masks.size(); }, &peak);
    rows.push_back({"image 1344x896, answer forced, end to end", image_ms,
                    std::to_string(masks) + " mask, peak " + std::to_string(peak).substr(0, 5) + " GiB"});

    {
      const ContextScope scope(model->context(nullptr));
      const LanguageModel& llm = model->llm;
      std::vector<int32_t> ids(1810);
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919) % 150000);
      const Tensor embeds = llm.embed(ids);
      LlmState state = llm.new_state(1810 + tokens + 1, 1810);
      const double prefill_ms = timed(reps, [&] {
        state.truncate(0);
        llm.forward(embeds, state, model->context(nullptr));
        cuda::synchronize();
      }, &peak);
      rows.push_back({"LLM prefill, 1810 tokens", prefill_ms,
                      std::to_string(static_cast<int>(1810 / prefill_ms * 1000)) + " tokens/s"});
      const double decode_ms = timed(reps, [&] {
        state.truncate(1810);
        int32_t id = 17;
        for (int t = 0; t < tokens; ++t) {
          llm.forward_token(id, state);
          const float* logits = llm.last_logits(state);
          id = static_cast<int32_t>(std::max_element(logits, logits + llm.vocab_size()) - logits);
        }
      }, &peak);
      rows.push_back({"LLM decode after 1810 tokens, per token", decode_ms / tokens,
                      std::to_string(tokens) + " greedy steps"});

      // One decode step taken apart: its ops at their decode shapes, queued back to back.
      const LanguageModel::Layer& layer = llm.layers[0];
      const LlmConfig& c = llm.config;
      const int64_t D = c.hidden_size, hd = c.head_dim, q_dim = c.num_heads * hd, kv_dim = c.num_kv_heads * hd;
      const Device gpu = Device::cuda(0);
      Tensor x = Tensor::zeros({1, D}, DType::F32, gpu), y = Tensor::zeros({1, D}, DType::F32, gpu);
      Tensor qkv = Tensor::zeros({1, q_dim + 2 * kv_dim}, DType::F32, gpu), heads = Tensor::zeros({1, q_dim}, DType::F32, gpu);
      Tensor gate = Tensor::zeros({1, c.intermediate_size}, DType::F32, gpu), up = gate.clone();
      Tensor keys = Tensor::zeros({1811, kv_dim}, DType::F32, gpu), values = keys.clone();
      Tensor logits = Tensor::zeros({1, c.vocab_size}, DType::F32, gpu);
      Tensor positions = Tensor::zeros({1}, DType::I64, gpu);
      std::vector<std::pair<std::string, double>> ops_us;
      ops_us.push_back({"rms_norm", queued_us(200, [&] {
        ops::rms_norm(x.kernel_f32(), layer.attention_norm.kernel_f32(), y.kernel_f32(), 1, D, 1e-6f);
      })});
      ops_us.push_back({"linear qkv", queued_us(200, [&] {
        ops::linear(y.kernel_f32(), 1, D, layer.wqkv, nullptr, qkv.kernel_f32());
      })});
      ops_us.push_back({"rope (q and k)", queued_us(200, [&] {
        ops::rope_rotate_half(qkv.kernel_f32(), 1, c.num_heads, hd, q_dim + 2 * kv_dim,
                              static_cast<const int64_t*>(positions.device_data()), dynamic_rope_theta(c, 1811));
        ops::rope_rotate_half(keys.kernel_f32(), 1, c.num_kv_heads, hd, kv_dim,
                              static_cast<const int64_t*>(positions.device_data()), dynamic_rope_theta(c, 1811));
      })});
      ops_us.push_back({"attention over 1811 keys", queued_us(200, [&] {
        ops::AttentionArgs a;
        a.q = qkv.kernel_f32(); a.q_stride = q_dim + 2 * kv_dim;
        a.k = keys.kernel_f32(); a.k_stride = kv_dim;
        a.v = values.kernel_f32(); a.v_stride = kv_dim;
        a.out = heads.kernel_f32(); a.out_stride = q_dim;
        a.q_len = 1; a.kv_len = 1811; a.q_heads = c.num_heads; a.kv_heads = c.num_kv_heads; a.head_dim = hd;
        a.scale = 1.f / std::sqrt(static_cast<float>(hd)); a.causal = true; a.q_offset = 1810; a.bf16_operands = true;
        ops::attention(a);
      })});
      ops_us.push_back({"linear out", queued_us(200, [&] {
        ops::linear(heads.kernel_f32(), 1, q_dim, layer.wo, nullptr, y.kernel_f32());
      })});
      ops_us.push_back({"add (residual)", queued_us(200, [&] { ops::add(x.kernel_f32(), y.kernel_f32(), x.kernel_f32(), D); })});
      ops_us.push_back({"gated MLP", queued_us(200, [&] {
        ops::gated_feed_forward(y.kernel_f32(), 1, D, layer.w_gate, layer.w_up, gate.kernel_f32(), up.kernel_f32(),
                                layer.w_down, x.kernel_f32());
      })});
      ops_us.push_back({"lm_head", queued_us(50, [&] {
        ops::linear(y.kernel_f32(), 1, D, llm.lm_head, nullptr, logits.kernel_f32());
      })});
      ops_us.push_back({"forward_token (whole step, no logits)", queued_us(20, [&] {
        state.truncate(1810);
        llm.forward_token(17, state);
      })});
      std::printf("\ndecode step by op (us per call, queued; the step has %d layers):\n", c.num_layers);
      for (const auto& [name, us] : ops_us) std::printf("  %-40s %9.1f\n", name.c_str(), us);
    }

    std::vector<Image> clip;
    for (int i = 0; i < frames; ++i) clip.push_back(picture(640, 360, 4 * i));
    const std::unique_ptr<Video> video = Video::from_frames(std::move(clip));
    Request tracking;
    tracking.video = video.get();
    tracking.text = "<image>Please segment the girl in the yellow dress.";
    tracking.forced_answer = "Sure, [SEG].";
    size_t tracked = 0;
    const double video_ms = timed(std::max(1, reps / 2), [&] {
      tracked = model->predict(tracking).masks.at(0).size();
    }, &peak);
    rows.push_back({std::to_string(frames) + " frames 640x360, end to end", video_ms,
                    std::to_string(static_cast<int>(frames / video_ms * 1000 + 0.5)) + " frames/s, " +
                        std::to_string(tracked) + " masks, peak " + std::to_string(peak).substr(0, 5) + " GiB"});

    // Where the time goes: one more image and one more video with the stage profiler, which waits
    // for each stage's kernels on a GPU.
    profile::set_enabled(true);
    profile::reset();
    model->predict(image);
    const std::string image_profile = profile::report();
    profile::reset();
    model->predict(tracking);
    const std::string video_profile = profile::report();
    profile::set_enabled(false);
    std::printf("\nimage, by stage:\n%s\nvideo, by stage:\n%s", image_profile.c_str(), video_profile.c_str());

    const cuda::DeviceProperties gpu = cuda::properties(0);
    std::printf("\n%s, %d multiprocessors; medians of %d runs after a warm-up\n", gpu.name.c_str(),
                gpu.multiprocessors, reps);
    for (const Row& r : rows) std::printf("| %-46s | %10.2f ms | %s\n", r.what.c_str(), r.ms, r.extra.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sa2va_gpu_bench: %s\n", e.what());
    return 1;
  }
}
