#pragma once
// Optimizers: parameter groups with their own hyperparameters, state owned by vkoptim, and a
// step that is recorded into the caller's command buffer (record) or submitted (step).
#include <vulkan/vulkan_core.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "vkoptim/context.hpp"
#include "vkoptim/rules.hpp"
#include "vkoptim/schedule.hpp"
#include "vkoptim/tensor.hpp"

namespace vkoptim {

// One parameter and its gradient, borrowed ranges of equal count; each f32, f16 or bf16.
struct ParamTensor {
  BufferRange param;
  BufferRange grad;
  std::string name;  // optional; lets state be addressed by name
  // 2-D tensors (row-major rows x count/rows) for rules that factor (Adafactor); 0: 1-D.
  uint64_t rows = 0;
  // Sharded state (shard.hpp): the element count of the model's tensor this range is part of
  // (its whole count when the shard holds all of it); 0: the optimizer is not sharded. Small-
  // tensor storage (min_8bit_elements) follows the whole tensor, and what needs sums over a whole
  // tensor or over every gradient is refused (see shard.hpp).
  uint64_t whole_count = 0;
  // Stochastic rounding draws element e's random bits from a key (tensor, e, slot, seed, step).
  // A piece keys them as its whole tensor would: `whole_offset` is its first element within the
  // whole tensor (needs whole_count) and `whole_index` names the tensor (default: its index in
  // this optimizer). shard_groups sets both (whole_index: the tensor's place in the layout), so
  // shards round exactly as one optimizer over the whole tensors with the same whole_index.
  uint64_t whole_offset = 0;
  std::optional<uint32_t> whole_index;
  // A piece of a 2-D tensor (rows = 0, whole_count set): the whole tensor's rows (whole_count /
  // whole_rows columns, row-major), for rules that factor over whole rows and columns
  // (Adafactor: the piece keeps the whole tensor's row and column statistics, which the ranks
  // complete between the parts of a step, StepPart::factor_sums; rank-1 normalised 4-bit second
  // moments, PrecisionOptions::rank1_second_moment: the piece keeps the whole tensor's row and
  // column maxima, which the ranks combine there too). shard_groups sets it. Other rules ignore it.
  uint64_t whole_rows = 0;
};

// Lookahead (Zhang et al. 2019) around the group's rule: slow weights start at p; every k steps
// slow <- slow + alpha*(p - slow) and p <- slow. State: slow_param. k = 0 turns it off.
struct LookaheadOptions {
  uint32_t k = 0;
  double alpha = 0.5;
};

// SAM (Foret et al. 2020; davda54/sam) around the group's rule. record_sam_perturb() records
// e = rho * g / (|g| + 1e-12) with |g| the L2 norm over all the group's gradients, and p += e;
// the engine then recomputes gradients at the perturbed point, and the next record() first
// restores p -= e, then runs the rule. State: sam_e. rho = 0 turns it off.
struct SamOptions {
  double rho = 0;
};

// An exponential moving average of the parameters (torch.optim.swa_utils' EMA, and the warmup
// forms of diffusers' EMAModel and timm's ModelEmaV3), updated in the same dispatch as the rule,
// from the parameter the step wrote (its fp32 master, or p plus its Kahan compensation). With t
// the tensor's step (1 on the first) and s = t - update_after_step - 1, the decay of step t is
//   0 while s <= 0 (the average copies the parameter, as swa_utils' first update does), else
//   none:  decay                                  (torch swa_utils: get_ema_multi_avg_fn)
//   ratio: min(decay, (1 + s)/(10 + s))           (diffusers EMAModel's default)
//   power: min(decay, 1 - (1 + s/inv_gamma)^-power) (diffusers use_ema_warmup, timm use_warmup)
//   then at least min_decay (ratio, power);  ema <- lerp(ema, p, 1 - decay).
// State: ema (f32). decay = 0 turns it off. Not with Lookahead (which sets the parameter after
// the rule). A step skipped by gradient control leaves it, as it leaves the rest of the state.
enum class EmaWarmup : uint32_t { none = 0, ratio = 1, power = 2 };
struct EmaOptions {
  double decay = 0;
  EmaWarmup warmup = EmaWarmup::none;
  double inv_gamma = 1;
  double power = 2.0 / 3.0;
  double min_decay = 0;
  uint32_t update_after_step = 0;
};

// Storage of a state slot. Arithmetic is float32 in every case.
//   bf16: half the bytes; every write rounds (see Rounding).
//   q8:   8-bit blockwise (bitsandbytes' scheme): blocks of 256 elements of one tensor share a
//         float absmax; each element keeps the byte code of the nearest value of a dynamic map
//         (signed for first moments, unsigned for second moments), times that absmax. Each
//         step dequantizes, updates in float32 and requantizes with the block's new absmax in
//         one dispatch. For Adam/AdamW exp_avg and exp_avg_sq (not with amsgrad), Lion exp_avg
//         and SGD momentum_buffer; needs workgroup_size * 8 (4 without shaderInt64) to be a
//         multiple of 256 and items_per_invocation <= 4.
//   q4:   4-bit blockwise (torchao's AdamW4bit, after Li et al. 2023): blocks of 128 elements
//         share a float absmax; each element keeps a 4-bit code, two a byte. First moments use
//         the signed 4-bit dynamic map (create_dynamic_map(signed, 3, 4)), second moments the
//         linear map without zero, (code + 1) / 16, so that no second moment decodes to 0 in a
//         block that is not all 0. Same slots and limits as q8 (workgroup_size * 8 a multiple of
//         128); a group keeps 8-bit or 4-bit state, not both.
enum class StateDType : uint32_t { f32 = 0, bf16 = 2, q8 = 3, q4 = 4 };

// How float32 results are written to 16-bit storage (parameters, bf16 state).
enum class Rounding : uint32_t {
  nearest_even = 0,
  // Up or down with probability proportional to the distance, from a counter-based generator
  // keyed by (seed, step, tensor, element, operand): reproducible for a seed, unbiased.
  stochastic = 1,
};

struct SlotDType {
  std::string name;  // a state name of the rule, e.g. "exp_avg_sq"
  StateDType dtype = StateDType::f32;
};

// A group's storage policy. Parameters and gradients keep the dtype of their BufferRange
// (f32, f16 or bf16, independently).
struct PrecisionOptions {
  StateDType state = StateDType::f32;  // every state slot of the rule...
  std::vector<SlotDType> slots;        // ...except these (Lookahead's and SAM's stay f32)
  // Keep an fp32 copy ("master_param") of every 16-bit parameter: the rule reads and updates
  // it, and the same dispatch writes the rounded parameter. The master starts from the
  // parameter at the first step (or state access); afterwards it is authoritative (write it
  // with write_state to change the weights).
  bool master_weights = false;
  // Kahan-compensated updates of 16-bit parameters (optimi's kahan_sum), instead of fp32 masters:
  // a compensation ("kahan_comp", in the parameter's dtype, starting at 0) keeps what rounding
  // the parameter lost, at 2 bytes per element instead of 4. Per element, with u the rule's
  // update of the parameter (its new value in float32 minus the stored one), each step rounded
  // to the parameter's dtype: c <- c + u ; p' = p + c ; c <- c + (p - p'). Not with
  // master_weights or stochastic rounding; f32 parameters keep no compensation.
  bool kahan_summation = false;
  Rounding rounding = Rounding::nearest_even;
  uint64_t seed = 0;  // stochastic rounding
  // 4-bit second moments (Adam/AdamW exp_avg_sq as q4) of 2-D tensors (ParamTensor::rows >= 2,
  // columns >= 2) normalised per element by min(max of its row, max of its column) instead of per
  // 128-element block: the rank-1 normalisation of Li et al. 2023, the setting their paper finds
  // best for second moments (their code's default.yml: SCALE_TYPE rank1, linear map without zero).
  // The maxima are those of the new second moment, so each step takes one more pass over the
  // tensor first (it computes the new moment to find them). Other tensors keep 128-element blocks,
  // as that code does for 1-D ones. State: the maxima, R + C floats, saved as
  // "<slot>.rank1_rows" and "<slot>.rank1_cols". Steps are replayable only (record with
  // RecordOptions::replay; step() does). Not with cautious, nor on a shard's piece of
  // a split tensor.
  bool rank1_second_moment = false;
  // Tensors with fewer elements keep slots the policy makes 8-bit or 4-bit in f32 (bitsandbytes'
  // min_8bit_size, same default; torchao's 4-bit optimizers use 4096 too): on small tensors the
  // codes save little and cost accuracy.
  uint64_t min_8bit_elements = 4096;
};

struct ParamGroup {
  RuleOptions options;
  std::vector<ParamTensor> tensors;
  LookaheadOptions lookahead;
  SamOptions sam;
  EmaOptions ema;
  PrecisionOptions precision;
  // The group's learning-rate schedule (schedule.hpp); the default keeps options.lr. Step t
  // (1 on the first step) uses the schedule at s = t - 1 from options.lr as the base lr, as
  // torch's `opt.step(); sched.step()` loop does; schedules with momentum cycling (OneCycleLR,
  // CyclicLR) also set beta1 (or SGD's/RMSprop's momentum) for each step.
  LrSchedule schedule;
};

// Device memory an optimizer keeps (known before state is allocated).
struct MemoryReport {
  uint64_t elements = 0;                // parameter elements over all tensors
  VkDeviceSize state_bytes = 0;         // all of the below, as allocated (regions padded to 32 B)
  VkDeviceSize slot_bytes = 0;          // the rules' state slots and Lookahead's/SAM's
  VkDeviceSize master_bytes = 0;        // fp32 master weights, or Kahan compensations
  VkDeviceSize quantization_bytes = 0;  // 8-bit and 4-bit states' per-block absmax
  double state_bytes_per_element() const { return elements ? double(state_bytes) / double(elements) : 0.0; }
};

// What record() does at its edges (the host-engine contract; see Optimizer::record).
// How load() treats a checkpoint.
struct LoadOptions {
  // A checkpoint whose storage policy differs from the optimizer's (bf16 or 8-bit slots, fp32
  // masters) is refused unless this is set; then each slot is converted through float32 (an fp32
  // checkpoint into 8-bit state and back, for example). Masters the optimizer does not keep are
  // dropped; ones it keeps but the checkpoint lacks keep their values (the parameter's, until
  // the optimizer steps).
  bool convert_storage = false;
};

// A replayable step with gradient clipping or the loss scaler in two parts, around the engine's
// combination of every rank's gradient sums (sharded optimizers, shard.hpp; a shard needs it):
//   grad_sums: this rank's chunk sums of its gradients, reduced in a fixed order to one total
//              (GradSums) in the optimizer's step buffer (Optimizer::grad_sums_buffer); nothing
//              else is written;
//   finish:    from the total found there (the engine replaced it with the ranks' total,
//              combine_grad_sums in rank order, e.g. after MPI_Allgather, or reduce_grad_chunks
//              of the ranks' chunk sums; set_grad_sums from the host): the norm, clip
//              coefficient, found-inf, skip and scale update, then the step.
// Every rank then clips, skips and scales identically. Submit grad_sums, combine, then finish,
// with the finish's submission after the combined total is written.
//   tensor_sums: (sharded optimizers whose rule sums over whole tensors: LAMB's norms,
//              StableAdamW's RMS, Cautious's mask count) the step up to its per-tensor sums,
//              copied to the optimizer's exchange buffer (Optimizer::tensor_sums_buffer, two
//              floats per tensor, host-visible); with gradient control it starts from the
//              combined gradient total (unless a factor_sums part did, below), so the parts are
//              grad_sums, tensor_sums, finish. The engine adds every rank's sums of each whole
//              tensor (scatter_tensor_sums and gather_tensor_sums in shard.hpp) and writes them
//              back; finish then reads them from there and completes the step.
//   factor_sums: (sharded Adafactor with pieces of 2-D tensors split between ranks,
//              ParamTensor::whole_rows) before tensor_sums: each split piece's sums of g^2 over
//              every row and column of its whole tensor (zeros where it has none), copied to the
//              exchange buffer (Optimizer::factor_sums_buffer); with gradient control it starts
//              from the combined gradient total. The engine adds every rank's
//              (scatter_factor_sums, gather_factor_sums) and writes them back; tensor_sums then
//              completes the statistics from them. The parts: [grad_sums,] factor_sums,
//              tensor_sums, finish. Any sharded Adafactor optimizer may record or call it (on
//              ranks without split pieces it is empty and their tensor_sums part takes the
//              outcome), so all ranks can run the same parts; a rank with split pieces must:
//              without it its tensor_sums part would read stale sums and no gradient-control
//              outcome (step_tensor_sums refuses that order; a recording cannot be checked).
//              Sharded optimizers with rank-1 second moments (PrecisionOptions::
//              rank1_second_moment) run it too: the step up to the new second moment's row and
//              column maxima, each split piece's three sets of its whole matrix's maxima (the
//              step's set holding this rank's part of them) copied to the exchange buffer. The
//              engine combines every rank's with MAX (scatter_factor_maxima, gather_factor_maxima:
//              exact, so the same bits as one optimizer over the whole matrices) and writes them
//              back; finish then encodes the moment against them. The parts: [grad_sums,]
//              factor_sums, finish (step_factor_sums, set_factor_sums, step_finish()).
//              Sharded Muon with pieces of split matrices (ParamTensor::whole_rows) runs it too:
//              the step up to the momentum pass, each split piece's update slot (its whole
//              matrix's U, the piece's elements at their places, zeros elsewhere) copied out. The
//              engine adds every rank's (scatter_matrix_updates, gather_matrix_updates: exact)
//              and writes them back; tensor_sums then takes them and goes on from the sums of
//              U^2, and finish runs Newton-Schulz on the whole matrix. The parts: [grad_sums,]
//              factor_sums, tensor_sums, finish.
enum class StepPart : uint32_t { whole = 0, grad_sums = 1, finish = 2, tensor_sums = 3, factor_sums = 4 };

struct RecordOptions {
  // Entry barrier: compute-shader and transfer writes -> compute-shader reads and writes.
  bool entry_barrier = true;
  // Exit barrier: vkoptim's compute-shader writes -> these stages and accesses.
  bool exit_barrier = true;
  VkPipelineStageFlags exit_stage_mask = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  VkAccessFlags exit_access_mask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                   VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  // Profiling: when set, a timestamp is written (COMPUTE_SHADER stage) before the first pass and
  // after each pass of the step, at queries first_query, first_query + 1, ... of this timestamp
  // pool (reset by the caller); Optimizer::pass_names() names the passes of the last record().
  VkQueryPool timestamp_pool = VK_NULL_HANDLE;
  uint32_t first_query = 0;
  // A replayable step: each submission of the command buffer performs the next step. The device
  // keeps every tensor's step counter and computes the step's scalars (lr from the group's
  // schedule, bias corrections, ...) itself, from the group's options as they are when the
  // submission runs: set_options, set_lr and set_schedule reach recorded command buffers (change
  // them between submissions, not while one runs). From the first replayable recording on, the
  // optimizer counts steps on the device: record() needs replay = true, step() records
  // replayable steps, and step_count()/read_state("step") read the device's counter (waiting
  // for the queue). The scalars are computed in double-float arithmetic and rounded once:
  // within 2 float ulps of the host's double-precision scalars (README, "Learning-rate
  // schedules and replayable steps"). Every rule replays, with Lookahead (the device
  // synchronises every k-th step of each tensor) and stochastic rounding (keyed by the device's
  // step counter, as the host's) and SAM (record_sam_perturb with replay records a replayable
  // perturbation; a replayable step restores the groups a replayable perturbation left
  // perturbed, which the device tracks). A rule's per-tensor scalars
  // (NAdam's mu_product, ...) are then kept on the device too: read_state/write_state reach them
  // there (waiting for the queue).
  bool replay = false;
  // The part of a replayable step with gradient control this recording holds (StepPart).
  StepPart part = StepPart::whole;
};

// One rank's total of a step's gradient sums (the first part of a two-part step), or the ranks'
// combined total (its second part): norm_sum is sum |g|^p over the clipped groups' elements
// (the maximum |g| for the inf norm), nonfinite a flag (0: finite; 1: a non-finite element;
// 2: one in a clipped group).
struct GradSums {
  float norm_sum = 0;
  float nonfinite = 0;
};

// Gradient clipping, torch.nn.utils' clip_grad_norm_ and clip_grad_value_, run on the device as
// part of a replayable step (RecordOptions::replay; step() switches to it). The gradients are
// read through the clip (each pass multiplies what it loads), never written: the gradient
// buffers keep what the engine's backward pass wrote. Order within a step, as torch's loop
// (scaler.unscale_, clip, scaler.step): unscale (GradScaler) -> clip_grad_value_ -> the norm
// of the result -> clip_grad_norm_'s coefficient -> the rule.
struct GradClip {
  // clip_grad_norm_: total norm of the chosen groups' gradients (norm of the per-element
  // values over all of them), clip_coef = max_norm / (total_norm + 1e-6) clamped to 1, g *=
  // clip_coef. 0: off. The norm is a fixed-order reduction (256-element chunks, then 256 chunk
  // sums at a time, in index order): the same bits for any workgroup or subgroup size.
  double max_norm = 0;
  double norm_type = 2;  // p > 0, or INFINITY for the max norm
  // A non-finite total norm skips the step (nothing written, counters included) and sets the
  // step's report's nonfinite_norm; step() then throws (torch raises). Else, as in torch, a
  // non-finite norm clips with a NaN or 0 coefficient.
  bool error_if_nonfinite = false;
  double clip_value = 0;       // clip_grad_value_: g clamped to [-clip_value, clip_value]; 0: off
  std::vector<size_t> groups;  // the groups clipped (both kinds); empty: every group
};
// torch.amp.GradScaler on the device. The engine scales its loss by the scale (a float in
// loss_scale_buffer(), which its backward pass binds); the step unscales every gradient (g *
// 1/scale, in each pass's read), checks all of them for inf/NaN (found-inf), skips the step when
// it finds one (parameters, state and step counters bit-identical, as torch's fused Adam reverts
// its step), and updates the scale: * backoff_factor on found-inf, * growth_factor after
// growth_interval steps in a row without (kept when it would overflow).
struct GradScalerOptions {
  bool enabled = false;
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  uint32_t growth_interval = 2000;
};
// What one replayable step with gradient clipping or a scaler found (Optimizer::step_reports).
struct StepReport {
  uint32_t step = 0;            // steps run with gradient control, this one included (skipped too)
  float total_norm = 0;         // of the clipped groups' unscaled, value-clipped gradients
  float clip_coef = 1;          // 1 without norm clipping
  float scale = 1;              // the loss scale the step's gradients were unscaled with
  bool found_inf = false;       // a non-finite unscaled gradient element (any group)
  bool skipped = false;         // found-inf with the scaler on, or a non-finite norm error
  bool nonfinite_norm = false;  // error_if_nonfinite and the norm was non-finite
  uint32_t growth_tracker = 0;  // the scaler's count of steps without inf, after the step
};
// How a step is laid out on the device (allocates state if not yet done).
struct StepShape {
  uint64_t fast_elements = 0;     // in whole aligned blocks: wide accesses, no bounds checks
  uint64_t careful_elements = 0;  // tails and tensors not aligned to 32 bytes (16 without
                                  // shaderInt64): one element per invocation, slower
  uint32_t batches = 0;           // dispatches per step when all tensors share a step count
  // Groups with 8-bit state whose fast segments take block absmax with subgroup arithmetic (the
  // others use shared memory and barriers; see DeviceCaps::subgroup_arithmetic).
  uint32_t subgroup_reduced_groups = 0;
};

namespace detail {
struct OptimizerState;
}

// An optimizer over parameter groups that all use one rule (see rules.hpp), optionally wrapped
// in Lookahead and/or SAM per group. Holds a reference to its Context's internals; the borrowed
// buffers must outlive it, and it must outlive every submitted command buffer it recorded into
// (its state, table and pipelines are used by them). Movable.
//
// Tensors are numbered 0.. in group order, then order within the group. Groups may be empty (they
// keep their hyperparameters) and the group list may be empty (add groups with
// add_param_group), but state is only made for an optimizer with at least one tensor.
// State is allocated and initialised by initialize(), which the first record()/step()/state
// access calls, and tensors cannot be added after that.
//
// Threads: one thread at a time per Optimizer; different Optimizers of one Context may be used
// from different threads at once (see Context).
class Optimizer {
 public:
  Optimizer(Context& context, std::vector<ParamGroup> groups);
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;
  ~Optimizer();

  // Appends a group. Only before the first step.
  void add_param_group(ParamGroup group);

  size_t group_count() const;
  size_t tensor_count() const;
  // Index of the tensor given this name, or throws not_found.
  size_t tensor_index(std::string_view name) const;

  const RuleOptions& options(size_t group) const;
  // Replace a group's hyperparameters (validated; nothing changes on error). Options that
  // change which state exists (momentum on/off, amsgrad) are rejected once state exists.
  void set_options(size_t group, const RuleOptions& options);
  // Sets options.lr: the base lr of the group's schedule (its lr when it has none).
  void set_lr(size_t group, double lr);
  const LrSchedule& schedule(size_t group) const;
  // Validated; nothing changes on error. Takes effect from the next recorded step.
  void set_schedule(size_t group, const LrSchedule& schedule);
  // The options step t (1-based) of a group runs with: options(group) with the schedule's lr
  // (and momentum or beta1) for that step.
  RuleOptions step_options(size_t group, uint64_t t) const;
  // Gradient clipping and the loss scaler (GradClip, GradScalerOptions). Validated (naming the
  // field; nothing changes on error) and refused for a workgroup_size * 8 (4 without
  // shaderInt64) that is not a multiple of 256. Their values reach recorded command buffers like
  // set_options; turning either on or off (from none to some) changes what a step records: record
  // again. Plain record() (not replay) refuses to run with either set.
  const GradClip& grad_clip() const;
  void set_grad_clip(const GradClip& clip);
  const GradScalerOptions& grad_scaler() const;
  // Enabling a scaler that was off starts it at init_scale with its growth tracker at 0.
  void set_grad_scaler(const GradScalerOptions& scaler);
  // The scaler's current scale (waits for the queue). 1 while no scaler is on.
  float loss_scale();
  // Where the scale lives, for the engine's backward pass to bind: a float (f32) at the range's
  // offset, host-visible. The step writes it in its grad_reduce pass; the engine's shaders that
  // read it run after the step with a COMPUTE_SHADER write -> their stage, SHADER_READ barrier
  // between (record()'s exit barrier is one when its masks name that stage). Allocates state if
  // not yet done.
  BufferRange loss_scale_buffer();
  // The reports of the last (at most 16) steps run with gradient control, oldest first, read
  // from a host-visible ring without waiting: a report is complete once its submission has
  // completed (one of a step still running may be partly written). step() waits, so after it
  // the last report is its step's.
  std::vector<StepReport> step_reports() const;
  // Steps in two parts (StepPart; sharded optimizers): step_grad_sums() submits the first part
  // and returns this rank's total (waiting for it); step_finish(total) writes the ranks' total and
  // submits the second part (throws as step() does on a non-finite norm with error_if_nonfinite).
  // grad_sums()/set_grad_sums() read and write the total (waiting for the queue);
  // grad_sums_buffer() is where it lives (two floats, host-visible), for a device-side
  // all-reduce between the parts' submissions.
  GradSums step_grad_sums();
  // The same first part, returning this rank's sums of every 256-element chunk of its gradients
  // (its tensors' chunks in its tensor order; chunks are counted from each whole tensor's first
  // element, so a shard's chunk is the same chunk, with the same sums, for any cut). Exchanged
  // whole (scatter_grad_chunks, the ranks' vectors added, reduce_grad_chunks in shard.hpp), they
  // give a total that does not depend on the number of ranks, to finish with as above.
  std::vector<GradSums> step_grad_chunks();
  size_t grad_chunk_count() const;  // what step_grad_chunks returns: ceil(count / 256) per tensor
  void step_finish(const GradSums& combined);
  GradSums grad_sums();
  void set_grad_sums(const GradSums& combined);
  BufferRange grad_sums_buffer();
  // Steps around the ranks' per-tensor sums (StepPart::tensor_sums; sharded optimizers of rules
  // that sum over whole tensors): step_tensor_sums() submits the part up to them and returns this
  // rank's (two floats per tensor of this optimizer, in its tensor order; with gradient control,
  // after set_grad_sums with the combined total); step_finish(sums) writes the whole tensors'
  // sums back and submits the rest. tensor_sums()/set_tensor_sums() read and write them (waiting
  // for the queue); tensor_sums_buffer() is where they live, for a device-side all-reduce.
  std::vector<float> step_tensor_sums();
  // The same first part, returning this rank's partial sums of every 256-element chunk of its
  // tensors instead (two floats per chunk; its tensors' chunks in its tensor order, counted from
  // each whole tensor's first element: grad_chunk_count() chunks). A tensor's sum is its chunks'
  // reduced in a fixed order (reduce_tensor_chunks in shard.hpp, as the device does), so sums
  // exchanged this way are the same bits on any number of ranks (devices that flush subnormal
  // floats to zero aside: the host keeps them). Entries of tensors the step does not sum (a
  // skipped step's, Muon's AdamW tensors) are left from earlier steps; nothing reads them.
  std::vector<float> step_tensor_chunks();
  void step_finish(std::span<const float> combined_tensor_sums);
  // The finish of a sharded step with rank-1 second moments (StepPart::factor_sums): after
  // step_factor_sums() and set_factor_sums(the ranks' maxima combined with MAX); with gradient
  // control the total was set before step_factor_sums(). Refused (before any GPU work) on a shard
  // holding part of a split matrix when its factor part did not run first.
  void step_finish();
  std::vector<float> tensor_sums();
  void set_tensor_sums(std::span<const float> combined);
  BufferRange tensor_sums_buffer();
  // Adafactor's pieces of 2-D tensors split between ranks (StepPart::factor_sums; shard.hpp;
  // with rank-1 second moments the list holds maxima instead: three sets of rows + cols floats
  // per split 2-D piece, the same three for blockwise ones, zeros; Muon's split matrices their
  // whole matrix's update U each):
  // step_factor_sums() submits the part before tensor_sums (with gradient control, after
  // set_grad_sums with the combined total) and returns this rank's sums of g^2 over each row,
  // then each column, of the whole tensor of each split piece (two floats each, the second 0; in
  // its tensor order; factor_sum_count() floats); set_factor_sums(combined) writes the ranks'
  // added sums back for step_tensor_sums(), which refuses to run (before any GPU work) on a
  // sharded Adafactor optimizer when step_factor_sums() did not run first. factor_sums() reads
  // them (waiting for the queue);
  // factor_sums_buffer() is where they live, for a device-side all-reduce.
  std::vector<float> step_factor_sums();
  size_t factor_sum_count() const;
  std::vector<float> factor_sums();
  void set_factor_sums(std::span<const float> combined);
  BufferRange factor_sums_buffer();
  const LookaheadOptions& lookahead(size_t group) const;
  // Same rules as set_options: turning Lookahead or SAM on or off is refused once state exists.
  void set_lookahead(size_t group, const LookaheadOptions& lookahead);
  const SamOptions& sam(size_t group) const;
  void set_sam(size_t group, const SamOptions& sam);
  // Same rules: turning the EMA on or off is refused once state exists.
  const EmaOptions& ema(size_t group) const;
  void set_ema(size_t group, const EmaOptions& ema);

  // Allocates the state and initialises it: fills the state with its initial values, uploads
  // the segment tables, and copies the parameters into fp32 masters and Lookahead's slow
  // weights (and Schedule-Free's z, x). This is one submission to the Context's queue, waited
  // for (under the queue lock); the parameters must hold their starting values on the device
  // when it runs. step(), sam_perturb() and state access call it when not called before, and so
  // does the first record() on a Context vkoptim created; on an adopted device the engine calls
  // it (at load time), since record() there never submits. No recorded command buffer ever contains initialisation, so
  // each is self-sufficient: dropping one costs exactly its step, and submitting one again
  // repeats its step (never re-initialises state). Throws invalid_state without tensors.
  void initialize();

  // Records one optimizer step into `cmd`.
  // Contract:
  //  1. `cmd` is recording, outside a render pass, from a pool whose queue family has compute.
  //     record() never begins, ends or submits it.
  //  2. It changes the compute bind state of `cmd` (pipeline, descriptor sets, push
  //     constants); rebind your own afterwards.
  //  3. Entry: unless options.entry_barrier is false, one global memory barrier from
  //     COMPUTE_SHADER|TRANSFER writes to COMPUTE_SHADER reads/writes.
  //  4. Exit: unless options.exit_barrier is false, one global memory barrier from
  //     COMPUTE_SHADER writes to options.exit_stage_mask / exit_access_mask.
  //  5. Between its own dispatches it inserts only what they need: on the descriptor path a
  //     compute->compute barrier where two dispatches' bound ranges overlap; nothing otherwise.
  //  6. The step's scalars (lr, bias corrections) are baked into `cmd`: record every step;
  //     resubmitting a recorded step repeats that step's scalars. The step counter advances
  //     when record() returns; a command buffer that is never submitted loses that step only
  //     (the next one is step t+1). With options.replay, the device counts steps and computes
  //     the scalars instead: record once, submit once per step (see RecordOptions::replay).
  //  7. Nothing initialising is recorded into `cmd`. On an adopted device, call initialize()
  //     first (record() throws invalid_state otherwise: it never submits); on a Context vkoptim
  //     created, the first record() calls it. `cmd` comes from a pool of the Context's queue
  //     family. See README (engine contract) for the first-step rules this covers and the two
  //     exceptions (SGD with dampening, SAM's perturb/step pair).
  //  8. To read results on the host after the submission, include VK_PIPELINE_STAGE_HOST_BIT /
  //     VK_ACCESS_HOST_READ_BIT in the exit masks (or place a host-read barrier yourself).
  //  9. Borrowed buffers need VK_BUFFER_USAGE_STORAGE_BUFFER_BIT (plus SHADER_DEVICE_ADDRESS_BIT
  //     and memory allocated with VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT when declared
  //     device_address); any memory type works. Tensors whose data start 32-byte aligned (16
  //     without shaderInt64) run whole blocks on the fast path; others, and every tensor's tail,
  //     take a slower per-element path: shape() reports how many elements take each.
  // Throws invalid_argument for a null `cmd` or exit masks that make no valid barrier (a zero
  // stage mask, unknown bits, an access no named stage performs). Nothing is recorded and
  // nothing changes if it throws.
  void record(VkCommandBuffer cmd, const RecordOptions& options = {});

  // Records into the Context's own command buffer, submits to its queue and waits.
  void step();

  // SAM's first half for every group with sam.rho > 0: a deterministic norm of the group's
  // gradients, then p += e. Same contract as record(); the step counter does not advance.
  // The next record()/step() restores p before its update.
  void record_sam_perturb(VkCommandBuffer cmd, const RecordOptions& options = {});
  void sam_perturb();  // records, submits and waits
  // A shard (shard.hpp) perturbs in two parts around the ranks' sums of |g|^2 per group, since
  // SAM's norm is over all of the group's gradients on every rank (a one-part perturbation is
  // refused): sam_perturb_sums() submits the first part and returns this rank's sum for each
  // group (one float per group); add every rank's in rank order (the same bits on every rank),
  // then sam_perturb_finish(total) writes them back and submits the perturbation itself.
  // Engines that record: record_sam_perturb with RecordOptions::part = StepPart::grad_sums, then
  // StepPart::finish, the sums at sam_sums_buffer() (host-visible, two floats per group: the sum,
  // then 0), read and written from the host by sam_sums()/set_sam_sums() (waiting for the queue).
  std::vector<float> sam_perturb_sums();
  void sam_perturb_finish(std::span<const float> combined);
  std::vector<float> sam_sums();
  void set_sam_sums(std::span<const float> combined);
  BufferRange sam_sums_buffer();

  // State names of the rule (torch's names), e.g. {"exp_avg", "exp_avg_sq"}; "step" is also
  // readable and writable (one value).
  std::vector<std::string> state_names(size_t tensor) const;
  std::vector<float> read_state(size_t tensor, std::string_view name);
  void write_state(size_t tensor, std::string_view name, std::span<const float> values);
  uint64_t step_count(size_t tensor) const;

  // Checkpoints (README, "Checkpoints"): the whole optimizer in the safetensors format, state
  // under torch's names ("state.<tensor name>.exp_avg"; a tensor without a name goes by its
  // index), options, schedules, wrappers, storage policies and gradient control as JSON in the
  // header's metadata, with a crc32 of the data. save() replaces `path` atomically (a temporary
  // file in the same folder, fsync, rename, fsync of the folder); it waits for submitted steps
  // and refuses while a SAM perturbation awaits its restore. load() matches tensors by name
  // and groups by position (same rule, same tensors, the same kinds of state), takes the
  // checkpoint's options, schedules and wrappers, and checks everything before it changes
  // anything: a refused checkpoint (invalid_argument naming the problem; io_error for the file
  // itself) leaves the optimizer as it was. A tensor without state in the checkpoint starts
  // afresh, as in torch.
  void save(const std::string& path);
  std::vector<uint8_t> save_to_memory();
  void load(const std::string& path, const LoadOptions& options = {});
  void load_from_memory(std::span<const uint8_t> checkpoint, const LoadOptions& options = {});

  // Number of vkCmdDispatch calls the last record() made (observability for tests/bench).
  uint32_t last_dispatch_count() const;
  // How a step is laid out: elements on the fast and careful paths, dispatches. Plans and
  // allocates the state if not yet done (no submission; initialize() still runs before the first
  // step). Use it to check that an engine's tensors are aligned for the fast path.
  StepShape shape();
  // The passes the last record() ran, in order (e.g. {"lamb_moments", "reduce", "lamb_apply"}).
  std::vector<std::string> pass_names() const;
  // Whether the shaders reach this optimizer's tensors by buffer device address (else through
  // descriptors); see ContextOptions::addressing. Allocates state if not yet done.
  bool uses_device_addresses();
  // Bytes of optimizer state on the device (memory().state_bytes once allocated).
  VkDeviceSize state_bytes() const;
  // What the optimizer's state takes (or will take), by kind and per parameter element.
  MemoryReport memory() const;
  const PrecisionOptions& precision(size_t group) const;
  // Bytes a step must move per element of a tensor of `group`: read p (or its master), g and
  // every state slot, write p (and its master) and every state slot, in their storage types
  // (8-bit states add their absmax share), the floor for memory-bound speed. Tensors that differ
  // (dtypes; f32 state below min_8bit_elements) count by their elements.
  double bytes_per_element(size_t group) const;

 private:
  void throw_if_nonfinite_norm(const char* what) const;  // (step, step_finish)
  std::unique_ptr<detail::OptimizerState> state_;
};

// Two ranks' gradient sums combined as the device combines chunks (sum of norm_sum, or its
// maximum for the inf norm; maximum of nonfinite). Combine every rank's in rank order.
GradSums combine_grad_sums(const GradClip& clip, const GradSums& a, const GradSums& b);

}  // namespace vkoptim
