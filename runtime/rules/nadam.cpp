// NAdam (torch.optim.NAdam). Shader: shaders/nadam.comp. The running product of the momentum
// schedule, mu_product, is a per-tensor scalar kept here, rounded to float after each product as
// torch's float32 state is.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

// mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))
double mu_at(const NadamOptions& o, double t) {
  return o.beta1 * (1 - 0.5 * std::pow(0.96, t * o.momentum_decay));
}

// mu_product after the step: torch's `mu_product *= mu` on a float32 0-d tensor.
double product_at(const NadamOptions& o, const StepInfo& step) {
  return double(float(step.scalars[0]) * float(mu_at(o, double(step.t))));
}

class Nadam final : public Rule {
 public:
  const char* name() const override { return "NAdam"; }
  bool device_scalars() const override { return true; }  // shaders/nadam.comp
  const char* shader() const override { return "nadam"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  std::vector<std::string> scalar_names() const override { return {"mu_product"}; }
  Scalars initial_scalars(const RuleOptions&) const override { return {1.0}; }
  Scalars advance_scalars(const RuleOptions& options, const StepInfo& step) const override {
    Scalars s = step.scalars;
    s[0] = product_at(std::get<NadamOptions>(options), step);
    return s;
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<NadamOptions>(options);
    require_adam_like(*this, g, o);
    require_nonnegative(*this, g, "momentum_decay", o.momentum_decay);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<NadamOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<NadamOptions>(options);
    const double t = double(step.t);
    const double mu = mu_at(o, t), mu_next = mu_at(o, t + 1);
    const double product = product_at(o, step);
    const double bc2 = 1 - std::pow(o.beta2, t);
    PushWriter(out)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay)
        .f32("coef_g", o.lr * (1 - mu) / (1 - product))
        .f32("coef_m", o.lr * mu_next / (1 - product * mu_next))
        .f32("bc2", bc2);
  }
};

}  // namespace

const Rule& nadam_rule() {
  static const Nadam rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
