#version 450
#extension GL_GOOGLE_include_directive : require
// SAM, perturbation pass 1: per-block partial sums of g^2 (reduced per tensor, then per group,
// by reduce.comp; sam_update.comp reads the group's sum).
#define VKO_PARTIALS 2
#include "common.glsl"

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  uvec2 scratch_address;
  uint partials_base;
  uint sums_base;
} pc;

#define OP_G 1
#define VKO_NUM_OPS 2
#define VKO_OP_READ(k) (k == OP_G)
#define VKO_OP_WRITE(k) false

void rule_update(inout vec4 x[VKO_MAX_OPS]) {}

vec2 vko_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  const vec4 g = x[OP_G] * mask;
  return vec2(dot(g, g), 0.0);
}

VKO_ELEMENTWISE_MAIN
