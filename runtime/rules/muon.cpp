// Muon (torch.optim.Muon), with AdamW in groups with use_muon = false (MuonWithAuxAdam). Passes:
// shaders/muon_momentum.comp (Muon groups: the momentum and U into the update slot, with partial
// sums of U^2), per-tensor sums (shaders/reduce.comp), Newton-Schulz on every matrix as batched
// GEMMs (shaders/gemm.comp, jobs from add_ns_jobs), shaders/muon_apply.comp (the parameter step;
// AdamW groups take their whole step here).
#include "rules/muon.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "rules/rule.hpp"

namespace vkoptim::detail {

VkDeviceSize ns_workspace_bytes(uint32_t rows, uint32_t cols) {
  const VkDeviceSize m = std::min(rows, cols), n = std::max(rows, cols);
  auto aligned = [](VkDeviceSize floats) { return (floats * 4 + 15) / 16 * 16; };
  return 2 * aligned(m * n) + 2 * aligned(m * m);
}

double muon_lr_factor(const MuonOptions& o, uint32_t rows, uint32_t cols) {
  const double r = rows, c = cols;
  switch (o.adjust_lr) {
    case MuonLrAdjust::match_rms_adamw:
      return 0.2 * std::sqrt(std::max(r, c));
    case MuonLrAdjust::spectral_unclamped:
      return std::sqrt(r / c);
    default:
      return std::sqrt(std::max(1.0, r / c));
  }
}

void add_ns_jobs(const MatrixOperands& mat, const MuonOptions& o, std::vector<std::vector<GemmJob>>& dispatches) {
  // X is m x n with m <= n: U itself, or its transpose when rows > cols.
  const bool transposed = mat.rows > mat.cols;
  const uint32_t m = std::min(mat.rows, mat.cols), n = std::max(mat.rows, mat.cols);
  auto aligned = [](VkDeviceSize floats) { return (floats * 4 + 15) / 16 * 16; };
  const VkDeviceAddress x[2] = {mat.workspace, mat.workspace + aligned(VkDeviceSize(m) * n)};
  const VkDeviceAddress a = x[1] + aligned(VkDeviceSize(m) * n), bm = a + aligned(VkDeviceSize(m) * m);
  const float factor = float(muon_lr_factor(o, mat.rows, mat.cols));
  // Element (i, j) of X in the update slot (row-major rows x cols): strides of X or of X^T.
  const uint32_t slot_row = transposed ? 1 : n, slot_col = transposed ? m : 1;

  // X0 = U / max(|U|_F, eps): a job with k = 0 whose D term is U. Without iterations it is the
  // result, written in place (same strides: D = C) and scaled.
  GemmJob norm;
  norm.m = m, norm.n = n, norm.k = 0, norm.alpha = 0, norm.beta = 1;
  norm.d = mat.slot, norm.d_row = slot_row, norm.d_col = slot_col;
  norm.norm_entry = mat.norm_entry, norm.eps = float(o.eps), norm.round_bf16 = o.ns_bf16;
  if (o.ns_steps == 0) {
    norm.c = mat.slot, norm.c_row = slot_row, norm.c_col = slot_col, norm.out_scale = factor;
  } else {
    norm.c = x[0], norm.c_row = n, norm.c_col = 1;
  }
  dispatches[0].push_back(norm);
  for (uint32_t it = 0; it < o.ns_steps; ++it) {
    const VkDeviceAddress cur = x[it % 2], next = x[(it + 1) % 2];
    const bool last = it + 1 == o.ns_steps;
    GemmJob gram;  // A = X X^T
    gram.m = m, gram.n = m, gram.k = n;
    gram.a = cur, gram.a_row = n, gram.a_col = 1;
    gram.b = cur, gram.b_row = 1, gram.b_col = n;
    gram.c = a, gram.c_row = m;
    gram.round_bf16 = o.ns_bf16;
    GemmJob poly;  // Bm = c*A*A + b*A
    poly.m = m, poly.n = m, poly.k = m;
    poly.a = a, poly.a_row = m, poly.a_col = 1;
    poly.b = a, poly.b_row = m, poly.b_col = 1;
    poly.c = bm, poly.c_row = m;
    poly.d = a, poly.d_row = m;
    poly.alpha = float(o.ns_c), poly.beta = float(o.ns_b);
    poly.round_bf16 = o.ns_bf16;
    GemmJob step;  // X' = Bm*X + a*X
    step.m = m, step.n = n, step.k = m;
    step.a = bm, step.a_row = m, step.a_col = 1;
    step.b = cur, step.b_row = n, step.b_col = 1;
    step.d = cur, step.d_row = n;
    step.alpha = 1, step.beta = float(o.ns_a);
    step.round_bf16 = o.ns_bf16;
    if (last) {
      step.c = mat.slot, step.c_row = slot_row, step.c_col = slot_col, step.out_scale = factor;
    } else {
      step.c = next, step.c_row = n;
    }
    dispatches[1 + 3 * it].push_back(gram);
    dispatches[2 + 3 * it].push_back(poly);
    dispatches[3 + 3 * it].push_back(step);
  }
}

namespace {

enum Slot : size_t { kMomentum = 0, kUpdate = 1, kExpAvg = 2, kExpAvgSq = 3 };
enum Pass : size_t { kMomentumPass = 0, kReduce = 1, kNewtonSchulz = 2, kApply = 3 };

class Muon final : public Rule {
 public:
  const char* name() const override { return "Muon"; }
  // (replayable: shaders/muon_momentum.comp, muon_apply.comp; the products take no step scalars)
  bool device_scalars() const override { return true; }
  const char* shader() const override { return "muon_apply"; }
  // Muon groups keep momentum_buffer (operand 2) and the transient update (operand 3); AdamW
  // groups exp_avg and exp_avg_sq (operands 4 and 5).
  std::vector<std::string> slot_names() const override {
    return {"momentum_buffer", "update", "exp_avg", "exp_avg_sq"};
  }
  std::vector<bool> active_slots(const RuleOptions& options) const override {
    const bool muon = std::get<MuonOptions>(options).use_muon;
    return {muon, muon, !muon, !muon};
  }
  float initial_value(const RuleOptions&, size_t) const override { return 0.0f; }
  bool slot_transient(size_t slot) const override { return slot == kUpdate; }

  void validate(const RuleOptions& options, size_t g) const override {
    const auto& o = std::get<MuonOptions>(options);
    require_nonnegative(*this, g, "lr", o.lr);
    require_nonnegative(*this, g, "weight_decay", o.weight_decay);
    require_unit_interval(*this, g, "momentum", o.momentum);
    for (auto [name, v] : {std::pair{"ns_a", o.ns_a}, {"ns_b", o.ns_b}, {"ns_c", o.ns_c}})
      require(std::isfinite(v), *this, g, name, v, "must be finite");
    require(std::isfinite(o.eps) && o.eps > 0, *this, g, "eps", o.eps, "must be > 0");
    require(o.ns_steps < 100, *this, g, "ns_steps", o.ns_steps, "must be below 100 (torch's limit)");
    require(uint32_t(o.adjust_lr) <= 2, *this, g, "adjust_lr", double(uint32_t(o.adjust_lr)),
            "must be original (0), match_rms_adamw (1) or spectral_unclamped (2)");
    require_unit_interval(*this, g, "beta1", o.beta1);
    require_unit_interval(*this, g, "beta2", o.beta2);
    require_nonnegative(*this, g, "adam_eps", o.adam_eps);
  }
  void validate_tensor(const RuleOptions& options, const ParamTensor& t, const std::string& label) const override {
    if (!std::get<MuonOptions>(options).use_muon || t.rows > 0 || t.whole_rows > 0) return;
    throw Error(Status::invalid_argument,
                label +
                    ": Muon takes 2-D parameters only (set ParamTensor::rows); step other tensors in a group "
                    "with use_muon = false (AdamW)");
  }
  const char* fixed_once_allocated(const RuleOptions& before, const RuleOptions& after) const override {
    return std::get<MuonOptions>(before).ns_steps != std::get<MuonOptions>(after).ns_steps ? "ns_steps" : nullptr;
  }

  uint32_t matrix_dispatches(const RuleOptions& options) const override {
    const auto& o = std::get<MuonOptions>(options);
    return o.use_muon ? 1 + 3 * o.ns_steps : 0;
  }
  VkDeviceSize matrix_workspace_bytes(uint32_t rows, uint32_t cols) const override {
    return ns_workspace_bytes(rows, cols);
  }
  size_t matrix_slot() const override { return kUpdate; }
  void add_matrix_jobs(const RuleOptions& options, const MatrixOperands& m,
                       std::vector<std::vector<GemmJob>>& dispatches) const override {
    add_ns_jobs(m, std::get<MuonOptions>(options), dispatches);
  }

  std::vector<RulePass> passes(const RuleOptions&) const override {
    return {{RulePass::Kind::elementwise, "muon_momentum", true, RulePass::Sums::none},
            {RulePass::Kind::reduce_tensors},
            {RulePass::Kind::newton_schulz, "gemm"},
            {RulePass::Kind::elementwise, "muon_apply"}};
  }
  bool pass_runs(const RuleOptions& options, size_t pass) const override {
    return pass != kMomentumPass || std::get<MuonOptions>(options).use_muon;
  }
  std::vector<uint32_t> spec_constants(const RuleOptions& options) const override {
    const auto& o = std::get<MuonOptions>(options);
    return {o.use_muon, o.nesterov, o.ns_bf16};
  }
  void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const override {
    pass_push_constants(options, step, out, kApply);
  }
  void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out,
                           size_t pass) const override {
    const auto& o = std::get<MuonOptions>(options);
    PushWriter w(out);
    if (pass == kMomentumPass) {
      w.scratch_words().f32("momentum", o.momentum).f32("one_minus_momentum", 1 - o.momentum);
      return;
    }
    // The apply pass: Muon's decay and step (X already holds the lr factor), or AdamW's step.
    const double t = double(step.t);
    const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
    w.f32("lr", o.lr)
        .f32("decay_scale", 1 - o.lr * o.weight_decay)
        .f32("one_minus_beta1", 1 - o.beta1)
        .f32("beta2", o.beta2)
        .f32("one_minus_beta2", 1 - o.beta2)
        .f32("eps", o.adam_eps)
        .f32("step_size", o.lr / bc1)
        .f32("sqrt_bc2", std::sqrt(bc2));
  }
};

}  // namespace

const Rule& muon_rule() {
  static const Muon rule;  // stateless
  return rule;
}

}  // namespace vkoptim::detail
