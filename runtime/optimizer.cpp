// vkoptim::Optimizer: groups, tensors, state arenas, the segment table and step recording.
#include "vkoptim/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "context_state.hpp"
#include "rules/rule.hpp"
#include "tensor_table.hpp"

namespace vkoptim {
namespace detail {

namespace {
// State slots are packed into arenas of this size (a region larger than it gets its own).
constexpr VkDeviceSize kArenaBytes = VkDeviceSize(256) << 20;
constexpr VkDeviceSize kUpdateChunk = 65536;  // vkCmdUpdateBuffer's limit

VkDeviceSize round_up(VkDeviceSize v, VkDeviceSize a) {
  return (v + a - 1) / a * a;
}

std::string tensor_label(size_t group, size_t index_in_group) {
  return "group " + std::to_string(group) + " tensor " + std::to_string(index_in_group);
}

void check_range(const BufferRange& r, const std::string& what) {
  if (!r.buffer) throw Error(Status::invalid_argument, what + ".buffer is VK_NULL_HANDLE");
  if (r.count == 0) throw Error(Status::invalid_argument, what + ".count is 0");
  if (r.dtype != DType::f32)
    throw Error(Status::unsupported, what + ".dtype is " + dtype_name(r.dtype) + "; only f32 is supported so far");
  if (r.offset % dtype_size(r.dtype) != 0)
    throw Error(Status::invalid_argument, what + ".offset = " + std::to_string(r.offset) + " is not a multiple of " +
                                              std::to_string(dtype_size(r.dtype)) + " bytes");
  if (r.buffer_size == 0)
    throw Error(Status::invalid_argument,
                what + ".buffer_size is 0; declare the buffer's size so the range can be checked");
  const VkDeviceSize bytes = VkDeviceSize(r.count) * dtype_size(r.dtype);
  if (r.offset > r.buffer_size || bytes > r.buffer_size - r.offset)
    throw Error(Status::invalid_argument, what + " range [" + std::to_string(r.offset) + ", " +
                                              std::to_string(r.offset + bytes) +
                                              ") exceeds buffer_size = " + std::to_string(r.buffer_size));
}

struct Span {
  VkBuffer buffer;
  VkDeviceSize begin, end;
  bool written;
  std::string what;
};

// Parameters are written: no parameter may overlap another parameter or any gradient.
void check_overlaps(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.buffer != b.buffer ? a.buffer < b.buffer : a.begin < b.begin;
  });
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size() && spans[j].buffer == spans[i].buffer && spans[j].begin < spans[i].end; ++j)
      if (spans[i].written || spans[j].written)
        throw Error(Status::invalid_argument, spans[i].what + " overlaps " + spans[j].what +
                                                  " in the same buffer; parameters must not alias other tensors");
}

}  // namespace

void validate_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& sam) {
  if (!(std::isfinite(la.alpha) && la.alpha >= 0 && la.alpha <= 1))
    throw Error(Status::invalid_argument, "group " + std::to_string(group) + ": lookahead.alpha = " +
                                              std::to_string(la.alpha) + ": must be in [0, 1]");
  if (!(std::isfinite(sam.rho) && sam.rho >= 0))
    throw Error(Status::invalid_argument, "group " + std::to_string(group) + ": sam.rho = " + std::to_string(sam.rho) +
                                              ": must be finite and >= 0");
}

// Physical state slot (operand - 2) of each state name: the rule's slots keep their positions
// (its shader hard-codes them); Lookahead's slow weights and SAM's perturbation take the next
// free ones after the last active rule slot. -1: not kept. Throws when they do not fit.
std::vector<int> slot_map(const Rule& r, const RuleOptions& options, const LookaheadOptions& la,
                          const SamOptions& sam) {
  const auto active = r.active_slots(options);
  std::vector<int> map(r.slot_names().size() + 2, -1);
  int next = 0;
  for (size_t k = 0; k < active.size(); ++k)
    if (active[k]) {
      map[k] = int(k);
      next = int(k) + 1;
    }
  const bool wrappers[2] = {la.k > 0, sam.rho > 0};
  for (int w = 0; w < 2; ++w)
    if (wrappers[w]) map[r.slot_names().size() + size_t(w)] = next++;
  if (next > int(kMaxStateSlots))
    throw Error(Status::unsupported, std::string(r.name()) + " with these options keeps " + std::to_string(next) +
                                         " state slots with Lookahead/SAM; at most " + std::to_string(kMaxStateSlots) +
                                         " fit (e.g. drop amsgrad, or one of the wrappers)");
  return map;
}

struct StateRegion {
  uint32_t arena = 0;
  VkDeviceSize offset = 0;
  bool active = false;
  uint64_t elements = 0;  // what the slot keeps for this tensor
  float initial = 0;      // what the first step starts from
};

struct TensorRecord {
  ParamTensor tensor;
  uint32_t group = 0;
  uint32_t index_in_group = 0;
  uint64_t step = 0;
  bool fresh = true;  // no step recorded and no state written
  Scalars scalars{};  // the rule's host-kept per-tensor scalars
  std::array<StateRegion, kMaxStateSlots> slots{};
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
};

// Adafactor's row and column statistics of one 2-D tensor (address path).
struct FactorJob {
  uint32_t tensor;
  VkDeviceAddress grad, row_var, col_var;
  uint32_t rows, cols;
  bool wide;  // every row starts aligned to the wide access
};

// Where the reductions keep their data in the scratch buffer, in 8-byte entries.
struct ScratchLayout {
  uint32_t partials = 0, tensor_sums = 0, group_sums = 0;  // outputs
  uint32_t factor_means = 0;                               // Adafactor: mean of row_var per tensor
  uint32_t tensor_lists = 0, group_lists = 0;              // reduce.comp's lists (uploaded)
  std::vector<uint32_t> lists;                             // uploaded words from tensor_lists on
  uint32_t entries = 0;
};

struct OptimizerState {
  std::shared_ptr<ContextState> ctx;
  const Rule* rule = nullptr;
  std::vector<RuleOptions> groups;
  std::vector<LookaheadOptions> lookahead;  // per group
  std::vector<SamOptions> sam;              // per group
  std::vector<bool> sam_perturbed;          // per group: a perturbation awaits its restore
  std::vector<TensorRecord> tensors;

  bool finalized = false;
  bool needs_init = false;  // state fills and the table upload are still to be recorded
  bool use_bda = false;
  std::vector<std::unique_ptr<OwnedBuffer>> arenas;
  std::unique_ptr<OwnedBuffer> table;
  // Descriptor path: unused operand slots still need a descriptor, and validation treats every
  // slot as written, so each batch gets its own small ranges here (never aliased).
  std::unique_ptr<OwnedBuffer> placeholders;
  std::unique_ptr<OwnedBuffer> scratch;  // reductions; null when no pass needs one
  ScratchLayout scratch_layout;
  std::vector<FactorJob> factor_jobs;
  VkPipeline factor_pipelines[3] = {};  // adafactor_factors: rows, columns, row means
  TablePlan plan;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> sets;  // one per batch (descriptor path)
  uint32_t last_dispatches = 0;
  VkDeviceSize state_bytes = 0;
  std::vector<BoundRange> touched;    // descriptor ranges used since the last barrier (record scratch)
  std::vector<Pass> passes;           // what a step runs, in order
  std::vector<VkPipeline> pipelines;  // [(pass * groups + group) * 2 + careful], by prepare_pipelines

  ~OptimizerState() {
    if (pool) ctx->vkd.vkDestroyDescriptorPool(ctx->device, pool, nullptr);
  }

  void add_group(ParamGroup group);
  void finalize();
  void record_init(VkCommandBuffer cmd);
  void prepare_pipelines();
  // What a step runs (perturb: SAM's first half instead).
  void build_passes(bool perturb);
  void record(VkCommandBuffer cmd, const RecordOptions& options, bool perturb);
  void prepare(bool perturb);  // everything record() does that can fail
  void submit(bool perturb);   // record into the context's command buffer, submit, wait
  void ensure_initialised();
  const TensorRecord& tensor(size_t index) const;
  // The rule's state slots, then Lookahead's slow weights and SAM's perturbation.
  std::vector<std::string> slot_names() const;
  std::vector<int> slots(uint32_t group) const { return slot_map(*rule, groups[group], lookahead[group], sam[group]); }
  // The physical slot of the state `name` of a tensor, and its element count.
  struct Slot {
    size_t index;
    uint64_t elements;
  };
  Slot slot_index(size_t tensor, std::string_view name) const;
  // Elements the state named slot_names()[k] keeps for tensor t (0: none).
  uint64_t slot_elements(const TensorRecord& t, size_t k) const {
    if (k >= rule->slot_names().size()) return t.tensor.param.count;  // Lookahead, SAM
    return rule->slot_elements(groups[t.group], k, t.tensor.param.count, t.tensor.rows);
  }
  // Validated change of a group's Lookahead/SAM; refused once it would change the state kept.
  void set_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& s) {
    validate_wrappers(group, la, s);
    const auto map = slot_map(*rule, groups[group], la, s);
    if (finalized && map != slots(uint32_t(group)))
      throw Error(Status::invalid_state, "group " + std::to_string(group) +
                                             ": turning Lookahead or SAM on or off changes which state exists after "
                                             "state was allocated");
    lookahead[group] = la;
    sam[group] = s;
  }
  // Index of a host-kept scalar of the rule, or -1.
  int scalar_index(std::string_view name) const {
    const auto names = rule->scalar_names();
    for (size_t k = 0; k < names.size(); ++k)
      if (names[k] == name) return int(k);
    return -1;
  }
};

void OptimizerState::add_group(ParamGroup group) {
  if (finalized)
    throw Error(Status::invalid_state,
                "add_param_group: state already exists (a step was taken or state accessed); "
                "add every group before the first step");
  const size_t g = groups.size();
  const Rule& r = rule_for(group.options);
  if (rule && &r != rule)
    throw Error(Status::invalid_argument, "group " + std::to_string(g) + " uses " + r.name() +
                                              " but the optimizer's rule is " + rule->name() +
                                              "; one rule per optimizer");
  r.validate(group.options, g);
  validate_wrappers(g, group.lookahead, group.sam);
  slot_map(r, group.options, group.lookahead, group.sam);  // throws when the slots do not fit

  std::vector<Span> spans;
  auto add_span = [&](const BufferRange& b, bool written, const std::string& what) {
    spans.push_back({b.buffer, b.offset, b.offset + VkDeviceSize(b.count) * dtype_size(b.dtype), written, what});
  };
  for (const auto& t : tensors) {
    add_span(t.tensor.param, true, tensor_label(t.group, t.index_in_group) + " param");
    add_span(t.tensor.grad, false, tensor_label(t.group, t.index_in_group) + " grad");
  }
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    const auto& t = group.tensors[i];
    const std::string label = tensor_label(g, i);
    check_range(t.param, label + " param");
    check_range(t.grad, label + " grad");
    if (t.rows != 0 && (t.param.count % t.rows != 0))
      throw Error(Status::invalid_argument, label + ": rows = " + std::to_string(t.rows) +
                                                " does not divide the element count " + std::to_string(t.param.count));
    if (t.param.count != t.grad.count)
      throw Error(Status::invalid_argument, label + ": param.count = " + std::to_string(t.param.count) +
                                                " but grad.count = " + std::to_string(t.grad.count));
    if (t.param.dtype != t.grad.dtype)
      throw Error(Status::invalid_argument, label + ": param.dtype = " + dtype_name(t.param.dtype) +
                                                " but grad.dtype = " + dtype_name(t.grad.dtype));
    if (!t.name.empty())
      for (const auto& other : tensors)
        if (other.tensor.name == t.name)
          throw Error(Status::invalid_argument, label + ": name \"" + t.name + "\" is already used");
    add_span(t.param, true, label + " param");
    add_span(t.grad, false, label + " grad");
  }
  check_overlaps(std::move(spans));

  rule = &r;
  groups.push_back(group.options);
  lookahead.push_back(group.lookahead);
  sam.push_back(group.sam);
  sam_perturbed.push_back(false);
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    TensorRecord rec;
    rec.tensor = std::move(group.tensors[i]);
    rec.group = uint32_t(g);
    rec.index_in_group = uint32_t(i);
    rec.scalars = r.initial_scalars(group.options);
    tensors.push_back(std::move(rec));
  }
}

void OptimizerState::finalize() {
  if (finalized) return;
  ContextState& c = *ctx;
  // Can every operand be reached by address?
  std::string no_address_reason;
  if (!c.use_bda) no_address_reason = "the device has no usable buffer device address (or the context disabled it)";
  for (const auto& t : tensors)
    if (no_address_reason.empty() && !(t.tensor.param.device_address && t.tensor.grad.device_address))
      no_address_reason = tensor_label(t.group, t.index_in_group) + " lives in a buffer not declared device_address";
  if (c.options.addressing == Addressing::device_address && !no_address_reason.empty())
    throw Error(Status::unsupported, "addressing = device_address, but " + no_address_reason);
  const auto rule_passes = rule->passes();
  const bool has_factor_pass = std::any_of(rule_passes.begin(), rule_passes.end(),
                                           [](const RulePass& p) { return p.kind == RulePass::Kind::factor_stats; });
  const bool factored = has_factor_pass && std::any_of(tensors.begin(), tensors.end(),
                                                       [](const TensorRecord& t) { return t.tensor.rows > 0; });
  if (factored && !no_address_reason.empty())
    throw Error(
        Status::unsupported,
        std::string(rule->name()) + ": 2-D (factored) tensors need buffer device addresses, but " + no_address_reason);
  const bool may_use_descriptors = !factored && c.options.addressing != Addressing::device_address &&
                                   c.caps.max_per_stage_storage_buffers >= kDescriptorsPerSet;
  if (!may_use_descriptors && !no_address_reason.empty())
    throw Error(Status::unsupported, "the device allows " + std::to_string(c.caps.max_per_stage_storage_buffers) +
                                         " storage buffers per shader stage; the descriptor path needs " +
                                         std::to_string(kDescriptorsPerSet) + " (or buffers with device addresses)");

  // Parameters and gradients, then the table order, then state laid out in that order so each
  // batch's state is one contiguous range, disjoint from other batches'.
  const bool may_use_addresses = no_address_reason.empty();
  auto address_of = [&](VkBuffer buffer) -> VkDeviceAddress {
    if (!may_use_addresses) return 0;
    VkBufferDeviceAddressInfo info{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    info.buffer = buffer;
    return c.vkd.vkGetBufferDeviceAddress(c.device, &info);
  };
  std::vector<TableTensor> table_tensors;
  for (const auto& t : tensors) {
    TableTensor tt;
    tt.group = t.group;
    tt.count = t.tensor.param.count;
    tt.cols = t.tensor.rows > 0 ? t.tensor.param.count / t.tensor.rows : 0;
    const BufferRange* io[2] = {&t.tensor.param, &t.tensor.grad};
    for (int k = 0; k < 2; ++k) {
      tt.operands[k].buffer = io[k]->buffer;
      tt.operands[k].offset = io[k]->offset;
      if (may_use_addresses) tt.operands[k].address = address_of(io[k]->buffer) + io[k]->offset;
    }
    table_tensors.push_back(tt);
  }

  std::vector<TensorRecord> laid_out = tensors;
  std::vector<VkDeviceSize> arena_sizes;
  VkDeviceSize total = 0;
  for (uint32_t ti : table_order(table_tensors)) {
    TensorRecord& t = laid_out[ti];
    const auto map = slots(t.group);
    for (size_t k = 0; k < map.size(); ++k) {
      if (map[k] < 0) continue;
      const bool rule_slot = k < rule->slot_names().size();
      const uint64_t elements = rule_slot ? rule->slot_elements(groups[t.group], k, t.tensor.param.count, t.tensor.rows)
                                          : t.tensor.param.count;
      if (elements == 0) continue;
      const VkDeviceSize bytes = round_up(elements, 8) * 4;  // 32-byte aligned regions for wide accesses
      if (arena_sizes.empty() || arena_sizes.back() + bytes > kArenaBytes) arena_sizes.push_back(0);
      const float initial = rule_slot ? rule->initial_value(groups[t.group], k) : 0.0f;
      t.slots[size_t(map[k])] = {uint32_t(arena_sizes.size() - 1), arena_sizes.back(), true, elements, initial};
      arena_sizes.back() += bytes;
      total += bytes;
    }
  }
  std::vector<std::unique_ptr<OwnedBuffer>> new_arenas;
  for (VkDeviceSize size : arena_sizes)
    new_arenas.push_back(c.create_buffer(size, c.storage_usage(), MemoryUse::device));
  for (size_t ti = 0; ti < laid_out.size(); ++ti)
    for (size_t k = 0; k < kMaxStateSlots; ++k) {
      const StateRegion& region = laid_out[ti].slots[k];
      if (!region.active) continue;
      const OwnedBuffer& arena = *new_arenas[region.arena];
      auto& op = table_tensors[ti].operands[2 + k];
      op.buffer = arena.buffer;
      op.offset = region.offset;
      op.address = may_use_addresses ? arena.address + region.offset : 0;
      op.per_tensor = rule->slot_per_tensor(k);  // rule slots keep their index as physical slot
    }

  // The segment table, on the path that needs the fewest dispatches (descriptors on a tie).
  TableLimits limits;
  limits.width = c.caps.shader_int64 ? 8 : 4;
  limits.fast_block = c.caps.workgroup_size * c.caps.items_per_invocation * limits.width;
  limits.careful_block = c.caps.workgroup_size * limits.width;
  limits.max_range = c.caps.max_storage_buffer_range;
  limits.offset_alignment = c.caps.min_storage_buffer_offset_alignment;
  TablePlan new_plan;
  bool bda = false;
  if (may_use_descriptors) new_plan = build_table(table_tensors, limits);
  if (may_use_addresses) {
    limits.device_address = true;
    TablePlan address_plan = build_table(table_tensors, limits);
    if (!may_use_descriptors || address_plan.batches.size() < new_plan.batches.size()) {
      new_plan = std::move(address_plan);
      bda = true;
    }
  }

  VkBufferUsageFlags table_usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  if (bda) table_usage |= VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
  auto new_table =
      c.create_buffer(std::max<VkDeviceSize>(sizeof(SegmentRecord), new_plan.bytes()), table_usage, MemoryUse::device);

  // Reduction scratch: partials per block, sums per tensor and group, and the lists reduce.comp
  // walks: per tensor its segments' block ranges, per group its tensor range.
  std::unique_ptr<OwnedBuffer> new_scratch;
  ScratchLayout layout;
  const bool any_sam = std::any_of(sam.begin(), sam.end(), [](const SamOptions& o) { return o.rho > 0; });
  if (any_sam || std::any_of(rule_passes.begin(), rule_passes.end(),
                             [](const RulePass& p) { return p.kind != RulePass::Kind::elementwise; })) {
    const uint32_t nb = uint32_t(new_plan.block_map.size()), nt = uint32_t(laid_out.size()),
                   ng = uint32_t(groups.size());
    layout.partials = 0;
    layout.tensor_sums = nb;
    layout.group_sums = nb + nt;
    layout.factor_means = nb + nt + ng;
    layout.tensor_lists = nb + nt + ng + nt;
    layout.group_lists = layout.tensor_lists + nt;
    const uint32_t ranges = layout.group_lists + ng;  // first range entry
    std::vector<std::vector<std::pair<uint32_t, uint32_t>>> tensor_ranges(nt);
    for (size_t si = 0; si < new_plan.segments.size(); ++si)
      tensor_ranges[new_plan.segment_tensor[si]].push_back(
          {new_plan.segments[si].block_begin, new_plan.segment_blocks[si]});
    std::vector<uint32_t> words;  // (first range, count) per tensor, per group, then the ranges
    uint32_t next_range = ranges;
    for (const auto& r : tensor_ranges) {
      words.insert(words.end(), {next_range, uint32_t(r.size())});
      next_range += uint32_t(r.size());
    }
    for (uint32_t g = 0; g < ng; ++g) words.insert(words.end(), {next_range + g, 1});
    for (const auto& r : tensor_ranges)
      for (const auto& [first, count] : r) words.insert(words.end(), {first, count});
    for (uint32_t g = 0; g < ng; ++g) {  // a group's tensors are consecutive
      uint32_t first = nt, count = 0;
      for (uint32_t t = 0; t < nt; ++t)
        if (laid_out[t].group == g) {
          first = std::min(first, t);
          ++count;
        }
      words.insert(words.end(), {count ? first : 0, count});
    }
    layout.lists = std::move(words);
    layout.entries = layout.tensor_lists + uint32_t(layout.lists.size() / 2);
    VkBufferUsageFlags usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    if (bda) usage |= VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
    new_scratch = c.create_buffer(VkDeviceSize(layout.entries) * 8, usage, MemoryUse::device);
  }

  VkDescriptorPool new_pool = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> new_sets;
  std::unique_ptr<OwnedBuffer> new_placeholders;
  if (!bda && !new_plan.batches.empty()) {
    const uint32_t n = uint32_t(new_plan.batches.size());
    const VkDeviceSize slot_bytes = std::max<VkDeviceSize>(c.caps.min_storage_buffer_offset_alignment, 16);
    new_placeholders =
        c.create_buffer(slot_bytes * kMaxOperands * n, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, MemoryUse::device);
    VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n * kDescriptorsPerSet};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = n;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &size;
    check_vk(c.vkd.vkCreateDescriptorPool(c.device, &dpci, nullptr, &new_pool), "vkCreateDescriptorPool");
    std::vector<VkDescriptorSetLayout> layouts(n, c.descriptor_layout);
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = new_pool;
    dsai.descriptorSetCount = n;
    dsai.pSetLayouts = layouts.data();
    new_sets.resize(n);
    const VkResult r = c.vkd.vkAllocateDescriptorSets(c.device, &dsai, new_sets.data());
    if (r != VK_SUCCESS) c.vkd.vkDestroyDescriptorPool(c.device, new_pool, nullptr);
    check_vk(r, "vkAllocateDescriptorSets");
    c.stats.descriptor_sets_allocated += n;
    for (uint32_t i = 0; i < n; ++i) {
      Batch& b = new_plan.batches[i];
      b.table_range.buffer = new_table->buffer;
      VkDescriptorBufferInfo table_info{new_table->buffer, b.table_range.offset, b.table_range.size};
      VkDescriptorBufferInfo map_info{new_table->buffer, b.map_range.offset, b.map_range.size};
      VkDescriptorBufferInfo scratch_info =
          new_scratch ? VkDescriptorBufferInfo{new_scratch->buffer, 0, VK_WHOLE_SIZE}
                      : VkDescriptorBufferInfo{new_placeholders->buffer, i * kMaxOperands * slot_bytes, slot_bytes};
      VkDescriptorBufferInfo ops[kMaxOperands];
      for (uint32_t k = 0; k < kMaxOperands; ++k) {
        const BoundRange& br = b.operands[k];
        ops[k] = br.buffer ? VkDescriptorBufferInfo{br.buffer, br.offset, br.size}
                           : VkDescriptorBufferInfo{new_placeholders->buffer, (i * kMaxOperands + k) * slot_bytes,
                                                    slot_bytes};
      }
      VkWriteDescriptorSet writes[4] = {{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET}};
      writes[0].dstSet = new_sets[i];
      writes[0].dstBinding = 0;
      writes[0].descriptorCount = 1;
      writes[0].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[0].pBufferInfo = &table_info;
      writes[1] = writes[0];
      writes[1].dstBinding = 1;
      writes[1].descriptorCount = kMaxOperands;
      writes[1].pBufferInfo = ops;
      writes[2] = writes[0];
      writes[2].dstBinding = 2;
      writes[2].pBufferInfo = &map_info;
      writes[3] = writes[0];
      writes[3].dstBinding = 3;
      writes[3].pBufferInfo = &scratch_info;
      c.vkd.vkUpdateDescriptorSets(c.device, 4, writes, 0, nullptr);
    }
  }

  // Commit: nothing above changed the optimizer.
  tensors = std::move(laid_out);
  arenas = std::move(new_arenas);
  table = std::move(new_table);
  placeholders = std::move(new_placeholders);
  scratch = std::move(new_scratch);
  scratch_layout = std::move(layout);
  factor_jobs.clear();
  if (factored)
    for (uint32_t ti = 0; ti < tensors.size(); ++ti)
      if (tensors[ti].tensor.rows > 0) {
        const auto& ops = table_tensors[ti].operands;
        const uint32_t rows = uint32_t(tensors[ti].tensor.rows);
        const uint32_t cols = uint32_t(tensors[ti].tensor.param.count / rows), width = c.caps.shader_int64 ? 8 : 4;
        const bool wide = ops[1].address % (width * 4) == 0 && cols % width == 0;
        factor_jobs.push_back({ti, ops[1].address, ops[2].address, ops[3].address, rows, cols, wide});
      }
  plan = std::move(new_plan);
  pool = new_pool;
  sets = std::move(new_sets);
  use_bda = bda;
  state_bytes = total;
  touched.reserve(plan.batches.size() * kMaxOperands);
  finalized = true;
  needs_init = true;
}

void OptimizerState::record_init(VkCommandBuffer cmd) {
  const auto& d = ctx->vkd;
  // Fill each arena with its slots' initial values: one fill when they agree, else per region.
  for (uint32_t a = 0; a < arenas.size(); ++a) {
    bool uniform = true, any = false;
    float value = 0;
    for (const auto& t : tensors)
      for (size_t k = 0; k < kMaxStateSlots; ++k)
        if (t.slots[k].active && t.slots[k].arena == a) {
          const float v = t.slots[k].initial;
          if (any && std::memcmp(&v, &value, 4) != 0) uniform = false;
          value = v;
          any = true;
        }
    auto bits = [](float f) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      return u;
    };
    if (uniform) {
      d.vkCmdFillBuffer(cmd, arenas[a]->buffer, 0, VK_WHOLE_SIZE, bits(value));
      continue;
    }
    for (const auto& t : tensors)
      for (size_t k = 0; k < kMaxStateSlots; ++k)
        if (t.slots[k].active && t.slots[k].arena == a)
          d.vkCmdFillBuffer(cmd, arenas[a]->buffer, t.slots[k].offset, round_up(t.slots[k].elements, 8) * 4,
                            bits(t.slots[k].initial));
  }
  auto upload = [&](const void* data, VkDeviceSize offset, VkDeviceSize total) {
    const auto* bytes = static_cast<const char*>(data);
    for (VkDeviceSize off = 0; off < total; off += kUpdateChunk)
      d.vkCmdUpdateBuffer(cmd, table->buffer, offset + off, std::min(kUpdateChunk, total - off), bytes + off);
  };
  upload(plan.segments.data(), 0, plan.segments.size() * sizeof(SegmentRecord));
  upload(plan.block_map.data(), plan.map_offset, plan.block_map.size() * 4);
  if (scratch) {
    const auto& l = scratch_layout.lists;
    for (VkDeviceSize off = 0; off < l.size() * 4; off += kUpdateChunk)
      d.vkCmdUpdateBuffer(cmd, scratch->buffer, VkDeviceSize(scratch_layout.tensor_lists) * 8 + off,
                          std::min<VkDeviceSize>(kUpdateChunk, l.size() * 4 - off),
                          reinterpret_cast<const char*>(l.data()) + off);
  }
}

void OptimizerState::ensure_initialised() {
  finalize();
  if (!needs_init) return;
  ctx->submit_and_wait([&](VkCommandBuffer cmd) {
    record_init(cmd);
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask =
        VK_ACCESS_HOST_READ_BIT | VK_ACCESS_HOST_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    ctx->vkd.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                  VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, nullptr, 0,
                                  nullptr);
  });
  needs_init = false;
}

std::vector<std::string> OptimizerState::slot_names() const {
  auto names = rule->slot_names();
  names.push_back("slow_param");
  names.push_back("sam_e");
  return names;
}

void OptimizerState::build_passes(bool perturb) {
  passes.clear();
  const size_t sam_name = rule->slot_names().size() + 1;  // index of "sam_e" in slot_names()
  auto sam_operand = [this, sam_name](uint32_t g) {
    return std::vector<uint32_t>{uint32_t(2 + std::max(0, slots(g)[sam_name]))};
  };
  if (perturb) {
    // |g| over each SAM group (per-block partials, per-tensor then per-group sums), then p += e.
    Pass norm{"sam_norm", [](uint32_t) { return std::vector<uint32_t>{}; },
              [this](uint32_t g, const StepInfo&, PushBlock& out) {
                if (sam[g].rho <= 0) return false;
                PushWriter w(out);
                for (uint32_t i = 0; i < kScratchWords; ++i) w.u32(0);
                return true;
              }};
    norm.partials = true;
    passes.push_back(std::move(norm));
    passes.push_back({"reduce", {}, {}, RulePass::Kind::reduce_tensors});
    passes.push_back({"reduce", {}, {}, RulePass::Kind::reduce_groups});
    Pass apply{"sam_update", sam_operand, [this](uint32_t g, const StepInfo&, PushBlock& out) {
                 if (sam[g].rho <= 0) return false;
                 PushWriter w(out);
                 for (uint32_t i = 0; i < kScratchWords; ++i) w.u32(0);
                 w.f32(sam[g].rho).u32(0);  // perturb
                 return true;
               }};
    apply.sums = RulePass::Sums::group;
    passes.push_back(std::move(apply));
    return;
  }
  if (std::find(sam_perturbed.begin(), sam_perturbed.end(), true) != sam_perturbed.end()) {
    Pass restore{"sam_update", sam_operand, [this](uint32_t g, const StepInfo&, PushBlock& out) {
                   if (!sam_perturbed[g]) return false;
                   PushWriter w(out);
                   for (uint32_t i = 0; i < kScratchWords; ++i) w.u32(0);
                   w.f32(0).u32(1);  // restore: p -= e
                   return true;
                 }};
    restore.sums = RulePass::Sums::group;
    passes.push_back(std::move(restore));
  }
  const bool any_lookahead =
      std::any_of(lookahead.begin(), lookahead.end(), [](const LookaheadOptions& l) { return l.k > 0; });
  const size_t slow_name = rule->slot_names().size();  // index of "slow_param" in slot_names()
  auto slow_operand = [this, slow_name](uint32_t g) {
    return std::vector<uint32_t>{uint32_t(2 + std::max(0, slots(g)[slow_name]))};
  };
  if (any_lookahead)
    passes.push_back({"lookahead", slow_operand, [this](uint32_t g, const StepInfo& step, PushBlock& out) {
                        if (lookahead[g].k == 0 || !step.fresh) return false;
                        PushWriter(out).f32(0).u32(0);  // slow <- p
                        return true;
                      }});
  const auto rule_passes = rule->passes();
  for (size_t rp = 0; rp < rule_passes.size(); ++rp) {
    const RulePass& r = rule_passes[rp];
    const bool reduce = r.kind == RulePass::Kind::reduce_tensors || r.kind == RulePass::Kind::reduce_groups;
    Pass pass{reduce ? "reduce" : r.shader, [this, rp](uint32_t g) { return rule->pass_spec_constants(groups[g], rp); },
              [this, rp](uint32_t g, const StepInfo& step, PushBlock& out) {
                rule->pass_push_constants(groups[g], step, out, rp);
                return true;
              }};
    if (r.kind != RulePass::Kind::elementwise) pass.spec_constants = [](uint32_t) { return std::vector<uint32_t>{}; };
    pass.kind = r.kind;
    pass.partials = r.partials;
    pass.sums = r.sums;
    pass.factor_means = r.factor_means;
    passes.push_back(std::move(pass));
  }
  if (any_lookahead)
    passes.push_back({"lookahead", slow_operand, [this](uint32_t g, const StepInfo& step, PushBlock& out) {
                        if (lookahead[g].k == 0 || step.t % lookahead[g].k != 0) return false;
                        PushWriter(out).f32(lookahead[g].alpha).u32(1);  // slow += alpha (p - slow); p <- slow
                        return true;
                      }});
}

void OptimizerState::prepare_pipelines() {
  const size_t ng = groups.size();
  pipelines.assign(passes.size() * ng * 2, VK_NULL_HANDLE);
  for (size_t pi = 0; pi < passes.size(); ++pi) {
    if (passes[pi].kind == RulePass::Kind::factor_stats) {  // one pipeline per mode
      for (uint32_t mode = 0; mode < 3; ++mode)
        factor_pipelines[mode] = ctx->pipeline(passes[pi].shader, use_bda, ctx->caps.shader_int64,
                                               {ctx->caps.workgroup_size, ctx->caps.items_per_invocation, 0, mode});
      continue;
    }
    if (passes[pi].kind != RulePass::Kind::elementwise) {  // one pipeline, any group
      pipelines[pi * ng * 2] = ctx->pipeline(passes[pi].shader, use_bda, ctx->caps.shader_int64,
                                             {ctx->caps.workgroup_size, ctx->caps.items_per_invocation, 0});
      continue;
    }
    for (const Batch& b : plan.batches) {
      VkPipeline& slot = pipelines[(pi * ng + b.group) * 2 + b.careful];
      if (slot) continue;
      std::vector<uint32_t> spec{ctx->caps.workgroup_size, ctx->caps.items_per_invocation, b.careful};
      const auto pass_spec = passes[pi].spec_constants(b.group);
      spec.insert(spec.end(), pass_spec.begin(), pass_spec.end());
      slot = ctx->pipeline(passes[pi].shader, use_bda, ctx->caps.shader_int64, spec);
    }
  }
}

namespace {
void memory_barrier(const DeviceFunctions& d, VkCommandBuffer cmd, VkPipelineStageFlags src_stage,
                    VkAccessFlags src_access, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = src_access;
  mb.dstAccessMask = dst_access;
  d.vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

bool overlaps(const BoundRange& a, const BoundRange& b) {
  return a.buffer == b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}
}  // namespace

void OptimizerState::prepare(bool perturb) {
  if (perturb && std::none_of(sam.begin(), sam.end(), [](const SamOptions& s) { return s.rho > 0; }))
    throw Error(Status::invalid_state, "record_sam_perturb: no group has SAM on (sam.rho > 0)");
  finalize();
  build_passes(perturb);
  prepare_pipelines();
}

void OptimizerState::submit(bool perturb) {
  prepare(perturb);  // fail before anything is submitted
  RecordOptions options;
  options.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
  options.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  ctx->submit_and_wait([&](VkCommandBuffer cmd) { record(cmd, options, perturb); });
}

void OptimizerState::record(VkCommandBuffer cmd, const RecordOptions& options, bool perturb) {
  if (!cmd) throw Error(Status::invalid_argument, "record: cmd is VK_NULL_HANDLE");
  // Everything that can fail happens before the first command is recorded.
  prepare(perturb);

  const auto& d = ctx->vkd;
  const VkPipelineLayout layout = ctx->pipeline_layout(use_bda);
  const bool initialising = needs_init;
  if (initialising) record_init(cmd);
  if (options.entry_barrier || initialising)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);

  const uint32_t max_x = ctx->caps.max_compute_workgroup_count[0];
  const uint32_t max_y = ctx->caps.max_compute_workgroup_count[1];
  uint32_t dispatches = 0;
  VkPipeline bound = VK_NULL_HANDLE;
  touched.clear();
  PushBlock push;
  if (use_bda) {
    const VkDeviceAddress map = table->address + plan.map_offset;
    push.header.table_address[0] = uint32_t(table->address);
    push.header.table_address[1] = uint32_t(table->address >> 32);
    push.header.map_address[0] = uint32_t(map);
    push.header.map_address[1] = uint32_t(map >> 32);
  }

  // Passes run in order over all groups; a pass after one that dispatched waits for it (they
  // touch the same elements).
  bool dispatched_before = false;
  auto barrier_after_earlier_passes = [&] {
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    touched.clear();
  };
  const VkDeviceAddress scratch_address = scratch && use_bda ? scratch->address : 0;
  uint32_t query = options.first_query;
  auto timestamp = [&] {
    if (options.timestamp_pool)
      d.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, options.timestamp_pool, query++);
  };
  timestamp();
  for (size_t pi = 0; pi < passes.size(); ++pi) {
    const Pass& pass = passes[pi];
    if (pass.kind == RulePass::Kind::factor_stats) {
      if (!factor_jobs.empty()) {
        if (dispatched_before) barrier_after_earlier_passes();
        const uint32_t wg = ctx->caps.workgroup_size, width = ctx->caps.shader_int64 ? 8 : 4;
        for (uint32_t mode = 0; mode < 3; ++mode) {
          if (mode == 2) barrier_after_earlier_passes();  // row means read the row statistics
          bound = factor_pipelines[mode];
          d.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, bound);
          for (const FactorJob& job : factor_jobs) {
            const TensorRecord& t = tensors[job.tensor];
            PushBlock fp;
            PushWriter(fp)
                .u32(uint32_t(scratch_address))
                .u32(uint32_t(scratch_address >> 32))
                .u32(uint32_t(job.grad))
                .u32(uint32_t(job.grad >> 32))
                .u32(uint32_t(job.row_var))
                .u32(uint32_t(job.row_var >> 32))
                .u32(uint32_t(job.col_var))
                .u32(uint32_t(job.col_var >> 32))
                .u32(job.rows)
                .u32(job.cols)
                .f32(rule->factor_weight(groups[t.group], t.step + 1))
                .u32(scratch_layout.factor_means + job.tensor)
                .u32(job.wide ? 1 : 0);
            d.vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                 uint32_t(sizeof(PushHeader) + fp.rule_bytes), &fp);
            const uint32_t columns = job.wide ? job.cols / width : job.cols;  // per invocation in mode 1
            const uint32_t groups_needed = mode == 0 ? job.rows : mode == 1 ? (columns + wg - 1) / wg : 1;
            const uint32_t x = std::min(groups_needed, max_x);
            d.vkCmdDispatch(cmd, x, (groups_needed + x - 1) / x, 1);
            ++dispatches;
          }
        }
        dispatched_before = true;
      }
      timestamp();
      continue;
    }
    if (pass.kind != RulePass::Kind::elementwise) {
      // Reduction over lists in the scratch buffer: one workgroup per output.
      const bool per_tensor = pass.kind == RulePass::Kind::reduce_tensors;
      const uint32_t outputs = per_tensor ? uint32_t(tensors.size()) : uint32_t(groups.size());
      if (outputs == 0) {
        timestamp();
        continue;
      }
      if (dispatched_before) barrier_after_earlier_passes();
      bound = pipelines[pi * groups.size() * 2];
      d.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, bound);
      if (!use_bda) d.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &sets[0], 0, nullptr);
      PushBlock reduce_push;
      PushWriter(reduce_push)
          .u32(uint32_t(scratch_address))
          .u32(uint32_t(scratch_address >> 32))
          .u32(per_tensor ? scratch_layout.partials : scratch_layout.tensor_sums)
          .u32(per_tensor ? scratch_layout.tensor_sums : scratch_layout.group_sums)
          .u32(per_tensor ? scratch_layout.tensor_lists : scratch_layout.group_lists)
          .u32(outputs);
      d.vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                           uint32_t(sizeof(PushHeader) + reduce_push.rule_bytes), &reduce_push);
      const uint32_t x = std::min(outputs, max_x);
      d.vkCmdDispatch(cmd, x, (outputs + x - 1) / x, 1);
      ++dispatches;
      dispatched_before = true;
      timestamp();
      continue;
    }
    bool barrier_done = false;
    for (size_t bi = 0; bi < plan.batches.size(); ++bi) {
      const Batch& b = plan.batches[bi];
      const VkPipeline pipeline = pipelines[(pi * groups.size() + b.group) * 2 + b.careful];
      bool batch_bound = false;
      push.header.seg_base = use_bda ? 0 : b.table_first_segment;
      if (!use_bda) push.header.map_address[0] = b.map_first_block;

      // Runs of consecutive segments whose tensors take the same step share push constants.
      uint32_t run_begin = b.seg_begin;
      while (run_begin < b.seg_end) {
        const TensorRecord& first = tensors[plan.segment_tensor[run_begin]];
        const StepInfo info{first.step + 1, first.fresh, first.scalars};
        uint32_t run_end = run_begin + 1;
        while (run_end < b.seg_end) {
          const TensorRecord& t = tensors[plan.segment_tensor[run_end]];
          if (t.step != first.step || t.fresh != first.fresh || t.scalars != first.scalars) break;
          ++run_end;
        }
        const uint32_t skip_to = run_end;
        if (!pass.push_constants(b.group, info, push)) {
          run_begin = skip_to;
          continue;
        }
        if (pass.partials || pass.sums != RulePass::Sums::none) {
          // The rule reserved kScratchWords at the start of its area for these.
          push.rule[0] = uint32_t(scratch_address);
          push.rule[1] = uint32_t(scratch_address >> 32);
          push.rule[2] = scratch_layout.partials;
          push.rule[3] =
              pass.sums == RulePass::Sums::group ? scratch_layout.group_sums + b.group : scratch_layout.tensor_sums;
        }
        if (pass.factor_means) push.rule[kScratchWords] = scratch_layout.factor_means;
        if (dispatched_before && !barrier_done) {
          barrier_after_earlier_passes();
          barrier_done = true;
        }
        if (pipeline != bound) {
          bound = pipeline;
          d.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, bound);
        }
        if (!use_bda && !batch_bound) {
          d.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &sets[bi], 0, nullptr);
          batch_bound = true;
        }
        const uint32_t block_begin = plan.segments[run_begin].block_begin;
        const uint32_t block_end = run_end < b.seg_end ? plan.segments[run_end].block_begin : b.block_end;

        for (uint64_t base = block_begin; base < block_end;) {
          const uint64_t n = std::min<uint64_t>(block_end - base, uint64_t(max_x) * max_y);
          const uint32_t x = uint32_t(std::min<uint64_t>(n, max_x));
          const uint32_t y = uint32_t((n + x - 1) / x);
          push.header.block_base = uint32_t(base);
          push.header.block_end = uint32_t(base + n);
          if (!use_bda) {
            // Dispatches that bind overlapping ranges need ordering (validation sees whole ranges).
            bool hazard = false;
            // Partials go to the scratch buffer, bound whole: validation sees every dispatch write it.
            const BoundRange scratch_range{pass.partials ? scratch->buffer : VK_NULL_HANDLE, 0,
                                           scratch ? scratch->size : 0};
            for (const auto& r : touched) {
              for (const auto& op : b.operands) hazard = hazard || (op.buffer && overlaps(r, op));
              hazard = hazard || (scratch_range.buffer && overlaps(r, scratch_range));
            }
            if (hazard) {
              memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
              touched.clear();
            }
            for (const auto& op : b.operands)
              if (op.buffer) touched.push_back(op);
            if (scratch_range.buffer) touched.push_back(scratch_range);
          }
          d.vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                               uint32_t(sizeof(PushHeader) + push.rule_bytes), &push);
          d.vkCmdDispatch(cmd, x, y, 1);
          ++dispatches;
          base += n;
        }
        run_begin = run_end;
      }
    }
    dispatched_before = dispatched_before || dispatches > 0;
    timestamp();
  }

  if (options.exit_barrier)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, options.exit_stage_mask,
                   options.exit_access_mask);

  needs_init = false;
  last_dispatches = dispatches;
  if (perturb) {
    for (size_t g = 0; g < groups.size(); ++g) sam_perturbed[g] = sam[g].rho > 0;
    return;
  }
  std::fill(sam_perturbed.begin(), sam_perturbed.end(), false);
  for (auto& t : tensors) {
    t.scalars = rule->advance_scalars(groups[t.group], StepInfo{t.step + 1, t.fresh, t.scalars});
    ++t.step;
    t.fresh = false;
  }
  last_dispatches = dispatches;
}

const TensorRecord& OptimizerState::tensor(size_t index) const {
  if (index >= tensors.size())
    throw Error(Status::not_found, "tensor index " + std::to_string(index) + " is out of range (the optimizer has " +
                                       std::to_string(tensors.size()) + " tensors)");
  return tensors[index];
}

OptimizerState::Slot OptimizerState::slot_index(size_t ti, std::string_view name) const {
  const TensorRecord& t = tensor(ti);
  const auto names = slot_names();
  const auto map = slots(t.group);
  std::string valid;
  for (size_t k = 0; k < names.size(); ++k) {
    if (map[k] < 0 || slot_elements(t, k) == 0) continue;
    if (names[k] == name) return {size_t(map[k]), slot_elements(t, k)};
    valid += names[k] + ", ";
  }
  for (const auto& scalar : rule->scalar_names()) valid += scalar + ", ";
  throw Error(Status::not_found, std::string(rule->name()) + " tensor " + std::to_string(ti) + " has no state \"" +
                                     std::string(name) + "\" (it has: " + valid + "step)");
}

}  // namespace detail

Optimizer::Optimizer(Context& context, std::vector<ParamGroup> groups)
    : state_(std::make_unique<detail::OptimizerState>()) {
  state_->ctx = context.state_;
  if (groups.empty()) throw Error(Status::invalid_argument, "Optimizer: groups is empty");
  for (auto& g : groups) state_->add_group(std::move(g));
}
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;
Optimizer::~Optimizer() = default;

void Optimizer::add_param_group(ParamGroup group) {
  state_->add_group(std::move(group));
}
size_t Optimizer::group_count() const {
  return state_->groups.size();
}
size_t Optimizer::tensor_count() const {
  return state_->tensors.size();
}

size_t Optimizer::tensor_index(std::string_view name) const {
  for (size_t i = 0; i < state_->tensors.size(); ++i)
    if (state_->tensors[i].tensor.name == name) return i;
  throw Error(Status::not_found, "no tensor named \"" + std::string(name) + "\"");
}

const RuleOptions& Optimizer::options(size_t group) const {
  if (group >= state_->groups.size())
    throw Error(Status::not_found, "group " + std::to_string(group) + " is out of range (the optimizer has " +
                                       std::to_string(state_->groups.size()) + " groups)");
  return state_->groups[group];
}

void Optimizer::set_options(size_t group, const RuleOptions& options) {
  const RuleOptions& current = this->options(group);
  const detail::Rule& rule = detail::rule_for(options);
  if (&rule != state_->rule)
    throw Error(Status::invalid_argument, "set_options: group " + std::to_string(group) + " uses " +
                                              state_->rule->name() + ", not " + rule.name());
  rule.validate(options, group);
  const auto map = detail::slot_map(rule, options, state_->lookahead[group], state_->sam[group]);
  if (state_->finalized && map != detail::slot_map(rule, current, state_->lookahead[group], state_->sam[group]))
    throw Error(Status::invalid_state, "set_options: group " + std::to_string(group) +
                                           ": the new options change which state exists (momentum on/off, amsgrad) "
                                           "after state was allocated");
  state_->groups[group] = options;
}

const LookaheadOptions& Optimizer::lookahead(size_t group) const {
  options(group);  // validates the index
  return state_->lookahead[group];
}

void Optimizer::set_lookahead(size_t group, const LookaheadOptions& la) {
  state_->set_wrappers(group, la, sam(group));
}

const SamOptions& Optimizer::sam(size_t group) const {
  options(group);  // validates the index
  return state_->sam[group];
}

void Optimizer::set_sam(size_t group, const SamOptions& sam) {
  state_->set_wrappers(group, lookahead(group), sam);
}

void Optimizer::set_lr(size_t group, double lr) {
  RuleOptions o = options(group);
  std::visit([&](auto& v) { v.lr = lr; }, o);
  set_options(group, o);
}

void Optimizer::record(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, false);
}

void Optimizer::record_sam_perturb(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, true);
}

void Optimizer::step() {
  state_->submit(false);
}
void Optimizer::sam_perturb() {
  state_->submit(true);
}

std::vector<std::string> Optimizer::pass_names() const {
  std::vector<std::string> out;
  for (const auto& p : state_->passes) out.emplace_back(p.shader);
  return out;
}

std::vector<std::string> Optimizer::state_names(size_t tensor) const {
  const auto& t = state_->tensor(tensor);
  const auto names = state_->slot_names();
  const auto map = state_->slots(t.group);
  std::vector<std::string> out;
  for (size_t k = 0; k < names.size(); ++k)
    if (map[k] >= 0 && state_->slot_elements(t, k) > 0) out.push_back(names[k]);
  for (const auto& scalar : state_->rule->scalar_names()) out.push_back(scalar);
  out.push_back("step");
  return out;
}

std::vector<float> Optimizer::read_state(size_t tensor, std::string_view name) {
  auto& s = *state_;
  const auto& t = s.tensor(tensor);
  if (name == "step") return {float(t.step)};
  if (const int k = s.scalar_index(name); k >= 0) return {float(t.scalars[size_t(k)])};
  const size_t slot = s.slot_index(tensor, name).index;
  s.ensure_initialised();
  const auto& region = s.tensors[tensor].slots[slot];
  const auto& arena = *s.arenas[region.arena];
  std::vector<float> out(region.elements);
  s.ctx->read_buffer(arena.buffer, &arena, region.offset, out.data(), out.size() * sizeof(float));
  return out;
}

void Optimizer::write_state(size_t tensor, std::string_view name, std::span<const float> values) {
  auto& s = *state_;
  s.tensor(tensor);  // validates the index
  if (name == "step") {
    if (values.size() != 1 || !(values[0] >= 0) || values[0] != std::floor(values[0]) || values[0] > 16777216.0f)
      throw Error(Status::invalid_argument, "write_state(\"step\"): expects one non-negative whole number, got " +
                                                std::to_string(values.size()) + " values" +
                                                (values.empty() ? "" : " starting " + std::to_string(values[0])));
    s.tensors[tensor].step = uint64_t(values[0]);
    return;
  }
  if (const int k = s.scalar_index(name); k >= 0) {
    if (values.size() != 1 || !std::isfinite(values[0]))
      throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) +
                                                "\"): expects one finite value, got " + std::to_string(values.size()) +
                                                " values");
    s.tensors[tensor].scalars[size_t(k)] = values[0];
    return;
  }
  const auto [slot, elements] = s.slot_index(tensor, name);
  if (values.size() != elements)
    throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) + "\"): values has " +
                                              std::to_string(values.size()) + " elements, tensor " +
                                              std::to_string(tensor) + "'s state has " + std::to_string(elements));
  s.ensure_initialised();
  const auto& region = s.tensors[tensor].slots[slot];
  const auto& arena = *s.arenas[region.arena];
  s.ctx->write_buffer(arena.buffer, &arena, region.offset, values.data(), values.size_bytes());
  s.tensors[tensor].fresh = false;
}

uint64_t Optimizer::step_count(size_t tensor) const {
  return state_->tensor(tensor).step;
}
uint32_t Optimizer::last_dispatch_count() const {
  return state_->last_dispatches;
}
bool Optimizer::uses_device_addresses() {
  state_->finalize();
  return state_->use_bda;
}

StepShape Optimizer::shape() {
  auto& s = *state_;
  s.finalize();
  StepShape out;
  for (const auto& b : s.plan.batches) {
    uint64_t n = 0;
    for (uint32_t i = b.seg_begin; i < b.seg_end; ++i) n += s.plan.segments[i].count;
    (b.careful ? out.careful_elements : out.fast_elements) += n;
  }
  out.batches = uint32_t(s.plan.batches.size());
  return out;
}
VkDeviceSize Optimizer::state_bytes() const {
  return state_->state_bytes;
}

uint32_t Optimizer::bytes_per_element(size_t group) const {
  options(group);  // validates the index
  const auto map = state_->slots(uint32_t(group));
  return uint32_t(4 * (3 + 2 * std::count_if(map.begin(), map.end(), [](int p) { return p >= 0; })));
}

}  // namespace vkoptim
