#version 450
#extension GL_GOOGLE_include_directive : require
// Adafactor, pass 1 of 4, for a 2-D tensor (rows x cols, row-major), one dispatch per tensor
// (buffer device addresses only). Fixed-order sums: the same result on every run.
//   MODE 0, a workgroup per row r:      row_var[r] <- lerp(row_var[r], sum_j g[r,j]^2 / cols, w)
//   MODE 1, an invocation per column c: col_var[c] <- lerp(col_var[c], sum_i g[i,c]^2 / rows, w)
//   MODE 2, one workgroup:              scratch[out_index] = mean(row_var)   (after modes 0, 1)
// A piece of a tensor split between ranks (first, count: its elements of the whole tensor; the
// gradient's element 0 is the piece's first) keeps the whole tensor's row_var and col_var, and
// its statistics take sums from every rank: the scratch entries from out_index hold one sum per
// row, then per column (.x; .y is 0), which the ranks add up between two parts of the step.
//   MODE 3, a workgroup per row r:      sums[r] = sum of g^2 over the piece's part of row r (0
//                                       for rows it has none of; whole rows: mode 0's sum)
//   MODE 4, an invocation per column c: sums[rows + c] = sum of g^2 over the piece's rows of c
//   MODE 5, an invocation per entry:    row_var, col_var from the ranks' added sums, as modes
//                                       0 and 1; then MODE 2 as for whole tensors
// Rows that start aligned to the wide access are read VKO_WIDTH floats at a time (the access
// count, not the bytes, is what costs on CPU drivers).
// In a replayable step (VKO_REPLAY) the weight w is the device's t^beta2_decay of the tensor's
// step; with gradient control (VKO_GRADS) g is read through it and a skipped step writes nothing.
#include "vko_addressing.glsl"
#include "vko_reduce.glsl"
#include "vko_step.glsl"

layout(constant_id = 3) const uint MODE = 0;

struct AdafactorFactorsScalars {
  uvec2 scratch_address;
  uvec2 grad_address;
  uvec2 row_address;
  uvec2 col_address;
  uint rows;
  uint cols;
  float w;
  uint out_index;
  uint wide;  // 1: rows start VKO_WIDTH-float aligned (aligned base, cols % VKO_WIDTH == 0)
  uint tensor, group;  // (replayable steps)
  uint first, count;   // a split piece's elements of the whole tensor (modes 3, 4)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;  // (not read)
  AdafactorFactorsScalars s;
} pc;

uvec2 scratch_address() { return pc.s.scratch_address; }
VkoPushHeader rule_header() { return pc.header; }

// The weight of the new statistics: pushed, or the device's t^beta2_decay (adafactor_update.comp).
float weight() {
  if (!VKO_REPLAY) return pc.s.w;
  const uint t = vko_step_word(vko_tensor_record(pc.s.tensor)) + 1u;
  return vko_df_float(vko_df_pow_real(vko_df_from_uint(t), vko_hyper(pc.s.group, VKO_HYPER_beta2_decay)));
}
#ifdef VKO_BDA
float grad(uint i) {
  const float g = FloatRef(pc.s.grad_address).x[i];
  return VKO_GRADS ? vko_grad_transform(vec4(g)).x : g;
}
#endif

// Sum of squares and per-lane squares of VKO_WIDTH consecutive floats at item i of the gradient.
#ifdef VKO_BDA
void load_item(uint i, out vec4 lo, out vec4 hi) {
#ifdef VKO_WIDE
  vko_unpack(WideRef(pc.s.grad_address).x[i], lo, hi);
#else
  lo = WideRef(pc.s.grad_address).x[i];
  hi = vec4(0);
#endif
  if (VKO_GRADS) {
    lo = vko_grad_transform(lo);
    hi = vko_grad_transform(hi);
  }
}
#endif

shared float partial[gl_WorkGroupSize.x];

float tree_sum(float value) {
  const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationID.x;
  partial[lid] = value;
  uint span = 1;
  while (span < wg) span <<= 1;
  for (uint s = span >> 1; s > 0; s >>= 1) {
    barrier();
    if (lid < s && lid + s < wg) partial[lid] += partial[lid + s];
  }
  barrier();
  return partial[0];
}

// The new statistic: old + w * (mean - old), as torch's lerp_ of row_var and col_var.
float ema(float old, float mean, float w) { return old + w * (mean - old); }

void main() {
#ifdef VKO_BDA
  const uint wg = gl_WorkGroupSize.x, lid = gl_LocalInvocationID.x;
  const uint id = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (VKO_GRADS) {
    vko_load_grads(pc.s.group);
    if (vko_grads.skip) return;
  }
  const float w = weight();
  if (MODE == 0) {
    if (id >= pc.s.rows) return;
    float acc = 0;
    if (pc.s.wide != 0) {
      const uint per_row = pc.s.cols / VKO_WIDTH;
      for (uint j = lid; j < per_row; j += wg) {
        vec4 lo, hi;
        load_item(id * per_row + j, lo, hi);
        acc += dot(lo, lo) + dot(hi, hi);
      }
    } else {
      for (uint j = lid; j < pc.s.cols; j += wg) {
        const float g = grad(id * pc.s.cols + j);
        acc += g * g;
      }
    }
    const float sum = tree_sum(acc);
    if (lid == 0) FloatRef(pc.s.row_address).x[id] = ema(FloatRef(pc.s.row_address).x[id], sum / float(pc.s.cols), w);
  } else if (MODE == 3) {
    // The piece's columns [begin, end) of row `id` (empty for rows it has none of). Summed as
    // mode 0 sums a row, the same items to the same lanes: a whole row's sum is mode 0's.
    if (id >= pc.s.rows) return;
    const uint row_first = id * pc.s.cols;
    const uint begin = clamp(pc.s.first, row_first, row_first + pc.s.cols) - row_first;
    const uint end = clamp(pc.s.first + pc.s.count, row_first, row_first + pc.s.cols) - row_first;
    const uint base = row_first - pc.s.first;  // (wraps for the piece's first row: only columns >= begin are read)
    if (begin == end) {  // a row the piece has none of (the whole workgroup: no barrier skipped)
      if (lid == 0) vko_scratch_store(pc.s.out_index + id, vec2(0.0));
      return;
    }
    float acc = 0;
    if (pc.s.wide != 0) {
      for (uint j = lid; j < pc.s.cols / VKO_WIDTH; j += wg) {
        if (j * VKO_WIDTH < begin || j * VKO_WIDTH >= end) continue;
        vec4 lo, hi;
        load_item((base + j * VKO_WIDTH) / VKO_WIDTH, lo, hi);
        acc += dot(lo, lo) + dot(hi, hi);
      }
    } else {
      for (uint j = lid; j < pc.s.cols; j += wg) {
        if (j < begin || j >= end) continue;
        const float g = grad(base + j);
        acc += g * g;
      }
    }
    const float sum = tree_sum(acc);
    if (lid == 0) vko_scratch_store(pc.s.out_index + id, vec2(sum, 0.0));
  } else if (MODE == 4) {
    // Column c's elements in the piece: rows [r0, r1), each row's element at r * cols + c.
    const uint c = id * wg + lid;
    if (c >= pc.s.cols) return;
    const uint end = pc.s.first + pc.s.count;
    const uint r0 = pc.s.first / pc.s.cols + (pc.s.first % pc.s.cols > c ? 1u : 0u);
    const uint r1 = end / pc.s.cols + (end % pc.s.cols > c ? 1u : 0u);
    float acc = 0;
    for (uint i = r0; i < r1; ++i) {
      const float g = grad(i * pc.s.cols + c - pc.s.first);
      acc += g * g;
    }
    vko_scratch_store(pc.s.out_index + pc.s.rows + c, vec2(acc, 0.0));
  } else if (MODE == 5) {
    const uint e = id * wg + lid;
    if (e >= pc.s.rows + pc.s.cols) return;
    const float sum = vko_scratch(pc.s.out_index + e).x;
    if (e < pc.s.rows) {
      FloatRef(pc.s.row_address).x[e] = ema(FloatRef(pc.s.row_address).x[e], sum / float(pc.s.cols), w);
    } else {
      const uint c = e - pc.s.rows;
      FloatRef(pc.s.col_address).x[c] = ema(FloatRef(pc.s.col_address).x[c], sum / float(pc.s.rows), w);
    }
  } else if (MODE == 1 && pc.s.wide != 0) {
    // An invocation per VKO_WIDTH adjacent columns: one wide access per row.
    const uint per_row = pc.s.cols / VKO_WIDTH, c8 = id * wg + lid;
    if (c8 >= per_row) return;
    vec4 acc_lo = vec4(0), acc_hi = vec4(0);
    for (uint i = 0; i < pc.s.rows; ++i) {
      vec4 lo, hi;
      load_item(i * per_row + c8, lo, hi);
      acc_lo += lo * lo;
      acc_hi += hi * hi;
    }
    for (uint l = 0; l < VKO_WIDTH; ++l) {
      const uint c = c8 * VKO_WIDTH + l;
      const float sum = l < 4 ? acc_lo[l] : acc_hi[l - 4];
      FloatRef(pc.s.col_address).x[c] = ema(FloatRef(pc.s.col_address).x[c], sum / float(pc.s.rows), w);
    }
  } else if (MODE == 1) {
    const uint c = id * wg + lid;
    if (c >= pc.s.cols) return;
    float acc = 0;
    for (uint i = 0; i < pc.s.rows; ++i) {
      const float g = grad(i * pc.s.cols + c);
      acc += g * g;
    }
    FloatRef(pc.s.col_address).x[c] = ema(FloatRef(pc.s.col_address).x[c], acc / float(pc.s.rows), w);
  } else {
    float acc = 0;
    for (uint i = lid; i < pc.s.rows; i += wg) acc += FloatRef(pc.s.row_address).x[i];
    const float sum = tree_sum(acc);
    if (lid == 0) vko_scratch_store(pc.s.out_index, vec2(sum / float(pc.s.rows), 0.0));
  }
#endif
}
