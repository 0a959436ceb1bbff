#version 450
#extension GL_GOOGLE_include_directive : require
// SGD: the rule body is shaders/sgd.glsl (shared with the cautious passes).
#include "sgd.glsl"
