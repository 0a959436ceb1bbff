// Optimizer recording: the passes a step (or SAM's perturbation) runs, their pipelines, and the
// commands, barriers and push constants of one step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "optimizer_state.hpp"

namespace vkoptim::detail {

void OptimizerState::build_passes(Mode mode) {
  passes.clear();
  const bool perturb = mode == Mode::perturb;
  const bool any_lookahead =
      std::any_of(lookahead.begin(), lookahead.end(), [](const LookaheadOptions& l) { return l.k > 0; });
  const size_t slow_name = rule->slot_names().size();  // index of "slow_param" in slot_names()
  auto slow_operand = [this, slow_name](uint32_t g) {
    return std::vector<uint32_t>{uint32_t(2 + std::max(0, slots(g)[slow_name]))};
  };
  if (mode == Mode::init) {
    // Masters and Lookahead's slow weights start from the parameters, once, in the
    // initialisation vkoptim submits itself, so no recorded step depends on an earlier one.
    if (std::any_of(tensors.begin(), tensors.end(), [this](const TensorRecord& t) { return has_master(t); }))
      passes.push_back({"master_init", [](uint32_t) { return std::vector<uint32_t>{}; },
                        [this](uint32_t g, const StepInfo&, PushBlock& out) {
                          PushWriter w(out);
                          return precision[g].master_weights;
                        }});
    if (any_lookahead)
      passes.push_back({"lookahead", slow_operand, [this](uint32_t g, const StepInfo&, PushBlock& out) {
                          if (lookahead[g].k == 0) return false;
                          PushWriter(out).f32(0).u32(0);  // slow <- p
                          return true;
                        }});
    // Rule slots that start as the parameter: the same copy (lookahead.comp's mode 0).
    for (size_t k : rule->param_copy_slots())
      passes.push_back({"lookahead",
                        [this, k](uint32_t g) { return std::vector<uint32_t>{uint32_t(2 + std::max(0, slots(g)[k]))}; },
                        [](uint32_t, const StepInfo&, PushBlock& out) {
                          PushWriter(out).f32(0).u32(0);  // slot <- p
                          return true;
                        }});
    return;
  }
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
      const GroupLaunch& l = launch[b.group];
      std::vector<uint32_t> spec{ctx->caps.workgroup_size, l.items, b.careful};
      const auto pass_spec = passes[pi].spec_constants(b.group);
      spec.insert(spec.end(), pass_spec.begin(), pass_spec.end());
      // Storage types (constant ids 24, 25 of shaders/vko_base.glsl): the group's, when its tensors
      // agree; else each segment's own.
      const auto [dtypes, precision_bits] = storage_constants(b.group);
      spec.resize(kStorageConstantId, 0);
      spec.push_back(dtypes);
      spec.push_back(precision_bits);
      // Block absmax within subgroups (constant 26): fast segments of the shaders built for it.
      const bool subgroup_blocks = l.subgroup != 0 && !b.careful && ctx->has_subgroup_build(passes[pi].shader);
      if (subgroup_blocks) spec.push_back(l.subgroup);
      slot = ctx->pipeline(passes[pi].shader, use_bda, ctx->caps.shader_int64, spec, subgroup_blocks);
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

std::pair<uint32_t, uint32_t> OptimizerState::storage_constants(uint32_t group) const {
  bool any = false, mixed = false, q8 = false;
  uint32_t dtypes = 0;
  for (const auto& t : tensors) {
    if (t.group != group) continue;
    const uint32_t d = operand_dtypes(t);
    mixed = mixed || (any && d != dtypes);
    dtypes = d;
    any = true;
    for (const auto& r : t.slots) q8 = q8 || (r.active && is_q8(r.code));
  }
  const uint32_t bits =
      (mixed ? 1u : 0u) | (precision[group].rounding == Rounding::stochastic ? 2u : 0u) | (q8 ? 4u : 0u);
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

void OptimizerState::prepare(Mode mode) {
  if (mode == Mode::perturb && std::none_of(sam.begin(), sam.end(), [](const SamOptions& s) { return s.rho > 0; }))
    throw Error(Status::invalid_state, "record_sam_perturb: no group has SAM on (sam.rho > 0)");
  finalize();
  // State is initialised by its own submission before the first step is recorded: every
  // recorded step is then self-sufficient (dropping or resubmitting one never touches the
  // initialisation).
  if (mode != Mode::init) ensure_initialised();
  build_passes(mode);
  prepare_pipelines();
}

void OptimizerState::submit(Mode mode) {
  prepare(mode);  // fail (and initialise) before the step's submission
  RecordOptions options;
  options.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
  options.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  // record() advances the host's step counters and scalars; a submission that fails after it
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
    ctx->submit_and_wait([&](VkCommandBuffer cmd) { record(cmd, options, mode); });
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
  prepare(mode);
  const bool perturb = mode == Mode::perturb;

  const auto& d = ctx->vkd;
  const VkPipelineLayout layout = ctx->pipeline_layout(use_bda);
  const bool initialising = mode == Mode::init;
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
        push.header.round_key = round_key(precision[b.group].seed, info.t);
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

  // (The first recording's fills are writes of this step too.)
  if (options.exit_barrier)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | (initialising ? VK_PIPELINE_STAGE_TRANSFER_BIT : 0),
                   VK_ACCESS_SHADER_WRITE_BIT | (initialising ? VK_ACCESS_TRANSFER_WRITE_BIT : 0),
                   options.exit_stage_mask, options.exit_access_mask);

  last_dispatches = dispatches;
  if (mode == Mode::init) return;
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

}  // namespace vkoptim::detail
