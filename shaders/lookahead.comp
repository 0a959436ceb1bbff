#version 450
#extension GL_GOOGLE_include_directive : require
// Lookahead (Zhang et al. 2019; optax lookahead) around any rule, run as its own pass:
//   mode 0 (first step, before the rule): slow <- p
//   mode 1 (every k steps, after the rule): slow <- slow + alpha*(p - slow) ; p <- slow
// The slow weights are the state slot after the rule's: operand SLOW_OP.
#include "vko_elementwise.glsl"

layout(constant_id = 3) const uint SLOW_OP = 2;

struct LookaheadScalars {
  float alpha;
  uint sync;  // 0: initialise slow, 1: synchronise
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  LookaheadScalars s;
} pc;

#define OP_P 0

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS_HOST_ONLY(LookaheadScalars)
uint rule_operands() { return 6u; }
bool rule_reads(uint op) { return op == OP_P || (op == SLOW_OP && S.sync != 0); }
bool rule_writes(uint op) { return op == SLOW_OP || (op == OP_P && S.sync != 0); }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (S.sync != 0) {
    precise const vec4 slow = fma(vec4(S.alpha), x[OP_P] - x[SLOW_OP], x[SLOW_OP]);  // slow.add_(p - slow, alpha)
    x[SLOW_OP] = slow;
    x[OP_P] = slow;
  } else {
    x[SLOW_OP] = x[OP_P];
  }
}
