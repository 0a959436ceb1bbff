#pragma once
// Host side of an update rule: validation, state slots, specialization constants and the
// push constants of one step. One implementation per rule in runtime/rules/<rule>.cpp, matching
// shaders/<rule>.comp.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "context_state.hpp"
#include "vkoptim/optimizer.hpp"

namespace vkoptim::detail {

// Mirrors VkoPushHeader in shaders/vko_push.glsl; rule scalars follow it.
struct PushHeader {
  uint32_t table_address[2] = {};  // low, high
  uint32_t map_address[2] = {};    // BDA: address (low, high); descriptors: first bound block
  uint32_t seg_base = 0;
  uint32_t block_base = 0;
  uint32_t block_end = 0;
  uint32_t round_key = 0;  // stochastic rounding: round_key(seed, step)
  // The device step: the step buffer's address (address path), the first entry of the pass's
  // scalars there, and (prologues) the group.
  uint32_t step_address[2] = {};
  uint32_t step_base = 0;
  uint32_t step_group = 0;
  float ema_weight = 0;  // 1 - the EMA's decay this step (pass updating an EMA, pushed steps)
  uint32_t reserved = 0;
};
static_assert(sizeof(PushHeader) == 56);

// One scalar a PushWriter wrote: its name in the shader's push block, its offset within the rule
// area and its GLSL type (glslang's reflection codes: float 0x1406, uint 0x1405, uvec2 0x8dc6).
struct PushField {
  const char* name;
  uint32_t offset;
  uint32_t type;
};

// A push-constant block: header plus up to 80 bytes of rule scalars.
struct PushBlock {
  PushHeader header;
  std::array<uint32_t, (kPushConstantBytes - sizeof(PushHeader)) / 4> rule{};
  uint32_t rule_bytes = 0;  // how much of `rule` is used
  // When set, every PushWriter call appends what it wrote: the host side of the push contract,
  // checked against each shader's reflected push block (tests/core/test_push_contract.cpp).
  std::vector<PushField>* trace = nullptr;
};

// Per-tensor facts a step's scalars depend on.
constexpr size_t kMaxStateSlots = 4;  // operands 2-5 (0, 1: parameter and gradient; 6, 7: master, absmax)
constexpr size_t kMaxScalars = 4;     // per-tensor scalars a rule keeps on the host (e.g. NAdam's mu_product)
using Scalars = std::array<double, kMaxScalars>;

// Per-tensor facts a step's scalars depend on.
struct StepInfo {
  uint64_t t = 1;      // the step number being taken (torch increments before the math)
  bool fresh = false;  // no step taken and no state written yet (first-step rules)
  Scalars scalars{};   // the tensor's host-kept scalars before this step
};

struct GemmJob;  // runtime/gemm.hpp

// A matrix of a newton_schulz pass: its slot that the products orthogonalise in place (row-major
// rows x cols, f32), its workspace (Rule::matrix_workspace_bytes) and the scratch entry of its
// sum of squares.
struct MatrixOperands {
  VkDeviceAddress slot = 0, workspace = 0;
  uint32_t rows = 0, cols = 0;
  uint32_t norm_entry = 0;
};

// One pass of a rule's step. Most rules have one elementwise pass; rules with reductions add
// passes that write per-chunk partial sums, reduce them per tensor (or per group), and read the
// sums back (see shaders/vko_reduce.glsl, shaders/vko_elementwise.glsl, shaders/reduce.comp).
struct RulePass {
  // factor_stats: Adafactor's row and column statistics of 2-D tensors, one dispatch per tensor
  // (address path only). newton_schulz: Muon's orthogonalisation of every matrix's update slot
  // in place, as batched GEMMs (runtime/gemm.hpp; address path only; the optimizer plans them
  // from Rule::add_matrix_jobs).
  enum class Kind { elementwise, reduce_tensors, reduce_groups, factor_stats, newton_schulz };
  enum class Sums { none, tensor, group };  // which sums an elementwise pass reads
  Kind kind = Kind::elementwise;
  const char* shader = nullptr;  // elementwise passes
  bool partials = false;         // writes per-chunk partial sums (256 elements of a tensor)
  Sums sums = Sums::none;
  bool factor_means = false;  // reads per-tensor row means (word kScratchWords of the push area)
};

// A factor_stats pass over one 2-D tensor (rows x cols): where its gradient and row/column
// statistics live, and the scratch entry of its row mean.
struct FactorStats {
  VkDeviceAddress scratch = 0, grad = 0, row_var = 0, col_var = 0;
  uint32_t rows = 0, cols = 0;
  uint32_t means_entry = 0;
  bool wide = false;  // every row starts aligned to the wide access
  uint32_t tensor = 0, group = 0;
  uint32_t first = 0, count = 0;  // a split piece's elements of the whole tensor
};

// Reduction passes start their rule push area with these words, filled by the optimizer:
// scratch address (low, high), partials base, sums base (entries of 8 bytes).
constexpr uint32_t kScratchWords = 4;

class Rule {
 public:
  virtual ~Rule() = default;
  virtual const char* name() const = 0;    // for messages, e.g. "Adam"
  virtual const char* shader() const = 0;  // shaders/<shader>.comp
  // Every state slot the rule may keep, in operand order (operand 2 + index).
  virtual std::vector<std::string> slot_names() const = 0;
  // Which of those slots exist under `options`.
  virtual std::vector<bool> active_slots(const RuleOptions& options) const = 0;
  // The value a slot starts at.
  virtual float initial_value(const RuleOptions& options, size_t slot) const = 0;
  // Elements a slot keeps for a tensor of `count` elements and `rows` rows (0: 1-D); 0: the
  // tensor keeps no such slot. Per-element slots by default.
  virtual uint64_t slot_elements(const RuleOptions&, size_t, uint64_t count, uint64_t) const { return count; }
  // Which 8-bit map a slot may be stored with (kQ8Signed, kQ8Unsigned in precision.hpp), or 0:
  // the slot cannot be 8-bit.
  virtual uint32_t q8_map(const RuleOptions&, size_t) const { return 0; }
  // Slots that start as a copy of the parameter (Schedule-Free's z and x): initialize() copies
  // them, so no recorded step depends on being the first one.
  virtual std::vector<size_t> param_copy_slots() const { return {}; }
  // Slots indexed per tensor (a row or column factor) rather than per element.
  virtual bool slot_per_tensor(size_t) const { return false; }
  // factor_stats passes: the push constants of one tensor's statistics at step t.
  virtual void factor_push_constants(const RuleOptions&, uint64_t, const FactorStats&, PushBlock&) const {}
  // Throws invalid_argument naming the group, the option and its value.
  virtual void validate(const RuleOptions& options, size_t group) const = 0;
  // Specialization constants from id 2 on (ids 0 and 1 are workgroup size and items).
  virtual std::vector<uint32_t> spec_constants(const RuleOptions& options) const = 0;
  // Fills out.rule / out.rule_bytes for one step.
  virtual void push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out) const = 0;

  // Whether the device computes this rule's step scalars (its shaders define
  // rule_device_scalars, shaders/vko_step.glsl): replayable recordings need it.
  virtual bool device_scalars() const { return false; }

  // Multi-pass rules override these; `pass` indexes passes(options). Every group of an optimizer
  // takes the same passes (add_group refuses options that need others).
  virtual std::vector<RulePass> passes(const RuleOptions&) const { return {{RulePass::Kind::elementwise, shader()}}; }
  virtual std::vector<uint32_t> pass_spec_constants(const RuleOptions& options, size_t) const {
    return spec_constants(options);
  }
  virtual void pass_push_constants(const RuleOptions& options, const StepInfo& step, PushBlock& out, size_t) const {
    push_constants(options, step, out);
  }

  // newton_schulz passes (the optimizer plans them): how many product dispatches a group's
  // matrices take (0: the group has none), the workspace of one rows x cols matrix, the slot the
  // products read and write, and a matrix's jobs appended to each dispatch's list.
  virtual uint32_t matrix_dispatches(const RuleOptions&) const { return 0; }
  virtual VkDeviceSize matrix_workspace_bytes(uint32_t, uint32_t) const { return 0; }
  virtual size_t matrix_slot() const { return 0; }
  virtual void add_matrix_jobs(const RuleOptions&, const MatrixOperands&, std::vector<std::vector<GemmJob>>&) const {}

  // Groups whose tensors a pass skips (Muon's momentum pass in its AdamW groups).
  virtual bool pass_runs(const RuleOptions&, size_t) const { return true; }
  // Slots that hold a step's intermediate values, not state: never saved, loaded or named by
  // state access, always f32 (Muon's update, orthogonalised in place).
  virtual bool slot_transient(size_t) const { return false; }
  // Throws invalid_argument (naming `label` and why) when a tensor cannot be stepped by a group
  // with these options (Muon takes 2-D parameters).
  virtual void validate_tensor(const RuleOptions&, const ParamTensor&, const std::string&) const {}
  // The option a change from `before` to `after` may not make once state is allocated, or null.
  virtual const char* fixed_once_allocated(const RuleOptions&, const RuleOptions&) const { return nullptr; }

  // Per-tensor scalars kept on the host in double (torch keeps them as 0-d state tensors),
  // readable and writable by name like any state.
  virtual std::vector<std::string> scalar_names() const { return {}; }
  virtual Scalars initial_scalars(const RuleOptions&) const { return {}; }
  // The scalars after the step `step` describes.
  virtual Scalars advance_scalars(const RuleOptions&, const StepInfo& step) const { return step.scalars; }
  // Replayable steps keep the scalars on the device as a carry of 4 floats (VkoStep::carry in
  // shaders/vko_step.glsl): the carry standing for host scalars (by default each rounded to
  // float, as torch's float32 state), and the scalars a carry stands for.
  using Carry = std::array<float, kMaxScalars>;
  virtual Carry device_carry(const Scalars& s) const {
    Carry c{};
    for (size_t k = 0; k < kMaxScalars; ++k) c[k] = float(s[k]);
    return c;
  }
  virtual Scalars carried_scalars(const Carry& c) const {
    Scalars s{};
    for (size_t k = 0; k < kMaxScalars; ++k) s[k] = c[k];
    return s;
  }
};

// The rule for this options alternative.
const Rule& rule_for(const RuleOptions& options);

// Shared validation helpers: messages read "<rule> group <g>: <option> = <value>: <why>".
void require(bool ok, const Rule& rule, size_t group, const char* option, double value, const char* why);
void require_nonnegative(const Rule& rule, size_t group, const char* option, double value);
void require_unit_interval(const Rule& rule, size_t group, const char* option, double value);
// The passes of a rule whose update needs per-tensor sums (LAMB, StableAdamW, cautious steps):
// `first` writes per-chunk partial sums, the reduction sums them per tensor, `apply` reads the sums.
inline std::vector<RulePass> partial_sums_then_apply(const char* first, const char* apply) {
  return {{RulePass::Kind::elementwise, first, true, RulePass::Sums::none},
          {RulePass::Kind::reduce_tensors},
          {RulePass::Kind::elementwise, apply, false, RulePass::Sums::tensor}};
}

// The Adam family's shared options: lr, eps, weight_decay >= 0 and betas in [0, 1).
template <class Options>
void require_adam_like(const Rule& rule, size_t group, const Options& o) {
  require_nonnegative(rule, group, "lr", o.lr);
  require_unit_interval(rule, group, "beta1", o.beta1);
  require_unit_interval(rule, group, "beta2", o.beta2);
  require_nonnegative(rule, group, "eps", o.eps);
  require_nonnegative(rule, group, "weight_decay", o.weight_decay);
}

// Writes the rule part of a push block, in declaration order, each scalar under its name in the
// shader's push block (the contract test compares both).
class PushWriter {
 public:
  explicit PushWriter(PushBlock& block) : block_(block) { block_.rule_bytes = 0; }
  PushWriter& f32(const char* name, double value);  // float, rounded once
  PushWriter& u32(const char* name, uint32_t value);
  PushWriter& u64(const char* name, uint64_t value);  // uvec2 (low, high), e.g. a device address
  // Reduction passes' first kScratchWords: scratch_address, partials_base, sums_base, filled by
  // the optimizer.
  PushWriter& scratch_words();

 private:
  void field(const char* name, uint32_t type, uint32_t bytes);
  PushBlock& block_;
};

// Push constants of the passes every rule shares (rules/wrappers.cpp).
void lookahead_push_constants(double alpha, bool sync, PushBlock& out);
void sam_norm_push_constants(PushBlock& out);
void sam_update_push_constants(double rho, bool restore, PushBlock& out);
void reduce_push_constants(VkDeviceAddress scratch, uint32_t input_base, uint32_t output_base, uint32_t lists_base,
                           uint32_t outputs, PushBlock& out);
void grad_norm_push_constants(VkDeviceAddress scratch, PushBlock& out);
void grad_reduce_push_constants(VkDeviceAddress scratch, uint32_t input_base, uint32_t count, uint32_t output_base,
                                PushBlock& out);

}  // namespace vkoptim::detail
