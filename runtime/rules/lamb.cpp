// LAMB (You et al. 2019, in the Apex/DeepSpeed/optax form). Three passes: moments plus per-chunk
// partial sums (shaders/lamb_moments.comp), per-tensor sums (shaders/reduce.comp), the update
// with the tensor's trust ratio (shaders/lamb_apply.comp). The sums are fixed-order trees.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Lamb final : public Rule {
 public:
  const char* name() const override { return "LAMB"; }
  bool device_scalars() const override { return true; }  // shaders/lamb_moments.comp, lamb_apply.comp
  const char* shader() const override { return "lamb_moments"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<LambOptions>(options);
    require_adam_like(*this, g, o);
    require_nonnegative(*this, g, "min_trust_ratio", o.min_trust_ratio);
    require(std::isfinite(o.max_trust_ratio) && (o.max_trust_ratio == 0 || o.max_trust_ratio >= o.min_trust_ratio),
            *this, g, "max_trust_ratio", o.max_trust_ratio, "must be 0 (no clamp) or >= min_trust_ratio");
  }
  std::vector<RulePass> passes(const RuleOptions&) const override {
    return partial_sums_then_apply("lamb_moments", "lamb_apply");
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<LambOptions>(options).maximize};
  }
  std::vector<uint32_t> pass_spec_constants(const RuleOptions& options, size_t pass) const override {
    return pass == 0 ? spec_constants(options) : std::vector<uint32_t>{};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 0);
  }
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out,
                           size_t pass) const override {
    const auto& o = std::get<LambOptions>(options);
    const double t = double(step.t);
    const double bc1 = o.bias_correction ? 1 - std::pow(o.beta1, t) : 1;
    const double bc2 = o.bias_correction ? 1 - std::pow(o.beta2, t) : 1;
    PushWriter w(out);
    w.scratch_words();  // filled by the optimizer
    if (pass == 0)
      w.f32("beta1", o.beta1)
          .f32("one_minus_beta1", 1 - o.beta1)
          .f32("beta2", o.beta2)
          .f32("one_minus_beta2", 1 - o.beta2)
          .f32("eps", o.eps)
          .f32("weight_decay", o.weight_decay)
          .f32("inv_bc1", 1 / bc1)
          .f32("inv_bc2", 1 / bc2);
    else
      w.f32("lr", o.lr)
          .f32("eps", o.eps)
          .f32("weight_decay", o.weight_decay)
          .f32("inv_bc1", 1 / bc1)
          .f32("inv_bc2", 1 / bc2)
          .f32("min_trust", o.min_trust_ratio)
          .f32("max_trust", o.max_trust_ratio)
          .f32("unit_trust", !o.use_nvlamb && o.weight_decay == 0 ? 1 : 0);
  }
};

}  // namespace

const Rule& lamb_rule() {
  static const Lamb rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
