#version 450
#extension GL_GOOGLE_include_directive : require
// Copies the batch's images (bytes) into X as standardised floats, (v/255 - mean)/std, and their
// labels; rows past the batch's count are zeros.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  uint rows;            // rows of X
  uint image_words;     // words per image (pixels / 4)
  uint images_offset;   // first word of the image set in data
  uint labels_offset;   // first word of the label set in data
  uint x_offset;        // X in acts
  uint labels_out;      // labels (as floats) in acts
  float mean, inv_std;
} pc;

void main() {
  const uint gid = gl_GlobalInvocationID.x;
  const uint row = gid / pc.image_words, word = gid % pc.image_words;
  if (row >= pc.rows) return;
  const bool used = row < batch[0];
  const uint image = used ? batch[1u + row] : 0u;
  const uint packed = used ? data[pc.images_offset + image * pc.image_words + word] : 0u;
  for (uint b = 0u; b < 4u; ++b) {
    const float pixel = float((packed >> (8u * b)) & 255u) / 255.0;
    acts[pc.x_offset + row * pc.image_words * 4u + word * 4u + b] = used ? (pixel - pc.mean) * pc.inv_std : 0.0;
  }
  if (word == 0u) {
    const uint label = (data[pc.labels_offset + image / 4u] >> (8u * (image % 4u))) & 255u;
    acts[pc.labels_out + row] = used ? float(label) : 0.0;
  }
}
