// The recorder (recorder.hpp).
#include "recorder.hpp"

#include <algorithm>

namespace vkoptim::detail {
namespace {

constexpr VkDeviceSize kUpdateChunk = 65536;  // vkCmdUpdateBuffer's limit

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

void record_plan(const RecordTarget& t, const InitPlan* init, const StepPlan& plan, const RecordOptions& options) {
  const DeviceFunctions& d = t.d;
  const VkCommandBuffer cmd = t.cmd;
  if (init) {
    for (const PlannedFill& f : init->fills) d.vkCmdFillBuffer(cmd, f.buffer, f.offset, f.size, f.word);
    for (const PlannedUpload& u : init->uploads)
      for (VkDeviceSize off = 0; off < u.bytes.size(); off += kUpdateChunk)
        d.vkCmdUpdateBuffer(cmd, u.buffer, u.offset + off, std::min<VkDeviceSize>(kUpdateChunk, u.bytes.size() - off),
                            u.bytes.data() + off);
  }
  if (options.entry_barrier || init)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);

  auto copy = [&](const PlannedCopy& c) {
    const VkBufferCopy region{c.src_offset, c.dst_offset, c.size};
    d.vkCmdCopyBuffer(cmd, c.src, c.dst, 1, &region);
  };
  if (!plan.copy_in.empty() || !plan.fill_in.empty()) {
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
    // (Fills and copies write disjoint ranges.)
    for (const PlannedFill& f : plan.fill_in) d.vkCmdFillBuffer(cmd, f.buffer, f.offset, f.size, f.word);
    for (const PlannedCopy& c : plan.copy_in) copy(c);
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  }

  uint32_t query = options.first_query;
  auto timestamp = [&] {
    if (options.timestamp_pool)
      d.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, options.timestamp_pool, query++);
  };
  // Ranges bound since the last barrier (descriptor path).
  std::vector<BoundRange> touched;
  auto barrier = [&] {
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    touched.clear();
  };
  VkPipeline bound_pipeline = VK_NULL_HANDLE;
  int32_t bound_set = -1;
  timestamp();
  for (const PlannedPass& pass : plan.passes) {
    bool first = true;
    for (const PlannedDispatch& dispatch : pass.dispatches) {
      bool hazard = (first && pass.barrier_before) || dispatch.barrier_before;
      first = false;
      // Dispatches that bind overlapping ranges need ordering (validation sees whole ranges).
      for (const auto& r : touched)
        for (const auto& b : dispatch.bound) hazard = hazard || overlaps(r, b);
      if (hazard) barrier();
      touched.insert(touched.end(), dispatch.bound.begin(), dispatch.bound.end());
      const VkPipeline pipeline = t.pipelines[dispatch.pipeline];
      if (pipeline != bound_pipeline) {
        bound_pipeline = pipeline;
        d.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
      }
      if (dispatch.descriptor_set >= 0 && dispatch.descriptor_set != bound_set) {
        bound_set = dispatch.descriptor_set;
        d.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, t.layout, 0, 1, &t.sets[size_t(bound_set)], 0,
                                  nullptr);
      }
      d.vkCmdPushConstants(cmd, t.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                           uint32_t(sizeof(PushHeader) + dispatch.push.rule_bytes), &dispatch.push);
      d.vkCmdDispatch(cmd, dispatch.x, dispatch.y, dispatch.z);
    }
    timestamp();
  }

  if (!plan.copy_out.empty()) {
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
    for (const PlannedCopy& c : plan.copy_out) copy(c);
    // (The host reads what was copied once the submission completes.)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                   VK_ACCESS_HOST_READ_BIT);
  }

  // (An initialisation's fills and uploads and the copies are writes of this recording too.)
  const bool transfers = init || !plan.copy_in.empty() || !plan.fill_in.empty() || !plan.copy_out.empty();
  if (options.exit_barrier)
    memory_barrier(d, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | (transfers ? VK_PIPELINE_STAGE_TRANSFER_BIT : 0),
                   VK_ACCESS_SHADER_WRITE_BIT | (transfers ? VK_ACCESS_TRANSFER_WRITE_BIT : 0), options.exit_stage_mask,
                   options.exit_access_mask);
}

}  // namespace vkoptim::detail
