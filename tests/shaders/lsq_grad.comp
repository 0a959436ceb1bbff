#version 450
// A host engine's backward pass for the replay test: the gradient of 0.5 * |p - target|^2,
// g = p - target, over n elements.
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) readonly buffer Params { float p[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Grads { float g[]; };
layout(std430, set = 0, binding = 2) readonly buffer Targets { float target[]; };
layout(push_constant) uniform Push { uint n; } pc;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i < pc.n) g[i] = p[i] - target[i];
}
