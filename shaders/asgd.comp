#version 450
#extension GL_GOOGLE_include_directive : require
// ASGD, torch.optim.ASGD (eta and mu are per-tensor scalars kept on the host, or in replayable
// recordings carried by the device in step.carry.xy, as floats: torch's float32 state):
//   g <- maximize ? -g : g ; g <- g + wd*p
//   p <- p*(1 - lambd*eta) - eta*g ; ax <- (mu == 1) ? p : ax + mu*(p - ax)
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct AsgdScalars {
  float eta;
  float decay_scale;  // 1 - lambd*eta
  float mu;
  float weight_decay;
  uint copy_average;  // mu == 1: ax <- p
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AsgdScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_AX 2

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AsgdScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/asgd.cpp) from the carried eta and mu (carry.xy, the host's rounded to float),
// and the carry after the step as advance_scalars computes it, in double-float rounded once.
AsgdScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 lambd = vko_hyper(g, VKO_HYPER_lambd);
  const float eta = step.carry.x, mu = step.carry.y;
  AsgdScalars s;
  s.eta = eta;
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(lambd, vec2(eta, 0.0))));
  s.mu = mu;
  s.weight_decay = vko_df_float(vko_hyper(g, VKO_HYPER_weight_decay));
  s.copy_average = mu == 1.0 ? 1u : 0u;
  // eta <- lr / (1 + lambd*lr*t)^alpha ; mu <- 1 / max(1, t - t0)
  const vec2 t = vko_df_from_uint(step.t);
  const vec2 base = vko_df_add(VKO_DF_ONE, vko_df_mul(vko_df_mul(lambd, step.lr), t));
  vko_next_carry.x = vko_df_float(vko_df_div(step.lr, vko_df_pow_real(base, vko_hyper(g, VKO_HYPER_alpha))));
  const vec2 since = vko_df_sub(t, vko_hyper(g, VKO_HYPER_t0));
  vko_next_carry.y = vko_df_le(since, VKO_DF_ONE) ? 1.0 : vko_df_float(vko_df_div(VKO_DF_ONE, since));
  return s;
}
uint rule_operands() { return 3u; }
bool rule_reads(uint op) { return op != OP_AX || S.copy_average == 0; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  if (S.weight_decay != 0.0) g = fma(vec4(S.weight_decay), x[OP_P], g);
  precise vec4 p = x[OP_P] * S.decay_scale;  // param.mul_(1 - lambd*eta)
  p = fma(vec4(-S.eta), g, p);               // param.add_(grad, alpha=-eta)
  precise const vec4 ax = x[OP_AX] + (p - x[OP_AX]) * S.mu;  // ax.add_(param.sub(ax).mul_(mu))
  x[OP_P] = p;
  x[OP_AX] = S.copy_average != 0 ? p : ax;
}
