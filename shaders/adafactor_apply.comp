#version 450
#extension GL_GOOGLE_include_directive : require
// Adafactor, pass 4 of 4: with the tensor's sums of p^2 and U^2 (n elements),
//   alpha = max(eps2, sqrt(sum p^2 / n)) * rho_t ; denom = max(1, sqrt(sum U^2 / n) / d)
//   u = alpha / denom * U ; FIRST_MOMENT: m <- b1*m + (1-b1)*u, u = m
//   p <- p * (1 - lr*wd) - u
// U recomputed exactly as in pass 2 (adafactor.glsl), from the stored second moment.
#define VKO_NEEDS_EXTRA true
#include "vko_elementwise.glsl"
#include "vko_reduce.glsl"
#include "adafactor.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool FIRST_MOMENT = false;

struct AdafactorApplyScalars {
  float eps1;
  float eps2;
  float rho;
  float d;
  float decay_scale;  // 1 - lr*wd
  float beta1;
  float one_minus_beta1;
  float eps1_sq;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;  // sums_base: per-tensor (sum p^2, sum U^2)
  uint factor_base;  // the tensors' row means (filled by the optimizer)
  AdafactorApplyScalars s;
} pc;

#define OP_M 5  // first moment (beta1 > 0); this pass does not use OP_U

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdafactorApplyScalars)
// The scalars of step.t on the device, as runtime/rules/adafactor.cpp computes them on the host:
// rho = min(lr_t, 1/sqrt(t)).
AdafactorApplyScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 eps1 = vko_hyper(g, VKO_HYPER_eps1), beta1 = vko_step_beta1(step, VKO_HYPER_beta1);
  const vec2 inv_sqrt_t = vko_df_div(VKO_DF_ONE, vko_df_sqrt(vko_df_from_uint(step.t)));
  AdafactorApplyScalars s;
  s.eps1 = vko_df_float(eps1);
  s.eps2 = vko_df_float(vko_hyper(g, VKO_HYPER_eps2));
  s.rho = vko_df_float(vko_df_le(step.lr, inv_sqrt_t) ? step.lr : inv_sqrt_t);
  s.d = vko_df_float(vko_hyper(g, VKO_HYPER_d));
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, vko_hyper(g, VKO_HYPER_weight_decay))));
  s.beta1 = vko_df_float(beta1);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.eps1_sq = vko_df_float(vko_df_mul(eps1, eps1));
  return s;
}
uint rule_operands() { return 6u; }
bool rule_reads(uint op) {
  return op == OP_P || op == OP_G || (op == OP_VAR && !ADAFACTOR_FACTORED) || (op == OP_M && FIRST_MOMENT);
}
bool rule_writes(uint op) { return op == OP_P || (op == OP_M && FIRST_MOMENT); }
uvec2 scratch_address() { return pc.scratch.scratch_address; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  const vec4 u = adafactor_direction(g, x[OP_VAR], pc.factor_base, S.eps1, S.eps1_sq);
  const vec2 sums = vko_scratch(pc.scratch.sums_base + vko_segment_head.w);
  const float n = float(vko_segment_extra.z);
  const float alpha = max(S.eps2, sqrt(sums.x / n)) * S.rho;
  const float denom = max(1.0, sqrt(sums.y / n) / S.d);
  vec4 step = (alpha / denom) * u;
  if (FIRST_MOMENT) {
    step = S.beta1 * x[OP_M] + S.one_minus_beta1 * step;
    x[OP_M] = step;
  }
  x[OP_P] = x[OP_P] * S.decay_scale - step;
}
