#version 450
#extension GL_GOOGLE_include_directive : require
// SAM (davda54/sam), around the group's rule:
//   perturb: e = rho * g / (|g| + 1e-12), |g| the L2 norm over the group ; p <- p + e ; keep e
//   restore (before the rule's update, with the gradient taken at the perturbed point): p <- p - e
// e lives in the state slot at operand SAM_OP. In replayable recordings (VKO_REPLAY) a
// perturbation sets its group's pending flag in the step buffer (vko_step.glsl) and a step
// restores only groups whose flag is set (step_commit.comp clears them).
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
SamUpdateScalars S;
bool applies;  // (replayable: a restore without a pending perturbation does nothing)
void rule_load_scalars(uint tensor) {
  S = pc.s;
  applies = true;
  if (!VKO_REPLAY) return;
  const uint flag = vko_group_record(rule_header().step_group) + VKO_GROUP_SAM_PENDING;
  if (S.restore == 0u && gl_LocalInvocationID.x == 0u) vko_or_step_word(flag, 1u);
  if (S.restore != 0u) applies = vko_step_word(flag) != 0u;
}
void rule_prologue(VkoStep step) {}
uint rule_operands() { return 6u; }
bool rule_reads(uint op) {
  return applies && (op == OP_P || (op == OP_G && S.restore == 0) || (op == SAM_OP && S.restore != 0));
}
bool rule_writes(uint op) { return applies && (op == OP_P || (op == SAM_OP && S.restore == 0)); }
uvec2 scratch_address() { return pc.scratch.scratch_address; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (!applies) return;
  if (S.restore != 0) {
    x[OP_P] -= x[SAM_OP];
  } else {
    const float scale = S.rho / (sqrt(vko_scratch(pc.scratch.sums_base).x) + 1e-12);
    const vec4 e = scale * x[OP_G];
    x[SAM_OP] = e;
    x[OP_P] += e;
  }
}
