#version 450
#extension GL_GOOGLE_include_directive : require
// Rprop, torch.optim.Rprop:
//   g <- maximize ? -g : g ; s = sign(g*prev): > 0 -> etaplus, < 0 -> etaminus, 0 -> 1
//   step <- clamp(step*s, step_min, step_max) ; where s < 0: g <- 0
//   p <- p - sign(g)*step ; prev <- g
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct RpropScalars {
  float etaminus;
  float etaplus;
  float step_min;
  float step_max;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  RpropScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_PREV 2
#define OP_STEP 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(RpropScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/rprop.cpp): the options, rounded once (the lr only sets the initial step size).
RpropScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  RpropScalars s;
  s.etaminus = vko_df_float(vko_hyper(g, VKO_HYPER_etaminus));
  s.etaplus = vko_df_float(vko_hyper(g, VKO_HYPER_etaplus));
  s.step_min = vko_df_float(vko_hyper(g, VKO_HYPER_step_size_min));
  s.step_max = vko_df_float(vko_hyper(g, VKO_HYPER_step_size_max));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  const vec4 s = sign(g * x[OP_PREV]);
  const vec4 factor = mix(mix(vec4(1.0), vec4(S.etaminus), lessThan(s, vec4(0.0))), vec4(S.etaplus),
                          greaterThan(s, vec4(0.0)));
  const vec4 step = clamp(x[OP_STEP] * factor, S.step_min, S.step_max);
  g = mix(g, vec4(0.0), lessThan(s, vec4(0.0)));
  x[OP_STEP] = step;
  x[OP_PREV] = g;
  x[OP_P] -= sign(g) * step;
}
