// vkoptim::SparseOptimizer: row-sparse steps of embedding tables (shaders/sparse_rows.comp).
#include "vkoptim/sparse.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <variant>

#include "buffer_checks.hpp"
#include "context_state.hpp"
#include "recorder.hpp"
#include "rules/rule.hpp"
#include "sparse_rows.hpp"

namespace vkoptim {
namespace detail {
namespace {

// The control buffer's words (CTL_* and TAB_* in shaders/sparse_rows.comp).
constexpr uint32_t kCtlStep = 0, kCtlSkipped = 1, kCtlBad = 2, kCtlBadTable = 3, kCtlBadPosition = 4, kCtlBadIndex = 5,
                   kCtlRows = 6, kCtlHyper = 16, kCtlTables = 32;
constexpr uint32_t kTableWords = 32, kTableBadPosition = 3, kTableAddresses = 8;
constexpr uint32_t kScratchArrays = 6;  // arrival, list, sorted, unique row, base, count
enum Stage : uint32_t { kCount = 0, kAllocate, kPlace, kOrder, kApply };  // STAGE_* in the shader
const char* const kStageNames[] = {"sparse_count", "sparse_allocate", "sparse_place", "sparse_order", "sparse_apply"};
// Operands (OP_* in the shader).
enum Operand : uint32_t { kParam = 0, kValues, kSlot0, kSlot1, kIndices, kRowSlot, kScratch, kControl };

struct RuleInfo {
  const char* name;
  uint32_t code;  // RULE in the shader
  std::vector<std::string> slots;
};
RuleInfo rule_info(const SparseRuleOptions& options) {
  switch (options.index()) {
    case 0:
      return {"SparseAdam", 0, {"exp_avg", "exp_avg_sq"}};
    case 1:
      return {"Adagrad", 1, {"sum"}};
    default:
      return {"FTRL", 2, {"accumulator", "linear"}};
  }
}

void require_option(bool ok, const char* rule, const char* option, double value, const char* why) {
  if (!ok)
    throw Error(Status::invalid_argument,
                std::string("SparseOptimizer (") + rule + "): " + option + " = " + std::to_string(value) + ": " + why);
}

void validate(const SparseRuleOptions& options) {
  const char* rule = rule_info(options).name;
  auto finite_nonnegative = [&](const char* option, double v) {
    require_option(std::isfinite(v) && v >= 0, rule, option, v, "must be finite and >= 0");
  };
  if (const auto* o = std::get_if<SparseAdamOptions>(&options)) {
    require_option(std::isfinite(o->lr) && o->lr > 0, rule, "lr", o->lr, "must be > 0 (torch's SparseAdam)");
    require_option(std::isfinite(o->eps) && o->eps > 0, rule, "eps", o->eps, "must be > 0");
    require_option(o->beta1 >= 0 && o->beta1 < 1, rule, "beta1", o->beta1, "must be in [0, 1)");
    require_option(o->beta2 >= 0 && o->beta2 < 1, rule, "beta2", o->beta2, "must be in [0, 1)");
  } else if (const auto* o = std::get_if<AdagradOptions>(&options)) {
    finite_nonnegative("lr", o->lr);
    finite_nonnegative("lr_decay", o->lr_decay);
    finite_nonnegative("initial_accumulator_value", o->initial_accumulator_value);
    finite_nonnegative("eps", o->eps);
    require_option(o->weight_decay == 0, rule, "weight_decay", o->weight_decay,
                   "must be 0 with sparse gradients (as torch.optim.Adagrad requires)");
  } else {
    const auto& f = std::get<FtrlOptions>(options);
    require_option(std::isfinite(f.lr) && f.lr > 0, rule, "lr", f.lr, "must be > 0 (FTRL divides by it)");
    require_option(std::isfinite(f.learning_rate_power) && f.learning_rate_power <= 0, rule, "learning_rate_power",
                   f.learning_rate_power, "must be <= 0");
    finite_nonnegative("initial_accumulator_value", f.initial_accumulator_value);
    finite_nonnegative("l1", f.l1);
    finite_nonnegative("l2", f.l2);
    finite_nonnegative("l2_shrinkage", f.l2_shrinkage);
    finite_nonnegative("beta", f.beta);
  }
}

// The options the shader reads (HYPER in the shader), each as a double-float.
std::vector<double> hyper_values(const SparseRuleOptions& options) {
  if (const auto* o = std::get_if<SparseAdamOptions>(&options)) return {o->lr, o->beta1, o->beta2, o->eps};
  if (const auto* o = std::get_if<AdagradOptions>(&options)) return {o->lr, o->lr_decay, o->eps};
  const auto& f = std::get<FtrlOptions>(options);
  return {f.lr, -f.learning_rate_power, f.l1, f.l2, f.l2_shrinkage, f.beta};
}

bool maximize(const SparseRuleOptions& options) {
  return std::visit([](const auto& o) { return o.maximize; }, options);
}

float initial_value(const SparseRuleOptions& options, size_t slot) {
  if (const auto* o = std::get_if<AdagradOptions>(&options)) return float(o->initial_accumulator_value);
  if (const auto* f = std::get_if<FtrlOptions>(&options)) return slot == 0 ? float(f->initial_accumulator_value) : 0;
  return 0;
}

VkDeviceSize align_up(VkDeviceSize x, VkDeviceSize a) {
  return (x + a - 1) / a * a;
}

}  // namespace

void sparse_push_constants(VkDeviceAddress control, uint32_t capacity, uint32_t rows, uint32_t dim, uint32_t table,
                           uint32_t tables, PushBlock& out) {
  PushWriter(out)
      .u64("control", control)
      .u32("capacity", capacity)
      .u32("rows", rows)
      .u32("dim", dim)
      .u32("table", table)
      .u32("tables", tables);
}

struct SparseTableState {
  SparseTable table;
  uint64_t rows = 0;
  VkDeviceSize slot_stride = 0;           // bytes between the slots in `state`
  std::unique_ptr<OwnedBuffer> state;     // the rule's slots, rows x dim floats each
  std::unique_ptr<OwnedBuffer> row_slot;  // a word per row, 0 between steps
  std::unique_ptr<OwnedBuffer> scratch;   // kScratchArrays words per position
};

struct SparseOptimizerState {
  std::shared_ptr<ContextState> ctx;
  std::vector<SparseTableState> tables;
  SparseRuleOptions options;
  // The rule's name, shader code and slots (from the options; the rule never changes).
  RuleInfo rule() const { return rule_info(options); }
  bool bda = false;
  std::unique_ptr<OwnedBuffer> control;  // host-visible: options, counters, report
  VkDescriptorPool pool = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> sets;  // descriptor path: one per table
  bool initialized = false;
  uint32_t dispatches = 0;

  ~SparseOptimizerState() {
    if (pool) ctx->vkd.vkDestroyDescriptorPool(ctx->device, pool, nullptr);
  }
  uint32_t* control_words() const { return static_cast<uint32_t*>(control->mapped); }
  const std::string label(size_t t) const {
    return "table " + std::to_string(t) + (tables[t].table.name.empty() ? "" : " (" + tables[t].table.name + ")");
  }

  void write_hyper() {
    const std::vector<double> values = hyper_values(options);
    uint32_t* w = control_words();
    for (size_t k = 0; k < values.size(); ++k) {
      const float hi = float(values[k]), lo = float(values[k] - double(hi));
      std::memcpy(&w[kCtlHyper + 2 * k], &hi, 4);
      std::memcpy(&w[kCtlHyper + 2 * k + 1], &lo, 4);
    }
  }

  VkDeviceAddress address(const BufferRange& r) const {
    VkBufferDeviceAddressInfo info{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    info.buffer = r.buffer;
    return ctx->vkd.vkGetBufferDeviceAddress(ctx->device, &info) + r.offset;
  }

  // The operands of table t as bound ranges (descriptors) in Operand order.
  std::vector<VkDescriptorBufferInfo> operands(size_t t) const {
    const SparseTableState& s = tables[t];
    auto range = [](const BufferRange& r) {
      return VkDescriptorBufferInfo{r.buffer, r.offset, VkDeviceSize(r.count) * dtype_size(r.dtype)};
    };
    const VkDeviceSize slot_bytes = s.rows * s.table.dim * 4;
    const VkDeviceSize slot1 = rule().slots.size() > 1 ? s.slot_stride : 0;
    return {range(s.table.param),
            range(s.table.values),
            {s.state->buffer, 0, slot_bytes},
            {s.state->buffer, slot1, slot_bytes},
            range(s.table.indices),
            {s.row_slot->buffer, 0, VK_WHOLE_SIZE},
            {s.scratch->buffer, 0, VK_WHOLE_SIZE},
            {control->buffer, 0, VK_WHOLE_SIZE}};
  }

  // How APPLY moves rows (ROW_ACCESS in the shader): 2, 8 floats per access (shaderInt64, every
  // row 32-byte aligned in the parameters and values; the slots are), 1, 4 floats (16-byte
  // aligned), or 0, one.
  uint32_t row_access(const SparseTableState& s) const {
    const VkDeviceSize p = bda ? address(s.table.param) : s.table.param.offset;
    const VkDeviceSize v = bda ? address(s.table.values) : s.table.values.offset;
    const VkDeviceSize slots = bda ? s.state->address : 0;  // (slot offsets are multiples of 32)
    if (ctx->caps.shader_int64 && s.table.dim % 8 == 0 && p % 32 == 0 && v % 32 == 0 && slots % 32 == 0) return 2;
    return s.table.dim % 4 == 0 && p % 16 == 0 && v % 16 == 0 && slots % 16 == 0 ? 1 : 0;
  }
  void allocate();
  void record(VkCommandBuffer cmd, const RecordOptions& options);
  SparseStepReport report() const;
};

void SparseOptimizerState::allocate() {
  ContextState& c = *ctx;
  const VkDeviceSize align = std::max<VkDeviceSize>(c.caps.min_storage_buffer_offset_alignment, 32);
  for (SparseTableState& s : tables) {
    s.slot_stride = align_up(s.rows * s.table.dim * 4, align);
    s.state = c.create_buffer(s.slot_stride * rule().slots.size(), c.storage_usage(), MemoryUse::device);
    s.row_slot = c.create_buffer(std::max<VkDeviceSize>(s.rows * 4, 16), c.storage_usage(), MemoryUse::device);
    s.scratch =
        c.create_buffer(VkDeviceSize(s.table.indices.count) * 4 * kScratchArrays, c.storage_usage(), MemoryUse::device);
  }
  control = c.create_buffer((kCtlTables + kTableWords * tables.size()) * 4, c.storage_usage(), MemoryUse::shared);
  std::memset(control->mapped, 0, control->size);
  for (size_t t = 0; t < tables.size(); ++t) control_words()[kCtlTables + t * kTableWords + kTableBadPosition] = ~0u;
  write_hyper();
  if (bda) {
    uint32_t* w = control_words();
    for (size_t t = 0; t < tables.size(); ++t) {
      const SparseTableState& s = tables[t];
      const VkDeviceAddress a[8] = {
          address(s.table.param),   address(s.table.values),
          s.state->address,         s.state->address + (rule().slots.size() > 1 ? s.slot_stride : 0),
          address(s.table.indices), s.row_slot->address,
          s.scratch->address,       control->address};
      for (uint32_t k = 0; k < 8; ++k) {
        w[kCtlTables + t * kTableWords + kTableAddresses + 2 * k] = uint32_t(a[k]);
        w[kCtlTables + t * kTableWords + kTableAddresses + 2 * k + 1] = uint32_t(a[k] >> 32);
      }
    }
    return;
  }
  const uint32_t n = uint32_t(tables.size());
  pool = c.allocate_descriptor_sets(n, sets);
  for (uint32_t t = 0; t < n; ++t) {
    const auto infos = operands(t);
    VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    write.dstSet = sets[t];
    write.dstBinding = 1;
    write.descriptorCount = kMaxOperands;
    write.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    write.pBufferInfo = infos.data();
    c.vkd.vkUpdateDescriptorSets(c.device, 1, &write, 0, nullptr);
  }
}

void SparseOptimizerState::record(VkCommandBuffer cmd, const RecordOptions& options) {
  ContextState& c = *ctx;
  const uint32_t wg = std::max<uint32_t>(c.caps.workgroup_size, 1);
  const uint32_t max_groups = c.caps.max_compute_workgroup_count[0];
  const bool power_half = std::holds_alternative<FtrlOptions>(this->options) &&
                          std::get<FtrlOptions>(this->options).learning_rate_power == -0.5;
  StepPlan plan;
  auto dispatch = [&](PlannedPass& pass, Stage stage, size_t t, uint64_t invocations) {
    PlannedDispatch& d = pass.dispatches.emplace_back();
    const SparseTableState& s = tables[t];
    const uint32_t access = stage == kApply ? row_access(s) : 0;
    d.pipeline = plan.pipeline_index({"sparse_rows",
                                      bda,
                                      access == 2,
                                      false,
                                      {wg, 1, 0, stage, rule().code, maximize(this->options), power_half, access}});
    sparse_push_constants(bda ? control->address : 0, uint32_t(s.table.indices.count), uint32_t(s.rows), s.table.dim,
                          uint32_t(t), uint32_t(tables.size()), d.push);
    d.x = uint32_t(std::clamp<uint64_t>((invocations + wg - 1) / wg, 1, max_groups));
    if (!bda) {
      d.descriptor_set = int32_t(t);
      d.bound = {{control->buffer, 0, control->size}};  // every dispatch of a pass shares it
    }
  };
  for (uint32_t stage = kCount; stage <= kApply; ++stage) {
    PlannedPass& pass = plan.passes.emplace_back();
    pass.name = kStageNames[stage];
    pass.barrier_before = stage != kCount;
    for (size_t t = 0; t < tables.size(); ++t) {
      const uint64_t positions = tables[t].table.indices.count;
      // APPLY: an invocation per distinct row and 8 columns (COLUMNS in the shader).
      const uint64_t chunks = (tables[t].table.dim + 7) / 8;
      dispatch(pass, Stage(stage), t, stage == kApply ? positions * chunks : positions);
    }
  }
  std::vector<VkPipeline> pipelines;
  for (const PipelineKey& key : plan.pipelines) pipelines.push_back(c.pipeline(key));
  record_plan({c.vkd, cmd, c.pipeline_layout(bda), pipelines, sets}, nullptr, plan, options);
  dispatches = plan.dispatch_count();
}

SparseStepReport SparseOptimizerState::report() const {
  const uint32_t* w = control_words();
  SparseStepReport r;
  r.step = w[kCtlStep];
  r.skipped = w[kCtlSkipped] != 0;
  r.bad_indices = w[kCtlBad];
  r.bad_table = w[kCtlBadTable];
  r.first_bad_position = w[kCtlBadPosition];
  r.first_bad_index = w[kCtlBadIndex];
  r.rows_updated = w[kCtlRows];
  return r;
}

}  // namespace detail

using detail::SparseOptimizerState;

SparseOptimizer::SparseOptimizer(Context& context, std::vector<SparseTable> tables, SparseRuleOptions options)
    : state_(std::make_unique<SparseOptimizerState>()) {
  auto& s = *state_;
  s.ctx = detail::context_state(context);
  const detail::ContextState& c = *s.ctx;
  detail::validate(options);
  s.options = options;
  if (tables.empty()) throw Error(Status::invalid_argument, "SparseOptimizer: no tables");
  std::vector<detail::Span> spans;
  bool all_addressed = c.use_bda;
  for (size_t t = 0; t < tables.size(); ++t) {
    const SparseTable& table = tables[t];
    const std::string label = "table " + std::to_string(t) + (table.name.empty() ? "" : " (" + table.name + ")");
    detail::check_range(table.param, label + " param", c, detail::RangeOf::floats);
    detail::check_range(table.values, label + " values", c, detail::RangeOf::floats);
    detail::check_range(table.indices, label + " indices", c, detail::RangeOf::indices);
    if (table.param.dtype != DType::f32 || table.values.dtype != DType::f32)
      throw Error(Status::unsupported, label + ": param and values must be f32 (they are " +
                                           dtype_name(table.param.dtype) + " and " + dtype_name(table.values.dtype) +
                                           ")");
    if (table.dim == 0 || table.param.count % table.dim != 0)
      throw Error(Status::invalid_argument, label + ": dim = " + std::to_string(table.dim) +
                                                " does not divide param.count = " + std::to_string(table.param.count));
    if (table.values.count != uint64_t(table.indices.count) * table.dim)
      throw Error(Status::invalid_argument, label + ": values.count = " + std::to_string(table.values.count) +
                                                " but indices.count x dim = " + std::to_string(table.indices.count) +
                                                " x " + std::to_string(table.dim));
    // The shader indexes elements, positions and rows with 32-bit words (kSkipRow is no row).
    if (table.param.count > UINT32_MAX || table.values.count > UINT32_MAX)
      throw Error(Status::unsupported, label + ": tables and gradients of 2^32 elements or more are not supported");
    if (table.indices.count > UINT32_MAX / detail::kScratchArrays)
      throw Error(Status::unsupported, label + ": indices.count = " + std::to_string(table.indices.count) +
                                           ": at most " + std::to_string(UINT32_MAX / detail::kScratchArrays) +
                                           " positions (the coalescing scratch is indexed by 32-bit words)");
    for (size_t u = 0; u < t; ++u)
      if (!table.name.empty() && tables[u].name == table.name)
        throw Error(Status::invalid_argument, label + ": name \"" + table.name + "\" is already used");
    spans.push_back(
        {table.param.buffer, table.param.offset, table.param.offset + table.param.count * 4, true, label + " param"});
    spans.push_back({table.values.buffer, table.values.offset, table.values.offset + table.values.count * 4, false,
                     label + " values"});
    spans.push_back({table.indices.buffer, table.indices.offset, table.indices.offset + table.indices.count * 4, false,
                     label + " indices"});
    all_addressed =
        all_addressed && table.param.device_address && table.values.device_address && table.indices.device_address;
    detail::SparseTableState ts;
    ts.table = table;
    ts.rows = table.param.count / table.dim;
    s.tables.push_back(std::move(ts));
  }
  detail::check_overlaps(std::move(spans));

  const Addressing addressing = c.options.addressing;
  if (addressing == Addressing::device_address && !all_addressed)
    throw Error(Status::unsupported, "SparseOptimizer: addressing is device_address but " +
                                         std::string(c.use_bda ? "a table's buffer was not declared device_address"
                                                               : "the device has no buffer device addresses"));
  s.bda = addressing != Addressing::descriptors && all_addressed;
  if (!s.bda) {
    const VkDeviceSize align = std::max<VkDeviceSize>(c.caps.min_storage_buffer_offset_alignment, 1);
    for (size_t t = 0; t < s.tables.size(); ++t) {
      // (The slots take the parameter's bytes, the row counters fewer.)
      if (VkDeviceSize(tables[t].indices.count) * 4 * detail::kScratchArrays > c.caps.max_storage_buffer_range)
        throw Error(Status::unsupported, s.label(t) + ": the coalescing scratch of " +
                                             std::to_string(tables[t].indices.count) +
                                             " positions exceeds maxStorageBufferRange; buffer device addresses have "
                                             "no such limit");
      for (const BufferRange* r : {&tables[t].param, &tables[t].values, &tables[t].indices}) {
        if (r->offset % align != 0)
          throw Error(Status::unsupported, s.label(t) + ": a range starts at offset " + std::to_string(r->offset) +
                                               ", not a multiple of minStorageBufferOffsetAlignment (" +
                                               std::to_string(align) +
                                               "), which the descriptor path needs (buffer device addresses do not)");
        if (VkDeviceSize(r->count) * 4 > c.caps.max_storage_buffer_range)
          throw Error(Status::unsupported, s.label(t) + ": a range of " + std::to_string(r->count * 4) +
                                               " bytes exceeds maxStorageBufferRange (" +
                                               std::to_string(c.caps.max_storage_buffer_range) +
                                               "); buffer device addresses have no such limit");
      }
    }
  }
  s.allocate();
}

SparseOptimizer::SparseOptimizer(SparseOptimizer&&) noexcept = default;
SparseOptimizer& SparseOptimizer::operator=(SparseOptimizer&&) noexcept = default;
SparseOptimizer::~SparseOptimizer() = default;

size_t SparseOptimizer::table_count() const {
  return state_->tables.size();
}

size_t SparseOptimizer::table_index(std::string_view name) const {
  for (size_t t = 0; t < state_->tables.size(); ++t)
    if (state_->tables[t].table.name == name) return t;
  throw Error(Status::not_found, "SparseOptimizer: no table named \"" + std::string(name) + "\"");
}

const SparseRuleOptions& SparseOptimizer::options() const {
  return state_->options;
}

void SparseOptimizer::set_options(const SparseRuleOptions& options) {
  auto& s = *state_;
  if (options.index() != s.options.index())
    throw Error(Status::invalid_argument, std::string("SparseOptimizer::set_options: the rule is ") + s.rule().name +
                                              "; it cannot change to " + detail::rule_info(options).name);
  detail::validate(options);
  const auto power_half = [](const SparseRuleOptions& o) {
    return std::holds_alternative<FtrlOptions>(o) && std::get<FtrlOptions>(o).learning_rate_power == -0.5;
  };
  // What pipelines specialise on is fixed in recorded steps.
  if (detail::maximize(options) != detail::maximize(s.options) || power_half(options) != power_half(s.options))
    throw Error(Status::invalid_argument,
                "SparseOptimizer::set_options: maximize (and FTRL's learning_rate_power = -0.5 or not) are fixed "
                "once the optimizer exists: recorded steps are specialised on them");
  s.options = options;
  s.write_hyper();
}

void SparseOptimizer::initialize() {
  auto& s = *state_;
  if (s.initialized) return;
  s.ctx->submit_and_wait([&](VkCommandBuffer cmd) {
    for (const auto& t : s.tables) {
      for (size_t k = 0; k < s.rule().slots.size(); ++k) {
        const float v = detail::initial_value(s.options, k);
        uint32_t word;
        std::memcpy(&word, &v, 4);
        s.ctx->vkd.vkCmdFillBuffer(cmd, t.state->buffer, k * t.slot_stride, t.rows * t.table.dim * 4, word);
      }
      s.ctx->vkd.vkCmdFillBuffer(cmd, t.row_slot->buffer, 0, VK_WHOLE_SIZE, 0);
    }
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT;
    s.ctx->vkd.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                                    nullptr, 0, nullptr);
  });
  s.initialized = true;
}

void SparseOptimizer::record(VkCommandBuffer cmd, const RecordOptions& options) {
  auto& s = *state_;
  if (!cmd) throw Error(Status::invalid_argument, "SparseOptimizer::record: cmd is VK_NULL_HANDLE");
  detail::validate_record_options(options, s.ctx->caps);
  if (options.part != StepPart::whole)
    throw Error(Status::invalid_argument,
                "SparseOptimizer::record: RecordOptions::part is for Optimizer steps in parts; a sparse step is "
                "whole (StepPart::whole)");
  if (!s.initialized) {
    if (!s.ctx->owns_device)
      throw Error(Status::invalid_state,
                  "SparseOptimizer::record: call initialize() first on an adopted device (record never submits)");
    initialize();
  }
  s.record(cmd, options);
}

void SparseOptimizer::step() {
  auto& s = *state_;
  initialize();
  RecordOptions options;
  options.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
  options.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  s.ctx->submit_and_wait([&](VkCommandBuffer cmd) { s.record(cmd, options); });
  const SparseStepReport r = s.report();
  if (r.skipped)
    throw Error(Status::invalid_argument,
                "SparseOptimizer::step: " + s.label(r.bad_table) + " indices[" + std::to_string(r.first_bad_position) +
                    "] = " + std::to_string(r.first_bad_index) + " is not a row (the table has " +
                    std::to_string(s.tables[r.bad_table].rows) + "); " + std::to_string(r.bad_indices) +
                    " such indices in all; the step was skipped and nothing changed");
}

SparseStepReport SparseOptimizer::last_report() const {
  return state_->report();
}

uint64_t SparseOptimizer::step_count() {
  state_->ctx->wait_idle();
  return state_->report().step;
}

std::vector<std::string> SparseOptimizer::state_names() const {
  return state_->rule().slots;
}

namespace {
// The slot of `name`, or SIZE_MAX for "step"; throws not_found.
size_t slot_of(const detail::SparseOptimizerState& s, std::string_view name) {
  if (name == "step") return SIZE_MAX;
  for (size_t k = 0; k < s.rule().slots.size(); ++k)
    if (s.rule().slots[k] == name) return k;
  throw Error(Status::not_found, std::string(s.rule().name) + " keeps no state named \"" + std::string(name) + "\"");
}
}  // namespace

std::vector<float> SparseOptimizer::read_state(size_t table, std::string_view name) {
  auto& s = *state_;
  if (table >= s.tables.size())
    throw Error(Status::invalid_argument, "SparseOptimizer::read_state: no table " + std::to_string(table));
  const size_t slot = slot_of(s, name);
  initialize();
  if (slot == SIZE_MAX) return {float(step_count())};
  const auto& t = s.tables[table];
  std::vector<float> out(t.rows * t.table.dim);
  s.ctx->read_buffer(t.state->buffer, t.state.get(), slot * t.slot_stride, out.data(), out.size() * 4);
  return out;
}

void SparseOptimizer::write_state(size_t table, std::string_view name, std::span<const float> values) {
  auto& s = *state_;
  if (table >= s.tables.size())
    throw Error(Status::invalid_argument, "SparseOptimizer::write_state: no table " + std::to_string(table));
  const size_t slot = slot_of(s, name);
  initialize();
  if (slot == SIZE_MAX) {
    if (values.size() != 1 || !(values[0] >= 0) || values[0] != std::floor(values[0]) ||
        !(double(values[0]) < double(UINT32_MAX)))
      throw Error(Status::invalid_argument,
                  "SparseOptimizer::write_state: \"step\" takes one whole number in [0, 2^32 - 1)");
    s.ctx->wait_idle();
    s.control_words()[detail::kCtlStep] = uint32_t(values[0]);
    return;
  }
  const auto& t = s.tables[table];
  if (values.size() != t.rows * t.table.dim)
    throw Error(Status::invalid_argument, "SparseOptimizer::write_state: " + std::string(name) + " of " +
                                              s.label(table) + " has " + std::to_string(t.rows * t.table.dim) +
                                              " elements, values " + std::to_string(values.size()));
  s.ctx->write_buffer(t.state->buffer, t.state.get(), slot * t.slot_stride, values.data(), values.size_bytes());
}

MemoryReport SparseOptimizer::memory() const {
  const auto& s = *state_;
  MemoryReport m;
  for (const auto& t : s.tables) {
    m.elements += t.rows * t.table.dim;
    m.slot_bytes += t.state->size;
    m.state_bytes += t.state->size + t.row_slot->size + t.scratch->size;
  }
  m.state_bytes += s.control->size;
  return m;
}

uint32_t SparseOptimizer::last_dispatch_count() const {
  return state_->dispatches;
}

bool SparseOptimizer::uses_device_addresses() const {
  return state_->bda;
}

}  // namespace vkoptim
