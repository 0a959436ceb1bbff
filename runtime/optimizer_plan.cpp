// The plan of a recording (step_plan.hpp): its passes' dispatches, pipelines, push constants and
// declared accesses, from the optimizer's groups, segment table and step counters. No Vulkan
// calls: the recorder (recorder.cpp) records the plan.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "gemm.hpp"
#include "optimizer_state.hpp"
#include "recorder.hpp"

namespace vkoptim::detail {

std::pair<uint32_t, uint32_t> OptimizerState::storage_constants(uint32_t group) const {
  bool any = false, mixed = false, quantized = false, four_bit = false, rank1_group = false;
  uint32_t dtypes = 0;
  for (const auto& t : tensors) {
    if (t.group != group) continue;
    const uint32_t d = operand_dtypes(t);
    mixed = mixed || (any && d != dtypes);
    dtypes = d;
    any = true;
    rank1_group = rank1_group || rank1(t);
    for (const auto& r : t.slots) {
      quantized = quantized || (r.active && is_quantized(r.code));
      four_bit = four_bit || (r.active && is_q4(r.code));
    }
  }
  const uint32_t bits = (mixed ? 1u : 0u) | (precision[group].rounding == Rounding::stochastic ? 2u : 0u) |
                        (quantized ? 4u : 0u) | (four_bit ? 8u : 0u) | (rank1_group ? 16u : 0u);
  return {dtypes, bits};
}

void validate_record_options(const RecordOptions& o, const DeviceCaps& caps) {
  // The Vulkan 1.0 core stage and access bits, and for each access the stages that can perform
  // it. Stages and accesses of extensions (ray tracing, mesh shading, ...) depend on what the
  // host enabled, which vkoptim cannot see: for those, set exit_barrier = false and place the
  // barrier yourself.
  constexpr VkPipelineStageFlags kStages = 0x1FFFF;
  constexpr VkAccessFlags kAccesses = 0x1FFFF;
  constexpr VkPipelineStageFlags kShaders =
      VK_PIPELINE_STAGE_VERTEX_SHADER_BIT | VK_PIPELINE_STAGE_TESSELLATION_CONTROL_SHADER_BIT |
      VK_PIPELINE_STAGE_TESSELLATION_EVALUATION_SHADER_BIT | VK_PIPELINE_STAGE_GEOMETRY_SHADER_BIT |
      VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
  constexpr VkPipelineStageFlags kGraphics = 0x7FE | VK_PIPELINE_STAGE_ALL_GRAPHICS_BIT;  // DRAW_INDIRECT..COLOR_OUTPUT
  struct AccessStages {
    VkAccessFlags access;
    const char* name;
    VkPipelineStageFlags stages;
  };
  static constexpr AccessStages kTable[] = {
      {VK_ACCESS_INDIRECT_COMMAND_READ_BIT, "INDIRECT_COMMAND_READ", VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT},
      {VK_ACCESS_INDEX_READ_BIT, "INDEX_READ", VK_PIPELINE_STAGE_VERTEX_INPUT_BIT},
      {VK_ACCESS_VERTEX_ATTRIBUTE_READ_BIT, "VERTEX_ATTRIBUTE_READ", VK_PIPELINE_STAGE_VERTEX_INPUT_BIT},
      {VK_ACCESS_UNIFORM_READ_BIT, "UNIFORM_READ", kShaders},
      {VK_ACCESS_INPUT_ATTACHMENT_READ_BIT, "INPUT_ATTACHMENT_READ", VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT},
      {VK_ACCESS_SHADER_READ_BIT, "SHADER_READ", kShaders},
      {VK_ACCESS_SHADER_WRITE_BIT, "SHADER_WRITE", kShaders},
      {VK_ACCESS_COLOR_ATTACHMENT_READ_BIT, "COLOR_ATTACHMENT_READ", VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT},
      {VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT, "COLOR_ATTACHMENT_WRITE", VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT},
      {VK_ACCESS_DEPTH_STENCIL_ATTACHMENT_READ_BIT, "DEPTH_STENCIL_ATTACHMENT_READ",
       VK_PIPELINE_STAGE_EARLY_FRAGMENT_TESTS_BIT | VK_PIPELINE_STAGE_LATE_FRAGMENT_TESTS_BIT},
      {VK_ACCESS_DEPTH_STENCIL_ATTACHMENT_WRITE_BIT, "DEPTH_STENCIL_ATTACHMENT_WRITE",
       VK_PIPELINE_STAGE_EARLY_FRAGMENT_TESTS_BIT | VK_PIPELINE_STAGE_LATE_FRAGMENT_TESTS_BIT},
      {VK_ACCESS_TRANSFER_READ_BIT, "TRANSFER_READ", VK_PIPELINE_STAGE_TRANSFER_BIT},
      {VK_ACCESS_TRANSFER_WRITE_BIT, "TRANSFER_WRITE", VK_PIPELINE_STAGE_TRANSFER_BIT},
      {VK_ACCESS_HOST_READ_BIT, "HOST_READ", VK_PIPELINE_STAGE_HOST_BIT},
      {VK_ACCESS_HOST_WRITE_BIT, "HOST_WRITE", VK_PIPELINE_STAGE_HOST_BIT},
  };
  auto hex = [](uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", v);
    return std::string(buf);
  };
  if (o.timestamp_pool && !caps.timestamps)
    throw Error(Status::unsupported, "RecordOptions.timestamp_pool: the device has no compute timestamps");
  constexpr uint32_t kMaxTimestamps = 64;  // far more than a step's passes + 1
  if (o.timestamp_pool && o.first_query > UINT32_MAX - kMaxTimestamps)
    throw Error(Status::invalid_argument, "RecordOptions.first_query = " + std::to_string(o.first_query) +
                                              ": the step's timestamps would run past query 2^32 - 1");
  if (!o.exit_barrier) return;
  if (o.exit_stage_mask == 0)
    throw Error(Status::invalid_argument,
                "RecordOptions.exit_stage_mask is 0 (name the stages that consume the step, or set exit_barrier = "
                "false and place the barrier yourself)");
  if (o.exit_stage_mask & ~kStages)
    throw Error(Status::invalid_argument, "RecordOptions.exit_stage_mask = " + hex(o.exit_stage_mask) +
                                              " has bits that are not Vulkan 1.0 pipeline stages");
  if (o.exit_access_mask & ~kAccesses)
    throw Error(Status::invalid_argument, "RecordOptions.exit_access_mask = " + hex(o.exit_access_mask) +
                                              " has bits that are not Vulkan 1.0 access flags");
  VkPipelineStageFlags stages = o.exit_stage_mask;
  if (stages & VK_PIPELINE_STAGE_ALL_COMMANDS_BIT) stages |= kStages;
  if (stages & VK_PIPELINE_STAGE_ALL_GRAPHICS_BIT) stages |= kGraphics;
  for (const auto& a : kTable)
    if ((o.exit_access_mask & a.access) && !(stages & a.stages))
      throw Error(Status::invalid_argument, std::string("RecordOptions.exit_access_mask has ") + a.name +
                                                " but exit_stage_mask = " + hex(o.exit_stage_mask) +
                                                " has no stage that performs it");
}

uint32_t StepPlan::pipeline_index(const PipelineKey& key) {
  for (uint32_t i = 0; i < pipelines.size(); ++i)
    if (pipelines[i] == key) return i;
  pipelines.push_back(key);
  return uint32_t(pipelines.size() - 1);
}

uint32_t StepPlan::dispatch_count() const {
  uint32_t n = 0;
  for (const auto& p : passes) n += uint32_t(p.dispatches.size());
  return n;
}

bool PassAccess::empty() const {
  return scratch == 0 && std::find(tensors.begin(), tensors.end(), true) == tensors.end();
}

bool PassAccess::intersects(const PassAccess& other) const {
  if (scratch & other.scratch) return true;
  const size_t n = std::min(tensors.size(), other.tensors.size());
  for (size_t i = 0; i < n; ++i)
    if (tensors[i] && other.tensors[i]) return true;
  return false;
}

void PassAccess::merge(const PassAccess& other) {
  scratch |= other.scratch;
  if (tensors.size() < other.tensors.size()) tensors.resize(other.tensors.size(), false);
  for (size_t i = 0; i < other.tensors.size(); ++i)
    if (other.tensors[i]) tensors[i] = true;
}

void place_barriers(StepPlan& plan) {
  PassAccess read, written;  // since the last barrier
  for (PlannedPass& pass : plan.passes) {
    if (pass.dispatches.empty()) continue;
    pass.barrier_before =
        pass.reads.intersects(written) || pass.writes.intersects(written) || pass.writes.intersects(read);
    if (pass.barrier_before) read = written = PassAccess{};
    read.merge(pass.reads);
    written.merge(pass.writes);
  }
}

StepPlan OptimizerState::plan_step(Mode mode, bool replay, StepPart part) const {
  StepPlan plan;
  const DeviceCaps& caps = ctx->caps;
  const uint32_t max_x = caps.max_compute_workgroup_count[0];
  const VkDeviceAddress scratch_address = scratch && use_bda ? scratch->address : 0;
  auto key = [&](const char* shader, std::vector<uint32_t> spec, bool subgroup_blocks = false) {
    return plan.pipeline_index({shader, use_bda, caps.shader_int64, subgroup_blocks, std::move(spec)});
  };
  PushBlock push;
  if (use_bda) {
    const VkDeviceAddress map = table->address + table_plan.map_offset;
    push.header.table_address[0] = uint32_t(table->address);
    push.header.table_address[1] = uint32_t(table->address >> 32);
    push.header.map_address[0] = uint32_t(map);
    push.header.map_address[1] = uint32_t(map >> 32);
    push.header.step_address[0] = uint32_t(step_buffer->address);
    push.header.step_address[1] = uint32_t(step_buffer->address >> 32);
  }
  const auto passes = build_passes(mode, replay);
  const bool grads = replay && mode == Mode::step && grad_control();
  // A step in parts around the ranks' per-tensor sums (tensor_exchange): the tensor_sums part
  // ends with the first per-tensor reduction (and copies its sums out); the finish starts after
  // it (copying the combined sums in). A sharded SAM perturbation (sam_exchange) the same way
  // around the groups' sums of |g|^2: grad_sums, then finish.
  const bool sam_parts = mode == Mode::perturb && part != StepPart::whole;
  const bool exchanged =
      sam_parts ||
      (mode == Mode::step && (part == StepPart::tensor_sums || part == StepPart::finish) && tensor_exchange());
  const auto exchanged_kind = sam_parts ? RulePass::Kind::reduce_groups : RulePass::Kind::reduce_tensors;
  size_t sums_pass = passes.size();
  for (size_t pi = 0; exchanged && pi < passes.size(); ++pi)
    if (passes[pi].kind == exchanged_kind) {
      sums_pass = pi;
      break;
    }
  size_t sums_pass_of_step = passes.size();  // (the first per-tensor reduction, whatever the part)
  for (size_t pi = passes.size(); pi-- > 0;)
    if (passes[pi].kind == RulePass::Kind::reduce_tensors) sums_pass_of_step = pi;
  const bool stops_at_sums = exchanged && part == (sam_parts ? StepPart::grad_sums : StepPart::tensor_sums);
  const bool resumes_after_sums = exchanged && part == StepPart::finish;
  const PlannedCopy sums_copy{scratch ? scratch->buffer : VK_NULL_HANDLE, exchange ? exchange->buffer : VK_NULL_HANDLE,
                              VkDeviceSize(sam_parts ? scratch_layout.group_sums : scratch_layout.tensor_sums) * 8, 0,
                              VkDeviceSize(sam_parts ? groups.size() : tensors.size()) * 8};
  if (resumes_after_sums)
    plan.copy_in.push_back({sums_copy.dst, sums_copy.src, 0, sums_copy.src_offset, sums_copy.size});
  // Adafactor's split pieces: the factor_sums part ends with their row and column sums, copied
  // out; the tensor_sums part starts from the ranks' added sums, copied in.
  const bool factor_part = mode == Mode::step && part == StepPart::factor_sums;
  const bool after_factor_part = mode == Mode::step && part == StepPart::tensor_sums && factor_exchange();
  const PlannedCopy factor_copy{scratch ? scratch->buffer : VK_NULL_HANDLE,
                                exchange ? exchange->buffer : VK_NULL_HANDLE,
                                VkDeviceSize(scratch_layout.factor_sums) * 8, factor_exchange_offset(tensors.size()),
                                VkDeviceSize(scratch_layout.factor_sum_count) * 8};
  if (after_factor_part && factor_copy.size)
    plan.copy_in.push_back(
        {factor_copy.dst, factor_copy.src, factor_copy.dst_offset, factor_copy.src_offset, factor_copy.size});
  // Rank-1 second moments of split pieces: the factor part runs the step up to the pass that
  // finds the new maxima and copies the pieces' sets out; the finish copies the ranks' combined
  // sets in and goes on from the rule's pass. Split matrices (Muon): the factor part clears
  // their update slots, runs the step up to the momentum pass (each piece's update at its place
  // in its matrix) and copies the slots out; tensor_sums copies the ranks' added updates in and
  // goes on from the per-tensor reduction. (The schedule, scalars and gradient control: done in
  // the factor part.)
  const bool rank1_part = factor_part && rank1_exchange();
  const bool matrix_part = factor_part && matrix_exchange();
  const bool after_rank1_part = mode == Mode::step && part == StepPart::finish && rank1_exchange();
  const bool after_matrix_part = mode == Mode::step && part == StepPart::tensor_sums && matrix_exchange();
  if (rank1_part || matrix_part || after_rank1_part || after_matrix_part) {
    const FactorTransfers transfers = factor_transfers();
    if (rank1_part || matrix_part) {
      plan.fill_in = transfers.fills;
      plan.copy_out.insert(plan.copy_out.end(), transfers.out.begin(), transfers.out.end());
    } else {
      for (const PlannedCopy& c : transfers.out)
        plan.copy_in.push_back({c.dst, c.src, c.dst_offset, c.src_offset, c.size});
    }
  }
  const bool resumes_after_factor_part = after_rank1_part || after_matrix_part;
  // (Without split pieces the factor part is empty, and the next part goes on as for other
  // rules.)
  if (factor_part && !factor_exchange()) return plan;
  // (With gradient control, the first part after grad_sums takes the outcome from the combined
  // total: factor_sums when it has split pieces, else tensor_sums or finish.)
  if (grads && !resumes_after_sums && !after_factor_part && !resumes_after_factor_part)
    plan_grad_control(plan, push, stops_at_sums || factor_part ? StepPart::finish : part);
  if (factor_part && !rank1_part && !matrix_part) {
    plan_factor_stats(plan, push, replay, grads, {3, 4});
    if (factor_copy.size) plan.copy_out.push_back(factor_copy);
    place_barriers(plan);
    return plan;
  }
  if (mode == Mode::step && part == StepPart::grad_sums) {  // the first part ends with this rank's total
    place_barriers(plan);
    return plan;
  }
  // A replayable step first evaluates every tensor's schedule for its next step (step_schedule:
  // one dispatch per group), then computes each pass's scalars from it into the step buffer (the
  // prologues: one dispatch per pass and group), and ends by advancing the tensors' step counters
  // (step_commit).
  const bool first_pass_has_entries = replay && step_layout.entry_bytes[0] != 0;
  if (replay && mode == Mode::step && !resumes_after_sums && !resumes_after_factor_part) {
    // Each group's tensors [first, end) (consecutive), end = 0 for a group without any.
    std::vector<std::pair<uint32_t, uint32_t>> group_tensors(groups.size(), {uint32_t(tensors.size()), 0});
    for (uint32_t t = 0; t < tensors.size(); ++t) {
      auto& [first, end] = group_tensors[tensors[t].group];
      first = std::min(first, t), end = t + 1;
    }
    PlannedPass& schedule = plan.passes.emplace_back();
    schedule.name = "step_schedule";
    const uint32_t schedule_pipeline =
        plan.pipeline_index({"step_schedule", use_bda, caps.shader_int64, false, {caps.workgroup_size}});
    for (uint32_t g = 0; g < groups.size(); ++g) {
      const auto [first, end] = group_tensors[g];
      if (end == 0) continue;
      PlannedDispatch& d = schedule.dispatches.emplace_back();
      d.pipeline = schedule_pipeline;
      d.descriptor_set = use_bda ? -1 : 0;
      d.push = push;
      d.push.header.block_base = first;
      d.push.header.block_end = end;
      d.push.header.step_group = g;
      d.x = (end - first + caps.workgroup_size - 1) / caps.workgroup_size;
      if (!use_bda) d.bound.push_back({step_buffer->buffer, 0, step_buffer->size});
    }
    schedule.reads.scratch |= kStepRecords;
    schedule.writes.scratch |= kStepRecords;
    PlannedPass& out = plan.passes.emplace_back();
    out.name = "step_prologue";
    for (const Pass& pass : passes) {
      if (pass.entry < 0 || pass.rank1_maxima || !step_layout.entry_bytes[size_t(pass.entry)]) continue;
      const uint32_t p = uint32_t(pass.entry);
      for (uint32_t g = 0; g < groups.size(); ++g) {
        if (pass.runs_in && !pass.runs_in(g)) continue;
        const auto [first, end] = group_tensors[g];
        if (end == 0) continue;
        PlannedDispatch& d = out.dispatches.emplace_back();
        d.pipeline = elementwise_pipeline(plan, pass, g, false, StepStage::prologue);
        d.descriptor_set = use_bda ? -1 : 0;
        d.push = push;
        d.push.header.block_base = first;
        d.push.header.block_end = end;
        d.push.header.step_group = g;
        d.push.header.step_base = step_layout.entry_base[p];
        d.push.header.seg_base = p == 0 && first_pass_has_entries ? 1 : 0;  // writes the next carry
        d.x = (end - first + caps.workgroup_size - 1) / caps.workgroup_size;
        if (!use_bda) d.bound.push_back({step_buffer->buffer, 0, step_buffer->size});
      }
    }
    out.reads.scratch |= kStepRecords;
    out.writes.scratch |= kStepEntries | kStepRecords;
  }

  for (size_t pi = 0; pi < passes.size(); ++pi) {
    if (resumes_after_sums && pi <= sums_pass) continue;
    if (stops_at_sums && pi > sums_pass) break;
    const Pass& pass = passes[pi];
    if (rank1_part && !pass.rank1_maxima) break;  // (the maxima pass comes first)
    if (after_rank1_part && pass.rank1_maxima) continue;
    if (matrix_part && pi >= sums_pass_of_step) break;  // (the momentum pass comes before the sums)
    if (after_matrix_part && pi < sums_pass_of_step) continue;
    PlannedPass& out = plan.passes.emplace_back();
    out.name = pass.shader;
    if (pass.kind == RulePass::Kind::factor_stats) {
      // Row and column statistics of each 2-D tensor (split pieces': from the ranks' added
      // sums), then (after them) the row means.
      plan.passes.pop_back();
      plan_factor_stats(plan, push, replay, grads, {0, 1, 5, 2});
      continue;
    }
    if (pass.kind == RulePass::Kind::newton_schulz) {
      // Muon's products over every matrix, one dispatch per product (rules/muon.hpp); each
      // reads what the one before wrote.
      plan.passes.pop_back();
      for (size_t d = 0; d < matrix_dispatches.size(); ++d) {
        PlannedPass gemm = plan_gemm(plan, matrix_dispatches[d], matrix_jobs->address + matrix_job_offsets[d],
                                     gemm_tiles_for(caps), false,
                                     std::min({caps.max_compute_workgroup_count[0], caps.max_compute_workgroup_count[1],
                                               caps.max_compute_workgroup_count[2]}),
                                     scratch_address);
        gemm.name = "newton_schulz";
        gemm.reads.scratch |= kScratchTensorSums | kMatrixWorkspace;
        gemm.writes.scratch |= kMatrixWorkspace;
        for (uint32_t ti = 0; ti < tensors.size(); ++ti)
          if (is_matrix(ti)) gemm.reads.add_tensor(ti), gemm.writes.add_tensor(ti);
        plan.passes.push_back(std::move(gemm));
      }
      continue;
    }
    if (pass.kind != RulePass::Kind::elementwise) {
      // Reduction over lists in the scratch buffer: one workgroup per output.
      const bool per_tensor = pass.kind == RulePass::Kind::reduce_tensors;
      const uint32_t outputs = per_tensor ? uint32_t(tensors.size()) : uint32_t(groups.size());
      if (outputs == 0) continue;
      PlannedDispatch& d = out.dispatches.emplace_back();
      d.pipeline = key(pass.shader, {caps.workgroup_size, caps.items_per_invocation, 0});
      d.descriptor_set = use_bda ? -1 : 0;
      reduce_push_constants(scratch_address, per_tensor ? scratch_layout.partials : scratch_layout.tensor_sums,
                            per_tensor ? scratch_layout.tensor_sums : scratch_layout.group_sums,
                            per_tensor ? scratch_layout.tensor_lists : scratch_layout.group_lists, outputs, d.push);
      d.x = std::min(outputs, max_x);
      d.y = (outputs + d.x - 1) / d.x;
      out.reads.scratch |= per_tensor ? kScratchPartials : kScratchTensorSums;
      out.writes.scratch |= per_tensor ? kScratchTensorSums : kScratchGroupSums;
      continue;
    }
    // (Replayed passes also read their tensors' step counters: stochastic rounding's key.)
    const bool has_entries = replay && pass.entry >= 0 && step_layout.entry_bytes[size_t(pass.entry)] != 0;
    const bool replayed = has_entries || (replay && pass.device_flags);
    if (has_entries) {
      out.reads.scratch |= kStepEntries | kStepRecords;
      push.header.step_base = step_layout.entry_base[size_t(pass.entry)];
    }
    if (replay && pass.device_flags) {
      out.reads.scratch |= kStepRecords;
      out.writes.scratch |= kStepRecords;
    }
    if (pass.partials) out.writes.scratch |= kScratchPartials;
    if (pass.sums == RulePass::Sums::tensor) out.reads.scratch |= kScratchTensorSums;
    if (pass.sums == RulePass::Sums::group) out.reads.scratch |= kScratchGroupSums;
    if (pass.factor_means) out.reads.scratch |= kScratchFactorMeans;
    const bool pass_grads = grads && pass.entry >= 0;  // (a skipped step skips Lookahead too)
    if (pass_grads) out.reads.scratch |= kStepControl;
    std::vector<int64_t> pipelines(groups.size() * 2, -1);  // per (group, careful)
    for (size_t bi = 0; bi < table_plan.batches.size(); ++bi) {
      const Batch& b = table_plan.batches[bi];
      push.header.seg_base = use_bda ? 0 : b.table_first_segment;
      if (!use_bda) push.header.map_address[0] = b.map_first_block;
      push.header.step_group = b.group;
      // Runs of consecutive segments whose tensors take the same step share push constants.
      uint32_t run_begin = b.seg_begin;
      while (run_begin < b.seg_end) {
        const TensorRecord& first = tensors[table_plan.segment_tensor[run_begin]];
        const StepInfo info{first.step + 1, first.fresh, first.scalars};
        uint32_t run_end = run_begin + 1;
        // (Replayed, each tensor's scalars come from its entry: the batch is one run.)
        if (replayed) run_end = b.seg_end;
        while (run_end < b.seg_end) {
          const TensorRecord& t = tensors[table_plan.segment_tensor[run_end]];
          if (t.step != first.step || t.fresh != first.fresh || t.scalars != first.scalars) break;
          ++run_end;
        }
        push.header.round_key = round_key(precision[b.group].seed, info.t);
        push.header.ema_weight = pass.ema ? float(1 - ema_decay_at(ema[b.group], info.t)) : 0.0f;
        if (!pass.push_constants(b.group, info, push)) {
          run_begin = run_end;
          continue;
        }
        if (pass.partials || pass.sums != RulePass::Sums::none) {
          // The rule reserved kScratchWords at the start of its area for these.
          push.rule[0] = uint32_t(scratch_address);
          push.rule[1] = uint32_t(scratch_address >> 32);
          push.rule[2] = scratch_layout.partials_base();
          push.rule[3] =
              pass.sums == RulePass::Sums::group ? scratch_layout.group_sums + b.group : scratch_layout.tensor_sums;
        }
        if (pass.factor_means) push.rule[kScratchWords] = scratch_layout.factor_means;
        int64_t& pipeline = pipelines[b.group * 2 + b.careful];
        if (pipeline < 0)
          pipeline = elementwise_pipeline(plan, pass, b.group, b.careful,
                                          replayed ? StepStage::replay : StepStage::push, pass_grads);
        for (uint32_t si = run_begin; si < run_end; ++si) {
          out.reads.add_tensor(table_plan.segment_tensor[si]);
          out.writes.add_tensor(table_plan.segment_tensor[si]);
        }
        const uint32_t block_begin = table_plan.segments[run_begin].block_begin;
        const uint32_t block_end = run_end < b.seg_end ? table_plan.segments[run_end].block_begin : b.block_end;
        // What validation sees these dispatches touch (descriptor path): the bound ranges, the
        // whole scratch buffer when they write partial sums there, the step buffer.
        std::vector<BoundRange> bound;
        if (pass.partials) bound.push_back({scratch->buffer, 0, scratch->size});
        if (replayed || pass_grads) bound.push_back({step_buffer->buffer, 0, step_buffer->size});
        add_block_dispatches(out, uint32_t(pipeline), bi, block_begin, block_end, push, bound);
        run_begin = run_end;
      }
    }
  }
  if (stops_at_sums || rank1_part || matrix_part) {
    if (stops_at_sums) plan.copy_out.push_back(sums_copy);
    place_barriers(plan);
    return plan;
  }
  if (replay && mode == Mode::step) {
    PlannedPass& out = plan.passes.emplace_back();
    out.name = "step_commit";
    out.reads.scratch |= kStepRecords;
    PlannedDispatch& d = out.dispatches.emplace_back();
    std::vector<uint32_t> spec{caps.workgroup_size};
    if (grads) {  // a skipped step leaves the records (constant 29 of shaders/vko_grads.glsl)
      spec.resize(29, 0);
      spec.push_back(1);
      out.reads.scratch |= kStepControl;
    }
    d.pipeline = plan.pipeline_index({"step_commit", use_bda, caps.shader_int64, false, std::move(spec)});
    d.descriptor_set = use_bda ? -1 : 0;
    d.push = push;
    d.push.header.block_base = 0;
    d.push.header.block_end = uint32_t(tensors.size());
    d.x = (uint32_t(tensors.size()) + caps.workgroup_size - 1) / caps.workgroup_size;
    if (!use_bda) d.bound.push_back({step_buffer->buffer, 0, step_buffer->size});
    out.writes.scratch |= kStepRecords;
  }
  place_barriers(plan);
  return plan;
}

void OptimizerState::add_block_dispatches(PlannedPass& out, uint32_t pipeline, size_t batch, uint64_t block_begin,
                                          uint64_t block_end, PushBlock& push, const std::vector<BoundRange>& bound,
                                          uint32_t block_invocations) const {
  const uint32_t max_x = ctx->caps.max_compute_workgroup_count[0], max_y = ctx->caps.max_compute_workgroup_count[1];
  const uint64_t wg = ctx->caps.workgroup_size, max_groups = uint64_t(max_x) * max_y;
  // Blocks one dispatch can cover, and the workgroups that takes.
  const uint64_t max_blocks = block_invocations ? max_groups * wg / block_invocations : max_groups;
  const auto workgroups = [&](uint64_t blocks) {
    return block_invocations ? (blocks * block_invocations + wg - 1) / wg : blocks;
  };
  const Batch& b = table_plan.batches[batch];
  for (uint64_t base = block_begin; base < block_end;) {
    const uint64_t n = std::min<uint64_t>(block_end - base, max_blocks), groups = workgroups(n);
    PlannedDispatch& d = out.dispatches.emplace_back();
    d.pipeline = pipeline;
    d.descriptor_set = use_bda ? -1 : int32_t(batch);
    d.x = uint32_t(std::min<uint64_t>(groups, max_x));
    d.y = uint32_t((groups + d.x - 1) / d.x);
    push.header.block_base = uint32_t(base);
    push.header.block_end = uint32_t(base + n);
    d.push = push;
    if (!use_bda) {
      for (const auto& op : b.operands)
        if (op.buffer) d.bound.push_back(op);
      d.bound.insert(d.bound.end(), bound.begin(), bound.end());
    }
    base += n;
  }
}

void OptimizerState::plan_factor_stats(StepPlan& plan, const PushBlock& header, bool replay, bool grads,
                                       std::initializer_list<uint32_t> stages) const {
  const DeviceCaps& caps = ctx->caps;
  const VkDeviceAddress scratch_address = use_bda ? scratch->address : 0;
  PlannedPass& out = plan.passes.emplace_back();
  out.name = "adafactor_factors";
  for (const uint32_t stage : stages) {
    std::vector<uint32_t> spec{caps.workgroup_size, caps.items_per_invocation, 0, stage};
    if (replay) {  // constants 27 (the weight from the device) and 29 (gradient control)
      spec.resize(27, 0);
      spec.insert(spec.end(), {1, 0, grads ? 1u : 0u});
    }
    const uint32_t pipeline =
        plan.pipeline_index({"adafactor_factors", use_bda, caps.shader_int64, false, std::move(spec)});
    bool first = true;
    for (const FactorJob& job : factor_jobs) {
      // Whole tensors: modes 0, 1, 2; split pieces: 3, 4 (their sums), then 5, 2.
      const bool runs = stage == 2 || (job.split ? stage >= 3 : stage <= 1);
      if (!runs) continue;
      const TensorRecord& t = tensors[job.tensor];
      PlannedDispatch& d = out.dispatches.emplace_back();
      d.pipeline = pipeline;
      d.barrier_before = stage == 2 && first;  // the row means read what the modes before wrote
      first = false;
      FactorStats stats{scratch_address,
                        job.grad,
                        job.row_var,
                        job.col_var,
                        job.rows,
                        job.cols,
                        stage >= 3 ? job.sums : scratch_layout.factor_means + job.tensor,
                        job.wide,
                        job.tensor,
                        t.group,
                        uint32_t(job.first),
                        uint32_t(job.count)};
      d.push = header;  // the header: the step buffer's address (replayable steps)
      rule->factor_push_constants(step_options(t.group, t.step + 1), t.step + 1, stats, d.push);
      const uint32_t max_x = caps.max_compute_workgroup_count[0], wg = caps.workgroup_size;
      const uint32_t columns = job.wide ? job.cols / caps.access_width() : job.cols;  // per invocation in mode 1
      const uint32_t needed = stage == 0 || stage == 3 ? job.rows
                              : stage == 1             ? (columns + wg - 1) / wg
                              : stage == 4             ? (job.cols + wg - 1) / wg
                              : stage == 5             ? (job.rows + job.cols + wg - 1) / wg
                                                       : 1;
      d.x = std::min(needed, max_x);
      d.y = (needed + d.x - 1) / d.x;
      out.reads.add_tensor(job.tensor);
      if (stage != 3 && stage != 4) out.writes.add_tensor(job.tensor);
    }
  }
  for (const uint32_t stage : stages) {
    if (stage == 3 || stage == 4) out.writes.scratch |= kScratchFactorSums;  // the piece's sums
    if (stage == 5) out.reads.scratch |= kScratchFactorSums;                 // the ranks' added sums
    if (stage == 2) out.writes.scratch |= kScratchFactorMeans;
  }
  if (replay) out.reads.scratch |= kStepRecords | (grads ? uint32_t(kStepControl) : 0u);
}

void OptimizerState::plan_grad_control(StepPlan& plan, const PushBlock& header, StepPart part) const {
  const DeviceCaps& caps = ctx->caps;
  const VkDeviceAddress scratch_address = use_bda ? scratch->address : 0;
  if (part == StepPart::finish) {  // the outcome from the combined total the engine wrote
    PlannedPass& out = plan.passes.emplace_back();
    out.name = "grad_control";
    out.reads.scratch |= kStepControl;
    out.writes.scratch |= kStepControl;
    PlannedDispatch& d = out.dispatches.emplace_back();
    d.pipeline =
        plan.pipeline_index({"grad_reduce", use_bda, caps.shader_int64, false, {caps.workgroup_size, 1, 0, 3}});
    d.descriptor_set = use_bda ? -1 : 0;
    d.push = header;
    grad_reduce_push_constants(scratch_address, 0, 0, 0, d.push);
    d.x = 1;
    if (!use_bda) {
      d.bound.push_back({scratch->buffer, 0, scratch->size});
      d.bound.push_back({step_buffer->buffer, 0, step_buffer->size});
    }
    return;
  }
  // Chunk sums of every gradient: an invocation per run of 256-element chunks, over the whole table.
  Pass norm;
  norm.shader = "grad_norm";
  // Chunks per invocation (constant 3 of shaders/grad_norm.comp): one on GPUs; on CPU drivers,
  // which load every lane's value one by one, a run of up to 8 (dividing every block's chunks),
  // over which the invocation's setup (its segment, the step's settings: ~20 loads) is spread:
  // the pass went from 0.24-0.30 to 0.14 of AdamW's pass at 2^24 on lavapipe (4/28 of its bytes).
  const uint32_t careful_chunks = caps.workgroup_size * caps.access_width() / 256;
  uint32_t chunk_run = caps.device_type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 8 : 1;
  while (careful_chunks % chunk_run != 0) chunk_run /= 2;
  norm.spec_constants = [chunk_run](uint32_t) { return std::vector<uint32_t>{chunk_run}; };
  PlannedPass& chunks = plan.passes.emplace_back();
  chunks.name = "grad_norm";
  chunks.reads.scratch |= kStepControl;
  chunks.writes.scratch |= kGradSums;
  PushBlock push = header;
  grad_norm_push_constants(scratch_address, push);
  for (size_t bi = 0; bi < table_plan.batches.size(); ++bi) {
    const Batch& b = table_plan.batches[bi];
    push.header.seg_base = use_bda ? 0 : b.table_first_segment;
    if (!use_bda) push.header.map_address[0] = b.map_first_block;
    push.header.step_group = b.group;
    const uint32_t pipeline = elementwise_pipeline(plan, norm, b.group, b.careful);
    for (uint32_t si = b.seg_begin; si < b.seg_end; ++si) chunks.reads.add_tensor(table_plan.segment_tensor[si]);
    const uint32_t block_elements = (b.careful ? 1 : launch[b.group].items) * caps.workgroup_size * caps.access_width();
    add_block_dispatches(chunks, pipeline, bi, b.block_begin, b.block_end, push,
                         {{scratch->buffer, 0, scratch->size}, {step_buffer->buffer, 0, step_buffer->size}},
                         block_elements / 256 / chunk_run);
  }
  // Each level to the next, 256 entries to one, then the last (256 or fewer) to the outcome.
  const auto& levels = scratch_layout.grad_levels;
  for (size_t l = 0; l < levels.size(); ++l) {
    const bool final = l + 1 == levels.size();
    PlannedPass& out = plan.passes.emplace_back();
    const bool sums = final && part == StepPart::grad_sums;  // (mode 2 of grad_reduce.comp)
    out.name = final ? (sums ? "grad_sums" : "grad_control") : "grad_reduce";
    out.reads.scratch |= kGradSums | kStepControl;
    out.writes.scratch |= final ? kStepControl : kGradSums;
    PlannedDispatch& d = out.dispatches.emplace_back();
    d.pipeline = plan.pipeline_index(
        {"grad_reduce", use_bda, caps.shader_int64, false, {caps.workgroup_size, 1, 0, final ? (sums ? 2u : 1u) : 0u}});
    d.descriptor_set = use_bda ? -1 : 0;
    d.push = header;
    grad_reduce_push_constants(scratch_address, levels[l].first, levels[l].second, final ? 0 : levels[l + 1].first,
                               d.push);
    const uint32_t outputs = final ? 1 : levels[l + 1].second;
    d.x = (outputs + caps.workgroup_size - 1) / caps.workgroup_size;
    if (!use_bda) {
      d.bound.push_back({scratch->buffer, 0, scratch->size});
      d.bound.push_back({step_buffer->buffer, 0, step_buffer->size});
    }
  }
}

uint32_t OptimizerState::elementwise_pipeline(StepPlan& plan, const Pass& pass, uint32_t group, bool careful,
                                              StepStage stage, bool grads) const {
  const DeviceCaps& caps = ctx->caps;
  const GroupLaunch& l = launch[group];
  std::vector<uint32_t> spec{caps.workgroup_size, l.items, careful};
  const auto pass_spec = pass.spec_constants(group);
  spec.insert(spec.end(), pass_spec.begin(), pass_spec.end());
  // Storage types (constant ids 24, 25 of shaders/vko_base.glsl): the group's, when its tensors
  // agree; else each segment's own.
  const auto [dtypes, precision_bits] = storage_constants(group);
  spec.resize(kStorageConstantId, 0);
  spec.push_back(dtypes);
  spec.push_back(precision_bits);
  // Block absmax within subgroups (constant 26): fast segments of the shaders built for it.
  const bool subgroup_blocks =
      stage != StepStage::prologue && l.subgroup != 0 && !careful && ctx->has_subgroup_build(pass.shader);
  spec.push_back(subgroup_blocks ? l.subgroup : 0);
  // The device step (constants 27, 28 of shaders/vko_step.glsl): scalars from the step buffer,
  // or the prologue that computes them.
  if (stage != StepStage::push || grads) {
    spec.push_back(stage == StepStage::replay);
    spec.push_back(stage == StepStage::prologue);
  }
  if (grads) spec.push_back(1);  // constant 29 of shaders/vko_grads.glsl
  // The EMA's operand (constant 30 of shaders/vko_elementwise.glsl) in the pass that updates it.
  if (const uint32_t op = pass.ema && stage != StepStage::prologue ? ema_operand(group) : 0) {
    spec.resize(30, 0);  // (constants 27-29 at their defaults where unset)
    spec.push_back(op);
  }
  // The pass that finds rank-1 maxima (constant 31 of shaders/vko_elementwise.glsl).
  if (pass.rank1_maxima) {
    spec.resize(31, 0);
    spec.push_back(1);
  }
  return plan.pipeline_index({pass.shader, use_bda, caps.shader_int64, subgroup_blocks, std::move(spec)});
}

InitPlan OptimizerState::plan_init() const {
  InitPlan init;
  // Fill each arena with its regions' initial values in their storage types: one fill when they
  // agree, else per region. (Masters are copied from the parameters by the master_init pass.)
  auto for_each_region = [&](uint32_t arena, auto&& f) {
    for (const auto& t : tensors) {
      for (const auto& r : t.slots)
        if (r.active && r.arena == arena) f(r);
      if (t.master.active && t.master.code != kF32 && t.master.arena == arena) f(t.master);  // Kahan: 0
      if (t.absmax.active && t.absmax.arena == arena) f(t.absmax);
    }
  };
  for (uint32_t a = 0; a < arenas.size(); ++a) {
    bool uniform = true, any = false;
    uint32_t word = 0;
    for_each_region(a, [&](const StateRegion& r) {
      const uint32_t w = fill_word(r.initial, r.code);
      if (any && w != word) uniform = false;
      word = w;
      any = true;
    });
    if (uniform) {
      init.fills.push_back({arenas[a]->buffer, 0, VK_WHOLE_SIZE, word});
      continue;
    }
    for_each_region(a, [&](const StateRegion& r) {
      init.fills.push_back({arenas[a]->buffer, r.offset, r.bytes(), fill_word(r.initial, r.code)});
    });
  }
  auto upload = [&](VkBuffer buffer, VkDeviceSize offset, const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    init.uploads.push_back({buffer, offset, std::vector<uint8_t>(p, p + bytes)});
  };
  upload(table->buffer, 0, table_plan.segments.data(), table_plan.segments.size() * sizeof(SegmentRecord));
  upload(table->buffer, table_plan.map_offset, table_plan.block_map.data(), table_plan.block_map.size() * 4);
  if (!scratch_layout.lists.empty())
    upload(scratch->buffer, VkDeviceSize(scratch_layout.tensor_lists) * 8, scratch_layout.lists.data(),
           scratch_layout.lists.size() * 4);
  return init;
}

OptimizerState::Prepared OptimizerState::prepare(Mode mode, bool replay, StepPart part) {
  if (mode == Mode::perturb && std::none_of(sam.begin(), sam.end(), [](const SamOptions& s) { return s.rho > 0; }))
    throw Error(Status::invalid_state, "record_sam_perturb: no group has SAM on (sam.rho > 0)");
  if (replay) check_replayable();
  if (mode == Mode::step && !replay && grad_control())
    throw Error(Status::invalid_state,
                "record: gradient clipping and the loss scaler run in replayable steps: record with "
                "RecordOptions::replay = true (step() does)");
  if (mode == Mode::step && !replay && rank1_steps())
    throw Error(Status::invalid_state,
                "record: rank-1 second moments (PrecisionOptions::rank1_second_moment) take each step's maxima "
                "from the device's step counter: record with RecordOptions::replay = true (step() does)");
  if (mode == Mode::step && replay && grad_control()) check_grad_control();
  const bool exchange_sums = mode == Mode::step && tensor_exchange();
  if (mode == Mode::perturb && sam_exchange() && part == StepPart::whole)
    throw Error(Status::invalid_state,
                "record_sam_perturb: this optimizer is a shard (ParamTensor::whole_count), and SAM's norm is over "
                "every rank's gradients: perturb in parts (RecordOptions::part = StepPart::grad_sums, then "
                "StepPart::finish; or sam_perturb_sums() and sam_perturb_finish())");
  if (mode == Mode::perturb && part != StepPart::whole &&
      (!sam_exchange() || (part != StepPart::grad_sums && part != StepPart::finish)))
    throw Error(Status::invalid_state,
                sam_exchange() ? "record_sam_perturb: a sharded perturbation has two parts, StepPart::grad_sums and "
                                 "StepPart::finish"
                               : "record_sam_perturb: RecordOptions::part splits the perturbation of a sharded "
                                 "optimizer (ParamTensor::whole_count); this one is not sharded");
  if (mode != Mode::perturb && part != StepPart::whole &&
      !(mode == Mode::step && replay && (grad_control() || exchange_sums || factor_part())))
    throw Error(Status::invalid_state,
                "record: RecordOptions::part splits a replayable step with gradient clipping or the loss scaler, "
                "or a sharded step of a rule with per-tensor sums, around the ranks' combination of their sums; "
                "this recording has none to split");
  if (mode == Mode::step && part == StepPart::grad_sums && !grad_control())
    throw Error(Status::invalid_state,
                "record: StepPart::grad_sums, but this optimizer has no gradient clipping or loss scaler");
  if (part == StepPart::factor_sums && !(mode == Mode::step && factor_part()))
    throw Error(Status::invalid_state,
                "record: StepPart::factor_sums is for sharded optimizers of Adafactor or Muon, or with rank-1 second "
                "moments; this one has no row or column sums, maxima or matrix updates to exchange");
  if (part == StepPart::whole && mode == Mode::step && rank1_exchange())
    throw Error(Status::invalid_state,
                "record: this optimizer is a shard (ParamTensor::whole_count) holding part of a matrix whose rank-1 "
                "second moment's maxima run over every rank's part: record the step in parts "
                "(RecordOptions::part = StepPart::factor_sums, then StepPart::finish; or step_factor_sums(), "
                "set_factor_sums(combined) and step_finish())");
  if (part == StepPart::tensor_sums && !exchange_sums)
    throw Error(Status::invalid_state,
                "record: StepPart::tensor_sums is for sharded optimizers whose rule sums over whole tensors "
                "(LAMB, StableAdamW, Cautious); this one has no per-tensor sums to exchange");
  if (part == StepPart::whole && mode == Mode::step && grad_control() && sharded())
    throw Error(Status::invalid_state,
                "record: this optimizer is a shard (ParamTensor::whole_count), and gradient clipping and the loss "
                "scaler need every rank's gradient sums: record the step in parts (RecordOptions::part, or "
                "step_grad_sums() and step_finish())");
  if (part == StepPart::whole && exchange_sums)
    throw Error(Status::invalid_state,
                std::string("record: this optimizer is a shard (ParamTensor::whole_count), and ") + rule->name() +
                    " needs every rank's sums of each whole tensor: record the step in parts (RecordOptions::part, "
                    "or step_tensor_sums() and step_finish())");
  if (mode != Mode::init && !replay && device_steps)
    throw Error(Status::invalid_state,
                "record: this optimizer counts its steps on the device since its first replayable recording; "
                "record with RecordOptions::replay = true");
  finalize();
  // State is initialised by its own submission before the first step is recorded: every
  // recorded step is then self-sufficient (dropping or resubmitting one never touches the
  // initialisation).
  if (mode != Mode::init) ensure_initialised();
  Prepared p;
  p.replay = replay;
  p.part = part;
  p.plan = plan_step(mode, replay, part);
  for (const PipelineKey& key : p.plan.pipelines) p.pipelines.push_back(ctx->pipeline(key));
  if (mode == Mode::init) p.init = plan_init();
  return p;
}

void OptimizerState::check_replayable() const {
  auto refuse = [](const std::string& why) { throw Error(Status::unsupported, "RecordOptions::replay: " + why); };
  if (!rule->device_scalars()) refuse(std::string(rule->name()) + "'s step scalars are computed on the host only");
}

void OptimizerState::start_device_steps() {
  if (device_steps) return;
  // From now on the tensors' step counters (and carried scalars) live in their records.
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint32_t* rec = step_words() + step_layout.tensor_records + i * kTensorRecordWords;
    rec[0] = uint32_t(tensors[i].step);
    rec[1] = tensors[i].fresh ? 1 : 0;
    const Rule::Carry carry = rule->device_carry(tensors[i].scalars);
    std::memcpy(&rec[4], carry.data(), sizeof carry);
    std::memcpy(&rec[8], carry.data(), sizeof carry);
  }
  // A perturbation the host recorded awaits its restore, which the device decides from now on.
  for (uint32_t g = 0; g < groups.size(); ++g)
    step_words()[step_layout.group_records + g * kGroupRecordWords + kGroupSamPending] = sam_perturbed[g] ? 1 : 0;
  std::fill(sam_perturbed.begin(), sam_perturbed.end(), false);
  device_steps = true;
}

Rule::Carry OptimizerState::device_carry(size_t tensor) const {
  ctx->wait_idle();
  Rule::Carry carry;
  std::memcpy(carry.data(), step_words() + step_layout.tensor_records + tensor * kTensorRecordWords + 4, sizeof carry);
  return carry;
}

void OptimizerState::set_device_carry(size_t tensor, const Rule::Carry& carry) {
  ctx->wait_idle();
  uint32_t* rec = step_words() + step_layout.tensor_records + tensor * kTensorRecordWords;
  std::memcpy(&rec[4], carry.data(), sizeof carry);
  std::memcpy(&rec[8], carry.data(), sizeof carry);
}

void OptimizerState::submit(Mode mode, StepPart part) {
  // Once steps are counted on the device, step() records replayable steps too.
  // (Every rank of a sharded rank-1 optimizer steps in parts, with or without rank-1 pieces.)
  const bool replay =
      (mode == Mode::step && (grad_control() || tensor_exchange() || rank1_steps() || rank1_sharded())) ||
      (mode != Mode::init && device_steps);
  const Prepared prepared = prepare(mode, replay, part);  // fails (and initialises) first
  RecordOptions options;
  options.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
  options.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  // Recording advances the host's step counters and scalars; a submission that fails after it
  // (vkQueueSubmit out of memory, device lost) must leave them as they were.
  struct Progress {
    uint64_t step;
    bool fresh;
    Scalars scalars;
  };
  std::vector<Progress> before;
  for (const auto& t : tensors) before.push_back({t.step, t.fresh, t.scalars});
  const auto perturbed_before = sam_perturbed;
  try {
    ctx->submit_and_wait([&](VkCommandBuffer cmd) { record_prepared(cmd, options, mode, prepared); });
  } catch (...) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      tensors[i].step = before[i].step;
      tensors[i].fresh = before[i].fresh;
      tensors[i].scalars = before[i].scalars;
    }
    sam_perturbed = perturbed_before;
    throw;
  }
}

void OptimizerState::record(VkCommandBuffer cmd, const RecordOptions& options, Mode mode) {
  if (!cmd) throw Error(Status::invalid_argument, "record: cmd is VK_NULL_HANDLE");
  validate_record_options(options, ctx->caps);
  // On a host's device, the initialisation's submission is the host's to schedule: record()
  // never submits behind its back.
  if (mode != Mode::init && !ctx->owns_device && (!finalized || needs_init))
    throw Error(Status::invalid_state,
                "record: call Optimizer::initialize() first on an adopted device (it submits one "
                "initialisation to the queue and waits; record() itself never submits)");
  // Everything that can fail happens before the first command is recorded.
  record_prepared(cmd, options, mode, prepare(mode, options.replay, options.part));
}

void OptimizerState::record_prepared(VkCommandBuffer cmd, const RecordOptions& options, Mode mode,
                                     const Prepared& prepared) {
  if (prepared.replay) start_device_steps();
  const RecordTarget target{ctx->vkd, cmd, ctx->pipeline_layout(use_bda), prepared.pipelines, sets};
  record_plan(target, mode == Mode::init ? &prepared.init : nullptr, prepared.plan, options);
  last_dispatches = prepared.plan.dispatch_count();
  last_passes.clear();
  for (const auto& p : prepared.plan.passes) last_passes.push_back(p.name);
  if (mode == Mode::init || prepared.replay) return;  // (replayed: the device counts)
  if (mode == Mode::perturb) {                        // (a perturbation's first part only sums)
    if (prepared.part != StepPart::grad_sums)
      for (size_t g = 0; g < groups.size(); ++g) sam_perturbed[g] = sam[g].rho > 0;
    return;
  }
  std::fill(sam_perturbed.begin(), sam_perturbed.end(), false);
  const bool keeps_scalars = !rule->scalar_names().empty();
  for (auto& t : tensors) {
    if (keeps_scalars)
      t.scalars = rule->advance_scalars(step_options(t.group, t.step + 1), StepInfo{t.step + 1, t.fresh, t.scalars});
    ++t.step;
    t.fresh = false;
  }
}

}  // namespace vkoptim::detail
