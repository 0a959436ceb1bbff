#include "gemm.hpp"

#include <algorithm>
#include <string>

#include "context_state.hpp"
#include "recorder.hpp"
#include "vkoptim/error.hpp"

namespace vkoptim::detail {

GemmJobRecord gemm_job_record(const GemmJob& job) {
  GemmJobRecord r{};
  auto split = [](VkDeviceAddress a, uint32_t out[2]) {
    out[0] = uint32_t(a);
    out[1] = uint32_t(a >> 32);
  };
  split(job.a, r.a);
  split(job.b, r.b);
  split(job.c, r.c);
  split(job.d, r.d);
  r.m = job.m, r.n = job.n, r.k = job.k, r.round_bf16 = job.round_bf16 ? 1 : 0;
  r.a_row = job.a_row, r.a_col = job.a_col, r.b_row = job.b_row, r.b_col = job.b_col;
  r.c_row = job.c_row, r.c_col = job.c_col, r.d_row = job.d_row, r.d_col = job.d_col;
  r.alpha = job.alpha, r.beta = job.beta, r.eps = job.eps, r.out_scale = job.out_scale;
  r.norm_entry = job.norm_entry;
  return r;
}

GemmTiles gemm_tiles_for(const DeviceCaps& caps) {
  GemmTiles t;
  if (caps.device_type == VK_PHYSICAL_DEVICE_TYPE_CPU) t.direct = true;
  while (t.threads_m * t.threads_n > std::max<uint32_t>(caps.workgroup_size, 1) && t.threads_m > 1)
    (t.threads_m >= t.threads_n ? t.threads_m : t.threads_n) /= 2;
  return t;
}

void gemm_push_constants(VkDeviceAddress jobs, uint32_t count, VkDeviceAddress scratch, PushBlock& out) {
  PushWriter(out).u64("jobs", jobs).u64("scratch", scratch).u32("count", count);
}

PlannedPass plan_gemm(StepPlan& plan, const std::vector<GemmJob>& jobs, VkDeviceAddress table, const GemmTiles& tiles,
                      bool bf16_inputs, uint32_t max_workgroups, VkDeviceAddress scratch) {
  PlannedPass pass;
  pass.name = "gemm";
  if (jobs.empty()) return pass;
  uint32_t rows = 0, cols = 0;
  for (const GemmJob& j : jobs) {
    rows = std::max(rows, j.m), cols = std::max(cols, j.n);
    for (VkDeviceAddress a : {j.a, j.b, j.c, j.d})
      if (a % 4 != 0) throw Error(Status::invalid_argument, "gemm: operand addresses must be 4-byte aligned");
    if (j.norm_entry != kNoNorm && !scratch)
      throw Error(Status::invalid_argument, "gemm: a job normalises by a scratch entry but no scratch is given");
  }
  const uint32_t per_thread = tiles.direct ? 8 : 4;
  const uint32_t tile_m = tiles.threads_m * per_thread, tile_n = tiles.threads_n * per_thread;
  PlannedDispatch& d = pass.dispatches.emplace_back();
  d.pipeline = plan.pipeline_index({"gemm",
                                    true,
                                    false,
                                    false,
                                    {tiles.threads_m * tiles.threads_n, 1, 0, tiles.threads_m, tiles.threads_n,
                                     tiles.tile_k, bf16_inputs ? 1u : 0u, tiles.direct ? 1u : 0u}});
  gemm_push_constants(table, uint32_t(jobs.size()), scratch, d.push);
  d.x = (cols + tile_n - 1) / tile_n;
  d.y = (rows + tile_m - 1) / tile_m;
  if (jobs.size() > max_workgroups || d.x > max_workgroups || d.y > max_workgroups)
    throw Error(Status::unsupported, "gemm: " + std::to_string(jobs.size()) + " jobs of up to " + std::to_string(rows) +
                                         " x " + std::to_string(cols) +
                                         " need more workgroups than the device's limit of " +
                                         std::to_string(max_workgroups) + " per dimension");
  d.z = uint32_t(jobs.size());
  return pass;
}

void record_gemm(ContextState& ctx, VkCommandBuffer cmd, const std::vector<GemmJob>& jobs, VkDeviceAddress table,
                 const GemmTiles& tiles, bool bf16_inputs, const RecordOptions& options, VkDeviceAddress scratch) {
  if (!ctx.use_bda) throw Error(Status::unsupported, "gemm: the context has no buffer device addresses");
  StepPlan plan;
  const uint32_t* counts = ctx.caps.max_compute_workgroup_count;
  plan.passes.push_back(
      plan_gemm(plan, jobs, table, tiles, bf16_inputs, std::min({counts[0], counts[1], counts[2]}), scratch));
  std::vector<VkPipeline> pipelines;
  for (const PipelineKey& key : plan.pipelines) pipelines.push_back(ctx.pipeline(key));
  record_plan({ctx.vkd, cmd, ctx.pipeline_layout(true), pipelines, {}}, nullptr, plan, options);
}

}  // namespace vkoptim::detail
