#version 450
#extension GL_GOOGLE_include_directive : require
// Master weights start from the parameters: master <- float(p), before the first step. Runs over
// the groups that keep masters; segments without one load p and store nothing.
#define VKO_MASTER_INIT true
#include "common.glsl"

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
} pc;

#define VKO_NUM_OPS 1
#define VKO_OP_READ(k) true
#define VKO_OP_WRITE(k) true

void rule_update(inout vec4 x[VKO_MAX_OPS]) {}

VKO_ELEMENTWISE_MAIN
