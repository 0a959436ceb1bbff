// The device step: replayable recordings compute each step's scalars on the device
// (runtime/device_step.hpp). Included by vko_elementwise.glsl.
//
// The step buffer (one per optimizer; the address path reaches it at header.step_address, the
// descriptor path at binding 4), in 32-bit words:
//   [0, 4)            its layout: group_records, tensor_records, groups, tensors (word offsets)
//   [4, 164)          gradient control: the control record and the report ring (vko_grads.glsl)
//   group_records     per group 136 words: the schedule (runtime/schedule.hpp, 64 words, with
//                     the group's lr as its base), the hyperparameters (64 words: field k of
//                     rules/hyper_fields.def as a double-float pair at 64 + 2k), flags (word 128:
//                     bit 0, the group is clipped), the stochastic rounding seed (129, 130: low,
//                     high), Lookahead's k (131) and alpha (132, 133: double-float), SAM's
//                     pending restore (134, set by a replayable perturbation, cleared by
//                     step_commit.comp), 1 spare word
//   tensor_records    per tensor 16 words: t (steps taken), fresh (no step taken yet), the
//                     scheduled lr of the next step (2 words, double-float), carry (4 floats the
//                     rule keeps across steps, e.g. NAdam's mu_product), next_carry (the step's
//                     new carry, committed by step_commit.comp), the next step's scheduled
//                     momentum and whether the schedule sets it (words 12, 13), 2 spare
//   entries           per pass of the rule, per tensor: the pass's scalar struct for the step
//                     (T e[] at header.step_base + tensor)
// A replayable recording starts with step_schedule.comp, which evaluates each tensor's schedule
// for its next step into its record, once for all passes (the schedule's code is large; the
// rules' pipelines then carry none of it). Each elementwise pass then runs twice: first its prologue (a pipeline
// with VKO_PROLOGUE: one invocation per tensor of a group computes the pass's scalars for the
// tensor's next step into its entry), then the pass itself with VKO_REPLAY, reading its scalars
// from the entry instead of the push constants.
//
// The rule shader's part (after its push block and rule_header()):
//   VKO_RULE_SCALARS(T)   T is its scalar struct (pc.s); declares `T S`, which the rule reads
//                         instead of pc.s, and the prologue
//   T rule_device_scalars(VkoStep step);   the pass's scalars for step.t, computed on the device
// or, for passes whose scalars are only computed on the host, VKO_RULE_SCALARS_HOST_ONLY(T).
#ifndef VKO_STEP_GLSL
#define VKO_STEP_GLSL

#include "schedule.glsl"
#include "vko_base.glsl"
#include "vko_hyper_fields.glsl"
#include "vko_push.glsl"

layout(constant_id = 27) const bool VKO_REPLAY = false;    // scalars from the step buffer
layout(constant_id = 28) const bool VKO_PROLOGUE = false;  // this pipeline computes them

VkoPushHeader rule_header();

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 4) buffer VkoStepWords { uint w[]; };
uint vko_step_word(uint i) { return VkoStepWords(rule_header().step_address).w[i]; }
void vko_set_step_word(uint i, uint v) { VkoStepWords(rule_header().step_address).w[i] = v; }
void vko_or_step_word(uint i, uint v) { atomicOr(VkoStepWords(rule_header().step_address).w[i], v); }
#define VKO_STEP_ENTRIES(T)                                                                         \
  layout(buffer_reference, std430, buffer_reference_align = 4) buffer T##Entries { T e[]; };        \
  T vko_entry_load(uint i) { return T##Entries(rule_header().step_address).e[i]; }                  \
  void vko_entry_store(uint i, T v) { T##Entries(rule_header().step_address).e[i] = v; }
#else
layout(std430, set = 0, binding = 4) buffer VkoStepWords { uint w[]; } vko_step_buffer;
uint vko_step_word(uint i) { return vko_step_buffer.w[i]; }
void vko_set_step_word(uint i, uint v) { vko_step_buffer.w[i] = v; }
void vko_or_step_word(uint i, uint v) { atomicOr(vko_step_buffer.w[i], v); }
#define VKO_STEP_ENTRIES(T)                                                           \
  layout(std430, set = 0, binding = 4) buffer T##Entries { T e[]; } vko_entries;      \
  T vko_entry_load(uint i) { return vko_entries.e[i]; }                               \
  void vko_entry_store(uint i, T v) { vko_entries.e[i] = v; }
#endif

#include "vko_step_record.glsl"  // VKO_GROUP_* (runtime/step_record.def)
#define VKO_TENSOR_RECORD_WORDS 16u
#define VKO_TENSOR_LR 2u        // the next step's scheduled lr, double-float (step_schedule.comp)
#define VKO_TENSOR_MOMENTUM 12u  // its scheduled momentum, and (13) whether the schedule sets it

// What a prologue knows of a tensor's next step.
struct VkoStep {
  uint tensor, group;
  uint t;            // the step being taken (1 on the first)
  bool fresh;        // no step taken yet
  vec2 lr;           // the scheduled lr of step t, double-float
  bool cycled;       // the schedule sets beta1 / momentum for step t:
  float momentum;    //   this value
  vec4 carry;        // the rule's carried values before the step
};
// The rule's carried values after the step (written by the first pass's prologue).
vec4 vko_next_carry;

uint vko_group_record(uint group) { return vko_step_word(0u) + group * VKO_GROUP_RECORD_WORDS; }
uint vko_tensor_record(uint tensor) { return vko_step_word(1u) + tensor * VKO_TENSOR_RECORD_WORDS; }

#include "vko_grads.glsl"

// Field `field` (VKO_HYPER_*) of the group's options, double-float.
vec2 vko_hyper(uint group, uint field) {
  const uint at = vko_group_record(group) + VKO_SCHEDULE_WORDS + 2u * field;
  return vec2(uintBitsToFloat(vko_step_word(at)), uintBitsToFloat(vko_step_word(at + 1u)));
}

VkoStep vko_step_of(uint tensor, uint group) {
  VkoStep st;
  st.tensor = tensor;
  st.group = group;
  const uint rec = vko_tensor_record(tensor);
  st.t = vko_step_word(rec) + 1u;
  st.fresh = vko_step_word(rec + 1u) != 0u;
  st.carry = vec4(uintBitsToFloat(vko_step_word(rec + 4u)), uintBitsToFloat(vko_step_word(rec + 5u)),
                  uintBitsToFloat(vko_step_word(rec + 6u)), uintBitsToFloat(vko_step_word(rec + 7u)));
  st.lr = vec2(uintBitsToFloat(vko_step_word(rec + VKO_TENSOR_LR)), uintBitsToFloat(vko_step_word(rec + VKO_TENSOR_LR + 1u)));
  st.momentum = uintBitsToFloat(vko_step_word(rec + VKO_TENSOR_MOMENTUM));
  st.cycled = vko_step_word(rec + VKO_TENSOR_MOMENTUM + 1u) != 0u;
  vko_next_carry = st.carry;
  return st;
}

// beta1 (or momentum) of the step: the schedule's when it cycles it, else the option's.
vec2 vko_step_beta1(VkoStep st, uint field) {
  return st.cycled ? vec2(st.momentum, 0.0) : vko_hyper(st.group, field);
}

// A double-float rounded once to float.
float vko_df_float(vec2 a) {
  precise float r = a.x + a.y;
  return r;
}

// 1 - b^t (bias correction), double-float.
vec2 vko_one_minus_pow(vec2 b, uint t) { return vko_df_sub(VKO_DF_ONE, vko_df_pow_uint(b, t)); }

// x^p for x >= 0 as std::pow: whole p in [0, 64] by repeated squaring (so 0^0 = 1 and x^2 is a
// product), else 2^(p·log2 x) (relative error ~1e-9; 0 for x = 0 where std::pow gives inf for
// p < 0).
vec2 vko_df_pow_real(vec2 x, vec2 p) {
  if (p.y == 0.0 && p.x >= 0.0 && p.x <= 64.0 && p.x == floor(p.x)) return vko_df_pow_uint(x, uint(p.x));
  return vko_df_pow(x, p);
}

#define VKO_RULE_SCALARS(T)                                                                  \
  VKO_STEP_ENTRIES(T)                                                                       \
  T S;                                                                                      \
  T rule_device_scalars(VkoStep step);                                                      \
  void rule_load_scalars(uint tensor) {                                                     \
    if (VKO_REPLAY)                                                                         \
      S = vko_entry_load(rule_header().step_base + tensor);                                 \
    else                                                                                    \
      S = pc.s;                                                                             \
  }                                                                                         \
  void rule_prologue(VkoStep step) { vko_entry_store(rule_header().step_base + step.tensor, rule_device_scalars(step)); }

#define VKO_RULE_SCALARS_HOST_ONLY(T)            \
  T S;                                          \
  void rule_load_scalars(uint tensor) { S = pc.s; } \
  void rule_prologue(VkoStep step) {}

#define VKO_NO_RULE_SCALARS             \
  void rule_load_scalars(uint tensor) {} \
  void rule_prologue(VkoStep step) {}

void rule_load_scalars(uint tensor);
void rule_prologue(VkoStep step);

// The prologue pipeline's main: one invocation per tensor of the group (header.block_base ..
// block_end), group header.step_group; the first pass's prologue (header.seg_base = 1) also
// writes the tensor's next carry.
void vko_prologue_main() {
  const VkoPushHeader h = rule_header();
  const uint tensor = h.block_base + gl_GlobalInvocationID.x;
  if (tensor >= h.block_end) return;
  const VkoStep st = vko_step_of(tensor, h.step_group);
  rule_prologue(st);
  if (h.seg_base != 0u) {
    const uint rec = vko_tensor_record(tensor);
    for (uint k = 0u; k < 4u; ++k) vko_set_step_word(rec + 8u + k, floatBitsToUint(vko_next_carry[k]));
  }
}

#endif  // VKO_STEP_GLSL
