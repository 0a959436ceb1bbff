#version 450
#extension GL_GOOGLE_include_directive : require
// LAMB, pass 3 of 3: p <- p - lr * trust * r with the tensor's norms from pass 2:
//   r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p   (the same float operations as pass 1)
//   trust = (|p| > 0 and |r| > 0) ? |p| / |r| : 1, clamped to [min_trust, max_trust] when max > 0
#include "common.glsl"

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;  // per-tensor (sum p^2, sum r^2)
  float lr;
  float eps;
  float weight_decay;
  float inv_bc1;
  float inv_bc2;
  float min_trust;
  float max_trust;  // 0: no clamp
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3
#define VKO_NUM_OPS 4
#define VKO_OP_READ(k) (k != OP_G)
#define VKO_OP_WRITE(k) (k == OP_P)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec2 sums = VKO_SCRATCH(pc.sums_base + vko_segment_head.w);
  const float p_norm = sqrt(sums.x), r_norm = sqrt(sums.y);
  float trust = (p_norm > 0.0 && r_norm > 0.0) ? p_norm / r_norm : 1.0;
  if (pc.max_trust > 0.0) trust = clamp(trust, pc.min_trust, pc.max_trust);
  const vec4 r = x[OP_M] * pc.inv_bc1 / (sqrt(x[OP_V] * pc.inv_bc2) + pc.eps) + pc.weight_decay * x[OP_P];
  x[OP_P] -= pc.lr * trust * r;
}

VKO_ELEMENTWISE_MAIN
