// ADOPT (Taniguchi et al. 2024; the authors' iShohei220/adopt, clipped). Shader: shaders/adopt.comp.
#include <cmath>
#include <limits>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Adopt final : public Rule {
 public:
  const char* name() const override { return "ADOPT"; }
  bool device_scalars() const override { return true; }  // shaders/adopt.comp
  const char* shader() const override { return "adopt"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdoptOptions>(options);
    require_adam_like(*this, g, o);
    require(std::isfinite(o.clip_exponent) && o.clip_exponent >= 0, *this, g, "clip_exponent", o.clip_exponent,
            "must be finite and >= 0");
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdoptOptions>(options);
    return {o.maximize, o.decoupled_weight_decay};
  }

  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AdoptOptions>(options);
    PushWriter(out)
        .f32("first", step.t == 1 ? 1 : 0)
        .f32("lr", o.lr)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.eps)
        .f32("weight_decay", o.weight_decay)
        .f32("decay_scale", 1 - o.lr * o.weight_decay)
        .f32("clip", clip(o, step.t));
  }

  // The clip of step t: (t-1)^clip_exponent, +inf without clipping.
  static double clip(const AdoptOptions& o, uint64_t t) {
    if (!o.use_clipping) return std::numeric_limits<double>::infinity();
    return std::pow(double(t - 1), o.clip_exponent);
  }
};

}  // namespace

const Rule& adopt_rule() {
  static const Adopt rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
