#version 450
#extension GL_GOOGLE_include_directive : require
// Adam / AdamW / AMSGrad: the rule body is shaders/adam.glsl (shared with the cautious passes).
#include "adam.glsl"
