#version 450
#extension GL_GOOGLE_include_directive : require
// Sums lists of vec2 entries of the scratch buffer in a fixed order (deterministic on every run
// and for any subgroup size): output o = the sum of input entries in the ranges
// lists[lists_base + o] names. One workgroup per output; each invocation sums a fixed stride of
// the concatenated ranges, then a shared-memory tree combines the invocations.
//   list entry o:  (first range, range count) as a vec2 of uint bits
//   range:         (first entry, entry count) likewise
// Used for block partials -> per-tensor sums, and per-tensor sums -> per-group sums.
#include "vko_reduce.glsl"
#include "vko_push.glsl"

struct ReduceScalars {
  uvec2 scratch_address;
  uint input_base;   // entries: input_base + range offset
  uint output_base;  // output o goes to output_base + o
  uint lists_base;   // list entry of output o at lists_base + o
  uint outputs;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;  // (not read)
  ReduceScalars s;
} pc;

uvec2 scratch_address() { return pc.s.scratch_address; }

uvec2 as_uint(vec2 v) { return floatBitsToUint(v); }

void main() {
  const uint o = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (o >= pc.s.outputs) return;
  const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationID.x;
  const uvec2 list = as_uint(vko_scratch(pc.s.lists_base + o));
  vec2 acc = vec2(0);
  uint skipped = 0;  // entries of earlier ranges, so strides run over the concatenation
  for (uint r = 0; r < list.y; ++r) {
    const uvec2 range = as_uint(vko_scratch(list.x + r));
    // this invocation's entries of the concatenation: lid, lid + wg, ...
    uint i = (lid + wg - (skipped % wg)) % wg;
    for (; i < range.y; i += wg) acc += vko_scratch(pc.s.input_base + range.x + i);
    skipped += range.y;
  }
  vko_workgroup_sum(acc);
  if (lid == 0) vko_scratch_store(pc.s.output_base + o, vko_sums[0]);
}
