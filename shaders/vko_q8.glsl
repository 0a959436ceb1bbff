// 8-bit blockwise state: the dynamic maps with their decode and encode, and the per-block absmax
// that a workgroup reduces after an update (through shared memory, or with subgroupMax where
// subgroups tile blocks). Includes vko_base.glsl (the type codes, VKO_WIDTH, VKO_ITEMS,
// VKO_PRECISION, VKO_SUBGROUP).
#ifndef VKO_Q8_GLSL
#define VKO_Q8_GLSL

#include "vko_base.glsl"

// 8-bit blockwise states (bitsandbytes' scheme): a block of 256 elements stores one byte code
// per element and one float absmax; an element is map[code] * absmax. The maps are
// bitsandbytes' create_dynamic_map: codes sorted by value; the signed map has 0 (code 127),
// 1.0 (code 255), and +-mean_j * 10^(i-6) for decades i = 0..6 with 2^i linearly spaced means
// in (0.1, 1); the unsigned map has 0 (code 0), 1.0 (code 255) and 2^(i+1) means per decade.
// Rank r (0..126 signed, 0..253 unsigned) counts the magnitudes of one sign upward.
// 10^(i-6) and its inverse by selection: dynamic indexing of a constant array goes through
// memory on some drivers.
float vko_decade(int i) {
  return i == 0 ? 1e-6 : i == 1 ? 1e-5 : i == 2 ? 1e-4 : i == 3 ? 1e-3 : i == 4 ? 1e-2 : i == 5 ? 1e-1 : 1.0;
}
float vko_inverse_decade(int i) {
  return i == 0 ? 1e6 : i == 1 ? 1e5 : i == 2 ? 1e4 : i == 3 ? 1e3 : i == 4 ? 1e2 : i == 5 ? 1e1 : 1.0;
}

// The value of code c. The rank's decade and position come from the exponent and mantissa of
// float(rank + b) (findMSB and ldexp are not vector instructions on CPUs).
float vko_q8_decode(uint c, bool unsigned_map) {
  const bool negative = !unsigned_map && c < 127u;
  const int r = unsigned_map ? int(c) - 1 : negative ? 126 - int(c) : int(c) - 128;  // rank; -1: zero
  const float u = float(r + (unsigned_map ? 2 : 1));
  const int ubits = floatBitsToInt(u), nbits = ubits & 0x7F800000;
  const float n = intBitsToFloat(nbits), inv_n = intBitsToFloat(0x7F000000 - nbits);  // 2^msb, 2^-msb
  const int i = (nbits >> 23) - 127 - (unsigned_map ? 1 : 0);                           // decade
  const float m = vko_decade(i) * (0.1 + 0.9 * ((u - n + 0.5) * inv_n));
  return c == 255u ? 1.0 : r < 0 ? 0.0 : negative ? -m : m;
}

// The code of the map value nearest y (a value divided by its block's absmax); on a tie the
// smaller magnitude. The decade i (values 10^(i-7) .. 10^(i-6)) comes from comparisons with its
// bounds; in it the n = b * 2^i means sit at u = j + 0.5 on the scale
// u = (|y| * 10^(6-i) - 0.1) * n / 0.9, so the nearest mean is j = ceil(u) - 1 and the
// boundaries are computed, not searched: below u = 0.2 (the midpoint to the last mean of the
// decade below; to 0 in decade 0, where it lies lower) the value rounds down a rank, above
// u = n - 0.25 in the top decade up to 1.0. Ranks are contiguous across decades, so crossing one
// is a rank +-1. All in float (exact: small integers): no lookups, no integer conversions but the
// last, which on CPU drivers cost more than this arithmetic.
uint vko_q8_encode(float y, bool unsigned_map) {
  const bool negative = y < 0.0 && !unsigned_map;
  const float a = unsigned_map ? max(y, 0.0) : abs(y);
  const float b = unsigned_map ? 2.0 : 1.0;
  float scale = 1e6, n = b;  // 10^(6-i), b * 2^i: constants selected as the comparisons pass
  [[unroll]] for (int k = 0; k < 6; ++k) {
    const bool up = a >= vko_decade(k);
    scale = up ? vko_inverse_decade(k + 1) : scale;
    n = up ? b * float(2 << k) : n;
  }
  const float u = (a * scale - 0.1) * (n * (1.0 / 0.9));
  const float j = min(ceil(max(u, 0.5)) - 1.0, n - 1.0);  // (u <= 0.5: mean 0)
  // Decade 0's lower neighbour is 0: the midpoint to its first mean is at u = 0.25 - 0.05 n / 0.9.
  const float down = a >= 1e-6 ? 0.2 : unsigned_map ? 0.25 - 0.1 / 0.9 : 0.25 - 0.05 / 0.9;
  // 1.0 above the top decade's last mean (not for negative values: the signed map has no -1.0)
  const bool to_one = a >= 1e-1 && u > 64.0 * b - 0.25 && !negative;
  const float r = (n - b) + j - (u <= down ? 1.0 : 0.0) + (to_one ? 1.0 : 0.0);  // -1 .. top+1
  // Codes: unsigned 0 (zero), 1.. ranks, 255 (1.0); signed 0..126 negative ranks downward, 127
  // zero, 128.. positive ranks, 255 (1.0).
  if (unsigned_map) return uint(r + 1.0);
  return uint(127.0 + (negative ? -1.0 : 1.0) * (r + 1.0));
}

// Four codes of a word (low byte first) as values, and four values as codes.
vec4 vko_q8_decode4(uint w, uint dt) {
  const bool u = dt == VKO_Q8U;
  return vec4(vko_q8_decode(w & 0xFFu, u), vko_q8_decode((w >> 8) & 0xFFu, u), vko_q8_decode((w >> 16) & 0xFFu, u),
              vko_q8_decode(w >> 24, u));
}
uint vko_q8_encode4(vec4 y, uint dt) {
  const bool u = dt == VKO_Q8U;
  return vko_q8_encode(y.x, u) | (vko_q8_encode(y.y, u) << 8) | (vko_q8_encode(y.z, u) << 16) |
         (vko_q8_encode(y.w, u) << 24);
}
bool vko_is_q8(uint dt) { return dt == VKO_Q8S || dt == VKO_Q8U; }

// Per-block absmax of up to two 8-bit operands, for all of an invocation's items at once (an
// invocation's items lie in different blocks): every invocation posts its items' maxima, the
// first invocation of each block combines the block's 256 / VKO_WIDTH posts in order, and all
// read the results. Max is exact: any order, any subgroup size, the same result. Two barriers per
// workgroup: on CPU drivers barriers cost more than the loads a tree would save. The host makes
// the workgroup a whole number of blocks and VKO_ITEMS <= VKO_MAX_ITEMS for 8-bit state. Called
// once, in uniform control flow.
#define VKO_MAX_ITEMS 4  // (vko_subgroup_blocks_absmax is written out for 4)
// (Sized for VKO_MAX_ITEMS only in pipelines with 8-bit state.)
const uint VKO_POSTS = (1u + (VKO_MAX_ITEMS - 1u) * ((VKO_PRECISION >> 2) & 1u)) * gl_WorkGroupSize.x;
shared vec2 vko_block_posts[VKO_POSTS];
shared vec2 vko_block_results[VKO_POSTS * VKO_WIDTH / 256u + 1u];
vec2 vko_local_absmax[VKO_MAX_ITEMS];  // this invocation's items
vec2 vko_new_absmax[VKO_MAX_ITEMS];    // their blocks'
void vko_blocks_absmax(uint items) {
  const uint wg = gl_WorkGroupSize.x, per_block = 256u / VKO_WIDTH, lid = gl_LocalInvocationID.x;
  const uint idx = lid % per_block, blocks = wg / per_block;
  for (uint j = 0; j < items; ++j) vko_block_posts[j * wg + lid] = vko_local_absmax[j];
  barrier();
  if (idx == 0u)
    for (uint j = 0; j < items; ++j) {
      vec2 m = vko_block_posts[j * wg + lid];
      for (uint i = 1u; i < per_block; ++i) m = max(m, vko_block_posts[j * wg + lid + i]);
      vko_block_results[j * blocks + lid / per_block] = m;
    }
  barrier();
  for (uint j = 0; j < items; ++j) vko_new_absmax[j] = vko_block_results[j * blocks + lid / per_block];
}

// The same for fast segments when a subgroup's items are whole blocks (VKO_SUBGROUP != 0): item
// j of subgroup lane i is the subgroup's first item + j * VKO_SUBGROUP + i, so each block is
// `rows` consecutive j of every lane. No barriers: CPU drivers run a workgroup without them as
// one straight loop.
#ifdef VKO_SUBGROUP_BLOCKS
// (Written out for VKO_MAX_ITEMS = 4, without loops: with loops over `rows` the array index stayed
// a variable, CPU drivers then stored the results into the private array lane by lane, and 8-bit
// Adam took 1.6x fp32 Adam's time on lavapipe instead of 1.3x.)
#if VKO_MAX_ITEMS != 4
#error vko_subgroup_blocks_absmax takes exactly 4 items
#endif
void vko_subgroup_blocks_absmax() {
  const uint rows = 256u / (max(VKO_SUBGROUP, 1u) * VKO_WIDTH);
  vec2 m0 = vko_local_absmax[0], m1 = vko_local_absmax[1], m2 = vko_local_absmax[2], m3 = vko_local_absmax[3];
  if (rows == 1u) {
    m0 = subgroupMax(m0);
    if (VKO_ITEMS > 1u) m1 = subgroupMax(m1);
    if (VKO_ITEMS > 2u) m2 = subgroupMax(m2);
    if (VKO_ITEMS > 3u) m3 = subgroupMax(m3);
  } else if (rows == 2u) {
    m0 = m1 = subgroupMax(max(m0, m1));
    if (VKO_ITEMS > 2u) m2 = m3 = subgroupMax(max(m2, m3));
  } else {
    m0 = m1 = m2 = m3 = subgroupMax(max(max(m0, m1), max(m2, m3)));
  }
  vko_new_absmax[0] = m0;
  vko_new_absmax[1] = m1;
  vko_new_absmax[2] = m2;
  vko_new_absmax[3] = m3;
}
#endif

#endif  // VKO_Q8_GLSL
