// vkoptim::Optimizer: parameter groups and their validation, state names, the public API.
#include "vkoptim/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "buffer_checks.hpp"
#include "optimizer_state.hpp"
#include "schedule.hpp"

namespace vkoptim {
namespace detail {

std::string tensor_label(size_t group, size_t index_in_group) {
  return "group " + std::to_string(group) + " tensor " + std::to_string(index_in_group);
}

namespace {
const char* state_dtype_name(StateDType d) {
  switch (d) {
    case StateDType::f32:
      return "f32";
    case StateDType::bf16:
      return "bf16";
    case StateDType::q8:
      return "q8";
    case StateDType::q4:
      return "q4";
  }
  return "?";
}

}  // namespace

std::vector<uint32_t> rule_slot_codes(const Rule& r, const RuleOptions& options, const PrecisionOptions& p,
                                      size_t group, bool throw_on_error) {
  const auto names = r.slot_names();
  const auto active = r.active_slots(options);
  std::vector<uint32_t> codes(names.size(), kF32);
  auto fail = [&](const std::string& why) {
    if (throw_on_error)
      throw Error(Status::invalid_argument, std::string(r.name()) + " group " + std::to_string(group) + ": " + why);
  };
  auto valid = [](StateDType d) {
    return d == StateDType::f32 || d == StateDType::bf16 || d == StateDType::q8 || d == StateDType::q4;
  };
  if (!valid(p.state)) fail("precision.state = " + std::to_string(uint32_t(p.state)) + " is not a StateDType");
  if (p.rounding != Rounding::nearest_even && p.rounding != Rounding::stochastic)
    fail("precision.rounding = " + std::to_string(uint32_t(p.rounding)) + " is not a Rounding");
  for (const auto& o : p.slots) {
    if (std::find(names.begin(), names.end(), o.name) == names.end())
      fail("precision.slots names \"" + o.name + "\", which is not a state of the rule");
    if (!valid(o.dtype))
      fail("precision.slots[\"" + o.name + "\"] = " + std::to_string(uint32_t(o.dtype)) + " is not a StateDType");
  }
  for (size_t k = 0; k < names.size(); ++k) {
    StateDType d = p.state;
    bool explicit_choice = false;
    for (const auto& o : p.slots)
      if (o.name == names[k]) {
        d = o.dtype;
        explicit_choice = true;
      }
    if (r.slot_transient(k)) {  // a step's intermediate, always f32
      if (explicit_choice && d != StateDType::f32)
        fail("precision.slots[\"" + names[k] + "\"]: " + names[k] + " is not state (always f32)");
      continue;
    }
    if (d == StateDType::f32 || !active[k]) continue;
    const std::string what = std::string(names[k]) + " as " + state_dtype_name(d);
    if (r.slot_per_tensor(k)) {
      fail(what + ": factored statistics are kept in f32");
      continue;
    }
    if (d == StateDType::bf16) {
      codes[k] = kBF16;
      continue;
    }
    const uint32_t map = r.q8_map(options, k);
    if (!map) {
      fail(what +
           ": this state cannot be quantized (8-bit and 4-bit: Adam/AdamW exp_avg and exp_avg_sq, Lion exp_avg, "
           "SGD momentum_buffer)" +
           (explicit_choice ? "" : "; set it apart in precision.slots"));
      continue;
    }
    codes[k] = d == StateDType::q4 ? four_bit(map) : map;
  }
  return codes;
}

void validate_precision(const Rule& r, const RuleOptions& options, const PrecisionOptions& p, size_t group,
                        const DeviceCaps& caps) {
  if (p.kahan_summation && (p.master_weights || p.rounding == Rounding::stochastic))
    throw Error(Status::invalid_argument, std::string(r.name()) + " group " + std::to_string(group) +
                                              ": precision.kahan_summation = true " +
                                              (p.master_weights ? "with master_weights" : "with stochastic rounding") +
                                              ": the compensation replaces both (choose one)");
  const auto codes = rule_slot_codes(r, options, p, group, true);
  if (p.rank1_second_moment) {
    const std::string where = std::string(r.name()) + " group " + std::to_string(group) + ": ";
    if (std::find(codes.begin(), codes.end(), uint32_t(kQ4Unsigned)) == codes.end())
      throw Error(Status::invalid_argument, where +
                                                "precision.rank1_second_moment needs a 4-bit second moment (Adam/AdamW "
                                                "exp_avg_sq as q4)");
    const auto passes = r.passes(options);
    if (passes.size() != 1 || passes[0].kind != RulePass::Kind::elementwise)
      throw Error(Status::invalid_argument,
                  where + "precision.rank1_second_moment is not available with cautious steps");
  }
  const auto quantized = std::count_if(codes.begin(), codes.end(), is_quantized);
  if (quantized == 0) return;
  const std::string where = std::string(r.name()) + " group " + std::to_string(group) + ": ";
  const auto four = std::count_if(codes.begin(), codes.end(), is_q4);
  // One block size per group: its dispatch reduces blocks of one size (shaders/vko_base.glsl).
  if (four != 0 && four != quantized)
    throw Error(Status::invalid_argument, where + "precision mixes 8-bit and 4-bit state; a group keeps one of them");
  const uint32_t block = four ? 128 : 256;
  const std::string kind = four ? "4-bit" : "8-bit";
  const uint32_t width = caps.access_width();
  if (caps.workgroup_size * width % block != 0)
    throw Error(Status::unsupported, where + kind + " state needs whole " + std::to_string(block) +
                                         "-element blocks per workgroup, but the workgroup size " +
                                         std::to_string(caps.workgroup_size) + " times " + std::to_string(width) +
                                         " elements is not a multiple of " + std::to_string(block));
  if (quantized > 2) throw Error(Status::unsupported, where + "at most two " + kind + " states");
  if (caps.items_per_invocation > kMaxQuantItems)
    throw Error(Status::unsupported, where + kind + " state keeps at most " + std::to_string(kMaxQuantItems) +
                                         " items per invocation; items_per_invocation is " +
                                         std::to_string(caps.items_per_invocation));
}

void validate_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& sam, const EmaOptions& ema) {
  const std::string where = "group " + std::to_string(group) + ": ";
  if (!(std::isfinite(la.alpha) && la.alpha >= 0 && la.alpha <= 1))
    throw Error(Status::invalid_argument,
                where + "lookahead.alpha = " + std::to_string(la.alpha) + ": must be in [0, 1]");
  if (!(std::isfinite(sam.rho) && sam.rho >= 0))
    throw Error(Status::invalid_argument, where + "sam.rho = " + std::to_string(sam.rho) + ": must be finite and >= 0");
  auto require = [&](bool ok, const char* field, double value, const char* why) {
    if (!ok) throw Error(Status::invalid_argument, where + "ema." + field + " = " + std::to_string(value) + ": " + why);
  };
  require(std::isfinite(ema.decay) && ema.decay >= 0 && ema.decay < 1, "decay", ema.decay, "must be in [0, 1)");
  require(uint32_t(ema.warmup) <= uint32_t(EmaWarmup::power), "warmup", double(uint32_t(ema.warmup)),
          "is not an EmaWarmup");
  require(std::isfinite(ema.inv_gamma) && ema.inv_gamma > 0, "inv_gamma", ema.inv_gamma, "must be finite and > 0");
  require(std::isfinite(ema.power) && ema.power > 0, "power", ema.power, "must be finite and > 0");
  require(std::isfinite(ema.min_decay) && ema.min_decay >= 0 && ema.min_decay < 1, "min_decay", ema.min_decay,
          "must be in [0, 1)");
  if (ema.decay > 0 && la.k > 0)
    throw Error(Status::invalid_argument,
                where + "ema.decay = " + std::to_string(ema.decay) +
                    " with Lookahead (lookahead.k > 0): the EMA follows the rule's pass, which Lookahead's "
                    "synchronisation overrides; use one of them");
}

// The decay of an EMA at step t of a tensor (EmaOptions).
double ema_decay_at(const EmaOptions& e, uint64_t t) {
  const int64_t s = int64_t(t) - int64_t(e.update_after_step) - 1;
  if (s <= 0) return 0;
  double d = e.decay;
  if (e.warmup == EmaWarmup::ratio) d = std::min(e.decay, (1.0 + double(s)) / (10.0 + double(s)));
  if (e.warmup == EmaWarmup::power) d = std::min(e.decay, 1 - std::pow(1 + double(s) / e.inv_gamma, -e.power));
  return e.warmup == EmaWarmup::none ? d : std::max(d, e.min_decay);
}

namespace {
std::string pass_list(const std::vector<RulePass>& passes) {
  std::string out;
  for (const RulePass& p : passes) out += (out.empty() ? "" : ", ") + std::string(p.shader ? p.shader : "reduce");
  return out;
}
bool same_passes(const std::vector<RulePass>& a, const std::vector<RulePass>& b) {
  return pass_list(a) == pass_list(b) &&
         std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const RulePass& x, const RulePass& y) {
           return x.kind == y.kind && x.partials == y.partials && x.sums == y.sums && x.factor_means == y.factor_means;
         });
}
}  // namespace

void require_same_passes(const Rule& r, const RuleOptions& options, size_t g,
                         const std::vector<std::pair<size_t, const RuleOptions*>>& others) {
  const auto passes = r.passes(options);
  for (const auto& [other, other_options] : others) {
    const auto theirs = r.passes(*other_options);
    if (!same_passes(passes, theirs))
      throw Error(Status::invalid_argument,
                  std::string(r.name()) + " group " + std::to_string(g) + ": these options take the passes (" +
                      pass_list(passes) + ") but group " + std::to_string(other) + "'s take (" + pass_list(theirs) +
                      "); a step's passes are the same in every group (e.g. cautious must be the same in all)");
  }
}

// Physical state slot (operand - 2) of each state name: the rule's slots keep their positions
// (its shader hard-codes them); Lookahead's slow weights, SAM's perturbation and the EMA take the
// next free ones after the last active rule slot. -1: not kept. Throws when they do not fit.
std::vector<int> slot_map(const Rule& r, const RuleOptions& options, const LookaheadOptions& la, const SamOptions& sam,
                          const EmaOptions& ema) {
  const auto active = r.active_slots(options);
  std::vector<int> map(r.slot_names().size() + kWrapperSlots, -1);
  int next = 0;
  for (size_t k = 0; k < active.size(); ++k)
    if (active[k]) {
      map[k] = int(k);
      next = int(k) + 1;
    }
  const bool wrappers[kWrapperSlots] = {la.k > 0, sam.rho > 0, ema.decay > 0};
  for (size_t w = 0; w < kWrapperSlots; ++w)
    if (wrappers[w]) map[r.slot_names().size() + w] = next++;
  if (next > int(kMaxStateSlots))
    throw Error(Status::unsupported, std::string(r.name()) + " with these options keeps " + std::to_string(next) +
                                         " state slots with Lookahead/SAM/EMA; at most " +
                                         std::to_string(kMaxStateSlots) +
                                         " fit (e.g. drop amsgrad, or one of the wrappers)");
  return map;
}

// A schedule for group g of rule r: valid (validate_schedule), and momentum cycling only where
// the rule has a beta1 or momentum whose state exists (torch refuses the first; the second
// would need state the group does not keep).
void validate_group_schedule(const Rule& r, const RuleOptions& options, const LrSchedule& schedule, size_t g) {
  validate_schedule(schedule, g);
  if (!schedule_momentum(schedule, 0)) return;
  const std::string where = std::string(r.name()) + " group " + std::to_string(g) + ": the schedule cycles momentum";
  std::visit(
      [&](const auto& o) {
        if constexpr (requires { o.beta1; }) {
          if constexpr (requires { o.beta2_decay; })  // Adafactor keeps exp_avg only with beta1 > 0
            if (o.beta1 == 0)
              throw Error(Status::invalid_argument, where + " (beta1), but beta1 = 0 keeps no first moment");
        } else if constexpr (requires { o.momentum; }) {
          if (o.momentum == 0)
            throw Error(Status::invalid_argument,
                        where + ", but momentum = 0 keeps no momentum buffer (start from momentum > 0)");
        } else {
          throw Error(Status::invalid_argument,
                      where + ", but the rule has neither beta1 nor momentum (set cycle_momentum = false)");
        }
      },
      options);
}

RuleOptions OptimizerState::step_options(uint32_t g, uint64_t t) const {
  const LrSchedule& schedule = schedules[g];
  RuleOptions o = groups[g];
  if (schedule.kind == ScheduleKind::constant) return o;
  const uint64_t s = t - 1;  // steps already taken
  const auto momentum = schedule_momentum(schedule, s);
  std::visit(
      [&](auto& v) {
        v.lr = schedule_lr(schedule, v.lr, s);
        if (!momentum) return;
        if constexpr (requires { v.beta1; })
          v.beta1 = *momentum;
        else if constexpr (requires { v.momentum; })
          v.momentum = *momentum;
      },
      o);
  return o;
}

// Partial sums are taken per 256-element chunk of a tensor (shaders/vko_elementwise.glsl): a
// block must hold whole chunks, no more of them than invocations, and the workgroup's shared
// memory must hold every item's sums (next to the quantized blocks' absmax posts). Checked when
// a group is added and again when the optimizer is laid out (options and wrappers may have
// changed; the group's items and storage are known then).
void OptimizerState::check_partial_sums(const Rule& r, const RuleOptions& options, const SamOptions& sam,
                                        uint32_t items, bool quantized, size_t g) const {
  const auto passes = r.passes(options);
  if (!(sam.rho > 0) && std::none_of(passes.begin(), passes.end(), [](const RulePass& p) { return p.partials; }))
    return;
  const DeviceCaps& caps = ctx->caps;
  const uint32_t wg = caps.workgroup_size, width = caps.access_width();
  const std::string where = std::string(r.name()) + " group " + std::to_string(g) + ": per-tensor sums ";
  if (wg * width % 256 != 0)
    throw Error(Status::unsupported, where + "need the workgroup size " + std::to_string(wg) + " times " +
                                         std::to_string(width) +
                                         " elements to be a multiple of 256 (their fixed 256-element chunks)");
  if (items * width > 256)
    throw Error(Status::unsupported, where + "take at most " + std::to_string(256 / width) +
                                         " items per invocation (a block's chunks, one invocation each); "
                                         "items_per_invocation is " +
                                         std::to_string(items));
  const uint64_t bytes =
      uint64_t(items) * wg * 8 +
      (quantized ? uint64_t(kMaxQuantItems) * wg * 8 + (kMaxQuantItems * wg * width / 128 + 1) * 8 : 0);
  if (caps.max_compute_shared_memory != 0 && bytes > caps.max_compute_shared_memory)
    throw Error(Status::unsupported, where + "keep " + std::to_string(bytes) +
                                         " bytes of shared memory per workgroup (items_per_invocation " +
                                         std::to_string(items) + ", workgroup size " + std::to_string(wg) +
                                         "), above the device's " + std::to_string(caps.max_compute_shared_memory));
}

void OptimizerState::add_group(ParamGroup group) {
  if (finalized)
    throw Error(Status::invalid_state,
                "add_param_group: state already exists (a step was taken or state accessed); "
                "add every group before the first step");
  const size_t g = groups.size();
  const Rule& r = rule_for(group.options);
  if (rule && &r != rule)
    throw Error(Status::invalid_argument, "group " + std::to_string(g) + " uses " + r.name() +
                                              " but the optimizer's rule is " + rule->name() +
                                              "; one rule per optimizer");
  r.validate(group.options, g);
  if (g > 0) require_same_passes(r, group.options, g, {{0, &groups[0]}});
  validate_wrappers(g, group.lookahead, group.sam, group.ema);
  validate_precision(r, group.options, group.precision, g, ctx->caps);
  validate_group_schedule(r, group.options, group.schedule, g);
  const auto rule_passes = r.passes(group.options);
  check_partial_sums(r, group.options, group.sam, ctx->caps.items_per_invocation, false, g);
  // Passes over 2-D tensors (Adafactor's statistics, Muon's products) address them directly.
  const bool factors = std::any_of(rule_passes.begin(), rule_passes.end(), [](const RulePass& p) {
    return p.kind == RulePass::Kind::factor_stats || p.kind == RulePass::Kind::newton_schulz;
  });
  const bool reads_grads_directly = std::any_of(
      rule_passes.begin(), rule_passes.end(), [](const RulePass& p) { return p.kind == RulePass::Kind::factor_stats; });
  slot_map(r, group.options, group.lookahead, group.sam, group.ema);  // throws when the slots do not fit
  // Muon's products need whole matrices: a shard's piece of one takes the whole matrix's update
  // from every rank (StepPart::factor_sums), given its rows as whole_rows. (Its groups that step
  // with AdamW, use_muon = false, take pieces as any elementwise rule does; Adafactor's
  // statistics take a piece's whole rows and columns from every rank likewise; per-tensor sums
  // are exchanged in StepPart::tensor_sums.)
  const bool needs_whole_tensors = r.matrix_dispatches(group.options) > 0;

  std::vector<Span> spans;
  auto add_span = [&](const BufferRange& b, bool written, const std::string& what) {
    spans.push_back({b.buffer, b.offset, b.offset + VkDeviceSize(b.count) * dtype_size(b.dtype), written, what});
  };
  for (const auto& t : tensors) {
    add_span(t.tensor.param, true, tensor_label(t.group, t.index_in_group) + " param");
    add_span(t.tensor.grad, false, tensor_label(t.group, t.index_in_group) + " grad");
  }
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    const auto& t = group.tensors[i];
    const std::string label = tensor_label(g, i);
    check_range(t.param, label + " param", *ctx, RangeOf::floats);
    check_range(t.grad, label + " grad", *ctx, RangeOf::floats);
    if (t.rows > UINT32_MAX || (t.rows != 0 && t.param.count / t.rows > UINT32_MAX))
      throw Error(Status::invalid_argument, label + ": rows = " + std::to_string(t.rows) + " x " +
                                                std::to_string(t.rows ? t.param.count / t.rows : 0) +
                                                " columns: each must be below 2^32");
    if (t.rows != 0 && (t.param.count % t.rows != 0))
      throw Error(Status::invalid_argument, label + ": rows = " + std::to_string(t.rows) +
                                                " does not divide the element count " + std::to_string(t.param.count));
    if (t.whole_count > t.param.count && needs_whole_tensors && (t.rows != 0 || t.whole_rows == 0))
      throw Error(Status::invalid_argument,
                  label + " is part of a sharded tensor: give " + r.name() +
                      " its whole matrix's rows as whole_rows (rows = 0), not rows = " + std::to_string(t.rows) +
                      " and whole_rows = " + std::to_string(t.whole_rows) +
                      " (its products need the whole matrix, which the ranks complete between the parts of a step)");
    r.validate_tensor(group.options, t, label);
    if (t.param.count != t.grad.count)
      throw Error(Status::invalid_argument, label + ": param.count = " + std::to_string(t.param.count) +
                                                " but grad.count = " + std::to_string(t.grad.count));
    if (t.whole_count != 0 && t.whole_count < t.param.count)
      throw Error(Status::invalid_argument, label + ": whole_count = " + std::to_string(t.whole_count) +
                                                " is below the range's " + std::to_string(t.param.count) + " elements");
    if (t.whole_offset != 0 && (t.whole_count == 0 || t.whole_offset > t.whole_count - t.param.count))
      throw Error(Status::invalid_argument, label + ": whole_offset = " + std::to_string(t.whole_offset) + " + " +
                                                std::to_string(t.param.count) +
                                                " elements is past whole_count = " + std::to_string(t.whole_count));
    if (t.whole_rows != 0 &&
        (t.whole_count == 0 || t.rows != 0 || t.whole_count % t.whole_rows != 0 || t.whole_count > UINT32_MAX))
      throw Error(Status::invalid_argument, label + ": whole_rows = " + std::to_string(t.whole_rows) +
                                                " describes a piece of a 2-D tensor: it needs whole_count (here " +
                                                std::to_string(t.whole_count) +
                                                ") below 2^32 and divisible by it, and rows = 0 (here " +
                                                std::to_string(t.rows) + ")");
    if (t.whole_count > t.param.count && reads_grads_directly && t.rows != 0)
      throw Error(Status::invalid_argument,
                  label + " is part of a sharded tensor: give " + r.name() +
                      " its whole tensor's rows as whole_rows (rows = 0), not rows = " + std::to_string(t.rows));
    if (t.whole_count > t.param.count && group.precision.rank1_second_moment && t.rows != 0)
      throw Error(Status::invalid_argument,
                  label +
                      " is part of a sharded tensor: give precision.rank1_second_moment its whole tensor's rows "
                      "as whole_rows (rows = 0), not rows = " +
                      std::to_string(t.rows) + " (the maxima run over the whole tensor's rows and columns)");
    if (reads_grads_directly && (t.rows != 0 || t.whole_rows != 0) && t.grad.dtype != DType::f32)
      throw Error(Status::unsupported, label + ": grad.dtype = " + dtype_name(t.grad.dtype) + ": " + r.name() +
                                           " reads the gradients of 2-D (factored) tensors as f32");
    if (!t.name.empty())
      for (const auto& other : tensors)
        if (other.tensor.name == t.name)
          throw Error(Status::invalid_argument, label + ": name \"" + t.name + "\" is already used");
    // Stochastic rounding keys elements by (whole_index, or the index here; element in the whole
    // tensor): no two tensors may claim the same element of the same key.
    const uint32_t key = t.whole_index.value_or(uint32_t(tensors.size() + i));
    for (size_t j = 0; j < tensors.size() + i; ++j) {
      const ParamTensor& other = j < tensors.size() ? tensors[j].tensor : group.tensors[j - tensors.size()];
      if (other.whole_index.value_or(uint32_t(j)) == key && t.whole_offset < other.whole_offset + other.param.count &&
          other.whole_offset < t.whole_offset + t.param.count)
        throw Error(Status::invalid_argument,
                    label + ": whole_index = " + std::to_string(key) + ", elements [" + std::to_string(t.whole_offset) +
                        ", " + std::to_string(t.whole_offset + t.param.count) +
                        ") overlap another tensor's with the same key (by default a tensor's key is its index in the "
                        "optimizer); stochastic rounding would draw the same bits for both");
    }
    add_span(t.param, true, label + " param");
    add_span(t.grad, false, label + " grad");
  }
  check_overlaps(std::move(spans));
  // What the first step would refuse for the addressing, refused now (before any GPU work).
  const bool factored =
      factors && (std::any_of(tensors.begin(), tensors.end(),
                              [](const TensorRecord& t) { return t.tensor.rows > 0 || t.tensor.whole_rows > 0; }) ||
                  std::any_of(group.tensors.begin(), group.tensors.end(),
                              [](const ParamTensor& t) { return t.rows > 0 || t.whole_rows > 0; }));
  const bool addresses_required = factored || ctx->options.addressing == Addressing::device_address;
  if (addresses_required && !(tensors.empty() && group.tensors.empty())) {
    const std::string reason = no_address_reason(group.tensors, g);
    if (!reason.empty())
      throw Error(Status::unsupported,
                  factored ? std::string(r.name()) + ": 2-D tensors need buffer device addresses, but " + reason
                           : "addressing = device_address, but " + reason);
  }

  rule = &r;
  groups.push_back(group.options);
  lookahead.push_back(group.lookahead);
  ema.push_back(group.ema);
  sam.push_back(group.sam);
  precision.push_back(std::move(group.precision));
  schedules.push_back(std::move(group.schedule));
  sam_perturbed.push_back(false);
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    TensorRecord rec;
    rec.tensor = std::move(group.tensors[i]);
    rec.group = uint32_t(g);
    rec.index_in_group = uint32_t(i);
    rec.scalars = r.initial_scalars(group.options);
    tensors.push_back(std::move(rec));
  }
}

std::vector<uint32_t> OptimizerState::slot_codes(uint32_t group) const {
  auto codes = rule_slot_codes(*rule, groups[group], precision[group], group, false);
  codes.push_back(kF32);  // slow_param
  codes.push_back(kF32);  // sam_e
  codes.push_back(kF32);  // ema
  return codes;
}

std::vector<uint32_t> OptimizerState::tensor_slot_codes(const TensorRecord& t) const {
  auto codes = slot_codes(t.group);
  const uint64_t whole = t.tensor.whole_count ? t.tensor.whole_count : t.tensor.param.count;
  if (whole < precision[t.group].min_8bit_elements)
    for (auto& c : codes)
      if (is_quantized(c)) c = kF32;
  return codes;
}

void OptimizerState::plan_regions(TensorRecord& t) const {
  const auto map = slots(t.group);
  const auto codes = tensor_slot_codes(t);
  const uint64_t n = t.tensor.param.count;
  for (size_t k = 0; k < map.size(); ++k) {
    if (map[k] < 0) continue;
    const bool rule_slot = k < rule->slot_names().size();
    const uint64_t elements = slot_elements(t, k);
    if (elements == 0) continue;
    const float initial = rule_slot ? rule->initial_value(groups[t.group], k) : 0.0f;
    t.slots[size_t(map[k])] = {0, 0, true, elements, initial, codes[k]};
  }
  const uint32_t quant_slots = quant_slot_count(t);
  t.master = {};
  if (has_master(t)) t.master = {0, 0, true, n, 0.0f, kF32};
  if (has_kahan(t)) t.master = {0, 0, true, n, 0.0f, dtype_code(t.tensor.param.dtype)};
  t.absmax = {};
  if (quant_slots) {
    const uint32_t block = quant_block(quant_code(t));
    t.absmax = {0, 0, true, (n + block - 1) / block * quant_slots, 0.0f, kF32};
    if (rank1(t)) t.absmax.elements += kRank1Sets * rank1_floats(t);
  }
}

std::vector<float> OptimizerState::read_rank1(size_t tensor, uint64_t steps) const {
  const TensorRecord& t = tensors[tensor];
  const auto& arena = *arenas[t.absmax.arena];
  std::vector<float> maxima(rank1_floats(t));
  const uint64_t at = rank1_base(t) + steps % kRank1Sets * rank1_floats(t);
  ctx->read_buffer(arena.buffer, &arena, t.absmax.offset + 4 * at, maxima.data(), maxima.size() * 4);
  return maxima;
}

void OptimizerState::write_rank1(size_t tensor, std::span<const float> maxima, uint64_t steps) const {
  const TensorRecord& t = tensors[tensor];
  const auto& arena = *arenas[t.absmax.arena];
  std::vector<float> sets(kRank1Sets * rank1_floats(t), 0.0f);
  std::copy(maxima.begin(), maxima.end(), sets.begin() + ptrdiff_t(steps % kRank1Sets * rank1_floats(t)));
  ctx->write_buffer(arena.buffer, &arena, t.absmax.offset + 4 * rank1_base(t), sets.data(), sets.size() * 4);
}

uint32_t OptimizerState::operand_dtypes(const TensorRecord& t) const {
  uint32_t word = dtype_code(t.tensor.param.dtype) | dtype_code(t.tensor.grad.dtype) << 3;
  for (size_t k = 0; k < kMaxStateSlots; ++k)
    if (t.slots[k].active) word |= t.slots[k].code << (3 * (2 + k));
  word |= (t.master.active ? t.master.code : kAbsent) << 18;  // f32: master; 16-bit: Kahan
  word |= (t.absmax.active ? kF32 : kAbsent) << 21;
  return word;
}

std::vector<std::string> OptimizerState::slot_names() const {
  auto names = rule->slot_names();
  names.push_back("slow_param");
  names.push_back("sam_e");
  names.push_back("ema");
  return names;
}

const TensorRecord& OptimizerState::tensor(size_t index) const {
  if (index >= tensors.size())
    throw Error(Status::not_found, "tensor index " + std::to_string(index) + " is out of range (the optimizer has " +
                                       std::to_string(tensors.size()) + " tensors)");
  return tensors[index];
}

OptimizerState::Slot OptimizerState::slot_index(size_t ti, std::string_view name) const {
  const TensorRecord& t = tensor(ti);
  const auto names = slot_names();
  const auto map = slots(t.group);
  std::string valid;
  for (size_t k = 0; k < names.size(); ++k) {
    if (map[k] < 0 || slot_elements(t, k) == 0 || transient_slot(k)) continue;
    if (names[k] == name) return {size_t(map[k]), slot_elements(t, k)};
    valid += names[k] + ", ";
  }
  for (const auto& scalar : rule->scalar_names()) valid += scalar + ", ";
  throw Error(Status::not_found, std::string(rule->name()) + " tensor " + std::to_string(ti) + " has no state \"" +
                                     std::string(name) + "\" (it has: " + valid + "step)");
}

}  // namespace detail

Optimizer::Optimizer(Context& context, std::vector<ParamGroup> groups)
    : state_(std::make_unique<detail::OptimizerState>()) {
  state_->ctx = context.state_;
  for (auto& g : groups) state_->add_group(std::move(g));
}
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;
Optimizer::~Optimizer() = default;

void Optimizer::add_param_group(ParamGroup group) {
  state_->add_group(std::move(group));
}
size_t Optimizer::group_count() const {
  return state_->groups.size();
}
size_t Optimizer::tensor_count() const {
  return state_->tensors.size();
}

size_t Optimizer::tensor_index(std::string_view name) const {
  for (size_t i = 0; i < state_->tensors.size(); ++i)
    if (state_->tensors[i].tensor.name == name) return i;
  throw Error(Status::not_found, "no tensor named \"" + std::string(name) + "\"");
}

const RuleOptions& Optimizer::options(size_t group) const {
  if (group >= state_->groups.size())
    throw Error(Status::not_found, "group " + std::to_string(group) + " is out of range (the optimizer has " +
                                       std::to_string(state_->groups.size()) + " groups)");
  return state_->groups[group];
}

void Optimizer::set_options(size_t group, const RuleOptions& options) {
  const RuleOptions& current = this->options(group);
  const detail::Rule& rule = detail::rule_for(options);
  if (&rule != state_->rule)
    throw Error(Status::invalid_argument, "set_options: group " + std::to_string(group) + " uses " +
                                              state_->rule->name() + ", not " + rule.name());
  rule.validate(options, group);
  {
    // Every group takes the same passes, and a finalized optimizer keeps them (scratch, recordings).
    std::vector<std::pair<size_t, const RuleOptions*>> others;
    for (size_t g = 0; g < state_->groups.size(); ++g)
      if (g != group || state_->finalized) others.push_back({g, &state_->groups[g]});
    detail::require_same_passes(rule, options, group, others);
  }
  detail::validate_precision(rule, options, state_->precision[group], group, state_->ctx->caps);
  detail::validate_group_schedule(rule, options, state_->schedules[group], group);
  const auto& s = *state_;
  const auto map = detail::slot_map(rule, options, s.lookahead[group], s.sam[group], s.ema[group]);
  if (s.finalized && map != detail::slot_map(rule, current, s.lookahead[group], s.sam[group], s.ema[group]))
    throw Error(Status::invalid_state, "set_options: group " + std::to_string(group) +
                                           ": the new options change which state exists (momentum on/off, amsgrad) "
                                           "after state was allocated");
  if (const char* fixed = s.finalized ? rule.fixed_once_allocated(current, options) : nullptr)
    throw Error(Status::invalid_state, "set_options: group " + std::to_string(group) + ": " + fixed +
                                           " cannot change after state was allocated");
  state_->groups[group] = options;
  state_->write_group_record(uint32_t(group));
  state_->write_matrix_jobs();
}

const LookaheadOptions& Optimizer::lookahead(size_t group) const {
  options(group);  // validates the index
  return state_->lookahead[group];
}

void Optimizer::set_lookahead(size_t group, const LookaheadOptions& la) {
  state_->set_wrappers(group, la, sam(group), ema(group));
}

const SamOptions& Optimizer::sam(size_t group) const {
  options(group);  // validates the index
  return state_->sam[group];
}

void Optimizer::set_sam(size_t group, const SamOptions& sam) {
  state_->set_wrappers(group, lookahead(group), sam, ema(group));
}

const EmaOptions& Optimizer::ema(size_t group) const {
  options(group);  // validates the index
  return state_->ema[group];
}

void Optimizer::set_ema(size_t group, const EmaOptions& ema) {
  state_->set_wrappers(group, lookahead(group), sam(group), ema);
}

void Optimizer::set_lr(size_t group, double lr) {
  RuleOptions o = options(group);
  std::visit([&](auto& v) { v.lr = lr; }, o);
  set_options(group, o);
}

const LrSchedule& Optimizer::schedule(size_t group) const {
  options(group);  // validates the index
  return state_->schedules[group];
}

void Optimizer::set_schedule(size_t group, const LrSchedule& schedule) {
  detail::validate_group_schedule(*state_->rule, options(group), schedule, group);
  state_->schedules[group] = schedule;
  state_->write_group_record(uint32_t(group));
}

RuleOptions Optimizer::step_options(size_t group, uint64_t t) const {
  options(group);  // validates the index
  if (t == 0) throw Error(Status::invalid_argument, "step_options: t = 0; steps are numbered from 1");
  return state_->step_options(uint32_t(group), t);
}

void Optimizer::initialize() {
  state_->ensure_initialised();
}

void Optimizer::record(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, detail::OptimizerState::Mode::step);
}

void Optimizer::record_sam_perturb(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, detail::OptimizerState::Mode::perturb);
}

void Optimizer::step() {
  state_->submit(detail::OptimizerState::Mode::step);
  throw_if_nonfinite_norm("step");
}

void Optimizer::throw_if_nonfinite_norm(const char* what) const {
  if (!state_->grad_control() || !state_->clip.error_if_nonfinite) return;
  const auto reports = step_reports();
  if (!reports.empty() && reports.back().nonfinite_norm)
    throw Error(Status::invalid_argument,
                std::string(what) + ": the total norm of order " + std::to_string(state_->clip.norm_type) +
                    " of the gradients is non-finite (GradClip::error_if_nonfinite); the step was skipped: "
                    "parameters, state and step counters are as they were");
}
void Optimizer::sam_perturb() {
  state_->submit(detail::OptimizerState::Mode::perturb);
}

std::vector<std::string> Optimizer::pass_names() const {
  std::vector<std::string> out;
  for (const auto& p : state_->last_passes) out.push_back(p);
  return out;
}

std::vector<std::string> Optimizer::state_names(size_t tensor) const {
  const auto& t = state_->tensor(tensor);
  const auto names = state_->slot_names();
  const auto map = state_->slots(t.group);
  std::vector<std::string> out;
  for (size_t k = 0; k < names.size(); ++k)
    if (map[k] >= 0 && state_->slot_elements(t, k) > 0 && !state_->transient_slot(k)) out.push_back(names[k]);
  if (const char* master = state_->master_name(t)) out.push_back(master);
  for (const auto& scalar : state_->rule->scalar_names()) out.push_back(scalar);
  out.push_back("step");
  return out;
}

namespace detail {
namespace {
// The region behind a state name (after finalize), or null for "step" and host scalars.
const StateRegion* region_of(const OptimizerState& s, size_t tensor, std::string_view name) {
  const auto& t = s.tensors[tensor];
  if (const char* master = s.master_name(t); master && name == master) return &t.master;
  return &t.slots[s.slot_index(tensor, name).index];
}
}  // namespace
}  // namespace detail

std::vector<float> Optimizer::read_state(size_t tensor, std::string_view name) {
  auto& s = *state_;
  const auto& t = s.tensor(tensor);
  if (name == "step") return {float(step_count(tensor))};
  if (const int k = s.scalar_index(name); k >= 0) {
    if (!s.device_steps) return {float(t.scalars[size_t(k)])};
    return {float(s.rule->carried_scalars(s.device_carry(tensor))[size_t(k)])};
  }
  if (!s.master_name(t) || name != s.master_name(t)) s.slot_index(tensor, name);  // throws not_found
  s.ensure_initialised();
  const detail::StateRegion& region = *detail::region_of(s, tensor, name);
  const auto& arena = *s.arenas[region.arena];
  std::vector<uint8_t> bytes(region.bytes());
  s.ctx->read_buffer(arena.buffer, &arena, region.offset, bytes.data(), bytes.size());
  if (!detail::is_quantized(region.code)) return detail::decode(bytes.data(), region.elements, region.code);
  if (const auto& laid = s.tensors[tensor]; s.rank1(laid) && region.code == detail::kQ4Unsigned)
    return detail::dequantize_rank1(bytes, laid.tensor.param.count, s.matrix_first(laid), s.matrix_rows(laid),
                                    s.matrix_cols(laid), s.read_rank1(tensor, step_count(tensor)).data());
  // Quantized: code * the block's absmax (this slot's column of the tensor's absmax region).
  const auto& am = s.tensors[tensor].absmax;
  std::vector<float> absmax(am.elements);
  s.ctx->read_buffer(s.arenas[am.arena]->buffer, s.arenas[am.arena].get(), am.offset, absmax.data(), absmax.size() * 4);
  return detail::dequantize(bytes, region.elements, region.code, absmax.data() + s.quant_column(tensor, region),
                            s.quant_slot_count(s.tensors[tensor]));
}

void Optimizer::write_state(size_t tensor, std::string_view name, std::span<const float> values) {
  auto& s = *state_;
  const auto& t = s.tensor(tensor);
  if (name == "step") {
    if (values.size() != 1 || !(values[0] >= 0) || values[0] != std::floor(values[0]) || values[0] > 16777216.0f)
      throw Error(Status::invalid_argument, "write_state(\"step\"): expects one non-negative whole number, got " +
                                                std::to_string(values.size()) + " values" +
                                                (values.empty() ? "" : " starting " + std::to_string(values[0])));
    if (s.finalized && s.rank1(s.tensors[tensor])) {  // (the moment's maxima sit in the set of its step count)
      s.ensure_initialised();
      s.write_rank1(tensor, s.read_rank1(tensor, step_count(tensor)), uint64_t(values[0]));
    }
    s.tensors[tensor].step = uint64_t(values[0]);
    if (s.device_steps) {
      s.ctx->wait_idle();
      s.step_words()[s.step_layout.tensor_records + tensor * detail::kTensorRecordWords] = uint32_t(values[0]);
    }
    return;
  }
  if (const int k = s.scalar_index(name); k >= 0) {
    if (values.size() != 1 || !std::isfinite(values[0]))
      throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) +
                                                "\"): expects one finite value, got " + std::to_string(values.size()) +
                                                " values");
    s.tensors[tensor].scalars[size_t(k)] = values[0];
    if (s.device_steps) {
      detail::Scalars scalars = s.rule->carried_scalars(s.device_carry(tensor));
      scalars[size_t(k)] = values[0];
      s.set_device_carry(tensor, s.rule->device_carry(scalars));
    }
    return;
  }
  const uint64_t elements =
      s.master_name(t) && name == s.master_name(t) ? t.tensor.param.count : s.slot_index(tensor, name).elements;
  if (values.size() != elements)
    throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) + "\"): values has " +
                                              std::to_string(values.size()) + " elements, tensor " +
                                              std::to_string(tensor) + "'s state has " + std::to_string(elements));
  s.ensure_initialised();
  const detail::StateRegion& region = *detail::region_of(s, tensor, name);
  const auto& arena = *s.arenas[region.arena];
  if (!detail::is_quantized(region.code)) {
    const auto bytes = detail::encode(values, region.code);
    s.ctx->write_buffer(arena.buffer, &arena, region.offset, bytes.data(), bytes.size());
  } else if (const auto& laid = s.tensors[tensor]; s.rank1(laid) && region.code == detail::kQ4Unsigned) {
    if (s.split_rank1(laid))
      throw Error(Status::unsupported,
                  "write_state(\"" + std::string(name) + "\"): tensor " + std::to_string(tensor) +
                      " is a piece of a split matrix, and its rank-1 second moment is encoded against the whole "
                      "matrix's maxima, which other ranks' pieces share (load a checkpoint instead)");
    std::vector<float> maxima(s.rank1_floats(laid));
    const auto codes =
        detail::quantize_rank1(values, laid.tensor.rows, laid.tensor.param.count / laid.tensor.rows, maxima.data());
    s.ctx->write_buffer(arena.buffer, &arena, region.offset, codes.data(), codes.size());
    s.write_rank1(tensor, maxima, step_count(tensor));
  } else {
    // Quantize into this slot's codes and its column of the absmax region (read, changed, written).
    const auto& am = s.tensors[tensor].absmax;
    const auto& am_arena = *s.arenas[am.arena];
    std::vector<float> absmax(am.elements);
    s.ctx->read_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
    const auto codes =
        detail::quantize(values, region.code, absmax.data() + s.quant_column(tensor, region), s.quant_slot_count(t));
    s.ctx->write_buffer(arena.buffer, &arena, region.offset, codes.data(), codes.size());
    s.ctx->write_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
  }
  s.tensors[tensor].fresh = false;
  if (s.device_steps) s.step_words()[s.step_layout.tensor_records + tensor * detail::kTensorRecordWords + 1] = 0;
}

uint64_t Optimizer::step_count(size_t tensor) const {
  const auto& s = *state_;
  s.tensor(tensor);  // validates the index
  if (!s.device_steps) return s.tensors[tensor].step;
  s.ctx->wait_idle();  // the device's counter, once every submitted step has run
  return s.step_words()[s.step_layout.tensor_records + tensor * detail::kTensorRecordWords];
}
uint32_t Optimizer::last_dispatch_count() const {
  return state_->last_dispatches;
}
bool Optimizer::uses_device_addresses() {
  state_->finalize();
  return state_->use_bda;
}

StepShape Optimizer::shape() {
  auto& s = *state_;
  s.finalize();
  StepShape out;
  for (const auto& b : s.table_plan.batches) {
    uint64_t n = 0;
    for (uint32_t i = b.seg_begin; i < b.seg_end; ++i) n += s.table_plan.segments[i].count;
    (b.careful ? out.careful_elements : out.fast_elements) += n;
  }
  out.batches = uint32_t(s.table_plan.batches.size());
  out.subgroup_reduced_groups =
      uint32_t(std::count_if(s.launch.begin(), s.launch.end(), [](const auto& l) { return l.subgroup != 0; }));
  return out;
}
VkDeviceSize Optimizer::state_bytes() const {
  return state_->state_bytes;
}

MemoryReport Optimizer::memory() const {
  const auto& s = *state_;
  MemoryReport out;
  for (detail::TensorRecord t : s.tensors) {
    if (!s.finalized) s.plan_regions(t);
    out.elements += t.tensor.param.count;
    for (const auto& r : t.slots)
      if (r.active) out.slot_bytes += r.bytes();
    if (t.master.active) out.master_bytes += t.master.bytes();
    if (t.absmax.active) out.quantization_bytes += t.absmax.bytes();
  }
  out.state_bytes = out.slot_bytes + out.master_bytes + out.quantization_bytes;
  return out;
}

const PrecisionOptions& Optimizer::precision(size_t group) const {
  options(group);  // validates the index
  return state_->precision[group];
}

double Optimizer::bytes_per_element(size_t group) const {
  options(group);  // validates the index
  const auto& s = *state_;
  auto per_element = [&](detail::TensorRecord t) {
    s.plan_regions(t);
    double bytes = 2.0 * double(dtype_size(t.tensor.param.dtype)) + double(dtype_size(t.tensor.grad.dtype));
    if (t.master.active) bytes += 2.0 * detail::code_bytes(t.master.code);  // master or Kahan compensation
    for (const auto& r : t.slots)
      if (r.active && r.elements == t.tensor.param.count) bytes += 2.0 * detail::code_bits(r.code) / 8.0;
    if (t.absmax.active) bytes += 2.0 * 4.0 * double(t.absmax.elements) / double(t.tensor.param.count);
    return bytes;
  };
  double total = 0, elements = 0;
  for (const auto& t : s.tensors)
    if (t.group == group && t.tensor.param.count > 0) {
      total += per_element(t) * double(t.tensor.param.count);
      elements += double(t.tensor.param.count);
    }
  if (elements > 0) return total / elements;
  detail::TensorRecord one;  // an empty group: one f32 element
  one.group = uint32_t(group);
  one.tensor.param.count = one.tensor.grad.count = 1;
  return per_element(one);
}

}  // namespace vkoptim
