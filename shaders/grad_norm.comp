#version 450
#extension GL_GOOGLE_include_directive : require
// Gradient control, pass 1 (vko_grads.glsl): per 256-element chunk of every gradient, x = the
// norm contribution of the unscaled, value-clipped gradient (clipped groups only; sum of |g|^p,
// or max |g| for the inf norm) and y = 2 where an unscaled element of a clipped group is
// non-finite, 1 where one of another group is, else 0. Lanes and items are combined in index
// order, so the chunks hold the same bits for any workgroup size.
#define VKO_CHUNK_SUMS
#define VKO_NEEDS_EXTRA true
#include "vko_elementwise.glsl"

struct GradNormScalars {
  uvec2 scratch_address;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  GradNormScalars s;
} pc;

#define OP_G 1

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
uvec2 scratch_address() { return pc.s.scratch_address; }
uint rule_operands() { return 2u; }
bool rule_reads(uint op) { return op == OP_G; }
bool rule_writes(uint op) { return false; }

// This step's settings, read once per workgroup.
float inv_scale, clip_value, p;
uint kind;
bool clipped;
void rule_load_scalars(uint tensor) {
  inv_scale = vko_control_u(VKO_C_SCALER) != 0u ? 1.0 / vko_control_f(VKO_C_SCALE) : 1.0;
  const bool group_clipped = vko_group_clipped(rule_header().step_group);
  clip_value = group_clipped ? vko_control_f(VKO_C_CLIP_VALUE) : 0.0;
  kind = vko_control_u(VKO_C_NORM_KIND);
  p = vko_control_f(VKO_C_NORM_P);
  clipped = vko_control_f(VKO_C_MAX_NORM) > 0.0 && group_clipped;
}
void rule_prologue(VkoStep step) {}

// x[2]: each lane's norm contribution, x[3].x: the item's non-finite flag (scratch lanes:
// operands the pass does not read). Uniform branches on the norm kind: only its arithmetic runs.
void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 u = x[OP_G] * inv_scale;
  const bool nonfinite = any(equal(floatBitsToUint(u) & 0x7f800000u, uvec4(0x7f800000u)));
  x[3].x = nonfinite ? (clipped ? 2.0 : 1.0) : 0.0;
  if (!clipped) {
    x[2] = vec4(0);
    return;
  }
  if (clip_value > 0.0) u = clamp(u, -clip_value, clip_value);
  const vec4 a = abs(u);
  if (kind == VKO_NORM_2) {
    precise vec4 sq = a * a;
    x[2] = sq;
  } else if (kind == VKO_NORM_P) {
    x[2] = pow(a, vec4(p));
  } else {
    x[2] = a;
  }
}

vec2 rule_combine(vec2 a, vec2 b) { return vko_norm_combine(a, b, kind == VKO_NORM_INF); }

// Lanes past a tensor's end hold 0 (vko_item), which adds nothing: the mask is not needed.
vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  const vec4 c = x[2];
  if (kind == VKO_NORM_INF) return vec2(max(max(max(c.x, c.y), c.z), c.w), x[3].x);
  precise float sum = ((c.x + c.y) + c.z) + c.w;
  return vec2(sum, x[3].x);
}
