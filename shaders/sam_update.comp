#version 450
#extension GL_GOOGLE_include_directive : require
// SAM (davda54/sam), around the group's rule:
//   perturb: e = rho * g / (|g| + 1e-12), |g| the L2 norm over the group ; p <- p + e ; keep e
//   restore (before the rule's update, with the gradient taken at the perturbed point): p <- p - e
// e lives in the state slot at operand SAM_OP.
#include "vko_elementwise.glsl"
#include "vko_reduce.glsl"

layout(constant_id = 3) const uint SAM_OP = 2;

struct SamUpdateScalars {
  float rho;
  uint restore;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;  // sums_base: the group's (sum g^2, 0)
  SamUpdateScalars s;
} pc;

#define OP_P 0
#define OP_G 1

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS_HOST_ONLY(SamUpdateScalars)
uint rule_operands() { return 6u; }
bool rule_reads(uint op) { return op == OP_P || (op == OP_G && S.restore == 0) || (op == SAM_OP && S.restore != 0); }
bool rule_writes(uint op) { return op == OP_P || (op == SAM_OP && S.restore == 0); }
uvec2 scratch_address() { return pc.scratch.scratch_address; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (S.restore != 0) {
    x[OP_P] -= x[SAM_OP];
  } else {
    const float scale = S.rho / (sqrt(vko_scratch(pc.scratch.sums_base).x) + 1e-12);
    const vec4 e = scale * x[OP_G];
    x[SAM_OP] = e;
    x[OP_P] += e;
  }
}
