// Reductions: the scratch buffer (per-chunk partial sums, per-tensor and per-group sums, the
// reduce lists; entries of two floats). Includes vko_base.glsl (the build defines and the
// workgroup size).
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
  uint partials_base;     // chunk partial sums: this + the chunk's grad-chunk entry (first_chunk + chunk)
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

#endif  // VKO_REDUCE_GLSL
