#version 450
#extension GL_GOOGLE_include_directive : require
// Schedule-Free AdamW, facebookresearch/schedule_free adamw_schedulefree_reference.py. The
// parameter holds y; state keeps z, x and v. Per step (host, double): lr_k = lr*sched*sqrt(bc2),
// c = weight/weight_sum. Per element:
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
VKO_RULE_SCALARS_HOST_ONLY(ScheduleFreeAdamWScalars)
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
