// The push-constant header every pipeline's push block starts with (48 bytes), as a struct the
// block embeds as its first member; the rule's scalars follow it as a second struct:
//   layout(push_constant) uniform Push { VkoPushHeader header; AdamScalars s; } pc;
// (runtime/rules/rule.hpp, PushHeader, is the host's copy.) Needs no other include.
#ifndef VKO_PUSH_GLSL
#define VKO_PUSH_GLSL

struct VkoPushHeader {
  uvec2 table_address;  // BDA: address of the segment table
  uvec2 map_address;    // BDA: address of the block map; descriptors: .x = block of the bound
                        // map's first entry
  uint seg_base;        // subtracted from block-map entries (descriptors: first bound segment)
  uint block_base;      // first block of this dispatch; workgroup (x, y) adds x + y * countX
  uint block_end;       // one past the last block of this dispatch
  uint round_key;       // stochastic rounding: a hash of (seed, step)
  // The device step (vko_step.glsl): the step buffer's address (address path), the first entry
  // of this pass's scalars, and (prologues) the group.
  uvec2 step_address;
  uint step_base;
  uint step_group;
  float ema_weight;  // 1 - the EMA's decay this step (the pass that updates an EMA, pushed steps)
  uint reserved;
};

#endif  // VKO_PUSH_GLSL
