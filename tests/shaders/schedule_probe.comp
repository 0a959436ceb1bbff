#version 450
// Test probe for shaders/schedule.glsl: invocation i evaluates the schedule record at
// s = first_step + i and writes out[2i] = lr, out[2i+1] = momentum (NaN when the schedule does
// not cycle momentum).
#extension GL_GOOGLE_include_directive : require
#include "schedule.glsl"

layout(local_size_x = 64) in;

layout(std430, set = 0, binding = 0) readonly buffer Record {
  uint words[VKO_SCHEDULE_WORDS];
}
record_;
layout(std430, set = 0, binding = 1) writeonly buffer Values {
  float values[];
}
out_;
layout(push_constant) uniform Push {
  uint first_step;
  uint count;
}
pc;

uint vko_schedule_word(uint i) { return record_.words[i]; }

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= pc.count) return;
  uint s = pc.first_step + i;
  float momentum;
  bool cycles;
  vko_schedule_df(s, momentum, cycles);
  out_.values[2u * i] = vko_schedule_lr(s);
  out_.values[2u * i + 1u] = cycles ? momentum : uintBitsToFloat(0x7fc00000u);
}
