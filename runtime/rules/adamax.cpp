// Adamax (torch.optim.Adamax). Shader: shaders/adamax.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Adamax final : public Rule {
 public:
  const char* name() const override { return "Adamax"; }
  bool device_scalars() const override { return true; }  // shaders/adamax.comp
  const char* shader() const override { return "adamax"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_inf"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdamaxOptions>(options);
    require_adam_like(*this, g, o);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdamaxOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AdamaxOptions>(options);
    const double bc1 = 1 - std::pow(o.beta1, double(step.t));
    PushWriter(out)
        .f32("step_size", o.lr / bc1)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& adamax_rule() {
  static const Adamax rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
