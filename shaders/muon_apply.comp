#version 450
#extension GL_GOOGLE_include_directive : require
// Muon, pass 4 of 4. Muon groups: the decoupled decay with the unadjusted lr, then the step along
// the orthogonalised update X (the update slot, which pass 3 left scaled by the lr factor):
//   p <- p*(1 - lr*wd) ; p <- p - lr*X
// Groups with use_muon = false take AdamW's whole step here (torch.optim.AdamW, amsgrad off):
//   p <- p*(1 - lr*wd) ; m <- lerp(m, g, 1-b1) ; v <- b2*v + (1-b2)*g^2
//   p <- p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + adam_eps)
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool USE_MUON = true;
layout(constant_id = 4) const bool NESTEROV = true;  // (pass 1's)
layout(constant_id = 5) const bool NS_BF16 = true;   // (pass 1's)

struct MuonApplyScalars {
  float lr;
  float decay_scale;  // 1 - lr*wd
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float step_size;  // lr / bc1
  float sqrt_bc2;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  MuonApplyScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_X 3
#define OP_M 4
#define OP_V 5

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(MuonApplyScalars)

// The scalars of step.t on the device, as pass_push_constants (pass 3) computes them on the host
// (runtime/rules/muon.cpp), in double-float rounded once.
MuonApplyScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 bc1 = vko_one_minus_pow(beta1, step.t), bc2 = vko_one_minus_pow(beta2, step.t);
  MuonApplyScalars s;
  s.lr = vko_df_float(step.lr);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, vko_hyper(g, VKO_HYPER_weight_decay))));
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_adam_eps));
  s.step_size = vko_df_float(vko_df_div(step.lr, bc1));
  s.sqrt_bc2 = vko_df_float(vko_df_sqrt(bc2));
  return s;
}
uint rule_operands() { return USE_MUON ? 4u : 6u; }
bool rule_reads(uint op) { return USE_MUON ? op == OP_P || op == OP_X : op == OP_P || op == OP_G || op >= OP_M; }
bool rule_writes(uint op) { return op == OP_P || (!USE_MUON && op >= OP_M); }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 p = x[OP_P] * S.decay_scale;
  if (USE_MUON) {
    p = p + (-S.lr) * x[OP_X];
    x[OP_P] = p;
    return;
  }
  const vec4 g = x[OP_G];
  precise const vec4 m = vko_lerp(x[OP_M], g, S.one_minus_beta1);
  precise const vec4 v = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);
  precise const vec4 denom = sqrt(v) / S.sqrt_bc2 + S.eps;
  p = p + (-S.step_size * m) / denom;
  x[OP_P] = p;
  x[OP_M] = m;
  x[OP_V] = v;
}
