#version 450
#extension GL_GOOGLE_include_directive : require
// Adadelta, torch.optim.Adadelta (eps inside both square roots):
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- rho*v + (1-rho)*g^2 ; d <- sqrt(u + eps) / sqrt(v + eps) * g ; u <- rho*u + (1-rho)*d^2
//   p <- p - lr*d
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float lr;
  float rho;
  float one_minus_rho;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
} pc;

#define OP_P 0
#define OP_G 1
#define OP_SQ 2
#define OP_ACC 3
#define VKO_NUM_OPS 4
#define VKO_OP_READ(k) true
#define VKO_OP_WRITE(k) (k != OP_G)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= pc.decay_scale;
  else if (pc.weight_decay != 0.0)
    g = fma(vec4(pc.weight_decay), p, g);  // grad.add(param, alpha=wd)
  precise const vec4 v = fma(pc.one_minus_rho * g, g, pc.rho * x[OP_SQ]);
  precise const vec4 d = sqrt(x[OP_ACC] + pc.eps) / sqrt(v + pc.eps) * g;
  precise const vec4 acc = fma(pc.one_minus_rho * d, d, pc.rho * x[OP_ACC]);
  precise const vec4 p_new = fma(vec4(-pc.lr), d, p);
  x[OP_SQ] = v;
  x[OP_ACC] = acc;
  x[OP_P] = p_new;
}

VKO_ELEMENTWISE_MAIN
