// SGD (torch.optim.SGD) and its EMA-momentum form. Shaders: shaders/sgd.comp; cautious steps
// sgd_cautious.comp, then sgd_cautious_apply.comp (shaders/vko_cautious.glsl).
#include <cmath>

#include "precision.hpp"
#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

class Sgd final : public Rule {
 public:
  const char* name() const override { return "SGD"; }
  bool device_scalars() const override { return true; }  // shaders/sgd.comp
  const char* shader() const override { return "sgd"; }
  std::vector<std::string> slot_names() const override { return {"momentum_buffer"}; }
  std::vector<bool> active_slots(const RuleOptions& o) const override {
    return {std::get<SgdOptions>(o).momentum != 0};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  uint32_t q8_map(const RuleOptions&, size_t) const override { return kQ8Signed; }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<SgdOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_nonnegative(*this, g, "momentum", o.momentum);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require(std::isfinite(o.dampening), *this, g, "dampening", o.dampening, "must be finite");
    require(o.momentum_form == MomentumForm::torch || o.momentum_form == MomentumForm::ema, *this, g, "momentum_form",
            double(uint32_t(o.momentum_form)), "must be torch (0) or ema (1)");
    if (o.nesterov) {
      require(o.momentum > 0, *this, g, "momentum", o.momentum, "nesterov requires momentum > 0");
      require(o.dampening == 0, *this, g, "dampening", o.dampening, "nesterov requires dampening == 0");
    }
    if (o.cautious) require(o.momentum > 0, *this, g, "momentum", o.momentum, "cautious requires momentum > 0");
    if (o.momentum_form == MomentumForm::ema) {
      require(o.momentum < 1, *this, g, "momentum", o.momentum, "the EMA form requires momentum < 1");
      require(o.dampening == 0, *this, g, "dampening", o.dampening,
              "the EMA form fixes dampening to momentum; leave dampening at 0");
    }
  }

  std::vector<RulePass> passes(const RuleOptions& options) const override {
    if (std::get<SgdOptions>(options).cautious) return partial_sums_then_apply("sgd_cautious", "sgd_cautious_apply");
    return Rule::passes(options);
  }

  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<SgdOptions>(options);
    return {o.momentum != 0, o.nesterov, o.maximize, o.decoupled_weight_decay};
  }

  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 0);
  }
  // Every pass pushes the same scalars, after the scratch words in cautious steps.
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out, size_t) const override {
    const auto& o = std::get<SgdOptions>(options);
    const bool ema = o.momentum_form == MomentumForm::ema;
    PushWriter w(out);
    if (o.cautious) w.scratch_words();
    w.f32("lr", o.lr)
        .f32("momentum", o.momentum)
        .f32("damp_scale", ema ? 1 - o.momentum : 1 - o.dampening)
        .f32("weight_decay", o.weight_decay)
        .f32("nesterov_grad_scale", ema ? 1 - o.momentum : 1.0)
        // torch's first step copies g into the buffer. From the zero-filled buffer the regular
        // step gives the same bits unless dampening applies to it and not to the copy, so only
        // then is the first step told apart (on the host; see README, engine contract).
        .u32("first_step", !ema && step.fresh && o.dampening != 0 && !o.dampen_first_step ? 1 : 0)
        .f32("first_scale", o.dampen_first_step ? 1 - o.dampening : 1.0)
        .f32("decay_scale", 1 - o.lr * o.weight_decay);
  }
};

}  // namespace

const Rule& sgd_rule() {
  static const Sgd rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
