#version 450
#extension GL_GOOGLE_include_directive : require
// ASGD, torch.optim.ASGD (eta and mu are per-tensor scalars kept on the host):
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
VKO_RULE_SCALARS_HOST_ONLY(AsgdScalars)
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
