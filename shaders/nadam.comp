#version 450
#extension GL_GOOGLE_include_directive : require
// NAdam, torch.optim.NAdam (Dozat's momentum schedule; the coefficients come from the host,
// which keeps the running product mu_product per tensor, rounded to float as torch's float32
// state, or in replayable recordings from the prologue, which carries it in step.carry.x):
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- lerp(m, g, 1-b1) ; v <- b2*v + (1-b2)*g^2 ; d = sqrt(v/bc2) + eps
//   p <- p - coef_g * g/d - coef_m * m/d,
//   coef_g = lr*(1-mu_t)/(1-P_t), coef_m = lr*mu_{t+1}/(1-P_t*mu_{t+1})
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;

struct NAdamScalars {
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd
  float coef_g;
  float coef_m;
  float bc2;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  NAdamScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(NAdamScalars)

// mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)), double-float.
vec2 nadam_mu(vec2 beta1, vec2 momentum_decay, uint t) {
  const vec2 base = vko_df_div(vec2(24.0, 0.0), vec2(25.0, 0.0));  // 0.96
  const vec2 decay = vko_df_pow(base, vko_df_mul(vko_df_from_uint(t), momentum_decay));
  return vko_df_mul(beta1, vko_df_sub(VKO_DF_ONE, vko_df_mul(vec2(0.5, 0.0), decay)));
}

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/nadam.cpp), in double-float rounded once; the carried mu_product (carry.x) is
// multiplied in float, as torch's float32 state and the host's product_at.
NAdamScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 wd = vko_hyper(g, VKO_HYPER_weight_decay), psi = vko_hyper(g, VKO_HYPER_momentum_decay);
  const vec2 mu = nadam_mu(beta1, psi, step.t), mu_next = nadam_mu(beta1, psi, step.t + 1u);
  precise const float product_f = step.carry.x * vko_df_float(mu);
  vko_next_carry.x = product_f;
  const vec2 product = vec2(product_f, 0.0);
  NAdamScalars s;
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(wd);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  s.coef_g = vko_df_float(
      vko_df_div(vko_df_mul(step.lr, vko_df_sub(VKO_DF_ONE, mu)), vko_df_sub(VKO_DF_ONE, product)));
  s.coef_m = vko_df_float(
      vko_df_div(vko_df_mul(step.lr, mu_next), vko_df_sub(VKO_DF_ONE, vko_df_mul(product, mu_next))));
  s.bc2 = vko_df_float(vko_one_minus_pow(beta2, step.t));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= S.decay_scale;
  else if (S.weight_decay != 0.0)
    g = fma(vec4(S.weight_decay), p, g);  // grad.add(param, alpha=wd)
  precise const vec4 m = vko_lerp(x[OP_M], g, S.one_minus_beta1);
  precise const vec4 v = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);
  precise const vec4 d = sqrt(v / S.bc2) + S.eps;
  p = p + (-S.coef_g * g) / d;  // param.addcdiv_(grad, denom, value=-coef_g)
  p = p + (-S.coef_m * m) / d;  // param.addcdiv_(exp_avg, denom, value=-coef_m)
  x[OP_M] = m;
  x[OP_V] = v;
  x[OP_P] = p;
}
