// The Sa2VA pipeline (docs/README.md §3): the components of one model folder, loaded once
// and shared read-only, and predict(), which runs one request through them:
//   image tiles / video key frames -> InternViT + mlp1 -> spliced into the prompt embeddings ->
//   LLM generation (or a teacher-forced answer) -> [SEG] hidden states -> text_hidden_fcs ->
//   SAM2 (image: one conditioning frame; video: conditioning frames, then memory propagation)
//   -> masks at the original size.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/allocator.h"
#include "core/context.h"
#include "core/threadpool.h"
#include "core/stages.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/internvit.h"
#include "models/generation.h"
#include "models/llm.h"
#include "models/sam2/sam2_image.h"
#include "models/sam2/video_tracker.h"
#include "models/seg_projector.h"
#include "sa2va/sa2va.h"
#include "text/template.h"
#include "text/tokenizer.h"

namespace sa2va {

// What a VisualCache keeps (sa2va.h): the vision encoder's output per way of reading the medium
// (tiling limit, key frames) and, for an image, SAM2's image features.
struct VisualCacheImpl final : VisualCache {
  struct Vision {
    Tensor vit_embeds;
    std::string visual_tokens;
    size_t num_tiles = 0;
    std::vector<int> conditioning_frames;
  };
  explicit VisualCacheImpl(size_t max_bytes) : max_bytes(max_bytes) {}
  mutable std::mutex mutex;
  const size_t max_bytes;
  std::map<std::string, Vision> vision;  // "image/<max_tiles>", "video/<llm frames>/<uniform>"
  std::optional<sam2::FrameFeatures> sam2_image;
  std::map<int, sam2::FrameFeatures> sam2_frames;  // video: per frame, while within max_bytes
  // The model and medium whose features the cache holds, fixed by the first request that uses it:
  // another model or medium later is an Error (its features would be silently wrong).
  uint64_t model_id = 0;
  std::string medium;
  void bind(uint64_t model, const std::string& medium_key);
  size_t bytes() const override;
  size_t bytes_locked() const;
  std::optional<Vision> find_vision(const std::string& key) const;
  void keep_vision(const std::string& key, Vision v);  // when it fits max_bytes
};

struct Sa2vaModel {
  // Declared first, so destroyed last: once the weights are gone, their large blocks are returned
  // to the system instead of waiting idle in the allocator's cache (core/allocator.h).
  struct ReleaseIdleBuffersLast {
    ~ReleaseIdleBuffersLast() { allocator_for(Device::cpu()).release_idle(); }
  } release_idle_buffers_last;
  std::string dir;
  uint64_t instance_id = 0;  // distinct for every loaded model of the process (binds visual caches)
  ModelConfig config;
  LoadPolicy policy;                       // device, compute precision, weight formats
  std::unique_ptr<ThreadPool> pool;        // this model's threads (ModelOptions::threads)
  std::unique_ptr<Checkpoint> checkpoint;  // owns the weight maps the components borrow
  std::unique_ptr<Tokenizer> tokenizer;
  const ChatTemplate* chat = nullptr;
  int32_t img_context_id = -1, seg_id = -1, eos_id = -1;

  VisionEncoder vision;          // vision_model.*, mlp1.*
  LanguageModel llm;             // language_model.*
  SegProjector seg_projector;    // text_hidden_fcs.*
  sam2::Sam2Image sam2;          // grounding_encoder.sam2_model.{image_encoder, prompt/mask decoder}
  sam2::VideoTracker tracker;    // grounding_encoder.sam2_model.{memory_*, obj_ptr_proj, ...}

  // Loads config.json, the tokenizer and every weight; reports all weight problems at once.
  static std::unique_ptr<Sa2vaModel> load(const std::string& model_dir, const ModelOptions& options);
  static std::unique_ptr<Sa2vaModel> load(const std::string& model_dir, Precision precision);
  // The execution context of one request on this model (its device, precision and pool).
  ExecContext context(StageRecorder* recorder) const;
  // The one place where checkpoint names are bound to components, in checkpoint order. With
  // `into` null (declaring Weights) it only enumerates names and shapes (make-model).
  static void bind_components(Weights& w, const ModelConfig& config, Sa2vaModel* into);

  // Runs one request. `rec` collects every stage tensor (sa2va dump).
  Prediction predict(const Request& request, StageRecorder* rec = nullptr) const;
  // The past_text a next turn would get had the model answered `answer` to `request` (Model::conversation_after).
  std::string conversation_after(const Request& request, const std::string& answer) const;
  // When generation stops (docs/tokenizer-template.md §6): the tokenizer's eos id and the chat
  // template's stop words, matched on the tokenizer's decoding of the generated ids.
  StopRules stop_rules() const;

 private:
  // predict(), stage by stage (sa2va_model.cpp). What flows between the stages of one request
  // lives in a PredictState; the model itself stays read-only.
  struct PredictState;
  void check_request(const Request& request, PredictState& s) const;
  void encode_vision(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void encode_image(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void encode_mask_prompts(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void encode_video_key_frames(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void prepare_prompt(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void generate_answer(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void decode_outputs(PredictState& s, const ExecContext& ctx) const;
  void segment_image(const Request& request, PredictState& s, const ExecContext& ctx) const;
  void track_video(const Request& request, PredictState& s, const ExecContext& ctx) const;
};

}  // namespace sa2va
