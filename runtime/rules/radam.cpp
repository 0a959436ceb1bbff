// RAdam (torch.optim.RAdam). Shader: shaders/radam.comp. The variance rectification is decided
// per step here, in double.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Radam final : public Rule {
 public:
  const char* name() const override { return "RAdam"; }
  bool device_scalars() const override { return true; }  // shaders/radam.comp
  const char* shader() const override { return "radam"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<RadamOptions>(options);
    require_adam_like(*this, g, o);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<RadamOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<RadamOptions>(options);
    const double t = double(step.t);
    const double bc1 = 1 - std::pow(o.beta1, t);
    const double bc2 = 1 - std::pow(o.beta2, t);
    const double rho_inf = 2 / (1 - o.beta2) - 1;
    const double rho_t = rho_inf - 2 * t * std::pow(o.beta2, t) / bc2;
    const bool rectified = rho_t > 5;
    const double r =
        rectified ? std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 0;
    PushWriter(out)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay)
        .f32("lr", o.lr)
        .f32("bc1", bc1)
        .f32("sqrt_bc2", std::sqrt(bc2))
        .f32("rect", r)
        .u32("rectified", rectified ? 1 : 0);
  }
};

}  // namespace

const Rule& radam_rule() {
  static const Radam rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
