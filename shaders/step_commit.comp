#version 450
#extension GL_GOOGLE_include_directive : require
// The end of a replayable step (vko_step.glsl): each tensor's record advances to the step just
// taken: t <- t + 1, fresh <- 0, carry <- next_carry. One invocation per tensor
// (header.block_base .. block_end). A step that gradient control skipped (vko_grads.glsl)
// leaves every record as it was. Either way, SAM's pending restores were done: invocation 0
// clears every group's flag.
#include "vko_step.glsl"

layout(push_constant) uniform Push {
  VkoPushHeader header;
} pc;

VkoPushHeader rule_header() { return pc.header; }

void main() {
  const uint tensor = pc.header.block_base + gl_GlobalInvocationID.x;
  if (gl_GlobalInvocationID.x == 0u)
    for (uint g = 0u; g < vko_step_word(2u); ++g) vko_set_step_word(vko_group_record(g) + VKO_GROUP_SAM_PENDING, 0u);
  if (tensor >= pc.header.block_end) return;
  if (VKO_GRADS && vko_control_u(VKO_C_SKIP) != 0u) return;
  const uint rec = vko_tensor_record(tensor);
  vko_set_step_word(rec, vko_step_word(rec) + 1u);
  vko_set_step_word(rec + 1u, 0u);
  for (uint k = 0u; k < 4u; ++k) vko_set_step_word(rec + 4u + k, vko_step_word(rec + 8u + k));
}
