#version 450
#extension GL_GOOGLE_include_directive : require
// Lion: the rule body is shaders/lion.glsl (shared with the cautious passes).
#include "lion.glsl"
