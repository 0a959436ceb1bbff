#pragma once
// Internal state of vkoptim::Optimizer, shared by optimizer.cpp (groups, validation, the public
// API), optimizer_layout.cpp (state arenas, segment table, descriptors, scratch) and
// optimizer_record.cpp (passes and step recording).
#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "context_state.hpp"
#include "device_step.hpp"
#include "gemm.hpp"
#include "precision.hpp"
#include "rules/rule.hpp"
#include "step_plan.hpp"
#include "tensor_table.hpp"
#include "vkoptim/optimizer.hpp"

namespace vkoptim::detail {

// State slots are packed into arenas of this size (a region larger than it gets its own).
inline constexpr VkDeviceSize kArenaBytes = VkDeviceSize(256) << 20;

inline VkDeviceSize round_up(VkDeviceSize v, VkDeviceSize a) {
  return (v + a - 1) / a * a;
}
std::string tensor_label(size_t group, size_t index_in_group);
void validate_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& sam, const EmaOptions& ema);
// The decay of an EMA at step t of a tensor (EmaOptions; 0: the average copies the parameter).
double ema_decay_at(const EmaOptions& ema, uint64_t t);
// State slots the wrappers may add after the rule's: Lookahead's, SAM's, the EMA's.
constexpr size_t kWrapperSlots = 3;
// Throws invalid_argument naming the field when `schedule` cannot drive group g of rule r.
void validate_group_schedule(const Rule& r, const RuleOptions& options, const LrSchedule& schedule, size_t g);
// Throw invalid_argument naming the field when gradient clipping or the scaler is set wrongly.
void validate_clip(const GradClip& clip, size_t group_count);
void validate_scaler(const GradScalerOptions& scaler);
// The storage code of each rule slot under a precision policy; with throw_on_error, throws
// naming the group, the slot and the type when the policy cannot apply.
std::vector<uint32_t> rule_slot_codes(const Rule& r, const RuleOptions& options, const PrecisionOptions& p,
                                      size_t group, bool throw_on_error);
// Throws when a group's precision policy cannot apply on this device (rule_slot_codes, plus what
// 8-bit state needs of the workgroup).
void validate_precision(const Rule& r, const RuleOptions& options, const PrecisionOptions& p, size_t group,
                        const DeviceCaps& caps);
// Throws invalid_argument when `options` (for group g) need other passes than `others` (the
// optimizer's other groups): a step's passes are the same in every group.
void require_same_passes(const Rule& r, const RuleOptions& options, size_t g,
                         const std::vector<std::pair<size_t, const RuleOptions*>>& others);
// Physical state slot (operand - 2) of each state name, -1 when not kept; see optimizer.cpp.
std::vector<int> slot_map(const Rule& r, const RuleOptions& options, const LookaheadOptions& la, const SamOptions& sam,
                          const EmaOptions& ema);

struct StateRegion {
  uint32_t arena = 0;
  VkDeviceSize offset = 0;
  bool active = false;
  uint64_t elements = 0;  // what the slot keeps for this tensor (absmax: floats)
  float initial = 0;      // what the first step starts from
  uint32_t code = kF32;   // storage type (precision.hpp)
  VkDeviceSize bytes() const { return round_up((elements * code_bits(code) + 7) / 8, 32); }
};

struct TensorRecord {
  ParamTensor tensor;
  uint32_t group = 0;
  uint32_t index_in_group = 0;
  uint64_t step = 0;
  bool fresh = true;  // no step recorded and no state written
  Scalars scalars{};  // the rule's host-kept per-tensor scalars
  std::array<StateRegion, kMaxStateSlots> slots{};
  StateRegion master;  // fp32 master weights, or Kahan compensation (in the parameter's dtype)
  StateRegion absmax;  // quantized slots: per block (256 elements 8-bit, 128 4-bit), a float per slot
};

// One elementwise pass of a step over a group's tensors: a shader, its specialization constants
// and, per run of tensors sharing a step, its push constants (or nothing: skip those tensors).
struct Pass {
  const char* shader;
  std::function<std::vector<uint32_t>(uint32_t group)> spec_constants;
  std::function<bool(uint32_t group, const StepInfo& step, PushBlock& out)> push_constants;
  RulePass::Kind kind = RulePass::Kind::elementwise;
  bool partials = false;
  RulePass::Sums sums = RulePass::Sums::none;
  bool factor_means = false;
  // Replayable steps: index of the pass's entries in the step buffer (StepBufferLayout; the rule's
  // passes by their index in Rule::passes(), then Lookahead's), -1: none (the other wrappers' and
  // initialisation's passes); and the groups it runs in (null: every group).
  int entry = -1;
  std::function<bool(uint32_t group)> runs_in;
  // The rule's last elementwise pass: groups with an EMA update it there (constant 30 of
  // shaders/vko_elementwise.glsl, and the push header's ema_weight).
  bool ema = false;
  // Reads and writes its groups' flags in the step buffer (SAM's pending restore; pipelines with
  // VKO_REPLAY).
  bool device_flags = false;
  // The pass before the rule's that finds the rank-1 maxima of the new 4-bit second moments
  // (PrecisionOptions::rank1_second_moment): the rule's shader and scalars, writing only them.
  bool rank1_maxima = false;
};

// Adafactor's row and column statistics of one 2-D tensor (address path).
struct FactorJob {
  uint32_t tensor;
  VkDeviceAddress grad, row_var, col_var;
  uint32_t rows, cols;
  bool wide;  // every row starts aligned to the wide access
  // A split piece (OptimizerState::split_factored): its elements [first, first + count) of the
  // whole tensor, and the scratch entry of its rows' then columns' partial sums (rows + cols).
  bool split = false;
  uint64_t first = 0, count = 0;
  uint32_t sums = 0;
};

// Where the reductions keep their data in the scratch buffer, in 8-byte entries.
struct ScratchLayout {
  uint32_t partials = 0, tensor_sums = 0, group_sums = 0;  // chunk partials; outputs
  uint32_t factor_means = 0;                               // Adafactor: mean of row_var per tensor
  // Adafactor's split pieces: partial (then combined) sums of g^2 over each row, then each
  // column, of their whole tensors, piece after piece (FactorJob::sums); `factor_sum_count` entries.
  uint32_t factor_sums = 0, factor_sum_count = 0;
  uint32_t tensor_lists = 0, group_lists = 0;  // reduce.comp's lists (uploaded)
  std::vector<uint32_t> lists;                 // uploaded words from tensor_lists on
  // Gradient control: (first entry, count) of the chunk sums, then of each reduction level.
  std::vector<std::pair<uint32_t, uint32_t>> grad_levels;
  uint32_t entries = 0;
  // Partials are laid out like the gradient chunk sums: a chunk's partial entry is this plus its
  // gradient chunk entry (SegmentRecord::first_chunk + chunk; VkoScratchPush::partials_base).
  uint32_t partials_base() const { return partials - grad_levels.at(0).first; }
};

struct OptimizerState {
  std::shared_ptr<ContextState> ctx;
  const Rule* rule = nullptr;
  std::vector<RuleOptions> groups;
  std::vector<LookaheadOptions> lookahead;  // per group
  std::vector<SamOptions> sam;              // per group
  std::vector<EmaOptions> ema;              // per group
  std::vector<PrecisionOptions> precision;  // per group
  std::vector<LrSchedule> schedules;        // per group
  std::vector<bool> sam_perturbed;          // per group: a perturbation awaits its restore
  // step_factor_sums() ran and its step's tensor_sums part has not (the host calls' order).
  bool factor_part_done = false;
  std::vector<TensorRecord> tensors;

  bool finalized = false;
  bool needs_init = false;  // state fills, tables, masters and slow weights are still to be submitted
  bool use_bda = false;
  std::vector<std::unique_ptr<OwnedBuffer>> arenas;
  std::unique_ptr<OwnedBuffer> table;
  // Descriptor path: unused operand slots still need a descriptor, and validation treats every
  // slot as written, so each batch gets its own small ranges here (never aliased).
  std::unique_ptr<OwnedBuffer> placeholders;
  std::unique_ptr<OwnedBuffer> scratch;  // reductions and gradient control's sums
  // The device step (device_step.hpp): records the host writes (options, schedules) and the
  // device keeps (step counters, each step's scalars). device_steps: a replayable step was
  // recorded, so the step counters live on the device from then on.
  std::unique_ptr<OwnedBuffer> step_buffer;
  StepBufferLayout step_layout;
  bool device_steps = false;
  // Gradient control (vko_grads.glsl): clipping and the loss scaler, in the step buffer's
  // control record (written by write_control, with the groups' clipped flags).
  GradClip clip;
  GradScalerOptions scaler;
  bool grad_control() const { return clip.max_norm > 0 || clip.clip_value > 0 || scaler.enabled; }
  // reset_scaler: the scale starts at init_scale (1 when off), the growth tracker at 0.
  void write_control(bool reset_scaler);
  // Throws naming the field when gradient control as set cannot run (see set_grad_clip).
  void check_grad_control() const;
  void check_partial_sums(const Rule& r, const RuleOptions& options, const SamOptions& sam, uint32_t items,
                          bool quantized, size_t g) const;
  // Writes group g's record (schedule and hyperparameters) through the mapping.
  void write_group_record(uint32_t g);
  uint32_t* step_words() const { return static_cast<uint32_t*>(step_buffer->mapped); }
  ScratchLayout scratch_layout;
  std::vector<FactorJob> factor_jobs;
  // Muon's Newton-Schulz products (newton_schulz passes): per dispatch its jobs, in job tables
  // in host-visible memory (rewritten by write_matrix_jobs when options change), and every
  // matrix's workspace.
  std::vector<std::vector<GemmJob>> matrix_dispatches;
  std::vector<VkDeviceSize> matrix_job_offsets;  // per dispatch, in matrix_jobs
  std::unique_ptr<OwnedBuffer> matrix_jobs, matrix_workspace;
  std::vector<VkDeviceSize> matrix_workspace_offsets;  // per tensor (Muon tensors)
  // Writes the job tables from the groups' options (finalize, set_options); no-op before.
  void write_matrix_jobs();
  // Whether tensor ti is one of those matrices (a tensor of a group whose rule orthogonalises).
  bool is_matrix(uint32_t ti) const { return rule->matrix_dispatches(groups[tensors[ti].group]) > 0; }
  // Whether slot k of the rule is a step's intermediate (Rule::slot_transient), not state.
  bool transient_slot(size_t k) const { return k < rule->slot_names().size() && rule->slot_transient(k); }
  TablePlan table_plan;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> sets;     // one per batch (descriptor path)
  uint32_t last_dispatches = 0;          // of the last recording
  std::vector<std::string> last_passes;  // of the last recording
  VkDeviceSize state_bytes = 0;
  // How a group's fast segments run (fixed by finalize, with the table): wide items per
  // invocation, and for 8-bit state reduced within subgroups, the subgroup size (0: shared
  // memory and barriers).
  struct GroupLaunch {
    uint32_t items = 0;
    uint32_t subgroup = 0;
  };
  std::vector<GroupLaunch> launch;
  GroupLaunch group_launch(uint32_t group) const;

  ~OptimizerState() {
    if (pool) ctx->vkd.vkDestroyDescriptorPool(ctx->device, pool, nullptr);
  }

  void add_group(ParamGroup group);
  // Storage type of every state name (slot_names() order) of a group: f32 unless its precision
  // says otherwise (Lookahead's and SAM's slots are always f32).
  std::vector<uint32_t> slot_codes(uint32_t group) const;
  // The same for one tensor: 8-bit slots of tensors below precision.min_8bit_elements are f32.
  std::vector<uint32_t> tensor_slot_codes(const TensorRecord& t) const;
  // Specialization constants 24 (storage types) and 25 (precision bits) of a group's pipelines.
  static constexpr size_t kStorageConstantId = 24;
  std::pair<uint32_t, uint32_t> storage_constants(uint32_t group) const;
  bool has_master(const TensorRecord& t) const {
    return precision[t.group].master_weights && t.tensor.param.dtype != DType::f32;
  }
  bool has_kahan(const TensorRecord& t) const {
    return precision[t.group].kahan_summation && t.tensor.param.dtype != DType::f32;
  }
  // The state name of the tensor's `master` region ("master_param" or "kahan_comp"), or null.
  const char* master_name(const TensorRecord& t) const {
    return has_master(t) ? "master_param" : has_kahan(t) ? "kahan_comp" : nullptr;
  }
  // The regions (without placement) a tensor keeps: rule/wrapper slots, master, absmax.
  void plan_regions(TensorRecord& t) const;
  // How many quantized slots a tensor keeps (columns of its absmax region, one row per block).
  static uint32_t quant_slot_count(const TensorRecord& t) {
    return uint32_t(std::count_if(t.slots.begin(), t.slots.end(),
                                  [](const StateRegion& r) { return r.active && is_quantized(r.code); }));
  }
  // The storage code of a tensor's quantized slots (a group keeps one block size), or kF32.
  static uint32_t quant_code(const TensorRecord& t) {
    for (const auto& r : t.slots)
      if (r.active && is_quantized(r.code)) return r.code;
    return kF32;
  }
  // Which of a tensor's quantized slots `region` is (its column in the absmax region).
  uint32_t quant_column(size_t tensor, const StateRegion& region) const {
    uint32_t column = 0;
    for (const auto& r : tensors[tensor].slots) {
      if (&r == &region) break;
      if (r.active && is_quantized(r.code)) ++column;
    }
    return column;
  }
  // Rank-1 normalisation of a tensor's 4-bit second moment (PrecisionOptions::rank1_second_moment):
  // its absmax region ends with kRank1Sets sets of row and column maxima (rank1_floats each) after
  // the per-block entries. The maxima of the moment after s steps are set s % 3: step t finds its
  // moment's maxima into set t % 3, decodes with set (t - 1) % 3 and clears set (t + 1) % 3
  // (shaders/vko_elementwise.glsl), so a step skipped on the device changes none of them.
  static constexpr uint32_t kRank1Sets = 3;
  // (From the group's settings, not the laid-out regions: it holds before the first step too.)
  bool rank1(const TensorRecord& t) const {
    if (!precision[t.group].rank1_second_moment || matrix_rows(t) < 2 || matrix_cols(t) < 2) return false;
    const auto map = slots(t.group);
    const auto codes = tensor_slot_codes(t);
    for (size_t k = 0; k < map.size(); ++k)
      if (map[k] >= 0 && codes[k] == kQ4Unsigned && slot_elements(t, k) != 0) return true;
    return false;
  }
  // Steps of an optimizer with rank-1 tensors are replayable only: the maxima set a step uses
  // must follow the steps the device took, not the recordings the host made (a recording dropped
  // or submitted twice would otherwise decode with a cleared or stale set).
  bool rank1_steps() const {
    return std::any_of(tensors.begin(), tensors.end(), [this](const TensorRecord& t) { return rank1(t); });
  }
  // The matrix rank-1 maxima run over: a 2-D tensor's own, or a split piece's whole tensor's
  // (ParamTensor::whole_rows; matrix_first: the piece's first element in it). 0 rows: none.
  static uint64_t matrix_rows(const TensorRecord& t) { return t.tensor.rows ? t.tensor.rows : t.tensor.whole_rows; }
  static uint64_t matrix_cols(const TensorRecord& t) {
    const uint64_t rows = matrix_rows(t);
    return rows == 0 ? 0 : (t.tensor.rows ? t.tensor.param.count : t.tensor.whole_count) / rows;
  }
  static uint64_t matrix_first(const TensorRecord& t) { return t.tensor.rows ? 0 : t.tensor.whole_offset; }
  // A piece of a matrix split between ranks whose rank-1 maxima need every rank's (exchanged in
  // StepPart::factor_sums, as Adafactor's row and column sums are).
  bool split_rank1(const TensorRecord& t) const { return t.tensor.rows == 0 && rank1(t); }
  static uint64_t rank1_floats(const TensorRecord& t) { return matrix_rows(t) + matrix_cols(t); }
  // First float of the rank-1 maxima in the absmax region.
  static uint64_t rank1_base(const TensorRecord& t) {
    const uint32_t block = quant_block(quant_code(t));
    return (t.tensor.param.count + block - 1) / block * quant_slot_count(t);
  }
  // A rank-1 tensor's second moment after `steps` steps: its maxima (rows, then columns), read
  // from the device; written as the only set (the others cleared), with the moment's codes.
  std::vector<float> read_rank1(size_t tensor, uint64_t steps) const;
  void write_rank1(size_t tensor, std::span<const float> maxima, uint64_t steps) const;
  // Storage types of a tensor's operands, 3 bits each (as Segment.extra.w).
  uint32_t operand_dtypes(const TensorRecord& t) const;
  void finalize();
  // Why the shaders could not reach every tensor (those of the optimizer and `more`, group
  // `more_group`) by buffer device address; empty when they can.
  std::string no_address_reason(const std::vector<ParamTensor>& more = {}, size_t more_group = 0) const;
  // What a recording does: a step, SAM's perturbation, or only initialise state (fills, table,
  // master weights).
  enum class Mode { step, perturb, init };
  // The passes of a recording, in order (rules/wrappers.cpp).
  // replay: a replayable recording (the device decides which steps Lookahead synchronises and
  // which SAM groups to restore).
  std::vector<Pass> build_passes(Mode mode, bool replay = false) const;
  // The plan of a recording from the current state (optimizer_plan.cpp); no Vulkan calls.
  // part: a step's gradient sums only, its finish, or the whole step (RecordOptions::part).
  StepPlan plan_step(Mode mode, bool replay, StepPart part = StepPart::whole) const;
  InitPlan plan_init() const;
  // The pipeline of an elementwise pass for a batch (its group and kind of segments), as the
  // pass itself, its replayable form (scalars from the step buffer) or its prologue.
  enum class StepStage { push, replay, prologue };
  // grads: the pass reads g through the step's gradient control (vko_grads.glsl).
  uint32_t elementwise_pipeline(StepPlan& plan, const Pass& pass, uint32_t group, bool careful,
                                StepStage stage = StepStage::push, bool grads = false) const;
  // Dispatches of `pipeline` over blocks [block_begin, block_end) of a batch within the device's
  // workgroup count limits, with `push` (its block range set per dispatch) and, on the descriptor
  // path, the batch's operand ranges plus `bound` as what each touches. A workgroup per block, or
  // with `block_invocations`, that many invocations per block (workgroups span blocks).
  void add_block_dispatches(PlannedPass& out, uint32_t pipeline, size_t batch, uint64_t block_begin, uint64_t block_end,
                            PushBlock& push, const std::vector<BoundRange>& bound,
                            uint32_t block_invocations = 0) const;
  // Gradient control's passes of a replayable step: chunk sums, their reduction, the outcome.
  void plan_grad_control(StepPlan& plan, const PushBlock& header, StepPart part) const;
  // Adafactor's statistics passes of the given modes of shaders/adafactor_factors.comp, in order,
  // over the factor jobs that run each (whole tensors 0, 1, 2; split pieces 3, 4, or 5, 2).
  void plan_factor_stats(StepPlan& plan, const PushBlock& header, bool replay, bool grads,
                         std::initializer_list<uint32_t> stages) const;
  // A plan with its pipelines created: everything a recording does that can fail.
  struct Prepared {
    StepPlan plan;
    std::vector<VkPipeline> pipelines;
    InitPlan init;
    bool replay = false;
    StepPart part = StepPart::whole;
  };
  Prepared prepare(Mode mode, bool replay, StepPart part = StepPart::whole);
  void record(VkCommandBuffer cmd, const RecordOptions& options, Mode mode);
  // Throws when this optimizer cannot record replayable steps (naming why).
  void check_replayable() const;
  // The first replayable recording: the host's step counters move into the tensor records.
  void start_device_steps();
  // A tensor's carry in its record (once device_steps), read once every submitted step has run;
  // setting it sets the next carry too.
  Rule::Carry device_carry(size_t tensor) const;
  void set_device_carry(size_t tensor, const Rule::Carry& carry);
  // Records a prepared plan (recorder.cpp) and advances the step counters.
  void record_prepared(VkCommandBuffer cmd, const RecordOptions& options, Mode mode, const Prepared& prepared);
  // Record into the context's command buffer, submit, wait (replayable once device_steps).
  void submit(Mode mode, StepPart part = StepPart::whole);
  // A tensor is part of a sharded model (ParamTensor::whole_count).
  bool sharded() const;
  // A sharded optimizer whose rule sums over whole tensors (a reduce_tensors pass) steps in parts
  // around the ranks' per-tensor sums (StepPart::tensor_sums), which it exchanges through
  // `exchange` (two floats per tensor, host-visible; copied from and to the scratch's sums).
  bool tensor_exchange() const;
  // A sharded optimizer with SAM perturbs in parts around the ranks' per-group sums of |g|^2
  // (StepPart::grad_sums, then finish), exchanged through `exchange` too (two floats per group).
  bool sam_exchange() const;
  std::unique_ptr<OwnedBuffer> exchange;
  // Where the factor sums start in `exchange` (after two floats per tensor or group, 256-aligned).
  VkDeviceSize factor_exchange_offset(size_t tensor_count) const {
    return (VkDeviceSize(std::max(tensor_count, groups.size())) * 8 + 255) / 256 * 256;
  }
  void ensure_initialised();
  const TensorRecord& tensor(size_t index) const;
  // The rule's state slots, then Lookahead's slow weights, SAM's perturbation and the EMA.
  std::vector<std::string> slot_names() const;
  std::vector<int> slots(uint32_t group) const {
    return slot_map(*rule, groups[group], lookahead[group], sam[group], ema[group]);
  }
  // The EMA's operand in group g's passes (2 + its physical slot), 0 without an EMA.
  uint32_t ema_operand(uint32_t g) const {
    const auto map = slots(g);
    return map.back() >= 0 ? uint32_t(2 + map.back()) : 0;
  }
  // The physical slot of the state `name` of a tensor, and its element count.
  struct Slot {
    size_t index;
    uint64_t elements;
  };
  Slot slot_index(size_t tensor, std::string_view name) const;
  // Elements the state named slot_names()[k] keeps for tensor t (0: none).
  uint64_t slot_elements(const TensorRecord& t, size_t k) const {
    if (k >= rule->slot_names().size()) return t.tensor.param.count;  // Lookahead, SAM, EMA
    // (A split piece's per-tensor slots are its whole tensor's row and column statistics.)
    const uint64_t count =
        (split_factored(t) && rule->slot_per_tensor(k)) || (split_matrix(t) && k == rule->matrix_slot())
            ? t.tensor.whole_count
            : t.tensor.param.count;
    return rule->slot_elements(groups[t.group], k, count, factor_rows(t));
  }
  // The rows tensor t's state is factored over (Adafactor's row and column statistics): its own,
  // or a split piece's whole tensor's (ParamTensor::whole_rows); 0: none (1-D, or a rule that
  // does not factor).
  uint64_t factor_rows(const TensorRecord& t) const {
    if (t.tensor.rows > 0) return t.tensor.rows;
    return t.tensor.whole_rows > 0 && factors() ? t.tensor.whole_rows : 0;
  }
  uint64_t factor_cols(const TensorRecord& t) const {
    const uint64_t rows = factor_rows(t);
    return rows == 0 ? 0 : (t.tensor.rows > 0 ? t.tensor.param.count : t.tensor.whole_count) / rows;
  }
  // The rule has row/column statistics passes (RulePass::Kind::factor_stats).
  bool factors() const;
  // A piece of a 2-D tensor whose statistics need every rank's rows and columns: the ranks
  // complete its partial row and column sums between StepPart::factor_sums and the next part.
  bool split_factored(const TensorRecord& t) const { return t.tensor.rows == 0 && factor_rows(t) > 0; }
  // Scratch entries of the split pieces' row and column sums (ScratchLayout::factor_sums): rows +
  // cols of each one's whole tensor.
  uint32_t factor_sum_entries(const std::vector<TensorRecord>& ts) const {
    uint32_t entries = 0;
    for (const TensorRecord& t : ts)
      if (split_factored(t)) entries += uint32_t(factor_rows(t) + factor_cols(t));
    return entries;
  }
  // A sharded optimizer of a rule that factors may run a factor_sums part, so that every rank of
  // a layout can call and record the same parts; it does something (and the tensor_sums part
  // relies on it: the gradient control's outcome, the row and column sums) only on optimizers
  // with split pieces (factor_exchange), and is empty elsewhere.
  bool factor_part() const;
  bool factor_exchange() const;
  // A sharded optimizer with rank-1 second moments (any group): its factor part exchanges the
  // maxima of the pieces of split matrices (rank1_exchange: this shard has such pieces). Every
  // split 2-D piece has its place in the exchanged list (kRank1Sets sets of its matrix's row and
  // column maxima), as every split 2-D tensor has in the layout's (shard.hpp); only rank-1 ones
  // are copied (rank1_exchange_copies: the pieces' sets to their places in `exchange`).
  bool rank1_sharded() const;
  bool rank1_exchange() const;
  // A piece of a matrix split between ranks in a group whose rule multiplies whole matrices
  // (Muon): its transient update slot holds the whole matrix (the piece's operand starting at
  // its place in it), which the ranks complete in the factor part (their pieces' updates, zeros
  // elsewhere, added), before the per-tensor sums. matrix_exchange: this shard has such pieces.
  bool split_matrix(const TensorRecord& t) const {
    return t.tensor.rows == 0 && t.tensor.whole_rows > 0 && rule->matrix_dispatches(groups[t.group]) > 0;
  }
  bool matrix_sharded() const;
  bool matrix_exchange() const;
  // The factor part's transfers with the exchange buffer: fills before its passes (split
  // matrices' update slots cleared), copies out after them; the part that follows copies the
  // same ranges back in (rank-1 maxima: the finish; split matrices' updates: tensor_sums).
  struct FactorTransfers {
    std::vector<PlannedFill> fills;
    std::vector<PlannedCopy> out;
  };
  FactorTransfers factor_transfers() const;
  // Floats piece t has in the factor part's list: Adafactor's two per row and column (sum, 0),
  // a rank-1 optimizer's kRank1Sets sets of row and column maxima, a split matrix's update (its
  // whole matrix); 0 for the others.
  uint64_t factor_exchange_floats(const TensorRecord& t) const;
  // Validated change of a group's Lookahead/SAM/EMA; refused once it would change the state kept.
  void set_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& s, const EmaOptions& e) {
    validate_wrappers(group, la, s, e);
    const auto map = slot_map(*rule, groups[group], la, s, e);
    if (finalized && map != slots(uint32_t(group)))
      throw Error(Status::invalid_state, "group " + std::to_string(group) +
                                             ": turning Lookahead, SAM or the EMA on or off changes which state "
                                             "exists after state was allocated");
    lookahead[group] = la;
    sam[group] = s;
    ema[group] = e;
    write_group_record(uint32_t(group));
  }
  // The options step t of group g runs with (its schedule applied).
  RuleOptions step_options(uint32_t g, uint64_t t) const;
  // Index of a host-kept scalar of the rule, or -1.
  int scalar_index(std::string_view name) const {
    const auto names = rule->scalar_names();
    for (size_t k = 0; k < names.size(); ++k)
      if (names[k] == name) return int(k);
    return -1;
  }
};

}  // namespace vkoptim::detail
