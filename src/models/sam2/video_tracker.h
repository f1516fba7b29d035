// SAM2 video tracking as Sa2VA runs it (docs/sam2.md §4-§7), for one or more [SEG] objects.
//
// The conditioning frames (the key frames the LLM saw: 0 … F−1 by default, or frames spread
// over the video) are decoded first, with the language embedding and no memory, and
// memory-encoded with their chosen mask. Then every other frame is tracked forward, t = 0, 1, …:
// its features attend to the memory bank (all conditioning memories, wherever they lie in the
// video, the memories of the last 6 tracked frames, the object pointers of conditioning frames
// c <= t and of recent tracked frames), are decoded without a language prompt, and are
// memory-encoded in turn. Frames before the first conditioning frame are tracked forward the same
// way, with whatever memory exists (upstream would only yield frames from the first conditioning
// frame on, unless also run in reverse); every frame gets a mask.
//
// Long videos: frames are pulled one at a time from a callback (the conditioning frames, then the
// others in order); each frame's backbone runs once for all objects; masks are handed out in frame
// order as soon as they are known (a conditioning frame's low-res mask is held until its turn);
// the per-object state keeps only what later frames can still select (bounded memory).
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "core/context.h"
#include "core/stages.h"
#include "core/tensor.h"
#include "io/config.h"
#include "io/weights.h"
#include "models/sam2/mask_decoder.h"
#include "models/sam2/memory_attention.h"
#include "models/sam2/memory_encoder.h"
#include "models/sam2/sam2_image.h"

namespace sa2va::sam2 {

struct MemoryRef {
  int frame = 0;
  int tpos_index = 0;  // row of maskmem_tpos_enc added to this memory's position encoding
  bool operator==(const MemoryRef&) const = default;
};

// What a tracked frame t attends to, in upstream order (docs/sam2.md §5.2-§5.3).
struct MemorySelection {
  // Every conditioning frame, before or after t (tpos index num_maskmem−1), then the tracked frames
  // t−(num_maskmem−1) … t−1 that hold a memory (tpos indices num_maskmem−2 … 0).
  std::vector<MemoryRef> memories;
  // Conditioning frames c <= t (insertion order), then tracked frames t−1, t−2, … down to
  // t−(P−1), P = min(num_frames, max_obj_ptrs) (conditioning frames in that window are skipped,
  // not counted twice).
  std::vector<int> pointers;
};

// Per-object memory: stores what later frames can still select and nothing else.
class MemoryBank {
 public:
  // num_frames: video length (bounds the pointer window as upstream does); <= 0 when unknown.
  MemoryBank(int num_maskmem, int max_obj_ptrs, int num_frames);

  // A conditioning frame's memory ([h·w, mem_dim] tokens) and object pointer ([hidden]), kept for
  // the whole video. Add them in increasing frame order, before tracking any frame.
  void add_conditioning(int frame, Tensor memory, Tensor obj_ptr);
  // A tracked frame, in increasing frame order. `memory` may be undefined when no later frame
  // needs it. Drops whatever no later frame can select.
  void add_tracked(int frame, Tensor memory, Tensor obj_ptr);

  // Selection for tracking `frame` (after every tracked frame stored so far).
  MemorySelection select(int frame) const;
  const Tensor& memory(int frame) const;   // of a frame listed in select()
  const Tensor& pointer(int frame) const;  // of a frame listed in select()

  int64_t num_memories() const;  // held mask memories
  int64_t num_pointers() const;  // held object pointers
  int64_t bytes() const;         // bytes of held tensors

 private:
  struct Entry {
    int frame = 0;
    Tensor memory, obj_ptr;
  };
  const Entry* find(int frame) const;
  int pointer_reach() const;  // P − 1

  int num_maskmem_, max_obj_ptrs_, num_frames_;
  std::vector<Entry> conditioning_;
  std::deque<Entry> tracked_;  // increasing frame order
};

// Everything that changes while one request's video is tracked: the schedule, the memory bank of
// each object (memories and object pointers), the conditioning frames' outputs waiting to be
// handed out, and the workspaces every frame reuses. Created by VideoTracker::new_state, advanced
// one frame at a time by VideoTracker::step; the tracker itself only holds the shared, read-only
// weights and stays const.
struct TrackerState {
  int num_frames = 0;
  std::vector<int> conditioning_frames;  // increasing
  std::vector<bool> is_conditioning;     // [num_frames]
  // Last frame that is tracked (not a conditioning frame), −1 when none: a frame's memory is only
  // worth encoding when some later frame is tracked.
  int last_tracked = -1;
  // Frames in the order they are read: the conditioning frames, then every other frame up to
  // last_tracked (ascending). `next` indexes the next one.
  std::vector<int> schedule;
  size_t next = 0;

  Tensor prompts;                  // F32 [objects, hidden]: one [SEG] embedding per object
  std::vector<MemoryBank> banks;   // one per object

  // Masks go out in frame order: a conditioning frame's low-res masks (one per object, indexed
  // like conditioning_frames) wait here until every earlier frame has gone out.
  std::vector<std::vector<Tensor>> held;
  size_t next_held = 0;  // index of the next conditioning frame to hand out
  int next_out = 0;      // next frame the mask sink expects

  // Workspace of every tracked frame: the sine position encoding of a spatial memory, tokens
  // [g·g, mem_dim] (computed once per request).
  Tensor memory_pos_enc;

  int64_t objects() const { return static_cast<int64_t>(banks.size()); }
  bool done() const { return next >= schedule.size(); }
  int next_frame() const { return schedule.at(next); }  // the frame step() reads next
};

struct VideoTracker {
  int64_t hidden_dim = 0, mem_dim = 0, grid = 0;
  int num_maskmem = 7, max_obj_ptrs = 16;
  MemoryEncoder memory_encoder;
  MemoryAttention memory_attention;
  SamMlp obj_ptr_proj;      // 3 linear layers, ReLU between
  Tensor no_obj_ptr;        // [1, hidden]
  Tensor maskmem_tpos_enc;  // [num_maskmem, 1, 1, mem_dim]

  // Binds grounding_encoder.sam2_model.{memory_encoder.*, mask_downsample.*, memory_attention.*,
  // obj_ptr_proj.*, no_obj_ptr, maskmem_tpos_enc}.
  static VideoTracker load(Weights& w, const ModelConfig& c);

  // Returns frame t's SAM2 input, F32 [3, S, S] normalised. Called once per frame: first the
  // conditioning frames (ascending), then every other frame (ascending).
  using FrameSource = std::function<Tensor(int frame)>;
  // Receives frame t's low-resolution mask logits F32 [4g, 4g] for object k (frames in order,
  // objects in order within a frame), frame t = 0 … num_frames−1. The tensor is the caller's to keep.
  using MaskSink = std::function<void(int frame, int object, const Tensor& low_res_logits)>;
  // Optional, for work kept across requests on the same video: `lookup` returns frame t's image
  // features when they are already known (then FrameSource is not called for it); features that
  // are computed go to `store`.
  struct FeatureCache {
    std::function<std::optional<FrameFeatures>(int frame)> lookup;
    std::function<void(int frame, const FrameFeatures& features)> store;
  };

  // ---- whole video ------------------------------------------------------------------------
  // language_embeddings: F32 [objects, hidden] ([SEG] prompts, one per object, each tracked
  // independently). conditioning_frames: distinct frame indices in increasing order (at least one),
  // the frames that receive the language prompt.
  // Records, for object 0: sam.maskmem_features_frame{t} [mem_dim, g, g] and
  // sam.frame{t}.pix_feat_with_mem [hidden, g, g].
  // Runs new_state, then step() until done; after every frame it tells the context's allocator
  // that a period ended (buffers no later frame reuses go back to the system). Records into
  // ctx.recorder.
  void track(const Sam2Image& sam, const Tensor& language_embeddings, int num_frames,
             const std::vector<int>& conditioning_frames, const FrameSource& frames, const MaskSink& masks,
             const ExecContext& ctx = {}, const FeatureCache* cache = nullptr) const;

  // ---- one request, frame by frame --------------------------------------------------------
  // Checks the arguments (as track() takes them) and creates the request's state.
  TrackerState new_state(const Tensor& language_embeddings, int num_frames,
                         const std::vector<int>& conditioning_frames) const;
  // Reads frame state.next_frame() from `frames`, runs it for every object (a conditioning frame:
  // decode with the language prompt; any other: memory attention, decode without prompt; then, when
  // a later frame is tracked, encode its memory), and hands out the masks now due, in frame order.
  void step(TrackerState& state, const Sam2Image& sam, const FrameSource& frames, const MaskSink& masks,
            const ExecContext& ctx = {}, const FeatureCache* cache = nullptr) const;

 private:
  // One frame, one object: return the low-res logits and store the frame's memory (when
  // `encode_memory`) and object pointer in the object's bank.
  Tensor condition_frame(TrackerState& s, int64_t object, int frame, const Sam2Image& sam, const FrameFeatures& f,
                         bool encode_memory, const ExecContext& ctx) const;
  Tensor track_frame(TrackerState& s, int64_t object, int frame, const Sam2Image& sam, const FrameFeatures& f,
                     bool encode_memory, const ExecContext& ctx) const;
  // Memory-conditioned features of a tracked frame: F32 [hidden, g, g].
  Tensor condition_on_memory(const TrackerState& s, int64_t object, int frame, const FrameFeatures& f) const;
  Tensor object_pointer(const DecoderOutput& d) const;  // [hidden]
  // Memory features [mem_dim, g, g] of a frame and its chosen low-res mask, as bf16 tokens [g·g, mem_dim].
  Tensor encode_memory(const FrameFeatures& f, const Tensor& low_res_mask, int frame, const ExecContext& ctx) const;
};

}  // namespace sa2va::sam2
