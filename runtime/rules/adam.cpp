// Adam / AdamW / AMSGrad (torch.optim.Adam, AdamW). Shader: shaders/adam.comp.
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

// Mirrors adam.comp's push block.
struct AdamPush {
  PushHeader header;
  float beta1, beta2, eps, weight_decay, decay_scale, step_size, inv_sqrt_bc2;
};
static_assert(sizeof(AdamPush) <= kPushConstantBytes);

class Adam final : public Rule {
 public:
  const char* name() const override { return "Adam"; }
  const char* shader() const override { return "adam"; }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }
  std::vector<bool> active_slots(const RuleOptions& o) const override {
    return {true, true, std::get<AdamOptions>(o).amsgrad};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdamOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_unit_interval(*this, g, "beta1", o.beta1);
    require_unit_interval(*this, g, "beta2", o.beta2);
    require_nonnegative(*this, g, "eps", o.eps);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<AdamOptions>(options);
    return {o.amsgrad, o.maximize, o.decoupled_weight_decay};
  }

  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AdamOptions>(options);
    const double t = double(step.t);
    const double bc1 = 1 - std::pow(o.beta1, t);
    const double bc2 = 1 - std::pow(o.beta2, t);
    PushWriter(out)
        .f32(o.beta1)
        .f32(o.beta2)
        .f32(o.eps)
        .f32(o.weight_decay)
        .f32(1 - o.lr * o.weight_decay)
        .f32(o.lr / bc1)
        .f32(1 / std::sqrt(bc2));
  }
};

}  // namespace

const Rule& adam_rule() {
  static const Adam rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
