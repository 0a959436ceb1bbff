#version 450
#extension GL_GOOGLE_include_directive : require
// The batch's loss sum and correct count, summed in row order by one invocation (the same bits
// every run), written where the host reads them after the submission.
#include "common.glsl"
layout(local_size_x = 1) in;

layout(push_constant) uniform Push {
  uint row_loss, row_correct;
} pc;

void main() {
  const uint count = batch[0];
  float loss = 0.0, correct = 0.0;
  for (uint r = 0u; r < count; ++r) {
    loss += acts[pc.row_loss + r];
    correct += acts[pc.row_correct + r];
  }
  stats[0] = loss;
  stats[1] = correct;
}
