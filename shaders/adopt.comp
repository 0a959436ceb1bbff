#version 450
#extension GL_GOOGLE_include_directive : require
// ADOPT (Taniguchi et al. 2024; iShohei220/adopt, clipped), per element:
//   g <- maximize ? -g : g ; not decoupled: g <- g + wd*p
//   step 1 (first): v <- g^2 ; p and m unchanged
//   later: decoupled: p <- p*(1 - lr*wd)
//          n = clamp(g / max(sqrt(v), eps), -clip, clip) ; m <- lerp(m, n, 1-b1)
//          p <- p - lr*m ; v <- b2*v + (1-b2)*g^2
// clip = (t-1)^clip_exponent (+inf without clipping), computed per step like the other scalars.
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;

struct AdoptScalars {
  float first;  // 1 on the first step: only v is written
  float lr;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;  // L2 (g += wd*p) when not decoupled
  float decay_scale;   // 1 - lr*wd, when decoupled
  float clip;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AdoptScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdoptScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/adopt.cpp), in double-float rounded once; the clip's power in float.
AdoptScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 wd = vko_hyper(g, VKO_HYPER_weight_decay);
  AdoptScalars s;
  s.first = step.t == 1u ? 1.0 : 0.0;
  s.lr = vko_df_float(step.lr);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(wd);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  const float exponent = vko_df_float(vko_hyper(g, VKO_HYPER_clip_exponent));
  const float steps = float(step.t - 1u);
  // sqrt(sqrt()) for the usual 0.25: two correctly rounded operations rather than pow's exp2/log2.
  const float power = exponent == 0.25 ? sqrt(sqrt(steps)) : (steps == 0.0 ? (exponent == 0.0 ? 1.0 : 0.0)
                                                                           : pow(steps, exponent));
  s.clip = vko_hyper(g, VKO_HYPER_use_clipping).x != 0.0 ? power : uintBitsToFloat(0x7F800000u);
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (!DECOUPLED && S.weight_decay != 0.0) g = fma(vec4(S.weight_decay), p, g);
  if (S.first != 0.0) {
    x[OP_V] = g * g;  // exp_avg_sq.addcmul_(grad, grad) on zeros
    return;
  }
  if (DECOUPLED) p *= S.decay_scale;
  precise const vec4 n = clamp(g / max(sqrt(x[OP_V]), vec4(S.eps)), vec4(-S.clip), vec4(S.clip));
  precise const vec4 m = vko_lerp(x[OP_M], n, S.one_minus_beta1);
  x[OP_P] = fma(vec4(-S.lr), m, p);                                        // param.add_(exp_avg, alpha=-lr)
  x[OP_V] = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);              // mul_(b2).addcmul_(g, g, 1-b2)
  x[OP_M] = m;
}
