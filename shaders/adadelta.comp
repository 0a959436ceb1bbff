#version 450
#extension GL_GOOGLE_include_directive : require
// Adadelta, torch.optim.Adadelta (eps inside both square roots):
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- rho*v + (1-rho)*g^2 ; d <- sqrt(u + eps) / sqrt(v + eps) * g ; u <- rho*u + (1-rho)*d^2
//   p <- p - lr*d
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

struct AdadeltaScalars {
  float lr;
  float rho;
  float one_minus_rho;
  float eps;
  float weight_decay;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AdadeltaScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_SQ 2
#define OP_ACC 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdadeltaScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/adadelta.cpp), in double-float rounded once.
AdadeltaScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 rho = vko_hyper(g, VKO_HYPER_rho), wd = vko_hyper(g, VKO_HYPER_weight_decay);
  AdadeltaScalars s;
  s.lr = vko_df_float(step.lr);
  s.rho = vko_df_float(rho);
  s.one_minus_rho = vko_df_float(vko_df_sub(VKO_DF_ONE, rho));
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
  precise const vec4 v = fma(S.one_minus_rho * g, g, S.rho * x[OP_SQ]);
  precise const vec4 d = sqrt(x[OP_ACC] + S.eps) / sqrt(v + S.eps) * g;
  precise const vec4 acc = fma(S.one_minus_rho * d, d, S.rho * x[OP_ACC]);
  precise const vec4 p_new = fma(vec4(-S.lr), d, p);
  x[OP_SQ] = v;
  x[OP_ACC] = acc;
  x[OP_P] = p_new;
}
