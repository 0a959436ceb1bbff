#version 450
#extension GL_GOOGLE_include_directive : require
// RMSprop, torch.optim.RMSprop:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- alpha*v + (1-alpha)*g^2 ; centered: gbar <- alpha*gbar + (1-alpha)*g ; w = v - gbar^2
//   d <- sqrt(w) + eps   (EPS_IN_SQRT: sqrt(w + eps), optax/TensorFlow)
//   momentum: b <- mu*b + g/d ; p <- p - lr*b   else: p <- p - lr*g/d
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool CENTERED = false;
layout(constant_id = 5) const bool HAS_MOMENTUM = false;
layout(constant_id = 6) const bool EPS_IN_SQRT = false;
layout(constant_id = 7) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

struct RmspropScalars {
  float lr;
  float alpha;
  float one_minus_alpha;
  float eps;
  float weight_decay;
  float momentum;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  RmspropScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_SQ 2
#define OP_BUF 3
#define OP_GAVG 4

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(RmspropScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/rmsprop.cpp), in double-float rounded once.
RmspropScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 alpha = vko_hyper(g, VKO_HYPER_alpha), wd = vko_hyper(g, VKO_HYPER_weight_decay);
  RmspropScalars s;
  s.lr = vko_df_float(step.lr);
  s.alpha = vko_df_float(alpha);
  s.one_minus_alpha = vko_df_float(vko_df_sub(VKO_DF_ONE, alpha));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(wd);
  s.momentum = vko_df_float(vko_step_beta1(step, VKO_HYPER_momentum));
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  return s;
}
uint rule_operands() { return 5u; }
bool rule_reads(uint op) { return (op != OP_BUF || HAS_MOMENTUM) && (op != OP_GAVG || CENTERED); }
bool rule_writes(uint op) { return op != OP_G && rule_reads(op); }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= S.decay_scale;
  else if (S.weight_decay != 0.0)
    g = fma(vec4(S.weight_decay), p, g);  // grad.add(param, alpha=wd)
  precise const vec4 v = fma(S.one_minus_alpha * g, g, S.alpha * x[OP_SQ]);
  x[OP_SQ] = v;
  precise vec4 w = v;
  if (CENTERED) {
    precise const vec4 gbar = vko_lerp(x[OP_GAVG], g, S.one_minus_alpha);
    x[OP_GAVG] = gbar;
    w = fma(-gbar, gbar, v);  // square_avg.addcmul(grad_avg, grad_avg, value=-1)
  }
  precise vec4 d;
  if (EPS_IN_SQRT)
    d = sqrt(w + S.eps);
  else
    d = sqrt(w) + S.eps;
  precise vec4 p_new;
  if (HAS_MOMENTUM) {
    precise const vec4 b = S.momentum * x[OP_BUF] + g / d;  // buf.mul_(momentum).addcdiv_(grad, avg)
    x[OP_BUF] = b;
    p_new = fma(vec4(-S.lr), b, p);
  } else {
    p_new = p + (-S.lr * g) / d;
  }
  x[OP_P] = p_new;
}
