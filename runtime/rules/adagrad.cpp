// Adagrad (torch.optim.Adagrad). Shader: shaders/adagrad.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Adagrad final : public Rule {
 public:
  const char* name() const override { return "Adagrad"; }
  bool device_scalars() const override { return true; }  // shaders/adagrad.comp
  const char* shader() const override { return "adagrad"; }
  std::vector<std::string> slot_names() const override { return {"sum"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true}; }
  float initial_value(const RuleOptions& o, size_t) const override {
    return float(std::get<AdagradOptions>(o).initial_accumulator_value);
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdagradOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_nonnegative(*this, g, "lr_decay", o.lr_decay);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require_nonnegative(*this, g, "initial_accumulator_value", o.initial_accumulator_value);
    require_nonnegative(*this, g, "eps", o.eps);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdagradOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AdagradOptions>(options);
    PushWriter(out)
        .f32("clr", o.lr / (1 + double(step.t - 1) * o.lr_decay))
        .f32("weight_decay", o.weight_decay)
        .f32("eps", o.eps)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& adagrad_rule() {
  static const Adagrad rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
