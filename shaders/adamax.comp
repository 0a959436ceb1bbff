#version 450
#extension GL_GOOGLE_include_directive : require
// Adamax, torch.optim.Adamax (eps inside the max):
//   g <- maximize ? -g : g ; g <- g + wd*p
//   m <- lerp(m, g, 1-b1) ; u <- max(b2*u, |g| + eps) ; p <- p - (lr/bc1) * m/u
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float step_size;  // lr / bc1
  float one_minus_beta1;
  float beta2;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_U 3
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
  precise const vec4 m = vko_lerp(x[OP_M], g, pc.one_minus_beta1);
  precise const vec4 u = max(pc.beta2 * x[OP_U], abs(g) + pc.eps);
  precise const vec4 p_new = p + (-pc.step_size * m) / u;  // param.addcdiv_(exp_avg, exp_inf, -clr)
  x[OP_M] = m;
  x[OP_U] = u;
  x[OP_P] = p_new;
}

VKO_ELEMENTWISE_MAIN
