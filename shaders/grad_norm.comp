#version 450
#extension GL_GOOGLE_include_directive : require
// Gradient control, pass 1 (vko_grads.glsl): per 256-element chunk of every gradient, x = the
// norm contribution of the unscaled, value-clipped gradient (clipped groups only; sum of |g|^p,
// or max |g| for the inf norm) and y = 2 where an unscaled element of a clipped group is
// non-finite, 1 where one of another group is, else 0.
//
// One invocation per run of CHUNK_RUN chunks, over the segment table's blocks like an
// elementwise pass (a block holds a whole number of runs; segments start at multiples of 256
// elements of their tensor). Each chunk's sums are its own, whatever the run.
// The chunk's elements are taken four at a time in order, element i into lane i % 4 of a vec4
// accumulator, whose lanes are then added ((x + y) + z) + w: the same bits for any workgroup
// size, items, access width or subgroup size. No shared memory and no barrier: this pass reads
// 4 bytes per element and should cost about that.
#include "vko_base.glsl"
#include "vko_push.glsl"
#include "vko_addressing.glsl"
#include "vko_operands.glsl"

struct GradNormScalars {
  uvec2 scratch_address;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  GradNormScalars s;
} pc;

VkoPushHeader rule_header() { return pc.header; }
uvec2 scratch_address() { return pc.s.scratch_address; }
#include "vko_step.glsl"
#include "vko_reduce.glsl"
VKO_NO_RULE_SCALARS

#define OP_G 1

// This step's settings for the group of the dispatch.
float inv_scale, clip_value, p;
uint kind;
bool clipped;
void load_settings(uint group) {
  inv_scale = vko_control_u(VKO_C_SCALER) != 0u ? 1.0 / vko_control_f(VKO_C_SCALE) : 1.0;
  const bool group_clipped = vko_group_clipped(group);
  clip_value = group_clipped ? vko_control_f(VKO_C_CLIP_VALUE) : 0.0;
  kind = vko_control_u(VKO_C_NORM_KIND);
  p = vko_control_f(VKO_C_NORM_P);
  clipped = vko_control_f(VKO_C_MAX_NORM) > 0.0 && group_clipped;
}

// Four elements into the accumulators: norm contributions (sums, or maxima for the inf norm)
// and the largest exponent field seen (all ones: non-finite). Lanes past a tensor's end hold 0,
// which adds nothing. `how` is a constant at each call (see MODE_*), so each inlined copy keeps
// only its own arithmetic: per-element branches cost as much as the loads on CPU drivers.
#define MODE_FLAG_ONLY 0u  // group not clipped: the non-finite flag only
#define MODE_NORM_2 1u     // the 2-norm without value clipping (the usual case)
#define MODE_ANY 2u        // value clipping, or another norm
vec4 acc;
uvec4 exponents;
void accumulate(vec4 g, const uint how) {
  precise vec4 u = g * inv_scale;
  exponents = max(exponents, floatBitsToUint(u) & 0x7f800000u);
  if (how == MODE_FLAG_ONLY) return;
  if (how == MODE_NORM_2) {
    precise vec4 s = acc + u * u;
    acc = s;
    return;
  }
  if (clip_value > 0.0) u = clamp(u, -clip_value, clip_value);
  const vec4 a = abs(u);
  if (kind == VKO_NORM_2) {
    precise vec4 s = acc + a * a;
    acc = s;
  } else if (kind == VKO_NORM_P) {
    precise vec4 s = acc + pow(a, vec4(p));
    acc = s;
  } else if (kind == VKO_NORM_1) {
    precise vec4 s = acc + a;
    acc = s;
  } else {
    acc = max(acc, a);
  }
}

// The chunk's elements [first, first + count) of the segment, in order: whole aligned chunks
// (all but tails) with whole accesses and a constant trip count.
void accumulate_chunk(uint first, uint count, bool aligned, const uint how) {
  if (count == 256u && aligned) {
    for (uint e = 0u; e < 256u; e += VKO_WIDTH) {
      vec4 lo = vec4(0), hi = vec4(0);
      vko_load1(lo, hi, (first + e) / VKO_WIDTH, first + e, VKO_WIDTH, true);
      accumulate(lo, how);
#ifdef VKO_WIDE
      accumulate(hi, how);
#endif
    }
    return;
  }
  for (uint e = 0u; e < count; e += VKO_WIDTH) {
    const uint lanes = min(uint(VKO_WIDTH), count - e);
    vec4 lo = vec4(0), hi = vec4(0);
    vko_load1(lo, hi, (first + e) / VKO_WIDTH, first + e, lanes, aligned && lanes == VKO_WIDTH);
    accumulate(lo, how);
#ifdef VKO_WIDE
    accumulate(hi, how);
#endif
  }
}

// Chunks each invocation sums, one after another: 1 on GPUs; up to 8 on CPU drivers, where
// finding the segment and loading the settings cost as much as a chunk's loads
// (runtime/optimizer_plan.cpp, plan_grad_control).
layout(constant_id = 3) const uint CHUNK_RUN = 1;

void main() {
  const VkoPushHeader h = pc.header;
  const uint chunks_per_block = (VKO_CAREFUL ? 1u : VKO_ITEMS) * gl_WorkGroupSize.x * VKO_WIDTH / 256u;
  const uint runs_per_block = chunks_per_block / CHUNK_RUN;
  const uint run = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  const uint block = h.block_base + run / runs_per_block;
  if (block >= h.block_end) return;
  const uint si = vko_block_segment(h, block) - h.seg_base;
  const uvec4 head = vko_table_head(h, si);
  const uint run_first = ((block - head.x) * chunks_per_block + (run % runs_per_block) * CHUNK_RUN) * 256u;
  if (run_first >= head.y) return;  // the segment's last block ends before this run
  const uvec4 extra = vko_table_extra(h, si);
  vko_dtypes = VKO_MIXED ? extra.w : VKO_DTYPES;
  vko_refs[0] = vko_table_ref(h, si, 0);  // the gradient is operand 1
  load_settings(h.step_group);
  const bool aligned = head.z != 0u;
  const uint chunks = min(CHUNK_RUN, (head.y - run_first + 255u) / 256u);
  const uint pad = vko_table_pad(h, si).x;
  for (uint c = 0u; c < chunks; ++c) {
    const uint first = run_first + c * 256u;  // in the segment
    acc = vec4(0);
    exponents = uvec4(0);
    const uint count = min(256u, head.y - first);
    if (!clipped)
      accumulate_chunk(first, count, aligned, MODE_FLAG_ONLY);
    else if (kind == VKO_NORM_2 && !(clip_value > 0.0))
      accumulate_chunk(first, count, aligned, MODE_NORM_2);
    else
      accumulate_chunk(first, count, aligned, MODE_ANY);
    float norm;
    if (kind == VKO_NORM_INF) {
      norm = max(max(acc.x, acc.y), max(acc.z, acc.w));
    } else {
      precise float s = ((acc.x + acc.y) + acc.z) + acc.w;
      norm = s;
    }
    const bool nonfinite = any(equal(exponents, uvec4(0x7f800000u)));
    const float flag = nonfinite ? (clipped ? 2.0 : 1.0) : 0.0;
    vko_scratch_store(pad + (extra.x + first) / 256u, vec2(norm, flag));
  }
}
