#version 450
#extension GL_GOOGLE_include_directive : require
// SGD, cautious step, pass 3 of 3: the step with the masked, rescaled direction
// (shaders/vko_cautious.glsl).
#define VKO_CAUTIOUS_APPLY
#define VKO_NEEDS_EXTRA true
#include "sgd.glsl"
