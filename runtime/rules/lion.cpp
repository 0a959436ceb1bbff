// Lion (google/automl lion_pytorch.py). Shaders: shaders/lion.comp; cautious steps
// lion_cautious.comp, then lion_cautious_apply.comp (shaders/vko_cautious.glsl).
#include <cmath>

#include "precision.hpp"
#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Lion final : public Rule {
 public:
  const char* name() const override { return "Lion"; }
  bool device_scalars() const override { return true; }  // shaders/lion.comp
  const char* shader() const override { return "lion"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  uint32_t q8_map(const RuleOptions&, size_t) const override { return kQ8Signed; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<LionOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require(std::isfinite(o.beta1) && o.beta1 >= 0 && o.beta1 <= 1, *this, g, "beta1", o.beta1, "must be in [0, 1]");
    require(std::isfinite(o.beta2) && o.beta2 >= 0 && o.beta2 <= 1, *this, g, "beta2", o.beta2, "must be in [0, 1]");
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
  }
  std::vector<RulePass> passes(const RuleOptions& options) const override {
    if (std::get<LionOptions>(options).cautious) return partial_sums_then_apply("lion_cautious", "lion_cautious_apply");
    return Rule::passes(options);
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<LionOptions>(options).maximize};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 0);
  }
  // Every pass pushes the same scalars, after the scratch words in cautious steps.
  void pass_push_constants(const RuleOptions& options, const StepInfo&, PushBlock& out, size_t) const override {
    const auto& o = std::get<LionOptions>(options);
    PushWriter w(out);
    if (o.cautious) w.scratch_words();
    w.f32("lr", o.lr)
        .f32("beta1", o.beta1)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& lion_rule() {
  static const Lion rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
