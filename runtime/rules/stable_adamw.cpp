// StableAdamW (Wortsman et al. 2023, "Stable and low-precision training for large-scale
// vision-language models"; optimi's StableAdamW): AdamW with debiased betas whose lr is divided,
// per tensor, by max(1, RMS(g / sqrt(max(v, eps^2)))). Three passes: moments plus per-chunk partial
// sums (shaders/stable_adamw_moments.comp), per-tensor sums (shaders/reduce.comp), the update
// (shaders/stable_adamw_apply.comp). The sums are fixed-order trees.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

// b(1 - b^(t-1)) / (1 - b^t): 0 on the first step.
double debiased(double beta, uint64_t t) {
  return beta * (1 - std::pow(beta, double(t - 1))) / (1 - std::pow(beta, double(t)));
}

class StableAdamw final : public Rule {
 public:
  const char* name() const override { return "StableAdamW"; }
  bool device_scalars() const override { return true; }
  const char* shader() const override { return "stable_adamw_moments"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true, true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  void validate(const RuleOptions& options, size_t g) const override {
    require_adam_like(*this, g, std::get<StableAdamwOptions>(options));
  }
  std::vector<RulePass> passes(const RuleOptions&) const override {
    return partial_sums_then_apply("stable_adamw_moments", "stable_adamw_apply");
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<StableAdamwOptions>(options).maximize};
  }
  std::vector<uint32_t> pass_spec_constants(const RuleOptions& options, size_t pass) const override {
    return pass == 0 ? spec_constants(options) : std::vector<uint32_t>{};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 0);
  }
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out,
                           size_t pass) const override {
    const auto& o = std::get<StableAdamwOptions>(options);
    PushWriter w(out);
    w.scratch_words();  // filled by the optimizer
    if (pass == 0) {
      const double beta1 = debiased(o.beta1, step.t), beta2 = debiased(o.beta2, step.t);
      w.f32("one_minus_beta1", 1 - beta1)
          .f32("beta2", beta2)
          .f32("one_minus_beta2", 1 - beta2)
          .f32("eps_sq", o.eps * o.eps);
    } else {
      w.f32("lr", o.lr).f32("eps", o.eps).f32("weight_decay", o.weight_decay);
    }
  }
};

}  // namespace

const Rule& stable_adamw_rule() {
  static const StableAdamw rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
