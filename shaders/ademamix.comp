#version 450
#extension GL_GOOGLE_include_directive : require
// AdEMAMix (Pagliardini et al. 2024; apple/ml-ademamix), per element:
//   g <- maximize ? -g : g
//   m1 <- b1*m1 + (1-b1)*g ; m2 <- b3*m2 + (1-b3)*g ; v <- b2*v + (1-b2)*g^2
//   p <- p - lr*((m1/bc1 + alpha*m2) / (sqrt(v)/sqrt(bc2) + eps) + wd*p)
// alpha and b3 are the step's (their warmups), computed per step like the bias corrections.
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct AdemamixScalars {
  float lr;
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float beta3;  // of this step (half-life warmup)
  float one_minus_beta3;
  float alpha;  // of this step (linear warmup)
  float bias_correction1;
  float sqrt_bias_correction2;
  float eps;
  float weight_decay;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AdemamixScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M1 2
#define OP_M2 3
#define OP_V 4

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdemamixScalars)

// ln 0.5 / ln(b + 1e-8) - 1: the half-life (in steps) of an EMA with factor b, as the reference
// computes it, double-float.
vec2 half_life(vec2 b) {
  const vec2 log2_b = vko_df_log2(vko_df_add(b, vec2(1e-8, 0.0)));
  return vko_df_sub(vko_df_div(-VKO_DF_ONE, log2_b), VKO_DF_ONE);
}

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/ademamix.cpp), in double-float rounded once.
AdemamixScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  vec2 beta3 = vko_hyper(g, VKO_HYPER_beta3), alpha = vko_hyper(g, VKO_HYPER_alpha);
  const vec2 beta3_warmup = vko_hyper(g, VKO_HYPER_beta3_warmup), alpha_warmup = vko_hyper(g, VKO_HYPER_alpha_warmup);
  const vec2 t = vko_df_from_uint(step.t);
  if (vko_df_sub(t, beta3_warmup).x < 0.0) {  // (a warmup of 0 never holds)
    const vec2 a = vko_df_div(t, beta3_warmup);
    const vec2 h = vko_df_add(vko_df_mul(vko_df_sub(VKO_DF_ONE, a), half_life(beta1)), vko_df_mul(a, half_life(beta3)));
    beta3 = vko_df_exp2(vko_df_div(-VKO_DF_ONE, vko_df_add(h, VKO_DF_ONE)));  // 0.5^(1/(h+1))
  }
  if (vko_df_sub(t, alpha_warmup).x < 0.0) alpha = vko_df_mul(vko_df_div(t, alpha_warmup), alpha);
  AdemamixScalars s;
  s.lr = vko_df_float(step.lr);
  s.beta1 = vko_df_float(beta1);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.beta3 = vko_df_float(beta3);
  s.one_minus_beta3 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta3));
  s.alpha = vko_df_float(alpha);
  s.bias_correction1 = vko_df_float(vko_one_minus_pow(beta1, step.t));
  s.sqrt_bias_correction2 = vko_df_float(vko_df_sqrt(vko_one_minus_pow(beta2, step.t)));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(vko_hyper(g, VKO_HYPER_weight_decay));
  return s;
}
uint rule_operands() { return 5u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise const vec4 p = x[OP_P];
  precise const vec4 m1 = fma(vec4(S.one_minus_beta1), g, S.beta1 * x[OP_M1]);  // mul_(b1).add_(g, 1-b1)
  precise const vec4 m2 = fma(vec4(S.one_minus_beta3), g, S.beta3 * x[OP_M2]);
  precise const vec4 v = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);  // mul_(b2).addcmul_(g, g, 1-b2)
  precise const vec4 denom = sqrt(v) / S.sqrt_bias_correction2 + S.eps;
  precise const vec4 update = fma(vec4(S.weight_decay), p, (m1 / S.bias_correction1 + S.alpha * m2) / denom);
  x[OP_P] = fma(vec4(-S.lr), update, p);  // p.add_(update, alpha=-lr)
  x[OP_M1] = m1;
  x[OP_M2] = m2;
  x[OP_V] = v;
}
