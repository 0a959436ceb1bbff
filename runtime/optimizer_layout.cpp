// Optimizer layout: state arenas, the segment table (address or descriptor path), descriptor
// sets and the reduction scratch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "optimizer_state.hpp"
#include "schedule.hpp"

namespace vkoptim::detail {

OptimizerState::GroupLaunch OptimizerState::group_launch(uint32_t group) const {
  const DeviceCaps& caps = ctx->caps;
  const GroupLaunch shared_memory{caps.items_per_invocation, 0};
  uint32_t quant = kF32;  // the group's quantized storage (one block size per group)
  for (const TensorRecord& t : tensors)
    for (uint32_t code : tensor_slot_codes(t))
      if (t.group == group && is_quantized(code)) quant = code;
  if (quant == kF32) return shared_memory;
  // A subgroup reduces whole blocks when its lanes' items tile them: `rows` items per lane make
  // a block, so items round up to a multiple of rows (within what the shader keeps).
  const uint32_t width = caps.access_width(), s = caps.subgroup_size, block = quant_block(quant);
  if (!caps.subgroup_arithmetic || !caps.full_subgroups || !ctx->has_subgroup_build(rule->shader()) ||
      s * width > block || block % (s * width) != 0 || caps.workgroup_size % s != 0 ||
      caps.workgroup_size / s > caps.max_compute_workgroup_subgroups)
    return shared_memory;
  const uint32_t rows = block / (s * width);
  const uint32_t items = (caps.items_per_invocation + rows - 1) / rows * rows;
  if (items > kMaxQuantItems) return shared_memory;
  return {items, s};
}

std::string OptimizerState::no_address_reason(const std::vector<ParamTensor>& more, size_t more_group) const {
  if (!ctx->use_bda) return "the device has no usable buffer device address (or the context disabled it)";
  for (const auto& t : tensors)
    if (!(t.tensor.param.device_address && t.tensor.grad.device_address))
      return tensor_label(t.group, t.index_in_group) + " lives in a buffer not declared device_address";
  for (size_t i = 0; i < more.size(); ++i)
    if (!(more[i].param.device_address && more[i].grad.device_address))
      return tensor_label(more_group, i) + " lives in a buffer not declared device_address";
  return "";
}

void OptimizerState::finalize() {
  if (finalized) return;
  if (tensors.empty())
    throw Error(Status::invalid_state,
                "the optimizer has no tensors: give a group tensors (constructor or add_param_group) before the "
                "first step or state access");
  ContextState& c = *ctx;
  // Can every operand be reached by address? (add_group refused what cannot work already.)
  const std::string no_address_reason = this->no_address_reason();
  if (c.options.addressing == Addressing::device_address && !no_address_reason.empty())
    throw Error(Status::unsupported, "addressing = device_address, but " + no_address_reason);
  const auto rule_passes = rule->passes(groups[0]);
  for (uint32_t g = 0; g < groups.size(); ++g) {
    bool quantized = false;
    for (const TensorRecord& t : tensors)
      if (t.group == g)
        for (uint32_t code : tensor_slot_codes(t)) quantized = quantized || is_quantized(code);
    check_partial_sums(*rule, groups[g], sam[g], group_launch(g).items, quantized, g);
  }
  const bool has_factor_pass = std::any_of(rule_passes.begin(), rule_passes.end(), [](const RulePass& p) {
    return p.kind == RulePass::Kind::factor_stats || p.kind == RulePass::Kind::newton_schulz;
  });
  const bool factored = has_factor_pass && std::any_of(tensors.begin(), tensors.end(), [&](const TensorRecord& t) {
                          return t.tensor.rows > 0 || factor_rows(t) > 0 || split_matrix(t);
                        });
  if (factored && !no_address_reason.empty())
    throw Error(Status::unsupported,
                std::string(rule->name()) + ": 2-D tensors need buffer device addresses, but " + no_address_reason);
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
    tt.whole_count = t.tensor.whole_count;
    tt.round_stream = t.tensor.whole_index.value_or(uint32_t(table_tensors.size()));
    tt.whole_offset = t.tensor.whole_offset;
    tt.cols = t.tensor.rows > 0 ? t.tensor.param.count / t.tensor.rows : rank1(t) ? matrix_cols(t) : factor_cols(t);
    const BufferRange* io[2] = {&t.tensor.param, &t.tensor.grad};
    for (int k = 0; k < 2; ++k) {
      tt.operands[k].buffer = io[k]->buffer;
      tt.operands[k].offset = io[k]->offset;
      tt.operands[k].unit = uint32_t(dtype_size(io[k]->dtype));
      tt.operands[k].bytes_per_256 = 256 * tt.operands[k].unit;
      if (may_use_addresses) tt.operands[k].address = address_of(io[k]->buffer) + io[k]->offset;
    }
    table_tensors.push_back(tt);
  }

  std::vector<TensorRecord> laid_out = tensors;
  std::vector<VkDeviceSize> arena_sizes;
  VkDeviceSize total = 0;
  // Regions are padded to 32 bytes: aligned for wide accesses, and no two tensors share a word.
  auto place = [&](StateRegion& region) {
    if (!region.active) return;
    const VkDeviceSize bytes = region.bytes();
    if (arena_sizes.empty() || arena_sizes.back() + bytes > kArenaBytes) arena_sizes.push_back(0);
    region.arena = uint32_t(arena_sizes.size() - 1);
    region.offset = arena_sizes.back();
    arena_sizes.back() += bytes;
    total += bytes;
  };
  for (uint32_t ti : table_order(table_tensors)) {
    TensorRecord& t = laid_out[ti];
    plan_regions(t);
    for (auto& region : t.slots) place(region);
    place(t.master);
    place(t.absmax);
  }
  std::vector<std::unique_ptr<OwnedBuffer>> new_arenas;
  for (VkDeviceSize size : arena_sizes)
    new_arenas.push_back(c.create_buffer(size, c.storage_usage(), MemoryUse::device));
  for (size_t ti = 0; ti < laid_out.size(); ++ti) {
    const TensorRecord& t = laid_out[ti];
    auto bind = [&](const StateRegion& region, OperandLocation& op) {
      const OwnedBuffer& arena = *new_arenas[region.arena];
      op.buffer = arena.buffer;
      op.offset = region.offset;
      op.address = may_use_addresses ? arena.address + region.offset : 0;
      // (4-bit codes are indexed by item: 8 codes a word, or without wide accesses 4 a half)
      op.unit = is_q4(region.code) ? c.caps.access_width() / 2 : code_bytes(region.code);
      op.bytes_per_256 = 256 * code_bits(region.code) / 8;
      op.padded = true;
    };
    auto& ops = table_tensors[ti].operands;
    for (size_t k = 0; k < kMaxStateSlots; ++k) {
      if (!t.slots[k].active) continue;
      bind(t.slots[k], ops[2 + k]);
      ops[2 + k].per_tensor = rule->slot_per_tensor(k);   // rule slots keep their index as physical slot
      if (split_matrix(t) && k == rule->matrix_slot()) {  // (the piece's elements in its whole matrix's)
        ops[2 + k].offset += 4 * t.tensor.whole_offset;
        if (ops[2 + k].address) ops[2 + k].address += 4 * t.tensor.whole_offset;
      }
    }
    if (t.master.active) bind(t.master, ops[6]);
    if (t.absmax.active) {
      bind(t.absmax, ops[7]);
      // one float per block and quantized slot
      ops[7].per_block = true;
      ops[7].block = quant_block(quant_code(t));
      ops[7].bytes_per_256 = 4 * quant_slot_count(t) * (256 / ops[7].block);
      if (rank1(t)) ops[7].tail_bytes = 4 * kRank1Sets * rank1_floats(t);
    }
    table_tensors[ti].dtypes = operand_dtypes(t);
  }

  // The segment table, on the path that needs the fewest dispatches (descriptors on a tie).
  TableLimits limits;
  limits.width = c.caps.access_width();
  std::vector<GroupLaunch> new_launch;
  for (uint32_t g = 0; g < groups.size(); ++g) new_launch.push_back(group_launch(g));
  for (const auto& l : new_launch) limits.fast_block.push_back(c.caps.workgroup_size * l.items * limits.width);
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

  std::unique_ptr<OwnedBuffer> new_scratch;
  ScratchLayout layout;
  // Gradient control's sums (shaders/vko_grads.glsl): one entry per 256-element chunk of each
  // tensor (its segments' records name the tensor's first), then each level of their reduction,
  // 256 to 1, down to 256 or fewer. Every optimizer keeps them (8 bytes per 256 elements), so
  // clipping and the scaler can be turned on at any time.
  std::vector<uint32_t> first_chunk;  // each tensor's first chunk entry
  {
    uint32_t chunks = 0;
    for (const TensorRecord& t : laid_out) {
      first_chunk.push_back(layout.entries + chunks);
      chunks += uint32_t((t.tensor.param.count + 255) / 256);
    }
    for (size_t si = 0; si < new_plan.segments.size(); ++si)
      new_plan.segments[si].first_chunk = first_chunk[new_plan.segment_tensor[si]];
    layout.grad_levels = {{layout.entries, chunks}};
    layout.entries += chunks;
    while (layout.grad_levels.back().second > 256) {
      const uint32_t n = (layout.grad_levels.back().second + 255) / 256;
      layout.grad_levels.push_back({layout.entries, n});
      layout.entries += n;
    }
  }
  // Reduction scratch (rules with per-tensor sums, SAM): partial sums per 256-element chunk of
  // each tensor, laid out as the gradient chunks above (shaders/vko_elementwise.glsl), sums per
  // tensor and group, and the lists reduce.comp walks: per tensor its chunks, per group its
  // tensor range.
  const bool any_sam = std::any_of(sam.begin(), sam.end(), [](const SamOptions& o) { return o.rho > 0; });
  if (any_sam || std::any_of(rule_passes.begin(), rule_passes.end(),
                             [](const RulePass& p) { return p.kind != RulePass::Kind::elementwise; })) {
    const uint32_t nt = uint32_t(laid_out.size()), ng = uint32_t(groups.size());
    const auto [grad_first, chunks] = layout.grad_levels.at(0);
    layout.partials = layout.entries;
    layout.tensor_sums = layout.partials + chunks;
    layout.group_sums = layout.tensor_sums + nt;
    layout.factor_means = layout.group_sums + ng;
    layout.tensor_lists = layout.factor_means + nt;
    layout.group_lists = layout.tensor_lists + nt;
    const uint32_t ranges = layout.group_lists + ng;  // first range entry
    std::vector<uint32_t> words;                      // (first range, count) per tensor, per group, then the ranges
    for (uint32_t t = 0; t < nt; ++t) words.insert(words.end(), {ranges + t, 1});
    for (uint32_t g = 0; g < ng; ++g) words.insert(words.end(), {ranges + nt + g, 1});
    for (uint32_t t = 0; t < nt; ++t)  // (relative to the partials)
      words.insert(words.end(), {first_chunk[t] - grad_first, uint32_t((laid_out[t].tensor.param.count + 255) / 256)});
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
    // Adafactor's split pieces: a partial sum per row and column of each whole tensor.
    layout.factor_sums = layout.entries;
    layout.factor_sum_count = factor_sum_entries(laid_out);
    layout.entries += layout.factor_sum_count;
  }
  {
    VkBufferUsageFlags usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    if (bda) usage |= VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
    new_scratch = c.create_buffer(VkDeviceSize(layout.entries) * 8, usage, MemoryUse::device);
  }
  // Sharded steps in parts exchange the per-tensor sums, and sharded SAM perturbations the
  // per-group sums, through a host-visible buffer (two floats each). (The layout reorders the
  // tensors, not their whole_count: tensor_exchange() holds for both.)
  std::unique_ptr<OwnedBuffer> new_exchange;
  // Adafactor's split pieces exchange their row and column sums there too, and rank-1 second
  // moments' split pieces their maxima, from factor_exchange_offset() on.
  if (tensor_exchange() || sam_exchange() || factor_part()) {
    VkDeviceSize factor_floats = 0;
    for (const TensorRecord& t : laid_out) factor_floats += factor_exchange_floats(t);
    new_exchange =
        c.create_buffer(factor_exchange_offset(laid_out.size()) + std::max<VkDeviceSize>(8, factor_floats * 4),
                        VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::staging);
    // (Places the device never writes, a rank-1 optimizer's split pieces kept blockwise, read
    // as zeros.)
    std::memset(new_exchange->mapped, 0, size_t(new_exchange->size));
  }

  // The device step's buffer: layout words, group and tensor records, the entries of the passes
  // whose scalars the device computes (each that pass's scalar struct: its push area after the
  // scratch words and factor base the optimizer fills, when the pass has them).
  std::vector<uint32_t> entry_bytes;
  for (size_t p = 0; p < rule_passes.size(); ++p) {
    const RulePass& rp = rule_passes[p];
    uint32_t bytes = 0;
    if (rule->device_scalars() && rp.kind == RulePass::Kind::elementwise) {
      PushBlock probe;
      rule->pass_push_constants(groups[0], StepInfo{}, probe, p);
      const uint32_t filled =
          (rp.partials || rp.sums != RulePass::Sums::none ? kScratchWords : 0) + (rp.factor_means ? 1 : 0);
      bytes = probe.rule_bytes - 4 * filled;
    }
    entry_bytes.push_back(bytes);
  }
  {  // Lookahead's pass (lookahead.comp: alpha and whether the step synchronises)
    PushBlock probe;
    lookahead_push_constants(0.5, true, probe);
    entry_bytes.push_back(
        std::any_of(lookahead.begin(), lookahead.end(), [](const auto& l) { return l.k > 0; }) ? probe.rule_bytes : 0);
  }
  StepBufferLayout new_step_layout =
      plan_step_buffer(uint32_t(groups.size()), uint32_t(laid_out.size()), std::move(entry_bytes));
  VkBufferUsageFlags step_usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  if (bda) step_usage |= VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
  auto new_step_buffer = c.create_buffer(new_step_layout.bytes, step_usage, MemoryUse::shared);

  VkDescriptorPool new_pool = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> new_sets;
  std::unique_ptr<OwnedBuffer> new_placeholders;
  if (!bda && !new_plan.batches.empty()) {
    const uint32_t n = uint32_t(new_plan.batches.size());
    const VkDeviceSize slot_bytes = std::max<VkDeviceSize>(c.caps.min_storage_buffer_offset_alignment, 16);
    new_placeholders =
        c.create_buffer(slot_bytes * kMaxOperands * n, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, MemoryUse::device);
    new_pool = c.allocate_descriptor_sets(n, new_sets);
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
      VkDescriptorBufferInfo step_info{new_step_buffer->buffer, 0, VK_WHOLE_SIZE};
      VkWriteDescriptorSet writes[5] = {{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET}};
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
      writes[4] = writes[0];
      writes[4].dstBinding = 4;
      writes[4].pBufferInfo = &step_info;
      c.vkd.vkUpdateDescriptorSets(c.device, 5, writes, 0, nullptr);
    }
  }

  // The matrices of newton_schulz passes (Muon's): a workspace each, and job tables sized for
  // their products (the counts per dispatch do not depend on the coefficients).
  std::unique_ptr<OwnedBuffer> new_matrix_workspace, new_matrix_jobs;
  std::vector<VkDeviceSize> workspace_offsets(laid_out.size(), 0);
  uint32_t matrix_dispatch_count = 0;
  if (bda) {
    VkDeviceSize workspace = 0;
    for (const TensorRecord& t : laid_out)
      matrix_dispatch_count = std::max(matrix_dispatch_count, rule->matrix_dispatches(groups[t.group]));
    std::vector<std::vector<GemmJob>> dispatches(matrix_dispatch_count);
    for (uint32_t ti = 0; ti < laid_out.size(); ++ti) {
      const TensorRecord& t = laid_out[ti];
      if (!rule->matrix_dispatches(groups[t.group])) continue;
      const uint32_t rows = uint32_t(matrix_rows(t)), cols = uint32_t(matrix_cols(t));
      workspace_offsets[ti] = workspace;
      workspace += rule->matrix_workspace_bytes(rows, cols);
      rule->add_matrix_jobs(groups[t.group], {0, 0, rows, cols, 0}, dispatches);
    }
    if (workspace) {
      new_matrix_workspace = c.create_buffer(
          workspace, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT, MemoryUse::device);
      VkDeviceSize table_bytes = 0;
      for (const auto& d : dispatches) table_bytes += (d.size() * sizeof(GemmJobRecord) + 255) / 256 * 256;
      new_matrix_jobs =
          c.create_buffer(table_bytes, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
                          MemoryUse::shared);
    }
  }

  // Commit: nothing above changed the optimizer.
  tensors = std::move(laid_out);
  arenas = std::move(new_arenas);
  table = std::move(new_table);
  placeholders = std::move(new_placeholders);
  scratch = std::move(new_scratch);
  exchange = std::move(new_exchange);
  scratch_layout = std::move(layout);
  step_buffer = std::move(new_step_buffer);
  step_layout = std::move(new_step_layout);
  factor_jobs.clear();
  if (factored) {
    uint32_t sums = scratch_layout.factor_sums;
    for (uint32_t ti = 0; ti < tensors.size(); ++ti)
      if (const uint64_t r = factor_rows(tensors[ti])) {
        const TensorRecord& t = tensors[ti];
        const auto& ops = table_tensors[ti].operands;
        const uint32_t rows = uint32_t(r), cols = uint32_t(factor_cols(t)), width = c.caps.access_width();
        // (A split piece's rows start wide-aligned when its first element and its end do, as
        // shard_groups' pieces at multiples of 256 do.)
        const bool wide = ops[1].address % (width * 4) == 0 && cols % width == 0 &&
                          (!split_factored(t) || (t.tensor.whole_offset % width == 0 &&
                                                  (t.tensor.whole_offset + t.tensor.param.count) % width == 0));
        FactorJob job{ti, ops[1].address, ops[2].address, ops[3].address, rows, cols, wide};
        if (split_factored(t)) {
          job.split = true;
          job.first = t.tensor.whole_offset;
          job.count = t.tensor.param.count;
          job.sums = sums;
          sums += rows + cols;
        }
        factor_jobs.push_back(job);
      }
  }
  matrix_workspace = std::move(new_matrix_workspace);
  matrix_jobs = std::move(new_matrix_jobs);
  matrix_workspace_offsets = std::move(workspace_offsets);
  matrix_dispatches.assign(matrix_jobs ? matrix_dispatch_count : 0, {});
  table_plan = std::move(new_plan);
  launch = std::move(new_launch);
  pool = new_pool;
  sets = std::move(new_sets);
  use_bda = bda;
  state_bytes = total;
  finalized = true;
  needs_init = true;
  // The step buffer's layout words and group records (the tensor records are written when the
  // first replayable step is recorded).
  std::memset(step_words(), 0, step_layout.bytes);
  step_words()[0] = step_layout.group_records;
  step_words()[1] = step_layout.tensor_records;
  step_words()[2] = uint32_t(groups.size());
  step_words()[3] = uint32_t(tensors.size());
  for (uint32_t g = 0; g < groups.size(); ++g) write_group_record(g);
  write_control(true);
  write_matrix_jobs();
}

void OptimizerState::write_matrix_jobs() {
  if (!finalized || !matrix_jobs) return;
  std::vector<std::vector<GemmJob>> dispatches(matrix_dispatches.size());
  for (uint32_t ti = 0; ti < tensors.size(); ++ti) {
    const TensorRecord& t = tensors[ti];
    if (!is_matrix(ti)) continue;
    const uint32_t rows = uint32_t(matrix_rows(t)), cols = uint32_t(matrix_cols(t));
    const StateRegion& slot = t.slots[rule->matrix_slot()];
    MatrixOperands m;
    m.slot = arenas[slot.arena]->address + slot.offset;
    m.workspace = matrix_workspace->address + matrix_workspace_offsets[ti];
    m.rows = rows, m.cols = cols;
    m.norm_entry = scratch_layout.tensor_sums + ti;
    rule->add_matrix_jobs(groups[t.group], m, dispatches);
  }
  matrix_job_offsets.clear();
  VkDeviceSize at = 0;
  for (size_t d = 0; d < dispatches.size(); ++d) {
    matrix_job_offsets.push_back(at);
    for (size_t j = 0; j < dispatches[d].size(); ++j) {
      const GemmJobRecord r = gemm_job_record(dispatches[d][j]);
      std::memcpy(static_cast<char*>(matrix_jobs->mapped) + at + j * sizeof r, &r, sizeof r);
    }
    at += (dispatches[d].size() * sizeof(GemmJobRecord) + 255) / 256 * 256;
  }
  matrix_dispatches = std::move(dispatches);
}

void OptimizerState::write_control(bool reset_scaler) {
  if (!step_buffer) return;  // written by finalize
  uint32_t* control = step_words() + kControlBase;
  auto put_f = [&](uint32_t word, double v) {
    const float f = float(v);
    std::memcpy(&control[word], &f, 4);
  };
  if (reset_scaler) {
    put_f(kControlScale, scaler.enabled ? scaler.init_scale : 1.0);
    control[kControlGrowthTracker] = 0;
  }
  control[kControlScaler] = scaler.enabled ? 1 : 0;
  put_f(kControlGrowthFactor, scaler.growth_factor);
  put_f(kControlBackoffFactor, scaler.backoff_factor);
  control[kControlGrowthInterval] = scaler.growth_interval;
  put_f(kControlMaxNorm, clip.max_norm);
  const double p = clip.norm_type;
  control[kControlNormKind] = std::isinf(p) ? kNormInf : p == 2 ? kNorm2 : p == 1 ? kNorm1 : kNormP;
  put_f(kControlNormP, std::isinf(p) ? 0.0 : p);
  control[kControlErrorNonfinite] = clip.error_if_nonfinite ? 1 : 0;
  put_f(kControlClipValue, clip.clip_value);
  for (uint32_t g = 0; g < groups.size(); ++g) {
    const bool clipped =
        clip.groups.empty() || std::find(clip.groups.begin(), clip.groups.end(), g) != clip.groups.end();
    step_words()[step_layout.group_records + g * kGroupRecordWords + kGroupFlags] = clipped ? 1 : 0;
  }
}

void OptimizerState::write_group_record(uint32_t g) {
  if (!step_buffer) return;  // written by finalize
  uint32_t* record = step_words() + step_layout.group_records + g * kGroupRecordWords;
  const double lr = std::visit([](const auto& o) { return o.lr; }, groups[g]);
  const auto schedule = encode_schedule(schedules[g], lr);
  const auto hyper = encode_hyper(groups[g]);
  std::memcpy(record, schedule.words.data(), sizeof schedule.words);
  std::memcpy(record + schedule.words.size(), hyper.data(), sizeof hyper);
  const uint64_t seed = precision[g].seed;
  record[kGroupSeed] = uint32_t(seed);
  record[kGroupSeed + 1] = uint32_t(seed >> 32);
  // Doubles as double-float pairs (hi, lo), as the shaders read them.
  auto put_df = [&](uint32_t word, double v) {
    const float hi = float(v), lo = float(v - double(hi));
    std::memcpy(&record[word], &hi, 4);
    std::memcpy(&record[word + 1], &lo, 4);
  };
  record[kGroupLookaheadK] = lookahead[g].k;
  put_df(kGroupLookaheadAlpha, lookahead[g].alpha);
  put_df(kGroupEmaDecay, ema[g].decay);
  record[kGroupEmaWarmup] = uint32_t(ema[g].warmup);
  put_df(kGroupEmaInvGamma, ema[g].inv_gamma);
  put_df(kGroupEmaPower, ema[g].power);
  put_df(kGroupEmaMinDecay, ema[g].min_decay);
  record[kGroupEmaAfter] = ema[g].update_after_step;
}

void OptimizerState::ensure_initialised() {
  finalize();
  if (!needs_init) return;
  // Fills and table upload (and masters and slow weights from the parameters). pass_names() and
  // last_dispatch_count() keep describing the last recorded step.
  static_assert(kScheduleWords + kHyperWords == kGroupFlags && kGroupFlags < kGroupRecordWords);
  const auto step_passes = last_passes;
  const uint32_t step_dispatches = last_dispatches;
  submit(Mode::init);
  needs_init = false;
  last_passes = step_passes;
  last_dispatches = step_dispatches;
}

}  // namespace vkoptim::detail
