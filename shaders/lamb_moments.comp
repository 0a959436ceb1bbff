#version 450
#extension GL_GOOGLE_include_directive : require
// LAMB, pass 1 of 3: moments, and per-chunk partial sums of p^2 and r^2 for the trust ratio.
//   g <- maximize ? -g : g ; m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2
//   r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p
// Pass 2 (reduce.comp) sums the partials per tensor; pass 3 (lamb_apply.comp) updates p.
#define VKO_PARTIALS 2
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct LambMomentsScalars {
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;
  float inv_bc1;
  float inv_bc2;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;
  LambMomentsScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(LambMomentsScalars)

// The scalars of step.t on the device, as pass_push_constants (pass 0) computes them on the host
// (runtime/rules/lamb.cpp), in double-float rounded once.
LambMomentsScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const bool corrected = vko_hyper(g, VKO_HYPER_bias_correction).x != 0.0;
  const vec2 bc1 = corrected ? vko_one_minus_pow(beta1, step.t) : VKO_DF_ONE;
  const vec2 bc2 = corrected ? vko_one_minus_pow(beta2, step.t) : VKO_DF_ONE;
  LambMomentsScalars s;
  s.beta1 = vko_df_float(beta1);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(vko_hyper(g, VKO_HYPER_weight_decay));
  s.inv_bc1 = vko_df_float(vko_df_div(VKO_DF_ONE, bc1));
  s.inv_bc2 = vko_df_float(vko_df_div(VKO_DF_ONE, bc2));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op == OP_M || op == OP_V; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }
uint rule_partials_base() { return pc.scratch.partials_base; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  // 1-b1 and 1-b2 come from the host (double, rounded once); no product is fused.
  precise const vec4 m = S.beta1 * x[OP_M] + S.one_minus_beta1 * g;
  precise const vec4 v = S.beta2 * x[OP_V] + S.one_minus_beta2 * g * g;
  x[OP_M] = m;
  x[OP_V] = v;
}

vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  precise const vec4 p = x[OP_P] * mask;
  precise const vec4 r = (x[OP_M] * S.inv_bc1 / (sqrt(x[OP_V] * S.inv_bc2) + S.eps) + S.weight_decay * x[OP_P]) * mask;
  precise const vec2 sums = vec2(dot(p, p), dot(r, r));
  return sums;
}
