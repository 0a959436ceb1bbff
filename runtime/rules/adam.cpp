// Adam / AdamW / AMSGrad (torch.optim.Adam, AdamW). Shaders: shaders/adam.comp; cautious steps
// adam_cautious.comp, then adam_cautious_apply.comp (shaders/vko_cautious.glsl).
#include <cmath>

#include "precision.hpp"
#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Adam final : public Rule {
 public:
  const char* name() const override { return "Adam"; }
  bool device_scalars() const override { return true; }  // shaders/adam.comp
  const char* shader() const override { return "adam"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions& o) const override {
    return {true, true, std::get<AdamOptions>(o).amsgrad};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  // 8-bit (bitsandbytes' Adam8bit): m on the signed map, v on the unsigned one.
  uint32_t q8_map(const RuleOptions&, size_t slot) const override {
    return slot == 0 ? uint32_t(kQ8Signed) : slot == 1 ? uint32_t(kQ8Unsigned) : 0u;
  }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdamOptions>(options);
    require_adam_like(*this, g, o);
    require_nonnegative(*this, g, "eps_root", o.eps_root);
    require(o.amsgrad_max == AmsgradMax::raw || o.amsgrad_max == AmsgradMax::bias_corrected, *this, g, "amsgrad_max",
            double(uint32_t(o.amsgrad_max)), "must be raw (0) or bias_corrected (1)");
    require(o.decay_order == DecayOrder::before || o.decay_order == DecayOrder::after, *this, g, "decay_order",
            double(uint32_t(o.decay_order)), "must be before (0) or after (1)");
  }

  std::vector<RulePass> passes(const RuleOptions& options) const override {
    if (std::get<AdamOptions>(options).cautious) return partial_sums_then_apply("adam_cautious", "adam_cautious_apply");
    return Rule::passes(options);
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdamOptions>(options);
    return {o.amsgrad,
            o.maximize,
            o.decoupled_weight_decay,
            o.decay_order == DecayOrder::after,
            o.amsgrad_max == AmsgradMax::bias_corrected,
            o.eps_root != 0};
  }

  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 0);
  }
  // Every pass pushes the same scalars, after the scratch words in cautious steps.
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out, size_t) const override {
    const auto& o = std::get<AdamOptions>(options);
    const double t = double(step.t);
    const double bc1 = o.bias_correction ? 1 - std::pow(o.beta1, t) : 1;
    const double bc2 = o.bias_correction ? 1 - std::pow(o.beta2, t) : 1;
    PushWriter w(out);
    if (o.cautious) w.scratch_words();
    w.f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.eps)
        .f32("eps_root", o.eps_root)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay)
        .f32("step_size", o.lr / bc1)
        .f32("inv_bc2", 1 / bc2)
        .f32("sqrt_bc2", std::sqrt(bc2));
  }
};

}  // namespace

const Rule& adam_rule() {
  static const Adam rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
