#include "models/sam2/video_tracker.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "ops/ops.h"

namespace sa2va::sam2 {
namespace {

const std::string kPrefix = "grounding_encoder.sam2_model.";

}  // namespace

// ---- MemoryBank ---------------------------------------------------------------------------------

MemoryBank::MemoryBank(int num_maskmem, int max_obj_ptrs, int num_frames)
    : num_maskmem_(num_maskmem), max_obj_ptrs_(max_obj_ptrs), num_frames_(num_frames) {
  check(num_maskmem >= 1 && max_obj_ptrs >= 1, "video tracking: num_maskmem and max_obj_ptrs must be positive");
}

int MemoryBank::pointer_reach() const {
  const int P = num_frames_ > 0 ? std::min(num_frames_, max_obj_ptrs_) : max_obj_ptrs_;
  return P - 1;
}

const MemoryBank::Entry* MemoryBank::find(int frame) const {
  for (const Entry& e : conditioning_)
    if (e.frame == frame) return &e;
  for (const Entry& e : tracked_)
    if (e.frame == frame) return &e;
  return nullptr;
}

void MemoryBank::add_conditioning(int frame, Tensor memory, Tensor obj_ptr) {
  check(frame >= 0 && find(frame) == nullptr,
        "video tracking: frame " + std::to_string(frame) + " was already added to the memory bank");
  check(tracked_.empty() && (conditioning_.empty() || frame > conditioning_.back().frame),
        "video tracking: conditioning frame " + std::to_string(frame) +
            " must come in increasing order and before any tracked frame");
  conditioning_.push_back({frame, std::move(memory), std::move(obj_ptr)});
}

void MemoryBank::add_tracked(int frame, Tensor memory, Tensor obj_ptr) {
  check(frame >= 0 && find(frame) == nullptr && (tracked_.empty() || frame > tracked_.back().frame),
        "video tracking: frame " + std::to_string(frame) + " is not after the frames already tracked");
  tracked_.push_back({frame, std::move(memory), std::move(obj_ptr)});
  // The next frame to track is at least frame + 1: it reaches num_maskmem − 1 frames back for
  // memories and P − 1 frames back for pointers.
  const int next = frame + 1;
  const int keep_from = next - std::max(pointer_reach(), num_maskmem_ - 1);
  while (!tracked_.empty() && tracked_.front().frame < keep_from) tracked_.pop_front();
  for (Entry& e : tracked_)
    if (e.frame < next - (num_maskmem_ - 1)) e.memory = Tensor();
}

MemorySelection MemoryBank::select(int frame) const {
  MemorySelection s;
  for (const Entry& e : conditioning_)
    if (e.memory.defined()) s.memories.push_back({e.frame, num_maskmem_ - 1});
  for (int t_pos = 1; t_pos < num_maskmem_; ++t_pos) {
    const int prev = frame - (num_maskmem_ - t_pos);
    for (const Entry& e : tracked_)
      if (e.frame == prev && e.memory.defined()) s.memories.push_back({prev, num_maskmem_ - t_pos - 1});
  }
  for (const Entry& e : conditioning_)
    if (e.frame <= frame) s.pointers.push_back(e.frame);
  for (int d = 1; d <= pointer_reach(); ++d) {
    const int prev = frame - d;
    if (prev < 0) break;
    for (const Entry& e : tracked_)
      if (e.frame == prev) s.pointers.push_back(prev);
  }
  return s;
}

const Tensor& MemoryBank::memory(int frame) const {
  const Entry* e = find(frame);
  check(e && e->memory.defined(), "video tracking: no memory stored for frame " + std::to_string(frame));
  return e->memory;
}

const Tensor& MemoryBank::pointer(int frame) const {
  const Entry* e = find(frame);
  check(e != nullptr, "video tracking: no object pointer stored for frame " + std::to_string(frame));
  return e->obj_ptr;
}

int64_t MemoryBank::num_memories() const {
  int64_t n = 0;
  for (const Entry& e : conditioning_) n += e.memory.defined();
  for (const Entry& e : tracked_) n += e.memory.defined();
  return n;
}

int64_t MemoryBank::num_pointers() const { return static_cast<int64_t>(conditioning_.size() + tracked_.size()); }

int64_t MemoryBank::bytes() const {
  int64_t n = 0;
  auto add = [&](const Entry& e) {
    if (e.memory.defined()) n += static_cast<int64_t>(e.memory.nbytes());
    if (e.obj_ptr.defined()) n += static_cast<int64_t>(e.obj_ptr.nbytes());
  };
  for (const Entry& e : conditioning_) add(e);
  for (const Entry& e : tracked_) add(e);
  return n;
}

// ---- VideoTracker -------------------------------------------------------------------------------

VideoTracker VideoTracker::load(Weights& w, const ModelConfig& c) {
  const Sam2Config& s = c.sam2;
  check(s.backbone_stride == 16 && s.image_size > 0 && s.image_size % 16 == 0,
        "config.json: sam2_config needs backbone_stride 16 (the mask downsampler's stride) and an image_size "
        "divisible by it");
  check(s.mem_dim > 0 && s.hidden_dim % s.mem_dim == 0,
        "config.json: sam2_config.hidden_dim must be a multiple of mem_dim (object pointers are split into mem_dim tokens)");
  check(s.mem_out_dim == s.mem_dim && s.mem_attn_kv_dim == s.mem_dim,
        "config.json: sam2_config memory encoder out_dim and memory attention kv_in_dim must equal mem_dim");
  check(s.num_maskmem >= 1, "config.json: sam2_config.num_maskmem must be positive");
  VideoTracker t;
  t.hidden_dim = s.hidden_dim;
  t.mem_dim = s.mem_dim;
  t.grid = s.image_size / s.backbone_stride;
  t.num_maskmem = s.num_maskmem;
  const int64_t d = t.hidden_dim;
  t.memory_encoder = MemoryEncoder::load(w, s, kPrefix);
  t.memory_attention = MemoryAttention::load(w, s, kPrefix);
  t.obj_ptr_proj = SamMlp::load(w, kPrefix + "obj_ptr_proj.", {d, d, d, d});
  t.no_obj_ptr = w.f32(kPrefix + "no_obj_ptr", {1, d}, Init::Small);
  t.maskmem_tpos_enc = w.f32(kPrefix + "maskmem_tpos_enc", {t.num_maskmem, 1, 1, t.mem_dim}, Init::Small);
  return t;
}

Tensor VideoTracker::object_pointer(const DecoderOutput& d) const {
  // fixed_no_obj_ptr, hard occlusion: the projected token when the object is present, else no_obj_ptr.
  if (d.object_score_logit > 0) return obj_ptr_proj.forward(d.sam_token.contiguous().view({1, hidden_dim})).view({hidden_dim});
  return no_obj_ptr.clone().view({hidden_dim});
}

Tensor VideoTracker::encode_memory(const FrameFeatures& f, const Tensor& low_res_mask, int frame,
                                   const ExecContext& ctx) const {
  const int64_t S = grid * 16, low = low_res_mask.size(-1);
  const Tensor high_res = ops::interpolate_bilinear(low_res_mask.contiguous().view({1, low, low}), S, S, false);
  const Tensor features = memory_encoder.forward(f.fpn2, high_res);  // [mem_dim, g, g], bf16-rounded
  ctx.record("sam.maskmem_features_frame" + std::to_string(frame), features);
  const Tensor tokens = TokenMap::from_chw(features).tokens;
  // Kept as bf16 on the host (exact: already bf16 values; half the bank's memory); a GPU keeps the
  // same values in f32.
  return tokens.device().is_cpu() ? tokens.to(DType::BF16) : tokens;
}

Tensor VideoTracker::condition_on_memory(const TrackerState& s, int64_t object, int frame,
                                        const FrameFeatures& f) const {
  check(f.fpn2.defined() && f.fpn2.shape() == Shape({hidden_dim, grid, grid}) && f.pos2.shape() == f.fpn2.shape(),
        "video tracking: frame features must be [" + std::to_string(hidden_dim) + ", " + std::to_string(grid) + ", " +
            std::to_string(grid) + "]");
  const MemoryBank& bank = s.banks[static_cast<size_t>(object)];
  const MemorySelection sel = bank.select(frame);
  check(!sel.memories.empty(), "video tracking: frame " + std::to_string(frame) + " has no memory to attend to");
  const int64_t HW = grid * grid, C = mem_dim, tokens_per_ptr = hidden_dim / mem_dim;
  const int64_t n_spatial = static_cast<int64_t>(sel.memories.size()) * HW;
  const int64_t n_ptr_tokens = static_cast<int64_t>(sel.pointers.size()) * tokens_per_ptr;
  const Device device = f.fpn2.device();
  Tensor memory = Tensor::empty({n_spatial + n_ptr_tokens, C}, DType::F32, device);
  Tensor memory_pos = Tensor::zeros({n_spatial + n_ptr_tokens, C}, DType::F32, device);

  // Spatial memories: tokens + (sine PE + temporal embedding of their slot).
  const Tensor& spatial_pe = s.memory_pos_enc;  // [HW, C]
  check(spatial_pe.defined() && spatial_pe.numel() == HW * C, "video tracking: the state has no memory position encoding");
  for (size_t i = 0; i < sel.memories.size(); ++i) {
    const MemoryRef& m = sel.memories[i];
    const Tensor mem = bank.memory(m.frame).to(DType::F32);
    check(mem.numel() == HW * C, "video tracking: stored memory has the wrong size");
    float* rows = memory.kernel_f32() + static_cast<int64_t>(i) * HW * C;
    float* pos = memory_pos.kernel_f32() + static_cast<int64_t>(i) * HW * C;
    ops::copy_rows(mem.kernel_f32(), C, rows, C, HW, C);
    ops::copy_rows(spatial_pe.kernel_f32(), C, pos, C, HW, C);
    ops::add_rows(pos, maskmem_tpos_enc.kernel_f32() + static_cast<int64_t>(m.tpos_index) * C, HW, C);
  }
  // Object pointers: each [hidden] pointer becomes hidden/C consecutive tokens (channels kC..kC+C−1);
  // their position encoding is zero.
  for (size_t j = 0; j < sel.pointers.size(); ++j) {
    const Tensor ptr = bank.pointer(sel.pointers[j]).contiguous();
    ops::copy_rows(ptr.kernel_f32(), hidden_dim, memory.kernel_f32() + n_spatial * C + static_cast<int64_t>(j) * hidden_dim,
                   hidden_dim, 1, hidden_dim);
  }

  const TokenMap curr = TokenMap::from_chw(f.fpn2);
  const Tensor curr_pos = TokenMap::from_chw(f.pos2).tokens;
  const TokenMap out{memory_attention.forward(curr.tokens, curr_pos, memory, memory_pos, n_ptr_tokens, grid, grid),
                     grid, grid};
  return out.to_chw();
}

Tensor VideoTracker::condition_frame(TrackerState& s, int64_t object, int frame, const Sam2Image& sam,
                                     const FrameFeatures& f, bool encode, const ExecContext& ctx) const {
  const DecoderOutput d = sam.decode_conditioning(f, s.prompts.kernel_f32() + object * hidden_dim, ctx.silent());
  Tensor memory = encode ? encode_memory(f, d.low_res_mask, frame, ctx) : Tensor();
  s.banks[static_cast<size_t>(object)].add_conditioning(frame, std::move(memory), object_pointer(d));
  return d.low_res_mask;
}

Tensor VideoTracker::track_frame(TrackerState& s, int64_t object, int frame, const Sam2Image& sam,
                                 const FrameFeatures& f, bool encode, const ExecContext& ctx) const {
  const Tensor with_memory = condition_on_memory(s, object, frame, f);
  ctx.record("sam.frame" + std::to_string(frame) + ".pix_feat_with_mem", with_memory);
  const DecoderOutput d = sam.decode(with_memory, f, nullptr, ctx.silent());
  Tensor memory = encode ? encode_memory(f, d.low_res_mask, frame, ctx) : Tensor();
  s.banks[static_cast<size_t>(object)].add_tracked(frame, std::move(memory), object_pointer(d));
  return d.low_res_mask;
}

TrackerState VideoTracker::new_state(const Tensor& language_embeddings, int num_frames,
                                     const std::vector<int>& conditioning_frames) const {
  check(num_frames >= 1, "video tracking: the video has no frames");
  check(!conditioning_frames.empty(), "video tracking: at least one conditioning frame is needed");
  TrackerState s;
  s.num_frames = num_frames;
  s.conditioning_frames = conditioning_frames;
  s.is_conditioning.assign(static_cast<size_t>(num_frames), false);
  for (size_t i = 0; i < conditioning_frames.size(); ++i) {
    const int c = conditioning_frames[i];
    check(c >= 0 && c < num_frames && (i == 0 || c > conditioning_frames[i - 1]),
          "video tracking: conditioning frame " + std::to_string(c) + " is out of range [0, " +
              std::to_string(num_frames) + ") or not in increasing order");
    s.is_conditioning[static_cast<size_t>(c)] = true;
  }
  check(language_embeddings.defined() && language_embeddings.dtype() == DType::F32 &&
            language_embeddings.dim() == 2 && language_embeddings.size(1) == hidden_dim,
        "video tracking: language embeddings must be F32 [objects, " + std::to_string(hidden_dim) + "]");
  s.prompts = language_embeddings.contiguous();
  const int64_t objects = s.prompts.size(0);
  s.banks.assign(static_cast<size_t>(objects), MemoryBank(num_maskmem, max_obj_ptrs, num_frames));
  for (int t = 0; t < num_frames; ++t)
    if (!s.is_conditioning[static_cast<size_t>(t)]) s.last_tracked = t;

  // 1. Conditioning frames: language prompt, no memory; then their memory. 2. Every other frame, forward.
  s.schedule = conditioning_frames;
  for (int t = 0; t <= s.last_tracked; ++t)
    if (!s.is_conditioning[static_cast<size_t>(t)]) s.schedule.push_back(t);
  s.held.resize(conditioning_frames.size());
  if (s.last_tracked >= 0) s.memory_pos_enc = TokenMap::from_chw(position_embedding_sine(mem_dim, grid, grid)).tokens;
  return s;
}

void VideoTracker::step(TrackerState& s, const Sam2Image& sam, const FrameSource& frames, const MaskSink& masks,
                        const ExecContext& ctx, const FeatureCache* cache) const {
  check(!s.done(), "video tracking: every frame of the video has been tracked");
  const int t = s.next_frame();
  const int64_t S = grid * 16;
  std::optional<FrameFeatures> known = cache && cache->lookup ? cache->lookup(t) : std::nullopt;
  if (!known) {
    const Tensor image = frames(t);
    check(image.defined() && image.dtype() == DType::F32 && image.shape() == Shape{3, S, S},
          "video tracking: frame " + std::to_string(t) + " must be F32 [3, " + std::to_string(S) + ", " +
              std::to_string(S) + "]");
    known = sam.encode(image, ctx.silent());
    if (cache && cache->store) cache->store(t, *known);
  }
  const FrameFeatures& f = *known;
  if (s.is_conditioning[static_cast<size_t>(t)]) {
    // Conditioning frames come first in the schedule: step `next` is conditioning frame `next`.
    std::vector<Tensor>& held = s.held[s.next];
    for (int64_t k = 0; k < s.objects(); ++k)
      held.push_back(condition_frame(s, k, t, sam, f, s.last_tracked >= 0, k == 0 ? ctx : ctx.silent()));
  } else {
    for (int64_t k = 0; k < s.objects(); ++k)
      masks(t, static_cast<int>(k), track_frame(s, k, t, sam, f, t < s.last_tracked, k == 0 ? ctx : ctx.silent()));
    s.next_out = t + 1;
  }
  ++s.next;
  // Hand out the held masks of conditioning frames that are now next in frame order.
  while (s.next_held < s.held.size() && s.conditioning_frames[s.next_held] == s.next_out &&
         s.held[s.next_held].size() == static_cast<size_t>(s.objects())) {
    for (int64_t k = 0; k < s.objects(); ++k)
      masks(s.next_out, static_cast<int>(k), s.held[s.next_held][static_cast<size_t>(k)]);
    s.held[s.next_held].clear();
    ++s.next_held;
    ++s.next_out;
  }
}

void VideoTracker::track(const Sam2Image& sam, const Tensor& language_embeddings, int num_frames,
                         const std::vector<int>& conditioning_frames, const FrameSource& frames,
                         const MaskSink& masks, const ExecContext& ctx, const FeatureCache* cache) const {
  TrackerState state = new_state(language_embeddings, num_frames, conditioning_frames);
  while (!state.done()) {
    step(state, sam, frames, masks, ctx, cache);
    ctx.end_of_period();  // one frame: buffers not reused by the next one are returned
  }
}

}  // namespace sa2va::sam2
