#pragma once
// Batched GEMM (shaders/gemm.comp), the building block of the matrix rules (Muon's
// Newton-Schulz iterations): one dispatch computes C = alpha*op(A)op(B) + beta*D for every job of
// a table in device memory. Buffer device addresses only.
#include <cstdint>
#include <vector>

#include "step_plan.hpp"
#include "vkoptim/context.hpp"

namespace vkoptim::detail {

// One product. op(A) is m x k with element (i, q) at a + 4*(i*a_row + q*a_col) (bf16 inputs: 2*),
// op(B) k x n likewise; C and D are m x n, row-major with row strides c_row and d_row. d = 0: no D
// term. D may be C with d_row == c_row (each element is read before it is written, by the same
// invocation); C must not overlap A, B or any other job's operands. Addresses are 4-byte aligned
// (bf16 inputs: reads are of whole words, so an operand also owns the word of its last element).
struct GemmJob {
  VkDeviceAddress a = 0, b = 0, c = 0, d = 0;
  uint32_t m = 0, n = 0, k = 0;
  uint32_t a_row = 0, a_col = 1, b_row = 0, b_col = 1, c_row = 0, d_row = 0;
  float alpha = 1, beta = 0;
};

// Its record in the job table: GemmJob in shaders/gemm.comp (std430).
struct GemmJobRecord {
  uint32_t a[2], b[2], c[2], d[2];
  uint32_t m, n, k, reserved0;
  uint32_t a_row, a_col, b_row, b_col;
  uint32_t c_row, d_row, reserved1, reserved2;
  float alpha, beta, reserved3, reserved4;
};
static_assert(sizeof(GemmJobRecord) == 96);
GemmJobRecord gemm_job_record(const GemmJob& job);

// How a workgroup tiles C: (threads_m*4) x (threads_n*4) outputs, k in steps of tile_k.
struct GemmTiles {
  uint32_t threads_m = 16, threads_n = 16, tile_k = 16;  // 8 KiB of shared memory (Vulkan's minimum: 16)
  bool direct = false;  // no shared memory: 8 x 8 outputs per invocation straight from memory
};

// The tiles for a device: CPU drivers (lavapipe) run the direct kernel, 3-6x faster there; GPUs
// the shared-memory one. Workgroups have at most caps.workgroup_size invocations.
GemmTiles gemm_tiles_for(const DeviceCaps& caps);

void gemm_push_constants(VkDeviceAddress jobs, uint32_t count, PushBlock& out);

// A pass computing `jobs`, whose records (gemm_job_record, in this order) are at `table`.
PlannedPass plan_gemm(StepPlan& plan, const std::vector<GemmJob>& jobs, VkDeviceAddress table, const GemmTiles& tiles,
                      bool bf16_inputs, uint32_t max_workgroups);

// Records the pass into `cmd` (its pipelines created as needed), with the barriers of `options`.
void record_gemm(ContextState& ctx, VkCommandBuffer cmd, const std::vector<GemmJob>& jobs, VkDeviceAddress table,
                 const GemmTiles& tiles, bool bf16_inputs, const RecordOptions& options);

}  // namespace vkoptim::detail
