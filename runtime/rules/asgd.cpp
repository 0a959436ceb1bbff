// ASGD (torch.optim.ASGD). Shader: shaders/asgd.comp. eta and mu are per-tensor scalars kept
// here in double (torch keeps them as state).
#include <algorithm>
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Asgd final : public Rule {
 public:
  const char* name() const override { return "ASGD"; }
  bool device_scalars() const override { return true; }  // shaders/asgd.comp
  const char* shader() const override { return "asgd"; }
  std::vector<std::string> slot_names() const override { return {"ax"}; }
  std::vector<bool> active_slots(const RuleOptions&) const override { return {true}; }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  std::vector<std::string> scalar_names() const override { return {"eta", "mu"}; }
  Scalars initial_scalars(const RuleOptions& options) const override {
    return {std::get<AsgdOptions>(options).lr, 1.0};
  }
  Scalars advance_scalars(const RuleOptions& options, const StepInfo& step) const override {
    const auto& o = std::get<AsgdOptions>(options);
    const double t = double(step.t);
    Scalars s = step.scalars;
    s[0] = o.lr / std::pow(1 + o.lambd * o.lr * t, o.alpha);
    s[1] = 1 / std::max(1.0, t - o.t0);
    return s;
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AsgdOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require(std::isfinite(o.lambd), *this, g, "lambd", o.lambd, "must be finite");
    require(std::isfinite(o.alpha), *this, g, "alpha", o.alpha, "must be finite");
    require(std::isfinite(o.t0), *this, g, "t0", o.t0, "must be finite");
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<AsgdOptions>(options).maximize};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    const auto& o = std::get<AsgdOptions>(options);
    // torch keeps eta and mu as float32 tensors: 1 - lambd*eta is computed from the rounded eta.
    const double eta = float(step.scalars[0]);
    const float mu = float(step.scalars[1]);
    PushWriter(out)
        .f32("eta", eta)
        .f32("decay_scale", 1 - o.lambd * eta)
        .f32("mu", mu)
        .f32("weight_decay", o.weight_decay)
        .u32("copy_average", mu == 1 ? 1 : 0);
  }
};

}  // namespace

const Rule& asgd_rule() {
  static const Asgd rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
