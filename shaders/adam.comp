#version 450
// Adam / AdamW / AMSGrad, torch.optim.Adam semantics (eps outside the square root, added after
// bias-correcting v; AMSGrad keeps the max of the raw v).
//   g <- maximize ? -g : g
//   decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m <- b1*m + (1-b1)*g ;  v <- b2*v + (1-b2)*g^2 ;  amsgrad: vmax <- max(vmax, v)
//   p <- p - (lr/bc1) * m / (sqrt(amsgrad ? vmax : v)/sqrt(bc2) + eps)
// bc1 = 1-b1^t and bc2 = 1-b2^t are computed on the host in double.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 3) const bool AMSGRAD = false;
layout(constant_id = 4) const bool MAXIMIZE = false;
layout(constant_id = 5) const bool DECOUPLED = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;   // used as L2 (g += wd*p) when not decoupled
  float decay_scale;    // 1 - lr*wd, used when decoupled
  float step_size;      // lr / bc1
  float inv_sqrt_bc2;   // 1 / sqrt(bc2)
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define OP_V 3
#define OP_VMAX 4
#define VKO_NUM_OPS 5
#define VKO_OP_READ(k) (k != OP_VMAX || AMSGRAD)
#define VKO_OP_WRITE(k) (k != OP_G && (k != OP_VMAX || AMSGRAD))

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  vec4 p = x[OP_P];
  if (DECOUPLED) {
    p *= pc.decay_scale;
  } else {
    g += pc.weight_decay * p;
  }
  const vec4 m = pc.beta1 * x[OP_M] + (1.0 - pc.beta1) * g;
  const vec4 v = pc.beta2 * x[OP_V] + (1.0 - pc.beta2) * g * g;
  vec4 v_used = v;
  if (AMSGRAD) {
    v_used = max(x[OP_VMAX], v);
    x[OP_VMAX] = v_used;
  }
  const vec4 denom = sqrt(v_used) * pc.inv_sqrt_bc2 + pc.eps;
  x[OP_P] = p - pc.step_size * m / denom;
  x[OP_M] = m;
  x[OP_V] = v;
}

VKO_ELEMENTWISE_MAIN
