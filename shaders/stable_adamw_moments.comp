#version 450
#extension GL_GOOGLE_include_directive : require
// StableAdamW, pass 1 of 3: moments with debiased betas, and per-chunk partial sums of
// g^2 / max(v, eps^2) for the tensor's RMS (optimi's StableAdamW, Wortsman et al. 2023):
//   g <- maximize ? -g : g ; b^ = b(1 - b^(t-1))/(1 - b^t)
//   m <- lerp(m, g, 1-b1^) ; v <- b2^*v + (1-b2^)*g^2
// Pass 2 (reduce.comp) sums the partials per tensor; pass 3 (stable_adamw_apply.comp) updates p.
#define VKO_PARTIALS 2
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct StableAdamwMomentsScalars {
  float one_minus_beta1;  // 1 - b1^
  float beta2;            // b2^
  float one_minus_beta2;  // 1 - b2^
  float eps_sq;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;
  StableAdamwMomentsScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(StableAdamwMomentsScalars)

// b(1 - b^(t-1)) / (1 - b^t), double-float.
vec2 debiased(vec2 beta, uint t) {
  return vko_df_div(vko_df_mul(beta, vko_one_minus_pow(beta, t - 1u)), vko_one_minus_pow(beta, t));
}

// The scalars of step.t on the device, as pass_push_constants (pass 0) computes them on the host
// (runtime/rules/stable_adamw.cpp), in double-float rounded once.
StableAdamwMomentsScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = debiased(vko_step_beta1(step, VKO_HYPER_beta1), step.t);
  const vec2 beta2 = debiased(vko_hyper(g, VKO_HYPER_beta2), step.t);
  const vec2 eps = vko_hyper(g, VKO_HYPER_eps);
  StableAdamwMomentsScalars s;
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps_sq = vko_df_float(vko_df_mul(eps, eps));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return op != OP_P; }
bool rule_writes(uint op) { return op == OP_M || op == OP_V; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }
uint rule_partials_base() { return pc.scratch.partials_base; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  x[OP_M] = vko_lerp(x[OP_M], g, S.one_minus_beta1);                   // exp_avg.lerp_(g, 1-b1^)
  x[OP_V] = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);         // mul_(b2^).addcmul_(g, g, 1-b2^)
}

vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  const vec4 g = x[OP_G];  // the sign does not matter here
  precise const vec4 ratio = (g * g) / max(x[OP_V], vec4(S.eps_sq)) * mask;
  precise const float sum = ratio.x + ratio.y + ratio.z + ratio.w;
  return vec2(sum, 0.0);
}
