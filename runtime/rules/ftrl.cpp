// FTRL-Proximal (TensorFlow's ApplyFtrlV2, Keras' Ftrl). Shader: shaders/ftrl.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Ftrl final : public Rule {
 public:
  const char* name() const override { return "FTRL"; }
  bool device_scalars() const override { return true; }  // shaders/ftrl.comp
  const char* shader() const override { return "ftrl"; }
  std::vector<std::string> slot_names() const override { return {"accumulator", "linear"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions& options, size_t slot) const override {
    return slot == 0 ? float(std::get<FtrlOptions>(options).initial_accumulator_value) : 0.0f;
  }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<FtrlOptions>(options);
    require(std::isfinite(o.lr) && o.lr > 0, *this, g, "lr", o.lr, "must be > 0 (FTRL divides by it)");
    require(std::isfinite(o.learning_rate_power) && o.learning_rate_power <= 0, *this, g, "learning_rate_power",
            o.learning_rate_power, "must be <= 0");
    require_nonnegative(*this, g, "initial_accumulator_value", o.initial_accumulator_value);
    require_nonnegative(*this, g, "l1", o.l1);
    require_nonnegative(*this, g, "l2", o.l2);
    require_nonnegative(*this, g, "l2_shrinkage", o.l2_shrinkage);
    require_nonnegative(*this, g, "beta", o.beta);
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<FtrlOptions>(options);
    return {o.maximize, o.learning_rate_power == -0.5};
  }

  void push_constants(const RuleOptions& options, const StepInfo&, PushBlock& out) const override {
    const auto& o = std::get<FtrlOptions>(options);
    PushWriter(out)
        .f32("lr", o.lr)
        .f32("power", -o.learning_rate_power)
        .f32("l1", o.l1)
        .f32("two_l2", 2 * o.l2 + (o.lr > 0 ? o.beta / o.lr : 0))  // TensorFlow folds beta into l2: l2 + beta/(2 lr)
        .f32("two_shrinkage", 2 * o.l2_shrinkage);
  }
};

}  // namespace

const Rule& ftrl_rule() {
  static const Ftrl rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
