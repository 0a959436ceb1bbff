#version 450
#extension GL_GOOGLE_include_directive : require
// RMSprop, torch.optim.RMSprop:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- alpha*v + (1-alpha)*g^2 ; centered: gbar <- alpha*gbar + (1-alpha)*g ; w = v - gbar^2
//   d <- sqrt(w) + eps   (EPS_IN_SQRT: sqrt(w + eps), optax/TensorFlow)
//   momentum: b <- mu*b + g/d ; p <- p - lr*b   else: p <- p - lr*g/d
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool CENTERED = false;
layout(constant_id = 5) const bool HAS_MOMENTUM = false;
layout(constant_id = 6) const bool EPS_IN_SQRT = false;
layout(constant_id = 7) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float lr;
  float alpha;
  float eps;
  float weight_decay;
  float momentum;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
} pc;

#define OP_P 0
#define OP_G 1
#define OP_SQ 2
#define OP_BUF 3
#define OP_GAVG 4
#define VKO_NUM_OPS 5
#define VKO_OP_USED(k) ((k != OP_BUF || HAS_MOMENTUM) && (k != OP_GAVG || CENTERED))
#define VKO_OP_READ(k) VKO_OP_USED(k)
#define VKO_OP_WRITE(k) (k != OP_G && VKO_OP_USED(k))

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  VKO_WEIGHT_DECAY(x[OP_P], g)
  const vec4 v = pc.alpha * x[OP_SQ] + (1.0 - pc.alpha) * g * g;
  x[OP_SQ] = v;
  vec4 w = v;
  if (CENTERED) {
    const vec4 gbar = pc.alpha * x[OP_GAVG] + (1.0 - pc.alpha) * g;
    x[OP_GAVG] = gbar;
    w = v - gbar * gbar;
  }
  const vec4 d = EPS_IN_SQRT ? sqrt(w + pc.eps) : sqrt(w) + pc.eps;
  if (HAS_MOMENTUM) {
    const vec4 b = pc.momentum * x[OP_BUF] + g / d;
    x[OP_BUF] = b;
    x[OP_P] -= pc.lr * b;
  } else {
    x[OP_P] -= pc.lr * g / d;
  }
}

VKO_ELEMENTWISE_MAIN
