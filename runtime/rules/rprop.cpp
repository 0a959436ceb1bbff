// Rprop (torch.optim.Rprop). Shader: shaders/rprop.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Rprop final : public Rule {
 public:
  const char* name() const override { return "Rprop"; }
  bool device_scalars() const override { return true; }  // shaders/rprop.comp
  const char* shader() const override { return "rprop"; }
  std::vector<std::string> slot_names() const override { return {"prev", "step_size"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  // torch: step_size = full_like(grad, lr) when the state is created.
  float initial_value(const RuleOptions& o, size_t slot) const override {
    return slot == 1 ? float(std::get<RpropOptions>(o).lr) : 0.0f;
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<RpropOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require(o.etaminus > 0 && o.etaminus < 1, *this, g, "etaminus", o.etaminus, "must be in (0, 1)");
    require(o.etaplus > 1 && std::isfinite(o.etaplus), *this, g, "etaplus", o.etaplus, "must be finite and > 1");
    require_nonnegative(*this, g, "step_size_min", o.step_size_min);
    require(std::isfinite(o.step_size_max) && o.step_size_max >= o.step_size_min, *this, g, "step_size_max",
            o.step_size_max, "must be finite and >= step_size_min");
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<RpropOptions>(options).maximize};
  }
  void push_constants(const RuleOptions& options, const StepInfo&, PushBlock& out) const override {
    const auto& o = std::get<RpropOptions>(options);
    PushWriter(out)
        .f32("etaminus", o.etaminus)
        .f32("etaplus", o.etaplus)
        .f32("step_min", o.step_size_min)
        .f32("step_max", o.step_size_max);
  }
};

}  // namespace

const Rule& rprop_rule() {
  static const Rprop rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
