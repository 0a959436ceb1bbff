#version 450
#extension GL_GOOGLE_include_directive : require
// Adamax, torch.optim.Adamax (eps inside the max):
//   g <- maximize ? -g : g ; g <- g + wd*p
//   m <- lerp(m, g, 1-b1) ; u <- max(b2*u, |g| + eps) ; p <- p - (lr/bc1) * m/u
#include "vko_elementwise.glsl"
#include "vko_math.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

struct AdamaxScalars {
  float step_size;  // lr / bc1
  float one_minus_beta1;
  float beta2;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AdamaxScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_U 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdamaxScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/adamax.cpp), in double-float rounded once.
AdamaxScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), wd = vko_hyper(g, VKO_HYPER_weight_decay);
  AdamaxScalars s;
  s.step_size = vko_df_float(vko_df_div(step.lr, vko_one_minus_pow(beta1, step.t)));
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(vko_hyper(g, VKO_HYPER_beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(wd);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
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
  precise const vec4 u = max(S.beta2 * x[OP_U], abs(g) + S.eps);
  precise const vec4 p_new = p + (-S.step_size * m) / u;  // param.addcdiv_(exp_avg, exp_inf, -clr)
  x[OP_M] = m;
  x[OP_U] = u;
  x[OP_P] = p_new;
}
