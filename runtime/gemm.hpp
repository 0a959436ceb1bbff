#pragma once
// Batched GEMM (shaders/gemm.comp), the building block of the matrix rules (Muon's
// Newton-Schulz iterations): one dispatch computes C = alpha*op(A)op(B) + beta*D for every job of
// a table in device memory. Buffer device addresses only.
#include <cstdint>
#include <vector>

#include "step_plan.hpp"
#include "vkoptim/context.hpp"

namespace vkoptim::detail {

// One product:
//   C = out_scale * round(alpha*op(A)op(B) + beta*D/norm)
// op(A) is m x k with element (i, q) at a + 4*(i*a_row + q*a_col) (bf16 inputs: 2*), op(B) k x n
// likewise; C and D are m x n with element (i, j) at i*c_row + j*c_col (d_row, d_col), so either
// may be transposed. d = 0: no D term. norm = max(sqrt(x of scratch entry norm_entry), eps), or 1
// when norm_entry is kNoNorm (Muon's Frobenius normalisation: a job with k = 0). round: to bf16
// (nearest even) when round_bf16, else none; the norm is rounded to bf16 too. D may be C with the
// same strides (each element is read before it is written, by the same invocation); C must not
// overlap A, B or any other job's operands. Addresses are 4-byte aligned (bf16 inputs: reads are
// of whole words, so an operand also owns the word of its last element).
inline constexpr uint32_t kNoNorm = 0xFFFFFFFFu;
struct GemmJob {
  VkDeviceAddress a = 0, b = 0, c = 0, d = 0;
  uint32_t m = 0, n = 0, k = 0;
  uint32_t a_row = 0, a_col = 1, b_row = 0, b_col = 1, c_row = 0, c_col = 1, d_row = 0, d_col = 1;
  float alpha = 1, beta = 0;
  uint32_t norm_entry = kNoNorm;
  float eps = 0;
  float out_scale = 1;
  bool round_bf16 = false;
};

// Its record in the job table: GemmJob in shaders/gemm.comp (std430).
struct GemmJobRecord {
  uint32_t a[2], b[2], c[2], d[2];
  uint32_t m, n, k, round_bf16;
  uint32_t a_row, a_col, b_row, b_col;
  uint32_t c_row, c_col, d_row, d_col;
  float alpha, beta, eps, out_scale;
  uint32_t norm_entry, reserved[3];
};
static_assert(sizeof(GemmJobRecord) == 112);
GemmJobRecord gemm_job_record(const GemmJob& job);

// How a workgroup tiles C: (threads_m*4) x (threads_n*4) outputs, k in steps of tile_k.
struct GemmTiles {
  uint32_t threads_m = 16, threads_n = 16, tile_k = 16;  // 8 KiB of shared memory (Vulkan's minimum: 16)
  bool direct = false;  // no shared memory: 8 x 8 outputs per invocation straight from memory
};

// The tiles for a device: CPU drivers (lavapipe) run the direct kernel, 3-6x faster there; GPUs
// the shared-memory one. Workgroups have at most caps.workgroup_size invocations.
GemmTiles gemm_tiles_for(const DeviceCaps& caps);

// scratch: the reduction scratch buffer (norm_entry's entries of two floats), or 0.
void gemm_push_constants(VkDeviceAddress jobs, uint32_t count, VkDeviceAddress scratch, PushBlock& out);

// A pass computing `jobs`, whose records (gemm_job_record, in this order) are at `table`.
PlannedPass plan_gemm(StepPlan& plan, const std::vector<GemmJob>& jobs, VkDeviceAddress table, const GemmTiles& tiles,
                      bool bf16_inputs, uint32_t max_workgroups, VkDeviceAddress scratch = 0);

// Records the pass into `cmd` (its pipelines created as needed), with the barriers of `options`.
void record_gemm(ContextState& ctx, VkCommandBuffer cmd, const std::vector<GemmJob>& jobs, VkDeviceAddress table,
                 const GemmTiles& tiles, bool bf16_inputs, const RecordOptions& options, VkDeviceAddress scratch = 0);

}  // namespace vkoptim::detail
