// SGD with momentum, torch.optim.SGD semantics by default.
//   g <- maximize ? -g : g ;  g <- g + wd*p
//   if momentum:  b <- first_step ? g : mu*b + (1-dampening)*g   (dampen_first_step: (1-d)*g first)
//                 g <- nesterov ? nesterov_grad_scale*g + mu*b : b
//   p <- p - lr*g
// The EMA form (b starts at zero, b <- mu*b + (1-mu)*g every step) is the same shader with
// first_step = 0, damp_scale = 1-mu and nesterov_grad_scale = 1-mu, set by the host.
// Cautious steps (vko_cautious.glsl) mask the direction b (nesterov: g + mu*b), as timm's SGDW.
// The rule body of sgd.comp, sgd_cautious.comp and sgd_cautious_apply.comp.
#include "vko_elementwise.glsl"
#include "vko_math.glsl"
#include "vko_cautious.glsl"

layout(constant_id = 3) const bool HAS_MOMENTUM = false;
layout(constant_id = 4) const bool NESTEROV = false;
layout(constant_id = 5) const bool MAXIMIZE = false;
layout(constant_id = 6) const bool DECOUPLED = false;  // p <- p*(1 - lr*wd) instead of L2

struct SgdScalars {
  float lr;
  float momentum;
  float damp_scale;           // 1 - dampening (torch) or 1 - momentum (EMA)
  float weight_decay;
  float nesterov_grad_scale;  // 1 (torch) or 1 - momentum (EMA)
  uint first_step;            // 1: the buffer is set to first_scale*g (torch's first step)
  float first_scale;          // 1 (torch) or 1 - dampening (MLX parity)
  float decay_scale;  // 1 - lr*wd (decoupled decay)
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
#ifdef VKO_CAUTIOUS
  VkoScratchPush scratch;
#endif
  SgdScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_B 2

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(SgdScalars)

// The scalars of step.t on the device, as push_constants computes them on the host
// (runtime/rules/sgd.cpp), in double-float rounded once.
SgdScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 momentum = vko_step_beta1(step, VKO_HYPER_momentum);
  const vec2 dampening = vko_hyper(g, VKO_HYPER_dampening), wd = vko_hyper(g, VKO_HYPER_weight_decay);
  const bool ema = vko_hyper(g, VKO_HYPER_momentum_form).x != 0.0;
  const bool dampen_first = vko_hyper(g, VKO_HYPER_dampen_first_step).x != 0.0;
  const vec2 one_minus_momentum = vko_df_sub(VKO_DF_ONE, momentum);
  const vec2 one_minus_dampening = vko_df_sub(VKO_DF_ONE, dampening);
  SgdScalars s;
  s.lr = vko_df_float(step.lr);
  s.momentum = vko_df_float(momentum);
  s.damp_scale = vko_df_float(ema ? one_minus_momentum : one_minus_dampening);
  s.weight_decay = vko_df_float(wd);
  s.nesterov_grad_scale = ema ? vko_df_float(one_minus_momentum) : 1.0;
  s.first_step = !ema && step.fresh && dampening.x != 0.0 && !dampen_first ? 1u : 0u;
  s.first_scale = dampen_first ? vko_df_float(one_minus_dampening) : 1.0;
  s.decay_scale = vko_df_float(vko_df_sub(VKO_DF_ONE, vko_df_mul(step.lr, wd)));
  return s;
}
uint rule_operands() { return 3u; }
#ifdef VKO_CAUTIOUS_COUNT
bool rule_reads(uint op) {
  return op == OP_G || (op == OP_P && !DECOUPLED && S.weight_decay != 0.0) || (op == OP_B && S.first_step == 0);
}
bool rule_writes(uint op) { return false; }
uint rule_partials_base() { return pc.scratch.partials_base; }
#else
bool rule_reads(uint op) { return op != OP_B || (HAS_MOMENTUM && S.first_step == 0); }
bool rule_writes(uint op) { return op == OP_P || (op == OP_B && HAS_MOMENTUM); }
#endif
#ifdef VKO_CAUTIOUS
uvec2 scratch_address() { return pc.scratch.scratch_address; }
#endif

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  // torch: grad.add(param, alpha=wd) ; buf.mul_(mu).add_(grad, alpha=1-d) ;
  // grad.add(buf, alpha=mu) ; param.add_(grad, alpha=-lr)  (see vko_lerp in vko_math.glsl)
  precise vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  precise vec4 p = x[OP_P];
  if (DECOUPLED)
    p *= S.decay_scale;
  else if (S.weight_decay != 0.0)
    g = fma(vec4(S.weight_decay), p, g);
  if (HAS_MOMENTUM) {
    precise vec4 b;
    if (S.first_step != 0)
      b = S.first_scale * g;
    else
      b = fma(vec4(S.damp_scale), g, S.momentum * x[OP_B]);
    x[OP_B] = b;
    precise vec4 d;
    if (NESTEROV)
      d = fma(vec4(S.momentum), b, S.nesterov_grad_scale * g);
    else
      d = b;
#if defined(VKO_CAUTIOUS_COUNT)
    x[OP_G] = vko_cautious_mask(d, g);
    return;
#elif defined(VKO_CAUTIOUS_APPLY)
    d = vko_cautious(d, g, pc.scratch);
#endif
    g = d;
  }
  precise const vec4 p_new = fma(vec4(-S.lr), g, p);
  x[OP_P] = p_new;
}
