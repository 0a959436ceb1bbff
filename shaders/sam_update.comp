#version 450
#extension GL_GOOGLE_include_directive : require
// SAM (davda54/sam), around the group's rule:
//   perturb: e = rho * g / (|g| + 1e-12), |g| the L2 norm over the group ; p <- p + e ; keep e
//   restore (before the rule's update, with the gradient taken at the perturbed point): p <- p - e
// e lives in the state slot at operand SAM_OP.
#include "common.glsl"

layout(constant_id = 3) const uint SAM_OP = 2;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;  // the group's (sum g^2, 0)
  float rho;
  uint restore;
} pc;

#define OP_P 0
#define OP_G 1
#define VKO_NUM_OPS 6
#define VKO_OP_READ(k) (k == OP_P || (k == OP_G && pc.restore == 0) || (k == SAM_OP && pc.restore != 0))
#define VKO_OP_WRITE(k) (k == OP_P || (k == SAM_OP && pc.restore == 0))

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (pc.restore != 0) {
    x[OP_P] -= x[SAM_OP];
  } else {
    const float scale = pc.rho / (sqrt(VKO_SCRATCH(pc.sums_base).x) + 1e-12);
    const vec4 e = scale * x[OP_G];
    x[SAM_OP] = e;
    x[OP_P] += e;
  }
}

VKO_ELEMENTWISE_MAIN
