#version 450
#extension GL_GOOGLE_include_directive : require
// LAMB, pass 3 of 3: p <- p - lr * trust * r with the tensor's norms from pass 2:
//   r = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p   (the same float operations as pass 1)
//   trust = (|p| > 0 and |r| > 0) ? |p| / |r| : 1, clamped to [min_trust, max_trust] when max > 0;
//   1 when unit_trust (use_nvlamb off and no weight decay: Apex FusedLAMB's default)
#include "vko_elementwise.glsl"
#include "vko_reduce.glsl"

struct LambApplyScalars {
  float lr;
  float eps;
  float weight_decay;
  float inv_bc1;
  float inv_bc2;
  float min_trust;
  float max_trust;   // 0: no clamp
  float unit_trust;  // 1: trust is 1
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;  // sums_base: per-tensor (sum p^2, sum r^2)
  LambApplyScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(LambApplyScalars)

// The scalars of step.t on the device, as pass_push_constants (pass 2) computes them on the host
// (runtime/rules/lamb.cpp), in double-float rounded once.
LambApplyScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const bool corrected = vko_hyper(g, VKO_HYPER_bias_correction).x != 0.0;
  const vec2 bc1 = corrected ? vko_one_minus_pow(beta1, step.t) : VKO_DF_ONE;
  const vec2 bc2 = corrected ? vko_one_minus_pow(beta2, step.t) : VKO_DF_ONE;
  LambApplyScalars s;
  s.lr = vko_df_float(step.lr);
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(vko_hyper(g, VKO_HYPER_weight_decay));
  s.inv_bc1 = vko_df_float(vko_df_div(VKO_DF_ONE, bc1));
  s.inv_bc2 = vko_df_float(vko_df_div(VKO_DF_ONE, bc2));
  s.min_trust = vko_df_float(vko_hyper(g, VKO_HYPER_min_trust_ratio));
  s.max_trust = vko_df_float(vko_hyper(g, VKO_HYPER_max_trust_ratio));
  s.unit_trust = (vko_hyper(g, VKO_HYPER_use_nvlamb).x == 0.0 && s.weight_decay == 0.0) ? 1.0 : 0.0;
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return op != OP_G; }
bool rule_writes(uint op) { return op == OP_P; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec2 sums = vko_scratch(pc.scratch.sums_base + vko_segment_head.w);
  const float p_norm = sqrt(sums.x), r_norm = sqrt(sums.y);
  float trust = (p_norm > 0.0 && r_norm > 0.0) ? p_norm / r_norm : 1.0;
  if (S.max_trust > 0.0) trust = clamp(trust, S.min_trust, S.max_trust);
  if (S.unit_trust != 0.0) trust = 1.0;
  const vec4 r = x[OP_M] * S.inv_bc1 / (sqrt(x[OP_V] * S.inv_bc2) + S.eps) + S.weight_decay * x[OP_P];
  x[OP_P] -= S.lr * trust * r;
}
