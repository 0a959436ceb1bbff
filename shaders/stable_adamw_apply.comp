#version 450
#extension GL_GOOGLE_include_directive : require
// StableAdamW, pass 3 of 3: the update with the tensor's RMS from pass 2:
//   rms = sqrt(sum(g^2 / max(v, eps^2)) / count) ; lr' = lr / max(1, rms)
//   p <- p*(1 - lr'*wd) ; p <- p - lr' * m / (sqrt(v) + eps)
#define VKO_NEEDS_EXTRA true
#include "vko_elementwise.glsl"
#include "vko_reduce.glsl"

struct StableAdamwApplyScalars {
  float lr;
  float eps;
  float weight_decay;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  VkoScratchPush scratch;  // sums_base: per-tensor (sum g^2/max(v, eps^2), 0)
  StableAdamwApplyScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(StableAdamwApplyScalars)

// The scalars of step.t on the device, as pass_push_constants (pass 2) computes them on the host
// (runtime/rules/stable_adamw.cpp), in double-float rounded once.
StableAdamwApplyScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  StableAdamwApplyScalars s;
  s.lr = vko_df_float(step.lr);
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.weight_decay = vko_df_float(vko_hyper(g, VKO_HYPER_weight_decay));
  return s;
}
uint rule_operands() { return 4u; }
bool rule_reads(uint op) { return op != OP_G; }
bool rule_writes(uint op) { return op == OP_P; }
uvec2 scratch_address() { return pc.scratch.scratch_address; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const float sum = vko_scratch(pc.scratch.sums_base + vko_segment_head.w).x;
  const float rms = sqrt(sum / float(vko_segment_extra.z));  // mean over the whole tensor
  const float lr = S.lr / max(1.0, rms);
  precise vec4 p = x[OP_P] * (1.0 - lr * S.weight_decay);
  p = p + (-lr * x[OP_M]) / (sqrt(x[OP_V]) + S.eps);  // param.addcdiv_(m, sqrt(v) + eps, value=-lr')
  x[OP_P] = p;
}
