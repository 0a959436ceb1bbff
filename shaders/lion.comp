#version 450
#extension GL_GOOGLE_include_directive : require
// Lion (google/automl lion_pytorch.py):
//   g <- maximize ? -g : g ; p <- p*(1 - lr*wd)
//   p <- p - lr*sign(b1*m + (1-b1)*g)   (sign(0) = 0) ; m <- b2*m + (1-b2)*g
#include "common.glsl"

layout(constant_id = 3) const bool MAXIMIZE = false;

layout(push_constant) uniform Push {
  VKO_PUSH_HEADER;
  float lr;
  float beta1;
  float beta2;
  float decay_scale;  // 1 - lr*wd
} pc;

#define OP_P 0
#define OP_G 1
#define OP_M 2
#define VKO_NUM_OPS 3
#define VKO_OP_READ(k) true
#define VKO_OP_WRITE(k) (k != OP_G)

void rule_update(inout vec4 x[VKO_MAX_OPS]) {
  const vec4 g = MAXIMIZE ? -x[OP_G] : x[OP_G];
  const vec4 c = pc.beta1 * x[OP_M] + (1.0 - pc.beta1) * g;
  x[OP_P] = x[OP_P] * pc.decay_scale - pc.lr * sign(c);
  x[OP_M] = pc.beta2 * x[OP_M] + (1.0 - pc.beta2) * g;
}

VKO_ELEMENTWISE_MAIN
