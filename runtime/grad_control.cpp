// Gradient clipping and the loss scaler (vkoptim::GradClip, GradScalerOptions): validation, the
// control record the host writes and the reports the device writes (shaders/vko_grads.glsl).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "optimizer_state.hpp"

namespace vkoptim {
namespace detail {
namespace {

void refuse(const std::string& what) {
  throw Error(Status::invalid_argument, what);
}

}  // namespace

void validate_clip(const GradClip& c, size_t group_count) {
  auto num = [](double v) { return std::to_string(v); };
  if (std::isnan(c.max_norm) || c.max_norm < 0)
    refuse("GradClip.max_norm = " + num(c.max_norm) + ": must be >= 0 (0: no norm clipping)");
  if (std::isnan(c.norm_type) || c.norm_type <= 0)
    refuse("GradClip.norm_type = " + num(c.norm_type) + ": must be > 0 or INFINITY");
  if (std::isnan(c.clip_value) || c.clip_value < 0)
    refuse("GradClip.clip_value = " + num(c.clip_value) + ": must be >= 0 (0: no value clipping)");
  for (size_t i = 0; i < c.groups.size(); ++i) {
    if (c.groups[i] >= group_count)
      refuse("GradClip.groups[" + std::to_string(i) + "] = " + std::to_string(c.groups[i]) + ": the optimizer has " +
             std::to_string(group_count) + " groups");
    if (std::find(c.groups.begin(), c.groups.begin() + i, c.groups[i]) != c.groups.begin() + i)
      refuse("GradClip.groups[" + std::to_string(i) + "] = " + std::to_string(c.groups[i]) + " is listed twice");
  }
}

void validate_scaler(const GradScalerOptions& s) {
  auto num = [](double v) { return std::to_string(v); };
  if (!std::isfinite(s.init_scale) || s.init_scale <= 0 || float(s.init_scale) == 0 || std::isinf(float(s.init_scale)))
    refuse("GradScalerOptions.init_scale = " + num(s.init_scale) + ": must be a positive finite float");
  if (!std::isfinite(s.growth_factor) || s.growth_factor <= 1)
    refuse("GradScalerOptions.growth_factor = " + num(s.growth_factor) + ": must be finite and > 1");
  if (!std::isfinite(s.backoff_factor) || s.backoff_factor <= 0 || s.backoff_factor >= 1)
    refuse("GradScalerOptions.backoff_factor = " + num(s.backoff_factor) + ": must be in (0, 1)");
  if (s.growth_interval == 0) refuse("GradScalerOptions.growth_interval = 0: must be >= 1");
}

void OptimizerState::check_grad_control() const {
  try {
    check_replayable();
  } catch (const Error& e) {
    throw Error(e.status(), std::string("gradient clipping and the loss scaler run in replayable steps: ") + e.what());
  }
  const uint32_t width = ctx->caps.access_width();
  if (ctx->caps.workgroup_size * width % 256 != 0)
    throw Error(Status::unsupported, "gradient clipping and the loss scaler: workgroup_size " +
                                         std::to_string(ctx->caps.workgroup_size) + " * " + std::to_string(width) +
                                         " is not a multiple of 256 (the fixed 256-element chunks of the norm)");
}

}  // namespace detail

const GradClip& Optimizer::grad_clip() const {
  return state_->clip;
}

void Optimizer::set_grad_clip(const GradClip& clip) {
  auto& s = *state_;
  detail::validate_clip(clip, s.groups.size());
  const GradClip before = s.clip;
  s.clip = clip;
  try {
    if (s.grad_control()) s.check_grad_control();
  } catch (...) {
    s.clip = before;
    throw;
  }
  s.write_control(false);
}

const GradScalerOptions& Optimizer::grad_scaler() const {
  return state_->scaler;
}

void Optimizer::set_grad_scaler(const GradScalerOptions& scaler) {
  auto& s = *state_;
  if (scaler.enabled) detail::validate_scaler(scaler);
  const GradScalerOptions before = s.scaler;
  s.scaler = scaler;
  try {
    if (s.grad_control()) s.check_grad_control();
  } catch (...) {
    s.scaler = before;
    throw;
  }
  s.write_control(scaler.enabled != before.enabled);
}

float Optimizer::loss_scale() {
  auto& s = *state_;
  if (!s.scaler.enabled) return 1.0f;
  s.finalize();
  s.ctx->wait_idle();
  float scale;
  std::memcpy(&scale, s.step_words() + detail::kControlBase + detail::kControlScale, 4);
  return scale;
}

BufferRange Optimizer::loss_scale_buffer() {
  auto& s = *state_;
  s.finalize();
  BufferRange r;
  r.buffer = s.step_buffer->buffer;
  r.offset = (detail::kControlBase + detail::kControlScale) * 4;
  r.count = 1;
  r.dtype = DType::f32;
  r.buffer_size = s.step_buffer->size;
  r.device_address = s.use_bda;
  return r;
}

// ---- Steps in two parts (sharded optimizers) --------------------------------------------------
namespace detail {
bool OptimizerState::sharded() const {
  return std::any_of(tensors.begin(), tensors.end(), [](const TensorRecord& t) { return t.tensor.whole_count != 0; });
}
bool OptimizerState::tensor_exchange() const {
  if (!sharded()) return false;
  const auto passes = rule->passes(groups[0]);
  return std::any_of(passes.begin(), passes.end(),
                     [](const RulePass& p) { return p.kind == RulePass::Kind::reduce_tensors; });
}

bool OptimizerState::factors() const {
  const auto passes = rule->passes(groups[0]);
  return std::any_of(passes.begin(), passes.end(),
                     [](const RulePass& p) { return p.kind == RulePass::Kind::factor_stats; });
}
bool OptimizerState::rank1_sharded() const {
  return sharded() && std::any_of(precision.begin(), precision.end(),
                                  [](const PrecisionOptions& p) { return p.rank1_second_moment; });
}
bool OptimizerState::matrix_sharded() const {
  return sharded() && std::any_of(groups.begin(), groups.end(),
                                  [&](const RuleOptions& o) { return rule->matrix_dispatches(o) > 0; });
}
bool OptimizerState::matrix_exchange() const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const TensorRecord& t) { return split_matrix(t); });
}
bool OptimizerState::factor_part() const {
  return sharded() && (factors() || rank1_sharded() || matrix_sharded());
}
bool OptimizerState::factor_exchange() const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const TensorRecord& t) { return split_factored(t); }) ||
         rank1_exchange() || matrix_exchange();
}
bool OptimizerState::rank1_exchange() const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const TensorRecord& t) { return split_rank1(t); });
}
uint64_t OptimizerState::factor_exchange_floats(const TensorRecord& t) const {
  // (At most one kind per optimizer: one rule each, and rank-1 second moments are refused for
  // rules of more than one pass, Adafactor's and Muon's.)
  if (split_factored(t)) return 2 * (factor_rows(t) + factor_cols(t));
  if (rank1_sharded() && t.tensor.rows == 0 && t.tensor.whole_rows > 0) return kRank1Sets * rank1_floats(t);
  if (split_matrix(t)) return t.tensor.whole_count;
  return 0;
}
OptimizerState::FactorTransfers OptimizerState::factor_transfers() const {
  FactorTransfers x;
  VkDeviceSize at = factor_exchange_offset(tensors.size());
  for (const TensorRecord& t : tensors) {
    if (split_rank1(t))
      x.out.push_back({arenas[t.absmax.arena]->buffer, exchange->buffer, t.absmax.offset + 4 * rank1_base(t), at,
                       4 * kRank1Sets * rank1_floats(t)});
    if (split_matrix(t)) {
      const StateRegion& slot = t.slots[rule->matrix_slot()];
      const VkDeviceSize bytes = 4 * t.tensor.whole_count;
      x.fills.push_back({arenas[slot.arena]->buffer, slot.offset, bytes, 0});
      x.out.push_back({arenas[slot.arena]->buffer, exchange->buffer, slot.offset, at, bytes});
    }
    at += 4 * factor_exchange_floats(t);
  }
  return x;
}

bool OptimizerState::sam_exchange() const {
  return sharded() && std::any_of(sam.begin(), sam.end(), [](const SamOptions& o) { return o.rho > 0; });
}
}  // namespace detail

namespace {
// `count` floats from `offset` bytes into the optimizer's host-visible exchange buffer.
BufferRange exchange_range(const detail::OptimizerState& s, VkDeviceSize offset, size_t count) {
  BufferRange r;
  r.buffer = s.exchange->buffer;
  r.offset = offset;
  r.count = count;
  r.dtype = DType::f32;
  r.buffer_size = s.exchange->size;
  return r;
}
}  // namespace

GradSums combine_grad_sums(const GradClip& clip, const GradSums& a, const GradSums& b) {
  const bool inf_norm = std::isinf(clip.norm_type);
  return {inf_norm ? std::max(a.norm_sum, b.norm_sum) : a.norm_sum + b.norm_sum, std::max(a.nonfinite, b.nonfinite)};
}

GradSums Optimizer::grad_sums() {
  auto& s = *state_;
  s.finalize();
  s.ctx->wait_idle();
  const uint32_t* words = s.step_words() + detail::kControlBase + detail::kControlSums;
  GradSums out;
  std::memcpy(&out.norm_sum, &words[0], 4);
  std::memcpy(&out.nonfinite, &words[1], 4);
  return out;
}

void Optimizer::set_grad_sums(const GradSums& combined) {
  auto& s = *state_;
  s.finalize();
  s.ctx->wait_idle();
  uint32_t* words = s.step_words() + detail::kControlBase + detail::kControlSums;
  std::memcpy(&words[0], &combined.norm_sum, 4);
  std::memcpy(&words[1], &combined.nonfinite, 4);
}

BufferRange Optimizer::grad_sums_buffer() {
  BufferRange r = loss_scale_buffer();
  r.offset = (detail::kControlBase + detail::kControlSums) * 4;
  r.count = 2;
  return r;
}

GradSums Optimizer::step_grad_sums() {
  state_->submit(detail::OptimizerState::Mode::step, StepPart::grad_sums);
  return grad_sums();
}

size_t Optimizer::grad_chunk_count() const {
  size_t chunks = 0;
  for (const auto& t : state_->tensors) chunks += (t.tensor.param.count + 255) / 256;
  return chunks;
}

std::vector<GradSums> Optimizer::step_grad_chunks() {
  step_grad_sums();  // (the part's chunk sums stay in the scratch buffer, before their reduction's levels)
  auto& s = *state_;
  const auto [first, count] = s.scratch_layout.grad_levels.at(0);
  std::vector<GradSums> out(count);
  static_assert(sizeof(GradSums) == 8);
  s.ctx->read_buffer(s.scratch->buffer, s.scratch.get(), VkDeviceSize(first) * 8, out.data(), out.size() * 8);
  return out;
}

void Optimizer::step_finish(const GradSums& combined) {
  const auto& s = *state_;
  if (!s.grad_control())
    throw Error(Status::invalid_state,
                "step_finish(GradSums): this optimizer has no gradient clipping or loss scaler to finish with");
  if (s.tensor_exchange())
    throw Error(Status::invalid_state,
                std::string("step_finish(GradSums): this shard's ") + s.rule->name() +
                    " needs the ranks' per-tensor sums too: set_grad_sums(total), step_tensor_sums(), then "
                    "step_finish(the combined tensor sums)");
  if (s.rank1_exchange())
    throw Error(Status::invalid_state,
                "step_finish(GradSums): this shard's rank-1 second moments need the ranks' maxima too: "
                "set_grad_sums(total), step_factor_sums(), set_factor_sums(combined), then step_finish()");
  set_grad_sums(combined);
  state_->submit(detail::OptimizerState::Mode::step, StepPart::finish);
  throw_if_nonfinite_norm("step_finish");
}

std::vector<float> Optimizer::tensor_sums() {
  auto& s = *state_;
  s.finalize();
  if (!s.tensor_exchange())
    throw Error(Status::invalid_state,
                "tensor_sums: this optimizer exchanges no per-tensor sums (StepPart::tensor_sums)");
  s.ctx->wait_idle();
  std::vector<float> out(2 * s.tensors.size());
  std::memcpy(out.data(), s.exchange->mapped, out.size() * 4);
  return out;
}

void Optimizer::set_tensor_sums(std::span<const float> combined) {
  auto& s = *state_;
  s.finalize();
  if (!s.tensor_exchange())
    throw Error(Status::invalid_state,
                "set_tensor_sums: this optimizer exchanges no per-tensor sums (StepPart::tensor_sums)");
  if (combined.size() != 2 * s.tensors.size())
    throw Error(Status::invalid_argument, "set_tensor_sums: " + std::to_string(combined.size()) +
                                              " floats, but the optimizer has " + std::to_string(s.tensors.size()) +
                                              " tensors (two floats each)");
  s.ctx->wait_idle();
  std::memcpy(s.exchange->mapped, combined.data(), combined.size() * 4);
}

BufferRange Optimizer::tensor_sums_buffer() {
  auto& s = *state_;
  s.finalize();
  if (!s.tensor_exchange())
    throw Error(Status::invalid_state,
                "tensor_sums_buffer: this optimizer exchanges no per-tensor sums (StepPart::tensor_sums)");
  return exchange_range(s, 0, 2 * s.tensors.size());
}

std::vector<float> Optimizer::step_tensor_sums() {
  auto& s = *state_;
  // (Without the factor part the tensor part would take stale row and column sums, and the
  // gradient control's outcome would not be computed.)
  if (s.factor_exchange() && !s.factor_part_done)
    throw Error(Status::invalid_state,
                std::string("step_tensor_sums: this shard's ") + s.rule->name() +
                    (s.matrix_exchange() ? " takes every rank's part of its split matrices' updates first"
                                         : " takes every rank's row and column sums first") +
                    ": step_factor_sums(), set_factor_sums(combined), then step_tensor_sums()");
  s.submit(detail::OptimizerState::Mode::step, StepPart::tensor_sums);
  s.factor_part_done = false;
  return tensor_sums();
}

std::vector<float> Optimizer::step_tensor_chunks() {
  step_tensor_sums();  // (the part's chunk partials stay in the scratch buffer, before their reduction)
  auto& s = *state_;
  std::vector<float> out(2 * size_t(s.scratch_layout.grad_levels.at(0).second));
  s.ctx->read_buffer(s.scratch->buffer, s.scratch.get(), VkDeviceSize(s.scratch_layout.partials) * 8, out.data(),
                     out.size() * 4);
  return out;
}

void Optimizer::step_finish() {
  auto& s = *state_;
  if (!s.rank1_sharded() || s.tensor_exchange())
    throw Error(Status::invalid_state,
                "step_finish(): finishes the step of a shard with rank-1 second moments after its factor part; this "
                "optimizer finishes with step_finish(GradSums) or step_finish(tensor sums), or steps whole");
  if (s.rank1_exchange() && !s.factor_part_done)
    throw Error(Status::invalid_state,
                "step_finish(): this shard's rank-1 second moments take every rank's maxima first: "
                "step_factor_sums(), set_factor_sums(combined), then step_finish()");
  s.submit(detail::OptimizerState::Mode::step, StepPart::finish);
  s.factor_part_done = false;
  throw_if_nonfinite_norm("step_finish");
}

void Optimizer::step_finish(std::span<const float> combined_tensor_sums) {
  set_tensor_sums(combined_tensor_sums);
  state_->submit(detail::OptimizerState::Mode::step, StepPart::finish);
  throw_if_nonfinite_norm("step_finish");
}

namespace {
void require_factor_part(const detail::OptimizerState& s, const char* what) {
  if (!s.factor_part())
    throw Error(Status::invalid_state,
                std::string(what) +
                    ": this optimizer exchanges no row or column sums, maxima or matrix updates "
                    "(StepPart::factor_sums: a sharded optimizer of Adafactor or Muon, or with rank-1 second "
                    "moments)");
}
}  // namespace

size_t Optimizer::factor_sum_count() const {
  size_t floats = 0;
  for (const auto& t : state_->tensors) floats += size_t(state_->factor_exchange_floats(t));
  return floats;
}

std::vector<float> Optimizer::factor_sums() {
  auto& s = *state_;
  s.finalize();
  require_factor_part(s, "factor_sums");
  s.ctx->wait_idle();
  // (std::copy: an optimizer without split pieces has none, and memcpy takes no null pointers.)
  const float* sums = reinterpret_cast<const float*>(static_cast<const uint8_t*>(s.exchange->mapped) +
                                                     s.factor_exchange_offset(s.tensors.size()));
  return std::vector<float>(sums, sums + factor_sum_count());
}

void Optimizer::set_factor_sums(std::span<const float> combined) {
  auto& s = *state_;
  s.finalize();
  require_factor_part(s, "set_factor_sums");
  if (combined.size() != factor_sum_count())
    throw Error(Status::invalid_argument,
                "set_factor_sums: " + std::to_string(combined.size()) +
                    " floats, but the optimizer's split pieces have " + std::to_string(factor_sum_count()) +
                    (s.rank1_sharded()    ? " (three sets of maxima per row and column of "
                                            "each whole tensor)"
                     : s.matrix_sharded() ? " (the whole matrix's update of each)"
                                          : " (two per row and column of each whole tensor)"));
  s.ctx->wait_idle();
  std::copy(
      combined.begin(), combined.end(),
      reinterpret_cast<float*>(static_cast<uint8_t*>(s.exchange->mapped) + s.factor_exchange_offset(s.tensors.size())));
}

BufferRange Optimizer::factor_sums_buffer() {
  auto& s = *state_;
  s.finalize();
  require_factor_part(s, "factor_sums_buffer");
  return exchange_range(s, s.factor_exchange_offset(s.tensors.size()), factor_sum_count());
}

std::vector<float> Optimizer::step_factor_sums() {
  require_factor_part(*state_, "step_factor_sums");
  // (No split matrix to exchange here: nothing to submit. Split pieces kept blockwise still have
  // their places in a rank-1 optimizer's list, as zeros.)
  if (!state_->factor_exchange()) return std::vector<float>(factor_sum_count(), 0.0f);
  state_->submit(detail::OptimizerState::Mode::step, StepPart::factor_sums);
  state_->factor_part_done = true;
  return factor_sums();
}

namespace {
void require_sam_exchange(const detail::OptimizerState& s, const char* what) {
  if (!s.sam_exchange())
    throw Error(Status::invalid_state, std::string(what) +
                                           ": this optimizer exchanges no SAM sums (a shard, ParamTensor::whole_count, "
                                           "with sam.rho > 0 does)");
}
}  // namespace

std::vector<float> Optimizer::sam_sums() {
  auto& s = *state_;
  s.finalize();
  require_sam_exchange(s, "sam_sums");
  s.ctx->wait_idle();
  std::vector<float> pairs(2 * s.groups.size()), out(s.groups.size());
  std::memcpy(pairs.data(), s.exchange->mapped, pairs.size() * 4);
  for (size_t g = 0; g < out.size(); ++g) out[g] = s.sam[g].rho > 0 ? pairs[2 * g] : 0.0f;  // (no sums without SAM)
  return out;
}

void Optimizer::set_sam_sums(std::span<const float> combined) {
  auto& s = *state_;
  s.finalize();
  require_sam_exchange(s, "set_sam_sums");
  if (combined.size() != s.groups.size())
    throw Error(Status::invalid_argument, "set_sam_sums: " + std::to_string(combined.size()) +
                                              " floats, but the optimizer has " + std::to_string(s.groups.size()) +
                                              " groups (one sum each)");
  s.ctx->wait_idle();
  std::vector<float> pairs(2 * s.groups.size(), 0.0f);
  for (size_t g = 0; g < combined.size(); ++g) pairs[2 * g] = combined[g];
  std::memcpy(s.exchange->mapped, pairs.data(), pairs.size() * 4);
}

BufferRange Optimizer::sam_sums_buffer() {
  auto& s = *state_;
  s.finalize();
  require_sam_exchange(s, "sam_sums_buffer");
  return exchange_range(s, 0, 2 * s.groups.size());
}

std::vector<float> Optimizer::sam_perturb_sums() {
  state_->submit(detail::OptimizerState::Mode::perturb, StepPart::grad_sums);
  return sam_sums();
}

void Optimizer::sam_perturb_finish(std::span<const float> combined) {
  set_sam_sums(combined);
  state_->submit(detail::OptimizerState::Mode::perturb, StepPart::finish);
}

std::vector<StepReport> Optimizer::step_reports() const {
  const auto& s = *state_;
  std::vector<StepReport> out;
  if (!s.step_buffer) return out;
  const uint32_t* control = s.step_words() + detail::kControlBase;
  const uint32_t steps = control[detail::kControlSteps];
  const uint32_t n = std::min(steps, detail::kRingSlots);
  for (uint32_t k = steps - n; k < steps; ++k) {
    const uint32_t* slot = control + detail::kControlWords + (k % detail::kRingSlots) * detail::kRingWords;
    StepReport r;
    r.step = slot[0];
    std::memcpy(&r.total_norm, &slot[1], 4);
    std::memcpy(&r.clip_coef, &slot[2], 4);
    std::memcpy(&r.scale, &slot[3], 4);
    r.found_inf = slot[4] != 0;
    r.skipped = slot[5] != 0;
    r.nonfinite_norm = slot[6] != 0;
    r.growth_tracker = slot[7];
    out.push_back(r);
  }
  return out;
}

}  // namespace vkoptim
