#version 450
#extension GL_GOOGLE_include_directive : require
// Schedule-Free AdamW, facebookresearch/schedule_free adamw_schedulefree_reference.py. The
// parameter holds y; state keeps z, x and v. Per step (host, double; replayable recordings: the
// prologue, double-float): lr_k = lr*sched*sqrt(bc2), c = weight/weight_sum. Per element:
//   z and x start at p (copied by the optimizer's initialisation)
//   z <- z - lr_k*wd*(decay_at_z ? z : y)
//   v <- b2*v + (1-b2)*g^2 ; z <- z - lr_k*g/(sqrt(v) + eps)
//   x <- (1-c)*x + c*z ; y <- b1*x + (1-b1)*z ; p <- y
#include "vko_elementwise.glsl"

layout(constant_id = 3) const bool DECAY_AT_Z = false;

struct ScheduleFreeAdamWScalars {
  float lr;     // lr_k
  float decay;  // lr_k * weight_decay
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float ckp1;
  float one_minus_ckp1;
};

layout(push_constant) uniform Push {
  VkoPushHeader header;
  ScheduleFreeAdamWScalars s;
} pc;

#define OP_P 0
#define OP_G 1
#define OP_Z 2
#define OP_V 3
#define OP_X 4

// The elementwise contract (vko_elementwise.glsl).
VkoPushHeader rule_header() { return pc.header; }
VKO_RULE_SCALARS(ScheduleFreeAdamWScalars)

// The scalars of step.t on the device, as push_constants (schedule()) computes them on the host
// (runtime/rules/schedule_free_adamw.cpp), in double-float rounded once. The host keeps lr_max
// and weight_sum in double; the carry keeps them as double-float pairs: (lr_max, weight_sum) in
// carry.xy, their low halves in carry.zw (ScheduleFreeAdamw::device_carry).
ScheduleFreeAdamWScalars rule_device_scalars(VkoStep step) {
  const uint g = step.group;
  const vec2 beta1 = vko_step_beta1(step, VKO_HYPER_beta1), beta2 = vko_hyper(g, VKO_HYPER_beta2);
  const vec2 warmup = vko_hyper(g, VKO_HYPER_warmup_steps);
  const vec2 t = vko_df_from_uint(step.t);  // k + 1
  const bool warming = vko_df_sub(vko_df_from_uint(step.t - 1u), warmup).x < 0.0;
  const vec2 sched = warming ? vko_df_div(t, warmup) : VKO_DF_ONE;
  const vec2 lr = vko_df_mul(vko_df_mul(step.lr, sched), vko_df_sqrt(vko_one_minus_pow(beta2, step.t)));
  const vec2 carried_max = step.carry.xz, carried_sum = step.carry.yw;
  const vec2 lr_max = vko_df_sub(lr, carried_max).x < 0.0 ? carried_max : lr;  // std::max(lr, lr_max)
  const vec2 weight = vko_df_mul(vko_df_pow_real(t, vko_hyper(g, VKO_HYPER_r)),
                                 vko_df_pow_real(lr_max, vko_hyper(g, VKO_HYPER_weight_lr_power)));
  const vec2 weight_sum = vko_df_add(carried_sum, weight);
  const vec2 ckp1 = weight_sum.x > 0.0 ? vko_df_div(weight, weight_sum) : vec2(0.0);
  vko_next_carry = vec4(lr_max.x, weight_sum.x, lr_max.y, weight_sum.y);
  ScheduleFreeAdamWScalars s;
  s.lr = vko_df_float(lr);
  s.decay = vko_df_float(vko_df_mul(lr, vko_hyper(g, VKO_HYPER_weight_decay)));
  s.beta1 = vko_df_float(beta1);
  s.one_minus_beta1 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta1));
  s.beta2 = vko_df_float(beta2);
  s.one_minus_beta2 = vko_df_float(vko_df_sub(VKO_DF_ONE, beta2));
  s.eps = vko_df_float(vko_hyper(g, VKO_HYPER_eps));
  s.ckp1 = vko_df_float(ckp1);
  s.one_minus_ckp1 = vko_df_float(vko_df_sub(VKO_DF_ONE, ckp1));
  return s;
}
uint rule_operands() { return 5u; }
bool rule_reads(uint op) { return true; }
bool rule_writes(uint op) { return op != OP_G; }

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 y = x[OP_P];
  const vec4 g = x[OP_G];
  // 1-b1, 1-b2 and 1-c come from the host (double, rounded once); no product is fused.
  precise vec4 z = x[OP_Z];
  const vec4 xs = x[OP_X];
  z -= S.decay * (DECAY_AT_Z ? z : y);
  precise const vec4 v = S.beta2 * x[OP_V] + S.one_minus_beta2 * g * g;
  z -= S.lr * g / (sqrt(v) + S.eps);
  precise const vec4 xn = S.one_minus_ckp1 * xs + S.ckp1 * z;
  precise const vec4 y_new = S.beta1 * xn + S.one_minus_beta1 * z;
  x[OP_Z] = z;
  x[OP_V] = v;
  x[OP_X] = xn;
  x[OP_P] = y_new;
}
