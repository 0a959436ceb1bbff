// Gradient control of a replayable step (runtime/device_step.hpp): AMP loss scaling with
// torch's GradScaler, clip_grad_value_ and clip_grad_norm_, applied as each pass reads g (the
// gradient buffers are never written). Included by vko_step.glsl.
//
// A step with gradient control runs, before the rule's passes:
//   grad_norm.comp     per 256-element chunk of every gradient: the unscaled, value-clipped
//                      gradient's norm contribution (clipped groups) and a non-finite flag
//   grad_reduce.comp   chunks -> fewer chunks, 256 at a time, in index order; its last
//                      dispatch (MODE final) takes the total norm, clip coefficient, found-inf,
//                      skip, the scaler's update and the report ring (in a step of two parts,
//                      the first ends writing the total to VKO_C_SUMS, the second starts with
//                      the outcome of the combined total found there)
// then each pass of the rule reads g as ((g * inv_scale) clamped to ±clip_value) * clip_coef,
// and skips the step (no write at all, step counters included) when `skip` is set.
// Every sum is taken in a fixed order over fixed chunks, whatever the workgroup or subgroup size.
//
// The control record, words from VKO_CONTROL of the step buffer:
#ifndef VKO_GRADS_GLSL
#define VKO_GRADS_GLSL

#define VKO_CONTROL 4u
// written by the device each step (scale and growth_tracker also by the host)
#define VKO_C_SCALE 0u           // f32: the loss scale (the engine's backward reads it)
#define VKO_C_GROWTH_TRACKER 1u  // u32: consecutive steps without inf
#define VKO_C_INV_SCALE 2u       // f32: 1/scale of this step (1 without the scaler)
#define VKO_C_CLIP_COEF 3u       // f32: this step's clip coefficient (1 without clipping)
#define VKO_C_TOTAL_NORM 4u      // f32: this step's total norm of the clipped groups
#define VKO_C_FOUND_INF 5u       // u32: a non-finite unscaled gradient element, any group
#define VKO_C_SKIP 6u            // u32: this step is skipped
#define VKO_C_STEPS 7u           // u32: steps run (skipped ones included)
#define VKO_C_NONFINITE_NORM 8u  // u32: the total norm is non-finite
// f32 x 2: a step in two parts (RecordOptions::part, sharded optimizers): the first writes this
// rank's total (x: norm contribution, y: non-finite flag) here; the engine replaces it with the
// ranks' combined total (vko_norm_combine's rule); the second part takes the outcome from it.
#define VKO_C_SUMS 10u
// written by the host (Optimizer::set_grad_clip, set_grad_scaler)
#define VKO_C_SCALER 16u           // u32: 1 when the scaler is on
#define VKO_C_GROWTH_FACTOR 17u    // f32
#define VKO_C_BACKOFF_FACTOR 18u   // f32
#define VKO_C_GROWTH_INTERVAL 19u  // u32
#define VKO_C_MAX_NORM 20u         // f32: 0 = no norm clipping
#define VKO_C_NORM_KIND 21u        // u32: VKO_NORM_*
#define VKO_C_NORM_P 22u           // f32: the general p
#define VKO_C_ERROR_NONFINITE 23u  // u32: error_if_nonfinite (skip the step, flag it)
#define VKO_C_CLIP_VALUE 24u       // f32: 0 = no value clipping
#define VKO_CONTROL_WORDS 32u
// The report ring: VKO_RING_SLOTS slots of 8 words after the control record; step n (1-based)
// writes slot (n - 1) % VKO_RING_SLOTS: n, total norm, clip coefficient, the scale its gradients
// were unscaled with, found-inf, skipped, non-finite norm error, growth tracker after the step.
#define VKO_RING 32u  // (from VKO_CONTROL)
#define VKO_RING_SLOTS 16u
#define VKO_RING_WORDS 8u

#define VKO_NORM_P 0u    // sum |g|^p, then ^(1/p)
#define VKO_NORM_2 1u    // sum g^2, then sqrt
#define VKO_NORM_1 2u    // sum |g|
#define VKO_NORM_INF 3u  // max |g|

// In a group's record (after its schedule and hyperparameters): bit 0 = the group is clipped.
#include "vko_step_record.glsl"  // VKO_GROUP_FLAGS (runtime/step_record.def)

layout(constant_id = 29) const bool VKO_GRADS = false;  // the step has gradient control

uint vko_step_word(uint i);
uint vko_group_record(uint group);
uint vko_control_u(uint w) { return vko_step_word(VKO_CONTROL + w); }
float vko_control_f(uint w) { return uintBitsToFloat(vko_step_word(VKO_CONTROL + w)); }
bool vko_nonfinite(float x) { return (floatBitsToUint(x) & 0x7f800000u) == 0x7f800000u; }
bool vko_group_clipped(uint group) { return (vko_step_word(vko_group_record(group) + VKO_GROUP_FLAGS) & 1u) != 0u; }

// What a pass of the rule applies to g this step (loaded once per workgroup).
struct VkoGrads {
  float inv_scale, clip_value, coef;
  bool skip;
};
VkoGrads vko_grads;
void vko_load_grads(uint group) {
  vko_grads.skip = vko_control_u(VKO_C_SKIP) != 0u;
  vko_grads.inv_scale = vko_control_f(VKO_C_INV_SCALE);
  const bool clipped = vko_group_clipped(group);
  vko_grads.clip_value = clipped ? vko_control_f(VKO_C_CLIP_VALUE) : 0.0;
  vko_grads.coef = clipped ? vko_control_f(VKO_C_CLIP_COEF) : 1.0;
}
// Two chunk sums (x: norm contribution, y: non-finite flag) combined: sums (or maxima for the
// inf norm) of x, maxima of y.
vec2 vko_norm_combine(vec2 a, vec2 b, bool inf_norm) {
  precise float s = a.x + b.x;
  return vec2(inf_norm ? max(a.x, b.x) : s, max(a.y, b.y));
}
// torch's order: unscale, clip_grad_value_, then clip_grad_norm_'s coefficient (each a rounding).
vec4 vko_value_clip(vec4 g, float clip_value) { return clip_value > 0.0 ? clamp(g, -clip_value, clip_value) : g; }
vec4 vko_grad_transform(vec4 g) {
  precise vec4 u = g * vko_grads.inv_scale;
  u = vko_value_clip(u, vko_grads.clip_value);
  precise vec4 c = u * vko_grads.coef;
  return c;
}

#endif  // VKO_GRADS_GLSL
