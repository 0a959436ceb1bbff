#version 450
#extension GL_GOOGLE_include_directive : require
// Lookahead (Zhang et al. 2019; optax lookahead) around any rule, run as its own pass:
//   mode 0 (first step, before the rule): slow <- p
//   mode 1 (every k steps, after the rule): slow <- slow + alpha*(p - slow) ; p <- slow
//   mode 2 (a replayable step that does not synchronise): nothing
// The slow weights are the state slot after the rule's: operand SLOW_OP. With a Kahan
// compensation c, the parameter is p + c here (VKO_KAHAN_ABSOLUTE).
#define VKO_KAHAN_ABSOLUTE true
#include "vko_elementwise.glsl"

layout(constant_id = 3) const uint SLOW_OP = 2;

struct LookaheadScalars {
  float alpha;
  uint sync;  // the mode: 0 initialise slow, 1 synchronise, 2 nothing
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  LookaheadScalars s;
} pc;

#define OP_P 0

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(LookaheadScalars)

// A replayable step synchronises every k-th step of the tensor (the group's k and alpha in its
// record, vko_step.glsl).
LookaheadScalars rule_device_scalars(VkoStep step) {
  const uint g = vko_group_record(step.group);
  const uint k = vko_step_word(g + VKO_GROUP_LOOKAHEAD_K);
  LookaheadScalars s;
  s.alpha = vko_df_float(vec2(uintBitsToFloat(vko_step_word(g + VKO_GROUP_LOOKAHEAD_ALPHA)),
                              uintBitsToFloat(vko_step_word(g + VKO_GROUP_LOOKAHEAD_ALPHA + 1u))));
  s.sync = k > 0u && step.t % k == 0u ? 1u : 2u;
  return s;
}
uint rule_operands() { return 6u; }
bool rule_reads(uint op) { return S.sync != 2u && (op == OP_P || (op == SLOW_OP && S.sync == 1u)); }
bool rule_writes(uint op) { return S.sync != 2u && (op == SLOW_OP || (op == OP_P && S.sync == 1u)); }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (S.sync == 2u) return;
  if (S.sync != 0) {
    precise const vec4 slow = fma(vec4(S.alpha), x[OP_P] - x[SLOW_OP], x[SLOW_OP]);  // slow.add_(p - slow, alpha)
    x[SLOW_OP] = slow;
    x[OP_P] = slow;
  } else {
    x[SLOW_OP] = x[OP_P];
  }
}
