#version 450
#extension GL_GOOGLE_include_directive : require
// FTRL-Proximal as TensorFlow's ApplyFtrlV2 computes it, per element (p = -learning_rate_power):
//   g <- maximize ? -g : g ; n' = n + g^2
//   linear <- linear + (g + 2*l2_shrinkage*w) - (n'^p - n^p)/lr * w
//   w <- |linear| > l1 ? (l1*sign(linear) - linear) / (n'^p/lr + 2*l2 + beta/lr) : 0 ; n <- n'
// POWER_HALF (p = 0.5, the default) takes square roots instead of powers, as TensorFlow does.
// The update divides by lr: a step whose lr is 0 (a schedule that reaches it) changes nothing.
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;
layout(constant_id = 4) const bool POWER_HALF = true;

struct FtrlScalars {
  float lr;
  float power;          // -learning_rate_power
  float l1;
  float two_l2;         // 2*l2 + beta/lr
  float two_shrinkage;  // 2*l2_shrinkage
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  FtrlScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_N 2
#define OP_LINEAR 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(FtrlScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/ftrl.cpp), in double-float rounded once.
FtrlScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 l2 = vko_hyper(g, VKO_HYPER_l2), beta = vko_hyper(g, VKO_HYPER_beta);
  FtrlScalars s;
  s.lr = vko_df_float(step.lr);
  s.power = -vko_df_float(vko_hyper(g, VKO_HYPER_learning_rate_power));
  s.l1 = vko_df_float(vko_hyper(g, VKO_HYPER_l1));
  s.two_l2 = vko_df_float(vko_df_add(vko_df_add(l2, l2), vko_df_div(beta, step.lr)));
  const vec2 shrinkage = vko_hyper(g, VKO_HYPER_l2_shrinkage);
  s.two_shrinkage = vko_df_float(vko_df_add(shrinkage, shrinkage));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

vec4 root(vec4 n) { return POWER_HALF ? sqrt(n) : pow(n, vec4(S.power)); }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (!(S.lr > 0.0)) return;  // lr 0: no step (w, n and linear as they are)
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  const vec4 w = x[OP_P], n = x[OP_N];
  precise const vec4 n_new = fma(g, g, n);
  precise const vec4 shrunk = fma(vec4(S.two_shrinkage), w, g);
  precise const vec4 sigma = (root(n_new) - root(n)) / S.lr;
  precise const vec4 linear = x[OP_LINEAR] + (shrunk - sigma * w);
  precise const vec4 quadratic = root(n_new) / S.lr + S.two_l2;
  const vec4 shrink = clamp(linear, vec4(-S.l1), vec4(S.l1)) - linear;  // 0 where |linear| <= l1
  x[OP_P] = mix(shrink / quadratic, vec4(0.0), lessThanEqual(abs(linear), vec4(S.l1)));
  x[OP_LINEAR] = linear;
  x[OP_N] = n_new;
}
