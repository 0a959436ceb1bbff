#version 450
#extension GL_GOOGLE_include_directive : require
// SAM, perturbation pass 1: per-chunk partial sums of g^2 (reduced per tensor, then per group,
// by reduce.comp; sam_update.comp reads the group's sum).
#define VKO_PARTIALS 2
#include "vko_elementwise.glsl"

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;
} pc;

#define OP_G 1

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_NO_RULE_SCALARS
uint rule_operands() { return 2u; }
bool rule_reads(uint op) { return op == OP_G; }
bool rule_writes(uint op) { return false; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }
uint rule_partials_base() { return pc.scratch.partials_base; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {}

vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  precise const vec4 g = x[OP_G] * mask;
  precise const float sum = dot(g, g);
  return vec2(sum, 0.0);
}
