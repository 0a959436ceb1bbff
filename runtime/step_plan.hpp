#pragma once
// The plan of one recording (a step, SAM's perturbation, or state initialisation): pure data,
// made without Vulkan calls (plan_step in optimizer_plan.cpp) and recorded by the recorder
// (recorder.cpp), the one place that records a step's commands.
//
// Each pass lists its dispatches and declares what it reads and writes: the elements of a set of
// tensors (any of their operands) and parts of the reduction scratch. place_barriers() orders a
// pass after earlier ones exactly when these declarations conflict. Within a pass, dispatches
// touch disjoint elements by construction (the segment table gives each element one segment);
// what validation sees as shared on the descriptor path (whole bound ranges) each dispatch lists
// in `bound`, and the recorder separates dispatches whose bound ranges overlap.
#include <cstdint>
#include <string>
#include <vector>

#include "pipeline_key.hpp"
#include "rules/rule.hpp"
#include "tensor_table.hpp"

namespace vkoptim::detail {

// Parts of the reduction scratch (ScratchLayout) and of the device step's buffer.
enum ScratchPart : uint32_t {
  kScratchPartials = 1,      // per-chunk partial sums
  kScratchTensorSums = 2,    // per-tensor sums
  kScratchGroupSums = 4,     // per-group sums
  kScratchFactorMeans = 8,   // Adafactor: per-tensor row means
  kStepRecords = 16,         // the device step's tensor records (step counters, carry)
  kStepEntries = 32,         // the device step's entries (each step's scalars)
  kGradSums = 64,            // gradient control's chunk sums and their reduction levels
  kStepControl = 128,        // the device step's control record (gradient control)
  kMatrixWorkspace = 256,    // Muon's Newton-Schulz workspace
  kScratchFactorSums = 512,  // Adafactor's split pieces: row and column sums
};

// What a pass touches.
struct PassAccess {
  std::vector<bool> tensors;  // by tensor index: any operand of the tensor
  uint32_t scratch = 0;       // ScratchPart bits
  void add_tensor(uint32_t t) {
    if (tensors.size() <= t) tensors.resize(t + 1, false);
    tensors[t] = true;
  }
  bool empty() const;
  bool intersects(const PassAccess& other) const;
  void merge(const PassAccess& other);
};

struct PlannedDispatch {
  uint32_t pipeline = 0;          // index into StepPlan::pipelines
  int32_t descriptor_set = -1;    // index into the optimizer's descriptor sets; -1: none
  PushBlock push;                 // header and rule scalars (push.rule_bytes of them)
  uint32_t x = 1, y = 1, z = 1;   // workgroups
  bool barrier_before = false;    // the pass's own order (e.g. Adafactor's row means)
  std::vector<BoundRange> bound;  // descriptor path: ranges validation sees it touch
};

struct PlannedPass {
  std::string name;  // the shader, e.g. "lamb_moments" (Optimizer::pass_names)
  std::vector<PlannedDispatch> dispatches;
  PassAccess reads, writes;
  bool barrier_before = false;  // set by place_barriers
};

// A buffer copy at a part's edge (StepPart::tensor_sums: the per-tensor sums to and from the
// host-visible exchange buffer).
struct PlannedCopy {
  VkBuffer src = VK_NULL_HANDLE, dst = VK_NULL_HANDLE;
  VkDeviceSize src_offset = 0, dst_offset = 0, size = 0;
};

// A fill of a buffer range with one word (initialisation; a part's edge).
struct PlannedFill {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0, size = 0;  // size VK_WHOLE_SIZE: to the end
  uint32_t word = 0;
};

struct StepPlan {
  std::vector<PipelineKey> pipelines;
  // fill_in and then copy_in run before the passes (after what earlier submissions wrote and
  // read), copy_out after them (visible to the host once the submission completes).
  std::vector<PlannedFill> fill_in;
  std::vector<PlannedCopy> copy_in, copy_out;
  std::vector<PlannedPass> passes;
  // Index of `key` in pipelines (added when new).
  uint32_t pipeline_index(const PipelineKey& key);
  uint32_t dispatch_count() const;
};

// Sets barrier_before on every pass with dispatches that reads or writes what a pass since the
// last barrier wrote, or writes what such a pass read.
void place_barriers(StepPlan& plan);

// Initialisation: fills of state regions and uploads of tables (recorded before the barrier
// that precedes the initialisation's passes).
struct PlannedUpload {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;
  std::vector<uint8_t> bytes;
};
struct InitPlan {
  std::vector<PlannedFill> fills;
  std::vector<PlannedUpload> uploads;
};

}  // namespace vkoptim::detail
