// Adadelta (torch.optim.Adadelta). Shader: shaders/adadelta.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Adadelta final : public Rule {
 public:
  const char* name() const override { return "Adadelta"; }
  bool device_scalars() const override { return true; }  // shaders/adadelta.comp
  const char* shader() const override { return "adadelta"; }
  std::vector<std::string> slot_names() const override { return {"square_avg", "acc_delta"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdadeltaOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require(std::isfinite(o.rho) && o.rho >= 0 && o.rho <= 1, *this, g, "rho", o.rho, "must be in [0, 1]");
    require_nonnegative(*this, g, "eps", o.eps);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdadeltaOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo&, PushBlock& out) const override {
    const auto& o = std::get<AdadeltaOptions>(options);
    PushWriter(out)
        .f32("lr", o.lr)
        .f32("rho", o.rho)
        .f32("one_minus_rho", 1 - o.rho)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& adadelta_rule() {
  static const Adadelta rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
