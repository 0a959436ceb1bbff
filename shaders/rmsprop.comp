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
  float one_minus_alpha;
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
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= pc.decay_scale;
  else if (pc.weight_decay != 0.0)
    g = fma(vec4(pc.weight_decay), p, g);  // grad.add(param, alpha=wd)
  precise const vec4 v = fma(pc.one_minus_alpha * g, g, pc.alpha * x[OP_SQ]);
  x[OP_SQ] = v;
  precise vec4 w = v;
  if (CENTERED) {
    precise const vec4 gbar = vko_lerp(x[OP_GAVG], g, pc.one_minus_alpha);
    x[OP_GAVG] = gbar;
    w = fma(-gbar, gbar, v);  // square_avg.addcmul(grad_avg, grad_avg, value=-1)
  }
  precise vec4 d;
  if (EPS_IN_SQRT)
    d = sqrt(w + pc.eps);
  else
    d = sqrt(w) + pc.eps;
  precise vec4 p_new;
  if (HAS_MOMENTUM) {
    precise const vec4 b = pc.momentum * x[OP_BUF] + g / d;  // buf.mul_(momentum).addcdiv_(grad, avg)
    x[OP_BUF] = b;
    p_new = fma(vec4(-pc.lr), b, p);
  } else {
    p_new = p + (-pc.lr * g) / d;
  }
  x[OP_P] = p_new;
}

VKO_ELEMENTWISE_MAIN
