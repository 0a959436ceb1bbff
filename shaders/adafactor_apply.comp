#version 450
#extension GL_GOOGLE_include_directive : require
// Adafactor, pass 4 of 4: with the tensor's sums of p^2 and U^2 (n elements),
//   alpha = max(eps2, sqrt(sum p^2 / n)) * rho_t ; denom = max(1, sqrt(sum U^2 / n) / d)
//   u = alpha / denom * U ; FIRST_MOMENT: m <- b1*m + (1-b1)*u, u = m
//   p <- p * (1 - lr*wd) - u
// U recomputed exactly as in pass 2 (adafactor.glsl), from the stored second moment.
#define VKO_NEEDS_EXTRA true
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool FIRST_MOMENT = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;  // per-tensor (sum p^2, sum U^2)
  uint factor_base;
  float eps1;
  float eps2;
  float rho;
  float d;
  float decay_scale;  // 1 - lr*wd
  float beta1;
  float one_minus_beta1;
  float eps1_sq;
} pc;

#include "adafactor.glsl"
#define OP_M 5  // first moment (beta1 > 0); this pass does not use OP_U
#undef VKO_NUM_OPS
#define VKO_NUM_OPS 6
#define VKO_OP_READ(k) \
  (k == OP_P || k == OP_G || (k == OP_VAR && !ADAFACTOR_FACTORED) || (k == OP_M && FIRST_MOMENT))
#define VKO_OP_WRITE(k) (k == OP_P || (k == OP_M && FIRST_MOMENT))

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  const vec4 u = adafactor_direction(g, x[OP_VAR]);
  const vec2 sums = VKO_SCRATCH(pc.sums_base + vko_segment_head.w);
  const float n = float(vko_segment_extra.z);
  const float alpha = max(pc.eps2, sqrt(sums.x / n)) * pc.rho;
  const float denom = max(1.0, sqrt(sums.y / n) / pc.d);
  vec4 step = (alpha / denom) * u;
  if (FIRST_MOMENT) {
    step = pc.beta1 * x[OP_M] + pc.one_minus_beta1 * step;
    x[OP_M] = step;
  }
  x[OP_P] = x[OP_P] * pc.decay_scale - step;
}

VKO_ELEMENTWISE_MAIN
