#pragma once
// Muon's Newton-Schulz orthogonalisation as batched GEMM jobs (runtime/gemm.hpp): what the
// optimizer's newton_schulz pass runs for each matrix of its Muon groups.
#include <cstdint>
#include <vector>

#include "gemm.hpp"
#include "rules/rule.hpp"
#include "vkoptim/rules.hpp"

namespace vkoptim::detail {

// Bytes of workspace a rows x cols matrix takes: X twice (ping-pong) and A, Bm (m x m), with
// m = min(rows, cols); 16-byte aligned.
VkDeviceSize ns_workspace_bytes(uint32_t rows, uint32_t cols);

// The factor of lr in the step of a rows x cols matrix (adjust_lr).
double muon_lr_factor(const MuonOptions& o, uint32_t rows, uint32_t cols);

// Appends the matrix's jobs to `dispatches` (one list per dispatch, in order; there must be at
// least 1 + 3 * o.ns_steps; m.slot: the update slot, where the momentum pass wrote U): the normalisation X =
// U^(T)/max(|U|_F, eps) into the workspace, then per iteration A = X X^T, Bm = b*A + c*A*A, X' = a*X + Bm*X, the last
// one written transposed back into the update slot and scaled by muon_lr_factor.
void add_ns_jobs(const MatrixOperands& m, const MuonOptions& o, std::vector<std::vector<GemmJob>>& dispatches);

}  // namespace vkoptim::detail
