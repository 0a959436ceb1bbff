#version 450
#extension GL_GOOGLE_include_directive : require
// Adafactor, pass 2 of 4 (after the row/column statistics of adafactor_factors.comp): the 1-D
// second moment, the update direction U, and per-block partial sums of p^2 and U^2 (for RMS(p)
// and RMS(U), reduced per tensor by reduce.comp). See adafactor.glsl.
#define VKO_PARTIALS 2
#define VKO_NEEDS_EXTRA true
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;
  uint factor_base;
  float w;  // 1 - beta2_t = t^beta2_decay
  float eps1;
  float eps1_sq;
} pc;

#include "adafactor.glsl"
#define VKO_OP_READ(k) (k == OP_P || k == OP_G || (k == OP_VAR && !ADAFACTOR_FACTORED))
#define VKO_OP_WRITE(k) (k == OP_VAR && !ADAFACTOR_FACTORED)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  // variance.lerp_(grad * grad, 1 - beta2_t) with torch's lerp (common.glsl)
  if (!ADAFACTOR_FACTORED) x[OP_VAR] = vko_lerp(x[OP_VAR], g * g, pc.w);
  x[OP_U] = adafactor_direction(g, x[OP_VAR]);
}

vec2 vko_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  const vec4 p = x[OP_P] * mask, u = x[OP_U] * mask;
  return vec2(dot(p, p), dot(u, u));
}

VKO_ELEMENTWISE_MAIN
