#version 450
#extension GL_GOOGLE_include_directive : require
// C = op(A) op(B) (+ bias per column) (ReLU) (* [mask > 0]) for M x N outputs, K deep.
// Operands are strided views, so transposes cost nothing: A'(i,k) = A[a_off + i*a_si + k*a_sk],
// B'(k,j) = B[b_off + k*b_sk + j*b_sj]; C(i,j) = C[c_off + i*ldc + j]. Each 8x8 workgroup
// computes a 64x64 tile, each invocation 8x8 outputs, through 32-deep shared tiles of A and B
// (16 KiB, the least every device offers). Few invocations and few barriers per tile: on CPU
// drivers barriers dominate.
#include "common.glsl"
layout(local_size_x = 8, local_size_y = 8) in;

const uint IN_MODEL_A = 1u, IN_MODEL_B = 2u, IN_MODEL_C = 4u, RELU = 8u, BIAS = 16u, MASK = 32u;
layout(push_constant) uniform Push {
  uint M, N, K;
  uint a_off, a_si, a_sk;
  uint b_off, b_sk, b_sj;
  uint c_off, ldc;
  uint bias_off;  // in the model buffer
  uint mask_off;  // in the activations, laid out as C
  uint flags;
} pc;

shared float tile_a[32][64];  // [k][i]
shared float tile_b[32][64];  // [k][j]

float load(bool in_model, uint index) { return in_model ? model[index] : acts[index]; }

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  const uint row0 = gl_WorkGroupID.y * 64u, col0 = gl_WorkGroupID.x * 64u;
  const uint lid = ty * 8u + tx;
  float acc[8][8];
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) acc[r][c] = 0.0;

  for (uint k0 = 0u; k0 < pc.K; k0 += 32u) {
    // 2048 elements of each tile, 32 per invocation. (Lanes next to each other load elements
    // a_si / b_sj apart: tuned for CPU drivers; a GPU engine would stage transposed copies.)
    for (uint e = lid; e < 2048u; e += 64u) {
      const uint kk = e / 64u, ii = e % 64u;
      const uint k = k0 + kk;
      const uint i = row0 + ii, j = col0 + ii;
      tile_a[kk][ii] = (i < pc.M && k < pc.K) ? load((pc.flags & IN_MODEL_A) != 0u, pc.a_off + i * pc.a_si + k * pc.a_sk) : 0.0;
      tile_b[kk][ii] = (j < pc.N && k < pc.K) ? load((pc.flags & IN_MODEL_B) != 0u, pc.b_off + k * pc.b_sk + j * pc.b_sj) : 0.0;
    }
    barrier();
    for (uint kk = 0u; kk < 32u; ++kk) {
      float a[8], b[8];
      for (int r = 0; r < 8; ++r) a[r] = tile_a[kk][ty + 8u * uint(r)];
      for (int c = 0; c < 8; ++c) b[c] = tile_b[kk][tx + 8u * uint(c)];
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) acc[r][c] = fma(a[r], b[c], acc[r][c]);
    }
    barrier();
  }

  for (int r = 0; r < 8; ++r) {
    const uint i = row0 + ty + 8u * uint(r);
    if (i >= pc.M) continue;
    for (int c = 0; c < 8; ++c) {
      const uint j = col0 + tx + 8u * uint(c);
      if (j >= pc.N) continue;
      float v = acc[r][c];
      if ((pc.flags & BIAS) != 0u) v += model[pc.bias_off + j];
      if ((pc.flags & RELU) != 0u) v = max(v, 0.0);
      const uint out_index = pc.c_off + i * pc.ldc + j;
      if ((pc.flags & MASK) != 0u && !(acts[pc.mask_off + i * pc.ldc + j] > 0.0)) v = 0.0;
      if ((pc.flags & IN_MODEL_C) != 0u)
        model[out_index] = v;
      else
        acts[out_index] = v;
    }
  }
}
