#version 450
#extension GL_GOOGLE_include_directive : require
// RAdam, torch.optim.RAdam (eps on the raw sqrt(v); the rectification is decided and computed
// on the host per step):
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2
//   rectified (rho_t > 5): p <- p - (lr/bc1) * m * r*sqrt(bc2) / (sqrt(v) + eps)
//   else:                  p <- p - (lr/bc1) * m
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
  float step_size;    // lr / bc1
  float rect_scale;   // r * sqrt(bc2)
  uint rectified;
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
  x[OP_M] = m;
  x[OP_V] = v;
  vec4 u = pc.step_size * m;
  if (pc.rectified != 0) u *= pc.rect_scale / (sqrt(v) + pc.eps);
  x[OP_P] = p - u;
}

VKO_ELEMENTWISE_MAIN
