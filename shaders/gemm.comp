#version 450
#extension GL_GOOGLE_include_directive : require
// Batched GEMM for the matrix rules (Muon's Newton-Schulz iterations), buffer device addresses
// only. For every job of the table (one per workgroup layer z):
//   C = out_scale * round(alpha * op(A) op(B) + beta * D / norm)
// op(A): m x k, op(B): k x n, D may be C itself; norm = max(sqrt(scratch entry), eps) or 1, and
// round to bf16 or none (runtime/gemm.hpp, GemmJob). Operands are addressed with element
// strides, so a transpose is a swap of strides. A workgroup
// computes a (THREADS_M*4) x (THREADS_N*4) tile of C, each invocation 4 x 4 of it, stepping
// through k TILE_K at a time through shared memory; tile sizes are specialization constants and
// nothing depends on the subgroup size. Accumulation is float32 in k order, so the result is the
// same on every run. BF16_INPUTS: A and B hold bf16 (2-byte elements), accumulated in float32.
#include "vko_base.glsl"
#include "vko_push.glsl"

layout(constant_id = 3) const uint THREADS_M = 16;
layout(constant_id = 4) const uint THREADS_N = 16;
layout(constant_id = 5) const uint TILE_K = 16;
layout(constant_id = 6) const bool BF16_INPUTS = false;
layout(constant_id = 7) const bool DIRECT = false;
const uint TILE_M = THREADS_M * 4u, TILE_N = THREADS_N * 4u;

// One job's record (runtime/gemm.hpp, GemmJobRecord): 112 bytes.
struct GemmJob {
  uvec2 a, b, c, d;  // addresses; d = 0: no D term
  uint m, n, k, round_bf16;
  uint a_row, a_col, b_row, b_col;  // element strides of op(A) and op(B)
  uint c_row, c_col, d_row, d_col;
  float alpha, beta, eps, out_scale;
  uint norm_entry, reserved0, reserved1, reserved2;  // norm_entry 0xFFFFFFFF: no norm
};

struct GemmScalars {
  uvec2 jobs;     // the job table's address
  uvec2 scratch;  // the reduction scratch (entries of two floats), for norm_entry
  uint count;     // jobs
};

layout(push_constant) uniform Push {
  VkoPushHeader header;  // (not read)
  GemmScalars s;
} pc;

shared float tile_a[TILE_K * TILE_M];  // [kk * TILE_M + i]
shared float tile_b[TILE_K * TILE_N];  // [kk * TILE_N + j]

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer GemmJobs { GemmJob jobs[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer GemmFloats { float x[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer GemmWords { uint x[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer GemmScratch { vec2 sums[]; };

// x rounded to the nearest bf16 (ties to even), as a float; non-finite values pass through.
float round_bf16(float x) {
  const uint u = floatBitsToUint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  return uintBitsToFloat((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}

// The divisor of the D term: max(sqrt(sum), eps) (rounded to bf16 with the job's outputs), or 1.
float d_divisor(GemmJob job) {
  if (job.norm_entry == 0xFFFFFFFFu) return 1.0;
  const float norm = sqrt(GemmScratch(pc.s.scratch).sums[job.norm_entry].x);
  const float divisor = max(norm, job.eps);
  return job.round_bf16 != 0u ? round_bf16(divisor) : divisor;
}

// Element (i, j) of C from its accumulated product.
void store_output(GemmJob job, uint i, uint j, float acc, float divisor) {
  precise float v = job.alpha * acc;
  if (job.d != uvec2(0)) {
    precise const float d = GemmFloats(job.d).x[i * job.d_row + j * job.d_col] / divisor;
    v = v + job.beta * d;
  }
  if (job.round_bf16 != 0u) v = round_bf16(v);
  GemmFloats(job.c).x[i * job.c_row + j * job.c_col] = job.out_scale * v;
}

float load_input(uvec2 address, uint index) {
  if (!BF16_INPUTS) return GemmFloats(address).x[index];
  const uint word = GemmWords(address).x[index >> 1];
  return uintBitsToFloat(((index & 1u) != 0u ? word >> 16 : word & 0xFFFFu) << 16);
}

// DIRECT (CPU drivers): no shared memory and no barriers; each invocation computes an 8 x 8
// block straight from memory.
void direct(GemmJob job) {
  const uint lid = gl_LocalInvocationID.x;
  const uint i0 = gl_WorkGroupID.y * THREADS_M * 8u + (lid / THREADS_N) * 8u;
  const uint j0 = gl_WorkGroupID.x * THREADS_N * 8u + (lid % THREADS_N) * 8u;
  if (i0 >= job.m || j0 >= job.n) return;
  float acc[64];
  [[unroll]] for (uint e = 0; e < 64u; ++e) acc[e] = 0.0;
  uint ia[8], jb[8];
  [[unroll]] for (uint r = 0; r < 8u; ++r) ia[r] = min(i0 + r, job.m - 1u) * job.a_row;
  [[unroll]] for (uint c = 0; c < 8u; ++c) jb[c] = min(j0 + c, job.n - 1u) * job.b_col;
  for (uint q = 0; q < job.k; ++q) {
    float a[8], b[8];
    [[unroll]] for (uint r = 0; r < 8u; ++r) a[r] = load_input(job.a, ia[r] + q * job.a_col);
    [[unroll]] for (uint c = 0; c < 8u; ++c) b[c] = load_input(job.b, q * job.b_row + jb[c]);
    [[unroll]] for (uint r = 0; r < 8u; ++r)
      [[unroll]] for (uint c = 0; c < 8u; ++c) {
        precise float sum = acc[r * 8u + c] + a[r] * b[c];
        acc[r * 8u + c] = sum;
      }
  }
  const float divisor = d_divisor(job);
  [[unroll]] for (uint r = 0; r < 8u; ++r)
    [[unroll]] for (uint c = 0; c < 8u; ++c) {
      const uint i = i0 + r, j = j0 + c;
      if (i >= job.m || j >= job.n) continue;
      store_output(job, i, j, acc[r * 8u + c], divisor);
    }
}

void main() {
  if (gl_WorkGroupID.z >= pc.s.count) return;  // (uniform in the workgroup)
  if (DIRECT) {
    direct(GemmJobs(pc.s.jobs).jobs[gl_WorkGroupID.z]);
    return;
  }
  const GemmJob job = GemmJobs(pc.s.jobs).jobs[gl_WorkGroupID.z];
  const uint row0 = gl_WorkGroupID.y * TILE_M, col0 = gl_WorkGroupID.x * TILE_N;
  if (row0 >= job.m || col0 >= job.n) return;  // the job is smaller than the grid (uniform)
  const uint lid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
  const uint ti = (lid / THREADS_N) * 4u, tj = (lid % THREADS_N) * 4u;  // this invocation's 4 x 4
  float acc[16];
  [[unroll]] for (uint e = 0; e < 16u; ++e) acc[e] = 0.0;
  for (uint k0 = 0; k0 < job.k; k0 += TILE_K) {
    for (uint e = lid; e < TILE_M * TILE_K; e += threads) {
      const uint i = e / TILE_K, kk = e % TILE_K, r = row0 + i, q = k0 + kk;
      tile_a[kk * TILE_M + i] = r < job.m && q < job.k ? load_input(job.a, r * job.a_row + q * job.a_col) : 0.0;
    }
    for (uint e = lid; e < TILE_K * TILE_N; e += threads) {
      const uint kk = e / TILE_N, j = e % TILE_N, q = k0 + kk, c = col0 + j;
      tile_b[kk * TILE_N + j] = q < job.k && c < job.n ? load_input(job.b, q * job.b_row + c * job.b_col) : 0.0;
    }
    barrier();
    for (uint kk = 0; kk < TILE_K; ++kk) {
      vec4 a, b;
      [[unroll]] for (uint r = 0; r < 4u; ++r) a[r] = tile_a[kk * TILE_M + ti + r];
      [[unroll]] for (uint c = 0; c < 4u; ++c) b[c] = tile_b[kk * TILE_N + tj + c];
      [[unroll]] for (uint r = 0; r < 4u; ++r)
        [[unroll]] for (uint c = 0; c < 4u; ++c) {
          precise float sum = acc[r * 4u + c] + a[r] * b[c];
          acc[r * 4u + c] = sum;
        }
    }
    barrier();
  }
  const float divisor = d_divisor(job);
  [[unroll]] for (uint r = 0; r < 4u; ++r)
    [[unroll]] for (uint c = 0; c < 4u; ++c) {
      const uint i = row0 + ti + r, j = col0 + tj + c;
      if (i >= job.m || j >= job.n) continue;
      store_output(job, i, j, acc[r * 4u + c], divisor);
    }
}
#else
void main() {}  // (the descriptor build is never used)
#endif
