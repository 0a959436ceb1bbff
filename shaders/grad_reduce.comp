#version 450
#extension GL_GOOGLE_include_directive : require
// Gradient control, pass 2 (vko_grads.glsl): output o = the chunk sums input_base + 256 o ..
// + 255 (or to the end) combined in index order by one invocation (the same bits for any
// workgroup size), repeated until one is left. The last dispatch (MODE 1, one invocation) turns
// it into the step's outcome: the total norm (torch's clip_grad_norm_: coefficient
// max_norm / (norm + 1e-6) clamped to 1), found-inf, whether the step is skipped, the
// GradScaler update (torch's _amp_update_scale_) and the step's report in the ring.
#include "vko_reduce.glsl"
#include "vko_step.glsl"

struct GradReduceScalars {
  uvec2 scratch_address;
  uint input_base;
  uint count;  // input entries
  uint output_base;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  GradReduceScalars s;
} pc;

// 0: one level to the next; 1 (final): the last level to the step's outcome; 2 (sums): the last
// level to the total in VKO_C_SUMS (a step's first part); 3 (combined): the outcome from the
// total in VKO_C_SUMS (a step's second part; one invocation, no input).
layout(constant_id = 3) const uint MODE = 0u;

VkoPushHeader rule_header() { return pc.header; }
uvec2 scratch_address() { return pc.s.scratch_address; }

void set_u(uint w, uint v) { vko_set_step_word(VKO_CONTROL + w, v); }
void set_f(uint w, float v) { vko_set_step_word(VKO_CONTROL + w, floatBitsToUint(v)); }

// The step's outcome from the total sum of every chunk.
void control(vec2 sum) {
  const uint kind = vko_control_u(VKO_C_NORM_KIND);
  const float p = vko_control_f(VKO_C_NORM_P);
  float norm = kind == VKO_NORM_2 ? sqrt(sum.x) : kind == VKO_NORM_P ? pow(sum.x, 1.0 / p) : sum.x;
  // (max() need not keep a NaN: a non-finite element of a clipped group makes the norm NaN
  // unless it already is non-finite.)
  if (sum.y >= 2.0 && !vko_nonfinite(norm)) norm = uintBitsToFloat(0x7fc00000u);
  const float max_norm = vko_control_f(VKO_C_MAX_NORM);
  float coef = 1.0;
  if (max_norm > 0.0) {
    precise float c = max_norm / (norm + 1e-6);
    coef = c < 1.0 ? c : (c >= 1.0 ? 1.0 : c);  // torch's clamp(max=1): a NaN stays NaN
  }
  const bool scaler = vko_control_u(VKO_C_SCALER) != 0u;
  const bool found_inf = sum.y >= 1.0;
  const bool nonfinite_norm = max_norm > 0.0 && vko_nonfinite(norm);
  const bool error = nonfinite_norm && vko_control_u(VKO_C_ERROR_NONFINITE) != 0u;
  const bool skip = (scaler && found_inf) || error;
  const float scale = vko_control_f(VKO_C_SCALE);
  set_f(VKO_C_INV_SCALE, scaler ? 1.0 / scale : 1.0);
  set_f(VKO_C_CLIP_COEF, coef);
  set_f(VKO_C_TOTAL_NORM, norm);
  set_u(VKO_C_FOUND_INF, found_inf ? 1u : 0u);
  set_u(VKO_C_SKIP, skip ? 1u : 0u);
  set_u(VKO_C_NONFINITE_NORM, error ? 1u : 0u);
  const uint step = vko_control_u(VKO_C_STEPS) + 1u;
  set_u(VKO_C_STEPS, step);
  uint tracker = vko_control_u(VKO_C_GROWTH_TRACKER);
  if (scaler) {
    float new_scale = scale;
    if (found_inf) {
      new_scale = scale * vko_control_f(VKO_C_BACKOFF_FACTOR);
      tracker = 0u;
    } else if (tracker + 1u == vko_control_u(VKO_C_GROWTH_INTERVAL)) {
      const float grown = scale * vko_control_f(VKO_C_GROWTH_FACTOR);
      if (!vko_nonfinite(grown)) new_scale = grown;
      tracker = 0u;
    } else {
      tracker += 1u;
    }
    set_f(VKO_C_SCALE, new_scale);
    set_u(VKO_C_GROWTH_TRACKER, tracker);
  }
  const uint slot = VKO_CONTROL + VKO_RING + ((step - 1u) % VKO_RING_SLOTS) * VKO_RING_WORDS;
  vko_set_step_word(slot + 1u, floatBitsToUint(norm));
  vko_set_step_word(slot + 2u, floatBitsToUint(coef));
  vko_set_step_word(slot + 3u, floatBitsToUint(scaler ? scale : 1.0));
  vko_set_step_word(slot + 4u, found_inf ? 1u : 0u);
  vko_set_step_word(slot + 5u, skip ? 1u : 0u);
  vko_set_step_word(slot + 6u, error ? 1u : 0u);
  vko_set_step_word(slot + 7u, tracker);
  vko_set_step_word(slot, step);
}

void main() {
  const uint o = gl_GlobalInvocationID.x;
  if (MODE == 3u) {
    if (o == 0u) control(vec2(vko_control_f(VKO_C_SUMS), vko_control_f(VKO_C_SUMS + 1u)));
    return;
  }
  const uint first = o * 256u;
  if (first >= pc.s.count) return;
  const bool inf_norm = vko_control_u(VKO_C_NORM_KIND) == VKO_NORM_INF;
  vec2 sum = vko_scratch(pc.s.input_base + first);
  for (uint i = first + 1u; i < min(first + 256u, pc.s.count); ++i)
    sum = vko_norm_combine(sum, vko_scratch(pc.s.input_base + i), inf_norm);
  if (MODE == 1u) {
    control(sum);
  } else if (MODE == 2u) {
    set_f(VKO_C_SUMS, sum.x);
    set_f(VKO_C_SUMS + 1u, sum.y);
  } else {
    vko_scratch_store(pc.s.output_base + o, sum);
  }
}
