#version 450
#extension GL_GOOGLE_include_directive : require
// NAdam, torch.optim.NAdam (Dozat's momentum schedule; the coefficients come from the host,
// which keeps the running product mu_product per tensor, rounded to float as torch's float32 state):
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
VKO_RULE_SCALARS_HOST_ONLY(NAdamScalars)
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
