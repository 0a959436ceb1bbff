// Adafactor (torch.optim.Adafactor). Four passes: row/column statistics of 2-D tensors
// (shaders/adafactor_factors.comp, one dispatch per tensor), the direction U with partial sums
// (shaders/adafactor_update.comp), per-tensor sums (shaders/reduce.comp), the update
// (shaders/adafactor_apply.comp).
#include <algorithm>
#include <cmath>

#include "rules/rule.hpp"

namespace vkoptim::detail {
namespace {

enum Slot : size_t { kRowVar = 0, kColVar = 1, kVariance = 2, kExpAvg = 3 };

class Adafactor final : public Rule {
 public:
  const char* name() const override { return "Adafactor"; }
  // (replayable: shaders/adafactor_update.comp, adafactor_apply.comp, adafactor_factors.comp)
  bool device_scalars() const override { return true; }
  const char* shader() const override { return "adafactor_update"; }
  std::vector<std::string> slot_names() const override { return {"row_var", "col_var", "variance", "exp_avg"}; }
  std::vector<bool> active_slots(const RuleOptions& options) const override {
    return {true, true, true, std::get<AdafactorOptions>(options).beta1 > 0};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  uint64_t slot_elements(const RuleOptions&, size_t slot, uint64_t count, uint64_t rows) const override {
    const bool factored = rows > 0;
    switch (slot) {
      case kRowVar:
        return factored ? rows : 0;
      case kColVar:
        return factored ? count / rows : 0;
      case kVariance:
        return factored ? 0 : count;
      default:
        return count;  // exp_avg
    }
  }
  bool slot_per_tensor(size_t slot) const override { return slot == kRowVar || slot == kColVar; }
  // The weight of the new statistics at step t: t^beta2_decay.
  static double factor_weight(const RuleOptions& options, uint64_t t) {
    return std::pow(double(t), std::get<AdafactorOptions>(options).beta2_decay);
  }
  // adafactor_factors.comp's push block (its stage, a specialization constant, picks rows,
  // columns or row means).
  void factor_push_constants(const RuleOptions& options, uint64_t t, const FactorStats& f,
                             PushBlock& out) const override {
    PushWriter(out)
        .u64("scratch_address", f.scratch)
        .u64("grad_address", f.grad)
        .u64("row_address", f.row_var)
        .u64("col_address", f.col_var)
        .u32("rows", f.rows)
        .u32("cols", f.cols)
        .f32("w", factor_weight(options, t))
        .u32("out_index", f.means_entry)
        .u32("wide", f.wide ? 1 : 0)
        .u32("tensor", f.tensor)
        .u32("group", f.group)
        .u32("first", f.first)
        .u32("count", f.count);
  }
  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<AdafactorOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require(std::isfinite(o.beta2_decay) && o.beta2_decay <= 0, *this, g, "beta2_decay", o.beta2_decay,
            "must be finite and <= 0");
    require_nonnegative(*this, g, "eps1", o.eps1);
    require_nonnegative(*this, g, "eps2", o.eps2);
    require(std::isfinite(o.d) && o.d > 0, *this, g, "d", o.d, "must be finite and > 0");
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require(std::isfinite(o.beta1) && o.beta1 >= 0 && o.beta1 < 1, *this, g, "beta1", o.beta1, "must be in [0, 1)");
  }
  std::vector<uint32_t> pass_spec_constants(const RuleOptions& options, size_t pass) const override {
    const auto& o = std::get<AdafactorOptions>(options);
    if (pass == 3) return {o.maximize, o.beta1 > 0};
    return spec_constants(options);
  }
  std::vector<RulePass> passes(const RuleOptions&) const override {
    RulePass update{RulePass::Kind::elementwise, "adafactor_update", true, RulePass::Sums::none};
    update.factor_means = true;
    RulePass apply{RulePass::Kind::elementwise, "adafactor_apply", false, RulePass::Sums::tensor};
    apply.factor_means = true;
    return {{RulePass::Kind::factor_stats, "adafactor_factors"}, update, {RulePass::Kind::reduce_tensors}, apply};
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    return {std::get<AdafactorOptions>(options).maximize};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, 1);
  }
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out,
                           size_t pass) const override {
    const auto& o = std::get<AdafactorOptions>(options);
    const double t = double(step.t);
    PushWriter w(out);
    w.scratch_words();        // filled by the optimizer
    w.u32("factor_base", 0);  // likewise
    if (pass == 1)
      w.f32("w", factor_weight(options, step.t)).f32("eps1", o.eps1).f32("eps1_sq", o.eps1 * o.eps1);
    else
      w.f32("eps1", o.eps1)
          .f32("eps2", o.eps2)
          .f32("rho", std::min(o.lr, 1 / std::sqrt(t)))
          .f32("d", o.d)
          .f32("decay_scale", 1 - o.lr * o.weight_decay)
          .f32("beta1", o.beta1)
          .f32("one_minus_beta1", 1 - o.beta1)
          .f32("eps1_sq", o.eps1 * o.eps1);
  }
};

}  // namespace

const Rule& adafactor_rule() {
  static const Adafactor rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
