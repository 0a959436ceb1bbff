#version 450
#extension GL_GOOGLE_include_directive : require
// RAdam, torch.optim.RAdam (eps on the raw sqrt(v); the rectification is decided and computed
// per step on the host, or in replayable recordings by the prologue):
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
VKO_RULE_SCALARS(RAdamScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/radam.cpp), in double-float rounded once; rectified is decided on the
// double-float rho_t.
RAdamScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 wd = vko_hyper(g, VKO_HYPER_weight_decay);
  const vec2 bc1 = vko_one_minus_pow(beta1, step.t);
  const vec2 beta2_t = vko_df_pow_uint(beta2, step.t);
  const vec2 bc2 = vko_df_sub(VKO_DF_ONE, beta2_t);
  const vec2 rho_inf = vko_df_sub(vko_df_div(vec2(2.0, 0.0), vko_df_sub(VKO_DF_ONE, beta2)), VKO_DF_ONE);
  const vec2 rho_t = vko_df_sub(
      rho_inf, vko_df_div(vko_df_mul(vko_df_mul(vec2(2.0, 0.0), vko_df_from_uint(step.t)), beta2_t), bc2));
  const bool rectified = vko_df_sub(rho_t, vec2(5.0, 0.0)).x > 0.0;
  vec2 r = vec2(0.0);
  if (rectified) {
    const vec2 num = vko_df_mul(
        vko_df_mul(vko_df_sub(rho_t, vec2(4.0, 0.0)), vko_df_sub(rho_t, vec2(2.0, 0.0))), rho_inf);
    const vec2 den = vko_df_mul(
        vko_df_mul(vko_df_sub(rho_inf, vec2(4.0, 0.0)), vko_df_sub(rho_inf, vec2(2.0, 0.0))), rho_t);
    r = vko_df_sqrt(vko_df_div(num, den));
  }
  RAdamScalars s;
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(wd);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  s.lr = vko_df_float(step.lr);
  s.bc1 = vko_df_float(bc1);
  s.sqrt_bc2 = vko_df_float(vko_df_sqrt(bc2));
  s.rect = vko_df_float(r);
  s.rectified = rectified ? 1u : 0u;
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
