// AdEMAMix (Pagliardini et al. 2024; the authors' apple/ml-ademamix). Shader: shaders/ademamix.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Ademamix final : public Rule {
 public:
  const char* name() const override { return "AdEMAMix"; }
  bool device_scalars() const override { return true; }  // shaders/ademamix.comp
  const char* shader() const override { return "ademamix"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg_fast", "exp_avg_slow", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdemamixOptions>(options);
    require_adam_like(*this, g, o);
    require_unit_interval(*this, g, "beta3", o.beta3);
    require(std::isfinite(o.alpha) && o.alpha >= 0, *this, g, "alpha", o.alpha, "must be finite and >= 0");
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<AdemamixOptions>(options).maximize};
  }

  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AdemamixOptions>(options);
    const double t = double(step.t), beta3 = beta3_at(o, step.t);
    const double alpha = o.alpha_warmup > 0 && step.t < o.alpha_warmup ? t / o.alpha_warmup * o.alpha : o.alpha;
    PushWriter(out)
        .f32("lr", o.lr)
        .f32("beta1", o.beta1)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("beta3", beta3)
        .f32("one_minus_beta3", 1 - beta3)
        .f32("alpha", alpha)
        .f32("bias_correction1", 1 - std::pow(o.beta1, t))
        .f32("sqrt_bias_correction2", std::sqrt(1 - std::pow(o.beta2, t)))
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay);
  }

  // beta3 of step t: during the warmup, the EMA whose half-life moves linearly from beta1's to
  // beta3's (the reference's linear_hl_warmup_scheduler, from beta1).
  static double beta3_at(const AdemamixOptions& o, uint64_t t) {
    if (o.beta3_warmup == 0 || t >= o.beta3_warmup) return o.beta3;
    const auto half_life = [](double beta) { return std::log(0.5) / std::log(beta + 1e-8) - 1; };
    const double a = double(t) / o.beta3_warmup;
    return std::pow(0.5, 1 / ((1 - a) * half_life(o.beta1) + a * half_life(o.beta3) + 1));
  }
};

}  // namespace

const Rule& ademamix_rule() {
  static const Ademamix rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
