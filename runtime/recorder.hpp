#pragma once
// The recorder: every command of a step, SAM's perturbation and state initialisation is recorded
// here, from a plan (step_plan.hpp). It binds, pushes and dispatches, and places the barriers the
// plan's declared accesses call for (see RecordOptions for the edges).
#include <span>

#include "dispatch.hpp"
#include "step_plan.hpp"
#include "vkoptim/optimizer.hpp"

namespace vkoptim::detail {

struct RecordTarget {
  const DeviceFunctions& d;
  VkCommandBuffer cmd;
  VkPipelineLayout layout;
  std::span<const VkPipeline> pipelines;  // StepPlan::pipelines, created
  std::span<const VkDescriptorSet> sets;  // PlannedDispatch::descriptor_set indexes these
};

// Throws naming the field when RecordOptions cannot make a valid barrier or query on this device.
void validate_record_options(const RecordOptions& options, const DeviceCaps& caps);

// Records `init`'s fills and uploads (when given), then the plan's passes, with the entry and exit
// barriers and timestamps of `options`.
void record_plan(const RecordTarget& target, const InitPlan* init, const StepPlan& plan, const RecordOptions& options);

}  // namespace vkoptim::detail
