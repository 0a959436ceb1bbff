#version 450
#extension GL_GOOGLE_include_directive : require
// Softmax cross-entropy of each row's logits against its label: the row's loss and whether its
// argmax is right, and d(mean loss)/d(logits) = (softmax - onehot) / count. Rows past the
// batch's count give zeros. Then `stats` sums the rows.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  uint rows, classes;
  uint logits, labels, dlogits, row_loss, row_correct;
} pc;

void main() {
  const uint row = gl_GlobalInvocationID.x;
  if (row >= pc.rows) return;
  const uint count = batch[0];
  const uint base = pc.logits + row * pc.classes;
  if (row >= count) {
    for (uint c = 0u; c < pc.classes; ++c) acts[pc.dlogits + row * pc.classes + c] = 0.0;
    acts[pc.row_loss + row] = 0.0;
    acts[pc.row_correct + row] = 0.0;
    return;
  }
  const uint label = uint(acts[pc.labels + row]);
  float top = acts[base];
  uint best = 0u;
  for (uint c = 1u; c < pc.classes; ++c) {
    if (acts[base + c] > top) {
      top = acts[base + c];
      best = c;
    }
  }
  float sum = 0.0;
  for (uint c = 0u; c < pc.classes; ++c) sum += exp(acts[base + c] - top);
  const float log_sum = log(sum) + top;
  for (uint c = 0u; c < pc.classes; ++c) {
    const float p = exp(acts[base + c] - log_sum);
    acts[pc.dlogits + row * pc.classes + c] = (p - (c == label ? 1.0 : 0.0)) / float(count);
  }
  acts[pc.row_loss + row] = log_sum - acts[base + label];
  acts[pc.row_correct + row] = best == label ? 1.0 : 0.0;
}
