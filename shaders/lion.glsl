// Lion (google/automl lion_pytorch.py):
//   g <- maximize ? -g : g ; p <- p*(1 - lr*wd)
//   p <- p - lr*sign(b1*m + (1-b1)*g)   (sign(0) = 0) ; m <- b2*m + (1-b2)*g
// Cautious steps (vko_cautious.glsl) mask sign(c), the direction (timm's Lion with caution).
// The rule body of lion.comp, lion_cautious.comp and lion_cautious_apply.comp.
#include "vko_elementwise.glsl"
#include "vko_cautious.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

struct LionScalars {
  float lr;
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float decay_scale;  // 1 - lr*wd
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
#ifdef VKO_CAUTIOUS
  VkoScratchPush scratch;
#endif
  LionScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(LionScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/lion.cpp), in double-float rounded once.
LionScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  LionScalars s;
  s.lr = vko_df_float(step.lr);
  s.beta1 = vko_df_float(beta1);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, vko_hyper(g, VKO_HYPER_weight_decay))));
  return s;
}
uint rule_operands() { return 3u; }
#ifdef VKO_CAUTIOUS_COUNT
bool rule_reads(uint op) { return op != OP_P; }
bool rule_writes(uint op) { return false; }
uint rule_partials_base() { return pc.scratch.partials_base; }
#else
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }
#endif
#ifdef VKO_CAUTIOUS
uvec2 scratch_address() { return pc.scratch.scratch_address; }
#endif

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  // exp_avg * beta1 + grad * (1 - beta1): three tensor operations, each rounded
  precise const vec4 c = S.beta1 * x[OP_M] + S.one_minus_beta1 * g;
#ifdef VKO_CAUTIOUS_COUNT
  x[OP_G] = vko_cautious_mask(sign(c), g);
  return;
#endif
  precise vec4 p = x[OP_P] * S.decay_scale;
#ifdef VKO_CAUTIOUS_APPLY
  p = fma(vec4(-S.lr), vko_cautious(sign(c), g, pc.scratch), p);  // update.mul_(mask) ; p.add_(update, alpha=-lr)
#else
  p = fma(vec4(-S.lr), sign(c), p);  // p.add_(sign(c), alpha=-lr)
#endif
  precise const vec4 m = fma(vec4(S.one_minus_beta2), g, S.beta2 * x[OP_M]);  // mul_(b2).add_(g, alpha=1-b2)
  x[OP_P] = p;
  x[OP_M] = m;
}
