#version 450
#extension GL_GOOGLE_include_directive : require
// RAdam, torch.optim.RAdam (eps on the raw sqrt(v); the rectification is decided and computed
// on the host per step):
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- lerp(m, g, 1-b1) ; v <- b2*v + (1-b2)*g^2
//   rectified (rho_t > 5): p <- p - (m/bc1) * lr * (1/(sqrt(v) + eps) * sqrt(bc2)) * r
//   else:                  p <- p - (m/bc1) * lr
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;

struct RAdamScalars {
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd
  float lr;
  float bc1;
  float sqrt_bc2;
  float rect;  // r
  uint rectified;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  RAdamScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS_HOST_ONLY(RAdamScalars)
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
  x[OP_M] = m;
  x[OP_V] = v;
  precise const vec4 corrected = m / S.bc1;  // exp_avg / bias_correction1
  precise vec4 u;
  if (S.rectified != 0) {
    // bc2**0.5 / (sqrt(v) + eps) is Tensor.__rtruediv__ in torch: reciprocal, then a product
    precise const vec4 adaptive = (1.0 / (sqrt(v) + S.eps)) * S.sqrt_bc2;
    u = corrected * S.lr * adaptive * S.rect;
  } else {
    u = corrected * S.lr;
  }
  precise const vec4 p_new = p - u;
  x[OP_P] = p_new;
}
