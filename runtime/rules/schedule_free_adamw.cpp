// Schedule-Free AdamW (Defazio et al. 2024; facebookresearch/schedule_free reference
// implementation). Shader: shaders/schedule_free_adamw.comp. lr_max and weight_sum are
// per-tensor scalars kept here in double (the reference keeps them per group).
#include <algorithm>
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

// The step's scalars from the options, the step number and (lr_max, weight_sum) before it.
struct Schedule {
  double lr, lr_max, weight_sum, ckp1;
};
Schedule schedule(const ScheduleFreeAdamwOptions& o, const StepInfo& step) {
  const double k = double(step.t - 1);
  const double sched = k < double(o.warmup_steps) ? (k + 1) / double(o.warmup_steps) : 1.0;
  const double lr = o.lr * sched * std::sqrt(1 - std::pow(o.beta2, k + 1));
  const double lr_max = std::max(lr, step.scalars[0]);
  const double weight = std::pow(k + 1, o.r) * std::pow(lr_max, o.weight_lr_power);
  const double weight_sum = step.scalars[1] + weight;
  return {lr, lr_max, weight_sum, weight_sum > 0 ? weight / weight_sum : 0};
}

class ScheduleFreeAdamw final : public Rule {
 public:
  const char* name() const override { return "ScheduleFreeAdamW"; }
  bool device_scalars() const override { return true; }  // shaders/schedule_free_adamw.comp
  const char* shader() const override { return "schedule_free_adamw"; }
  std::vector<std::string> slot_names() const override { return {"z", "exp_avg_sq", "x"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  std::vector<std::string> scalar_names() const override { return {"lr_max", "weight_sum"}; }
  Scalars initial_scalars(const RuleOptions&) const override { return {-1.0, 0.0}; }
  Scalars advance_scalars(const RuleOptions& options, const StepInfo& step) const override {
    const Schedule s = schedule(std::get<ScheduleFreeAdamwOptions>(options), step);
    Scalars out = step.scalars;
    out[0] = s.lr_max;
    out[1] = s.weight_sum;
    return out;
  }
  // Replayable steps carry lr_max and weight_sum as double-float pairs (hi, lo) in carry[0, 2]
  // and carry[1, 3], as the host keeps them in double (shaders/schedule_free_adamw.comp).
  Carry device_carry(const Scalars& s) const override {
    Carry c{};
    for (size_t k = 0; k < 2; ++k) {
      c[k] = float(s[k]);
      c[k + 2] = float(s[k] - double(c[k]));
    }
    return c;
  }
  Scalars carried_scalars(const Carry& c) const override {
    return {double(c[0]) + double(c[2]), double(c[1]) + double(c[3])};
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<ScheduleFreeAdamwOptions>(options);
    require_adam_like(*this, g, o);
    require_nonnegative(*this, g, "r", o.r);
    require_nonnegative(*this, g, "weight_lr_power", o.weight_lr_power);
  }
  // z and x start at the parameter (the reference's first step), copied by initialize().
  std::vector<size_t> param_copy_slots() const override { return {0, 2}; }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<ScheduleFreeAdamwOptions>(options).decay_at_z};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<ScheduleFreeAdamwOptions>(options);
    const Schedule s = schedule(o, step);
    PushWriter(out)
        .f32("lr", s.lr)
        .f32("decay", s.lr * o.weight_decay)
        .f32("beta1", o.beta1)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.eps)
        .f32("ckp1", s.ckp1)
        .f32("one_minus_ckp1", 1 - s.ckp1);
  }
};

}  // namespace

const Rule& schedule_free_adamw_rule() {
  static const ScheduleFreeAdamw rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
