#version 450
#extension GL_GOOGLE_include_directive : require
// Sums lists of vec2 entries of the scratch buffer in a fixed order, the same bits on every run
// and for any workgroup or subgroup size: output o = the sum of the input entries in the ranges
// lists[lists_base + o] names. One workgroup per output. Over the concatenation of the ranges,
// 256 columns: column k adds entries k, k + 256, k + 512, ... in order; then each run of 16
// columns is added in order, then the 16 runs in order (reduce_tensor_chunks in
// runtime/shard.cpp does the same on the host).
//   list entry o:  (first range, range count) as a vec2 of uint bits
//   range:         (first entry, entry count) likewise
// Used for chunk partials -> per-tensor sums, and per-tensor sums -> per-group sums.
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

const uint kColumns = 256u;
shared vec2 columns[kColumns];
shared vec2 runs[16];

void main() {
  const uint o = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (o >= pc.s.outputs) return;
  const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationID.x;
  const uvec2 list = as_uint(vko_scratch(pc.s.lists_base + o));
  for (uint k = lid; k < kColumns; k += wg) {  // this invocation's columns
    vec2 acc = vec2(0);
    uint skipped = 0;  // entries of earlier ranges: columns run over the concatenation
    for (uint r = 0; r < list.y; ++r) {
      const uvec2 range = as_uint(vko_scratch(list.x + r));
      for (uint i = (k + kColumns - (skipped % kColumns)) % kColumns; i < range.y; i += kColumns)
        acc += vko_scratch(pc.s.input_base + range.x + i);
      skipped += range.y;
    }
    columns[k] = acc;
  }
  barrier();
  for (uint r = lid; r < 16u; r += wg) {
    vec2 run = columns[r * 16u];
    for (uint i = 1u; i < 16u; ++i) run += columns[r * 16u + i];
    runs[r] = run;
  }
  barrier();
  if (lid == 0u) {
    vec2 total = runs[0];
    for (uint i = 1u; i < 16u; ++i) total += runs[i];
    vko_scratch_store(pc.s.output_base + o, total);
  }
}
