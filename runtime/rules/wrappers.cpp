// Passes around a rule: Lookahead (Zhang et al. 2019) and SAM (Foret et al. 2020) as wrappers,
// and the initialisation passes (fp32 masters, Lookahead's slow weights, slots that start as the
// parameter). Shaders: lookahead.comp, sam_norm.comp, sam_update.comp, master_init.comp.
#include <algorithm>

#include "optimizer_state.hpp"

namespace vkoptim::detail {
namespace {

using Mode = OptimizerState::Mode;

// The operand (2 + physical slot) of the state named slot_names()[name] in group g.
std::vector<uint32_t> operand_of(const OptimizerState& s, size_t name, uint32_t g) {
  return {uint32_t(2 + std::max(0, s.slots(g)[name]))};
}

// lookahead.comp: mode 0 copies p into the slot (slot <- p); mode 1 is Lookahead's k-th step
// (slot += alpha (p - slot); p <- slot).
Pass copy_param_pass(const OptimizerState* s, size_t name, std::function<bool(uint32_t group)> applies) {
  return {"lookahead", [s, name](uint32_t g) { return operand_of(*s, name, g); },
          [applies](uint32_t g, const StepInfo&, PushBlock& out) {
            if (!applies(g)) return false;
            lookahead_push_constants(0, false, out);
            return true;
          }};
}

// Lookahead's k-th step. In a replayable step it runs every step, and the device decides
// (lookahead.comp) whether this one synchronises.
Pass lookahead_step_pass(const OptimizerState* s, bool replay) {
  const size_t slow = s->rule->slot_names().size();  // "slow_param"
  Pass pass{"lookahead", [s, slow](uint32_t g) { return operand_of(*s, slow, g); },
            [s, replay](uint32_t g, const StepInfo& step, PushBlock& out) {
              const LookaheadOptions& la = s->lookahead[g];
              if (la.k == 0 || (!replay && step.t % la.k != 0)) return false;
              lookahead_push_constants(la.alpha, true, out);
              return true;
            }};
  pass.entry = int(s->rule->passes(s->groups[0]).size());
  pass.runs_in = [s](uint32_t g) { return s->lookahead[g].k > 0; };
  return pass;
}

// sam_update.comp over the group sums of |g|^2: perturb (p += e, e = rho g/(|g| + 1e-12)) or
// restore (p -= e). Recorded on the host, a step restores the groups the host perturbed; in a
// replayable step every SAM group's restore runs, and the device restores what a replayable
// perturbation left (its group's flag in the step buffer, set by the perturbation and cleared by
// step_commit).
Pass sam_update_pass(const OptimizerState* s, bool restore, bool replay) {
  const size_t sam_e = s->rule->slot_names().size() + 1;  // "sam_e"
  Pass pass{"sam_update", [s, sam_e](uint32_t g) { return operand_of(*s, sam_e, g); },
            [s, restore, replay](uint32_t g, const StepInfo&, PushBlock& out) {
              if (s->sam[g].rho <= 0 || (restore && !replay && !s->sam_perturbed[g])) return false;
              sam_update_push_constants(restore ? 0.0 : s->sam[g].rho, restore, out);
              return true;
            }};
  pass.sums = RulePass::Sums::group;
  pass.device_flags = replay;
  return pass;
}

}  // namespace

void lookahead_push_constants(double alpha, bool sync, PushBlock& out) {
  PushWriter(out).f32("alpha", alpha).u32("sync", sync ? 1 : 0);
}

void sam_norm_push_constants(PushBlock& out) {
  PushWriter(out).scratch_words();
}

void sam_update_push_constants(double rho, bool restore, PushBlock& out) {
  PushWriter(out).scratch_words().f32("rho", rho).u32("restore", restore ? 1 : 0);
}

void reduce_push_constants(VkDeviceAddress scratch, uint32_t input_base, uint32_t output_base, uint32_t lists_base,
                           uint32_t outputs, PushBlock& out) {
  PushWriter(out)
      .u64("scratch_address", scratch)
      .u32("input_base", input_base)
      .u32("output_base", output_base)
      .u32("lists_base", lists_base)
      .u32("outputs", outputs);
}

void grad_norm_push_constants(VkDeviceAddress scratch, PushBlock& out) {
  PushWriter(out).u64("scratch_address", scratch);
}

void grad_reduce_push_constants(VkDeviceAddress scratch, uint32_t input_base, uint32_t count, uint32_t output_base,
                                PushBlock& out) {
  PushWriter(out)
      .u64("scratch_address", scratch)
      .u32("input_base", input_base)
      .u32("count", count)
      .u32("output_base", output_base);
}

std::vector<Pass> OptimizerState::build_passes(Mode mode, bool replay) const {
  std::vector<Pass> out;
  const OptimizerState* s = this;
  const bool any_lookahead =
      std::any_of(lookahead.begin(), lookahead.end(), [](const LookaheadOptions& l) { return l.k > 0; });
  if (mode == Mode::init) {
    // Masters and Lookahead's slow weights start from the parameters, once, in the
    // initialisation vkoptim submits itself, so no recorded step depends on an earlier one.
    if (std::any_of(tensors.begin(), tensors.end(), [this](const TensorRecord& t) { return has_master(t); }))
      out.push_back({"master_init", [](uint32_t) { return std::vector<uint32_t>{}; },
                     [s](uint32_t g, const StepInfo&, PushBlock& push) {
                       PushWriter w(push);  // no scalars
                       return s->precision[g].master_weights;
                     }});
    if (any_lookahead)
      out.push_back(copy_param_pass(s, rule->slot_names().size(), [s](uint32_t g) { return s->lookahead[g].k > 0; }));
    // Rule slots that start as the parameter (Schedule-Free's z and x).
    for (size_t k : rule->param_copy_slots()) out.push_back(copy_param_pass(s, k, [](uint32_t) { return true; }));
    return out;
  }
  if (mode == Mode::perturb) {
    // |g| over each SAM group (per-chunk partials, per-tensor then per-group sums), then p += e.
    Pass norm{"sam_norm", [](uint32_t) { return std::vector<uint32_t>{}; },
              [s](uint32_t g, const StepInfo&, PushBlock& push) {
                if (s->sam[g].rho <= 0) return false;
                sam_norm_push_constants(push);
                return true;
              }};
    norm.partials = true;
    out.push_back(std::move(norm));
    out.push_back({"reduce", {}, {}, RulePass::Kind::reduce_tensors});
    out.push_back({"reduce", {}, {}, RulePass::Kind::reduce_groups});
    out.push_back(sam_update_pass(s, false, replay));
    return out;
  }
  const bool any_sam = std::any_of(sam.begin(), sam.end(), [](const SamOptions& o) { return o.rho > 0; });
  if (replay ? any_sam : std::find(sam_perturbed.begin(), sam_perturbed.end(), true) != sam_perturbed.end())
    out.push_back(sam_update_pass(s, true, replay));
  const auto rule_passes = rule->passes(groups[0]);
  size_t last_elementwise = 0;
  for (size_t rp = 0; rp < rule_passes.size(); ++rp)
    if (rule_passes[rp].kind == RulePass::Kind::elementwise) last_elementwise = rp;
  for (size_t rp = 0; rp < rule_passes.size(); ++rp) {
    const RulePass& r = rule_passes[rp];
    const bool reduce = r.kind == RulePass::Kind::reduce_tensors || r.kind == RulePass::Kind::reduce_groups;
    Pass pass{reduce ? "reduce" : r.shader,
              [s, rp](uint32_t g) { return s->rule->pass_spec_constants(s->groups[g], rp); },
              [s, rp](uint32_t g, const StepInfo& step, PushBlock& push) {
                if (!s->rule->pass_runs(s->groups[g], rp)) return false;
                s->rule->pass_push_constants(s->step_options(g, step.t), step, push, rp);
                return true;
              }};
    if (r.kind != RulePass::Kind::elementwise) pass.spec_constants = [](uint32_t) { return std::vector<uint32_t>{}; };
    pass.kind = r.kind;
    pass.partials = r.partials;
    pass.sums = r.sums;
    pass.factor_means = r.factor_means;
    pass.entry = int(rp);
    if (r.kind == RulePass::Kind::elementwise && rank1_steps()) {  // (rules of one elementwise pass)
      Pass maxima = pass;
      maxima.rank1_maxima = true;
      maxima.push_constants = [s, rp](uint32_t g, const StepInfo& step, PushBlock& push) {
        // Only groups with a rank-1 tensor (a 2-D one) have maxima to post.
        if (std::none_of(s->tensors.begin(), s->tensors.end(),
                         [&](const TensorRecord& t) { return t.group == g && s->rank1(t); }))
          return false;
        s->rule->pass_push_constants(s->step_options(g, step.t), step, push, rp);
        return true;
      };
      out.push_back(std::move(maxima));
    }
    pass.ema = rp == last_elementwise;
    out.push_back(std::move(pass));
  }
  if (any_lookahead) out.push_back(lookahead_step_pass(s, replay));
  return out;
}

}  // namespace vkoptim::detail
