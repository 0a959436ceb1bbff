// Adam / AdamW / AMSGrad, torch.optim.Adam semantics by default (eps outside the square root,
// added after bias-correcting v; AMSGrad keeps the max of the raw v):
//   g <- maximize ? -g : g
//   decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- lerp(m, g, 1-b1) ;  v <- b2*v + (1-b2)*g^2
//   amsgrad: vmax <- max(vmax, v)                 (AMSGRAD_BC: max(vmax, v/bc2), optax)
//   p <- p - (lr/bc1) * m / (sqrt(vmax or v)/sqrt(bc2) + eps)
//   EPS_ROOT: the square root is sqrt(v/bc2 + eps_root) (optax); DECAY_AFTER: the decoupled
//   decay multiplies the updated p instead (bitsandbytes).
// bc1 = 1-b1^t and bc2 = 1-b2^t (1 without bias correction), 1-b1, 1-b2, lr/bc1 and sqrt(bc2) are
// computed on the host in double and rounded once, as torch does. Per element, the operations of
// torch's _single_tensor_adam: exp_avg.lerp_(g, 1-b1) ; exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2) ;
// denom = (sqrt(v) / sqrt(bc2)).add_(eps) ; param.addcdiv_(exp_avg, denom, -lr/bc1).
// Cautious steps (vko_cautious.glsl) mask m, the direction: timm's exp_avg * mask.
// The rule body of adam.comp, adam_cautious.comp and adam_cautious_apply.comp.
#include "vko_elementwise.glsl"
#include "vko_math.glsl"
#include "vko_cautious.glsl"

layout(constant_id = 3) const bool AMSGRAD = false;
layout(constant_id = 4) const bool MAXIMIZE = false;
layout(constant_id = 5) const bool DECOUPLED = false;
layout(constant_id = 6) const bool DECAY_AFTER = false;
layout(constant_id = 7) const bool AMSGRAD_BC = false;
layout(constant_id = 8) const bool EPS_ROOT = false;

struct AdamScalars {
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float eps_root;
  float weight_decay;  // used as L2 (g += wd*p) when not decoupled
  float decay_scale;   // 1 - lr*wd, used when decoupled
  float step_size;     // lr / bc1
  float inv_bc2;       // 1 / bc2 (optax forms)
  float sqrt_bc2;      // sqrt(bc2)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
#ifdef VKO_CAUTIOUS
  VkoScratchPush scratch;
#endif
  AdamScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3
#define OP_VMAX 4

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(AdamScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/adam.cpp), in double-float rounded once.
AdamScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 wd = vko_hyper(g, VKO_HYPER_weight_decay);
  const bool corrected = vko_hyper(g, VKO_HYPER_bias_correction).x != 0.0;
  const vec2 bc1 = corrected ? vko_one_minus_pow(beta1, step.t) : VKO_DF_ONE;
  const vec2 bc2 = corrected ? vko_one_minus_pow(beta2, step.t) : VKO_DF_ONE;
  AdamScalars s;
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.eps_root = vko_df_float(vko_hyper(g, VKO_HYPER_eps_root));
  s.weight_decay = vko_df_float(wd);
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  s.step_size = vko_df_float(vko_df_div(step.lr, bc1));
  s.inv_bc2 = vko_df_float(vko_df_div(VKO_DF_ONE, bc2));
  s.sqrt_bc2 = vko_df_float(vko_df_sqrt(bc2));
  return s;
}
uint rule_operands() { return 5u; }
#ifdef VKO_CAUTIOUS_COUNT
bool rule_reads(uint op) { return op == OP_G || op == OP_M || (op == OP_P && !DECOUPLED && S.weight_decay != 0.0); }
bool rule_writes(uint op) { return false; }
uint rule_partials_base() { return pc.scratch.partials_base; }
#else
bool rule_reads(uint op) { return op != OP_VMAX || AMSGRAD; }
bool rule_writes(uint op) { return op != OP_G && (op != OP_VMAX || AMSGRAD); }
#endif
#ifdef VKO_CAUTIOUS
uvec2 scratch_address() { return pc.scratch.scratch_address; }
#endif

// sqrt of the bias-corrected second moment, in the form the options ask for.
vec4 root(vec4 v, bool corrected) {
  precise vec4 r;
  if (EPS_ROOT)
    r = sqrt((corrected ? v : v * S.inv_bc2) + S.eps_root);
  else
    r = corrected ? sqrt(v) : sqrt(v) / S.sqrt_bc2;
  return r;
}

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (!DECOUPLED && S.weight_decay != 0.0) g = fma(vec4(S.weight_decay), p, g);
  if (DECOUPLED && !DECAY_AFTER) p *= S.decay_scale;
  precise const vec4 m = vko_lerp(x[OP_M], g, S.one_minus_beta1);
  precise const vec4 v = fma(S.one_minus_beta2 * g, g, S.beta2 * x[OP_V]);
#ifdef VKO_CAUTIOUS_COUNT
  x[OP_G] = vko_cautious_mask(m, g);
  return;
#endif
  precise vec4 denom;
  if (AMSGRAD) {
    const vec4 vmax = max(x[OP_VMAX], AMSGRAD_BC ? v * S.inv_bc2 : v);
    x[OP_VMAX] = vmax;
    denom = root(vmax, AMSGRAD_BC) + S.eps;
  } else {
    denom = root(v, false) + S.eps;
  }
#ifdef VKO_CAUTIOUS_APPLY
  p = p + (-S.step_size * vko_cautious(m, g, pc.scratch)) / denom;
#else
  p = p + (-S.step_size * m) / denom;
#endif
  if (DECOUPLED && DECAY_AFTER) p *= S.decay_scale;
  x[OP_P] = p;
  x[OP_M] = m;
  x[OP_V] = v;
}
