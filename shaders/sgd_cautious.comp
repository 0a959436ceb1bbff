#version 450
#extension GL_GOOGLE_include_directive : require
// SGD, cautious step, pass 1 of 3: the direction's agreement with the gradient, counted per block
// (shaders/vko_cautious.glsl).
#define VKO_CAUTIOUS_COUNT
#define VKO_PARTIALS 1
#include "sgd.glsl"
