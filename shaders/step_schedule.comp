#version 450
#extension GL_GOOGLE_include_directive : require
// The start of a replayable step (vko_step.glsl): each tensor's scheduled lr and momentum for its
// next step (t + 1), from its group's schedule, into its record, where every pass's prologue
// reads them. One invocation per tensor of group header.step_group (header.block_base ..
// block_end). The schedule is evaluated here only: its code is the largest part of a prologue,
// and one pipeline serves every rule.
#include "vko_step.glsl"

layout(push_constant) uniform Push {
  VkoPushHeader header;
} pc;

VkoPushHeader rule_header() { return pc.header; }

// The group's schedule record is the head of its group record.
uint vko_schedule_word(uint i) { return vko_step_word(vko_group_record(pc.header.step_group) + i); }

void main() {
  const uint tensor = pc.header.block_base + gl_GlobalInvocationID.x;
  if (tensor >= pc.header.block_end) return;
  const uint rec = vko_tensor_record(tensor);
  const uint s = vko_step_word(rec);  // steps taken: the schedule's step index of the next one
  float momentum;
  bool cycled;
  const vec2 lr = vko_schedule_df(s, momentum, cycled);
  vko_set_step_word(rec + VKO_TENSOR_LR, floatBitsToUint(lr.x));
  vko_set_step_word(rec + VKO_TENSOR_LR + 1u, floatBitsToUint(lr.y));
  vko_set_step_word(rec + VKO_TENSOR_MOMENTUM, floatBitsToUint(momentum));
  vko_set_step_word(rec + VKO_TENSOR_MOMENTUM + 1u, cycled ? 1u : 0u);
}
