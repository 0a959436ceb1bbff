#version 450
#extension GL_GOOGLE_include_directive : require
// Adafactor, pass 2 of 4 (after the row/column statistics of adafactor_factors.comp): the 1-D
// second moment, the update direction U, and per-chunk partial sums of p^2 and U^2 (for RMS(p)
// and RMS(U), reduced per tensor by reduce.comp). See adafactor.glsl.
#define VKO_PARTIALS 2
#define VKO_NEEDS_EXTRA true
#include "vko_elementwise.glsl"
#include "vko_math.glsl"
#include "adafactor.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct AdafactorUpdateScalars {
  float w;  // 1 - beta2_t = t^beta2_decay
  float eps1;
  float eps1_sq;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;
  uint factor_base;  // the tensors' row means (filled by the optimizer)
  AdafactorUpdateScalars s;
} pc;

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdafactorUpdateScalars)
// The scalars of step.t on the device, as runtime/rules/adafactor.cpp computes them on the host.
AdafactorUpdateScalars rule_device_scalars(VkoStep step) {
  const vec2 eps1 = vko_hyper(step.group, VKO_HYPER_eps1);
  AdafactorUpdateScalars s;
  s.w = vko_df_float(vko_df_pow_real(vko_df_from_uint(step.t), vko_hyper(step.group, VKO_HYPER_beta2_decay)));
  s.eps1 = vko_df_float(eps1);
  s.eps1_sq = vko_df_float(vko_df_mul(eps1, eps1));
  return s;
}
uint rule_operands() { return 5u; }
bool rule_reads(uint op) { return op == OP_P || op == OP_G || (op == OP_VAR && !ADAFACTOR_FACTORED); }
bool rule_writes(uint op) { return op == OP_VAR && !ADAFACTOR_FACTORED; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }
uint rule_partials_base() { return pc.scratch.partials_base; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  // variance.lerp_(grad * grad, 1 - beta2_t) with torch's lerp (vko_math.glsl)
  if (!ADAFACTOR_FACTORED) x[OP_VAR] = vko_lerp(x[OP_VAR], g * g, S.w);
  x[OP_U] = adafactor_direction(g, x[OP_VAR], pc.factor_base, S.eps1, S.eps1_sq);
}

vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  precise const vec4 p = x[OP_P] * mask, u = x[OP_U] * mask;
  precise const vec2 sums = vec2(dot(p, p), dot(u, u));
  return sums;
}
