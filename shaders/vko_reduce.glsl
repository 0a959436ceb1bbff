// Reductions: the scratch buffer (per-block partial sums, per-tensor and per-group sums, the
// reduce lists; entries of two floats) and a fixed-order workgroup sum. Includes vko_base.glsl
// (the build defines and the workgroup size).
//
// Scratch is binding 3 (descriptors) or an address from the push constants (VKO_BDA). A shader
// that includes this file defines
//   uvec2 scratch_address();  // the scratch buffer's address (called by VKO_BDA builds only)
// Reduction passes start their push area after the header with VkoScratchPush.
#ifndef VKO_REDUCE_GLSL
#define VKO_REDUCE_GLSL

#include "vko_base.glsl"

// The first words of an elementwise reduction pass's push area after the header
// (kScratchWords in runtime/rules/rule.hpp; the optimizer fills them).
struct VkoScratchPush {
  uvec2 scratch_address;  // BDA: address of the scratch buffer
  uint partials_base;     // entry of block 0's partial sums (blocks counted over the table)
  uint sums_base;         // entry of the first per-tensor (or per-group) sum the pass reads
};

uvec2 scratch_address();

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 8) buffer ScratchRef { vec2 sums[]; };
vec2 vko_scratch(uint i) { return ScratchRef(scratch_address()).sums[i]; }
void vko_scratch_store(uint i, vec2 v) { ScratchRef(scratch_address()).sums[i] = v; }
#else
layout(std430, set = 0, binding = 3) buffer Scratch { vec2 sums[]; } scratch;
vec2 vko_scratch(uint i) { return scratch.sums[i]; }
void vko_scratch_store(uint i, vec2 v) { scratch.sums[i] = v; }
#endif

// Sums `value` over the workgroup's invocations in a fixed order (the same result on every run,
// for any subgroup size) and leaves the sum in vko_sums[0]. Called in uniform control flow.
// Two levels of runs of 16, each summed in index order by one invocation: three barriers
// whatever the workgroup size (a tree takes log2 of it, and CPU drivers pay per barrier).
shared vec2 vko_sums[gl_WorkGroupSize.x];
shared vec2 vko_run_sums[(gl_WorkGroupSize.x + 15u) / 16u];
void vko_workgroup_sum(vec2 value) {
  const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationID.x, runs = (wg + 15u) / 16u;
  vko_sums[lid] = value;
  barrier();
  if (lid < runs) {
    vec2 run = vko_sums[lid * 16u];
    for (uint i = lid * 16u + 1u; i < min(lid * 16u + 16u, wg); ++i) run += vko_sums[i];
    vko_run_sums[lid] = run;
  }
  barrier();
  if (lid == 0u) {
    vec2 total = vko_run_sums[0];
    for (uint i = 1u; i < runs; ++i) total += vko_run_sums[i];
    vko_sums[0] = total;
  }
  barrier();
}

#endif  // VKO_REDUCE_GLSL
