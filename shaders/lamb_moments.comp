#version 450
#extension GL_GOOGLE_include_directive : require
// LAMB, pass 1 of 3: moments, and per-block partial sums of p^2 and r^2 for the trust ratio.
//   g <- maximize ? -g : g ; m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2
//   r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p
// Pass 2 (reduce.comp) sums the partials per tensor; pass 3 (lamb_apply.comp) updates p.
#define VKO_PARTIALS 2
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;
  float inv_bc1;
  float inv_bc2;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3
#define VKO_NUM_OPS 4
#define VKO_OP_READ(k) true
#define VKO_OP_WRITE(k) (k == OP_M || k == OP_V)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  // 1-b1 and 1-b2 come from the host (double, rounded once); no product is fused.
  precise const vec4 m = pc.beta1 * x[OP_M] + pc.one_minus_beta1 * g;
  precise const vec4 v = pc.beta2 * x[OP_V] + pc.one_minus_beta2 * g * g;
  x[OP_M] = m;
  x[OP_V] = v;
}

vec2 vko_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  const vec4 p = x[OP_P] * mask;
  const vec4 r = (x[OP_M] * pc.inv_bc1 / (sqrt(x[OP_V] * pc.inv_bc2) + pc.eps) + pc.weight_decay * x[OP_P]) * mask;
  return vec2(dot(p, p), dot(r, r));
}

VKO_ELEMENTWISE_MAIN
