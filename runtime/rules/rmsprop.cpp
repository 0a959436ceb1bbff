// RMSprop (torch.optim.RMSprop). Shader: shaders/rmsprop.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Rmsprop final : public Rule {
 public:
  const char* name() const override { return "RMSprop"; }
  bool device_scalars() const override { return true; }  // shaders/rmsprop.comp
  const char* shader() const override { return "rmsprop"; }
  std::vector<std::string> slot_names() const override { return {"square_avg", "momentum_buffer", "grad_avg"}; }
  std::vector<bool> active_slots(const RuleOptions& options) const override {
    const auto& o = std::get<RmspropOptions>(options);
    return {true, o.momentum > 0, o.centered};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<RmspropOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_nonnegative(*this, g, "alpha", o.alpha);
    require_nonnegative(*this, g, "eps", o.eps);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require_nonnegative(*this, g, "momentum", o.momentum);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<RmspropOptions>(options);
    return {o.maximize, o.centered, o.momentum > 0, o.eps_in_sqrt, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo&, PushBlock& out) const override {
    const auto& o = std::get<RmspropOptions>(options);
    PushWriter(out)
        .f32("lr", o.lr)
        .f32("alpha", o.alpha)
        .f32("one_minus_alpha", 1 - o.alpha)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("momentum", o.momentum)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& rmsprop_rule() {
  static const Rmsprop rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
