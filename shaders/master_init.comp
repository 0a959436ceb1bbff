#version 450
#extension GL_GOOGLE_include_directive : require
// Master weights start from the parameters: master <- float(p), before the first step. Runs over
// the groups that keep masters; segments without one load p and store nothing.
#define VKO_MASTER_INIT true
#include "vko_elementwise.glsl"

layout(push_constant) uniform Push {
  VkoPushHeader header;
} pc;

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_NO_RULE_SCALARS
uint rule_operands() { return 1u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return true; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {}
