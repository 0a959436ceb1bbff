#version 450
#extension GL_GOOGLE_include_directive : require
// Adagrad, torch.optim.Adagrad:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   sum <- sum + g^2 ; p <- p - clr * g / (sqrt(sum) + eps),  clr = lr / (1 + (t-1)*lr_decay)
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

struct AdagradScalars {
  float clr;
  float weight_decay;
  float eps;
  float decay_scale;  // 1 - lr*wd (decoupled decay)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  AdagradScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_SUM 2

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdagradScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/adagrad.cpp), in double-float rounded once.
AdagradScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 wd = vko_hyper(g, VKO_HYPER_weight_decay);
  const vec2 decay = vko_df_mul(vko_df_from_uint(step.t - 1u), vko_hyper(g, VKO_HYPER_lr_decay));
  AdagradScalars s;
  s.clr = vko_df_float(vko_df_div(step.lr, vko_df_add(VKO_DF_ONE, decay)));
  s.weight_decay = vko_df_float(wd);
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  return s;
}
uint rule_operands() { return 3u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= S.decay_scale;
  else if (S.weight_decay != 0.0)
    g = fma(vec4(S.weight_decay), p, g);  // grad.add(param, alpha=wd)
  precise const vec4 sum = fma(g, g, x[OP_SUM]);  // state_sum.addcmul_(grad, grad, value=1)
  precise const vec4 std_ = sqrt(sum) + S.eps;
  precise const vec4 p_new = p + (-S.clr * g) / std_;  // param.addcdiv_(grad, std, value=-clr)
  x[OP_SUM] = sum;
  x[OP_P] = p_new;
}
