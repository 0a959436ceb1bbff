#version 450
#extension GL_GOOGLE_include_directive : require
// Lookahead (Zhang et al. 2019; optax lookahead) around any rule, run as its own pass:
//   mode 0 (first step, before the rule): slow <- p
//   mode 1 (every k steps, after the rule): slow <- slow + alpha*(p - slow) ; p <- slow
// The slow weights are the state slot after the rule's: operand SLOW_OP.
#include "common.glsl"

layout(constant_id = 3) const uint SLOW_OP = 2;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float alpha;
  uint sync;  // 0: initialise slow, 1: synchronise
} pc;

#define OP_P 0
#define VKO_NUM_OPS 6
#define VKO_OP_READ(k) (k == OP_P || (k == SLOW_OP && pc.sync != 0))
#define VKO_OP_WRITE(k) (k == SLOW_OP || (k == OP_P && pc.sync != 0))

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  if (pc.sync != 0) {
    precise const vec4 slow = fma(vec4(pc.alpha), x[OP_P] - x[SLOW_OP], x[SLOW_OP]);  // slow.add_(p - slow, alpha)
    x[SLOW_OP] = slow;
    x[OP_P] = slow;
  } else {
    x[SLOW_OP] = x[OP_P];
  }
}

VKO_ELEMENTWISE_MAIN
