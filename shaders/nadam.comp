#version 450
#extension GL_GOOGLE_include_directive : require
// NAdam, torch.optim.NAdam (Dozat's momentum schedule; the coefficients come from the host,
// which keeps the running product mu_product per tensor in double):
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2 ; d = sqrt(v/bc2) + eps
//   p <- p - coef_g * g/d - coef_m * m/d,
//   coef_g = lr*(1-mu_t)/(1-P_t), coef_m = lr*mu_{t+1}/(1-P_t*mu_{t+1})
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd
  float coef_g;
  float coef_m;
  float inv_bc2;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3
#define VKO_NUM_OPS 4
#define VKO_OP_READ(k) true
#define VKO_OP_WRITE(k) (k != OP_G)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  vec4 p = x[OP_P];
  VKO_WEIGHT_DECAY(p, g)
  const vec4 m = pc.beta1 * x[OP_M] + (1.0 - pc.beta1) * g;
  const vec4 v = pc.beta2 * x[OP_V] + (1.0 - pc.beta2) * g * g;
  const vec4 d = sqrt(v * pc.inv_bc2) + pc.eps;
  x[OP_M] = m;
  x[OP_V] = v;
  x[OP_P] = p - pc.coef_g * g / d - pc.coef_m * m / d;
}

VKO_ELEMENTWISE_MAIN
