#version 450
#extension GL_GOOGLE_include_directive : require
// Muon, pass 1 of 4 (Muon groups only): the momentum, and U into the update slot with per-chunk
// partial sums of U^2 (torch.optim.Muon):
//   B <- lerp(B, g, 1 - momentum) ; U = nesterov ? lerp(g, B, momentum) : B
// With NS_BF16, U is rounded to bf16 first (torch's Newton-Schulz takes update.bfloat16()).
// Pass 2 (reduce.comp) sums the partials per tensor, pass 3 (gemm.comp) orthogonalises U in
// place, pass 4 (muon_apply.comp) steps p.
#define VKO_PARTIALS 1
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool USE_MUON = true;  // (this pass runs in Muon groups only)
layout(constant_id = 4) const bool NESTEROV = true;
layout(constant_id = 5) const bool NS_BF16 = true;

struct MuonMomentumScalars {
  float momentum;
  float one_minus_momentum;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;
  MuonMomentumScalars s;
} pc;

#define OP_G 1
#define OP_B 2
#define OP_U 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(MuonMomentumScalars)

// The scalars on the device, as pass_push_constants (pass 0) computes them on the host
// (runtime/rules/muon.cpp), in double-float rounded once.
MuonMomentumScalars rule_device_scalars(VkoStep step) {
  const vec2 momentum = vko_hyper(step.group, VKO_HYPER_momentum);
  MuonMomentumScalars s;
  s.momentum = vko_df_float(momentum);
  s.one_minus_momentum = vko_df_float(vko_df_sub(VKO_DF_ONE, momentum));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return op == OP_G || op == OP_B; }
bool rule_writes(uint op) { return op == OP_B || op == OP_U; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }
uint rule_partials_base() { return pc.scratch.partials_base; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = x[OP_G];
  const vec4 b = vko_lerp(x[OP_B], g, S.one_minus_momentum);
  vec4 u = NESTEROV ? vko_lerp(g, b, S.momentum) : b;
  if (NS_BF16) u = vko_round_to(u, VKO_BF16);
  x[OP_B] = b;
  x[OP_U] = u;
}

vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask) {
  precise const vec4 u = x[OP_U] * mask;
  precise const float sum = dot(u, u);
  return vec2(sum, 0.0);
}
