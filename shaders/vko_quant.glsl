// Quantized (8-bit and 4-bit) blockwise state: the maps with their decode and encode, and the
// per-block absmax that a workgroup reduces after an update (through shared memory, or with
// subgroupMax where subgroups tile blocks). Includes vko_base.glsl (the type codes, VKO_WIDTH, VKO_ITEMS,
// VKO_PRECISION, VKO_SUBGROUP).
#ifndef VKO_QUANT_GLSL
#define VKO_QUANT_GLSL

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

// 4-bit blockwise states (torchao's AdamW4bit, after Li et al. 2023, "Memory Efficient Optimizers
// with 4-bit States"): a block of 128 elements stores one 4-bit code per element (an item's codes
// in one word, element 0 in the low nibble) and one float absmax.
//   Signed (first moments): create_dynamic_map(signed, 3 exponent bits, 4 bits), codes sorted by
//   value: -0.8875 -0.6625 -0.4375 -0.2125 -0.0775 -0.0325 -0.0055 0 (code 7) 0.0055 0.0325
//   0.0775 0.2125 0.4375 0.6625 0.8875 1.0 (code 15).
//   Unsigned (second moments): the linear map without zero, (c + 1) / 16: a second moment never
//   decodes to 0 unless its whole block is 0, so 1/sqrt(v) stays bounded (the paper's zero-point
//   problem).
// Nearest value; a value halfway between two goes to the larger (torchao's rounding). Groups
// that round stochastically (Rounding::stochastic) round codes stochastically too.
float vko_q4_magnitude(uint r) {  // positive rank r of the signed map (selection, as vko_decade)
  return r == 0u ? 0.0055 : r == 1u ? 0.0325 : r == 2u ? 0.0775 : r == 3u ? 0.2125
       : r == 4u ? 0.4375 : r == 5u ? 0.6625 : r == 6u ? 0.8875 : 1.0;
}
float vko_q4_value(uint c, bool unsigned_map) {
  if (unsigned_map) return float(c + 1u) * 0.0625;
  const float m = vko_q4_magnitude(c >= 8u ? c - 8u : 6u - min(c, 6u));
  return c == 7u ? 0.0 : c < 7u ? -m : m;
}
vec4 vko_q4_decode4(uint bits, bool unsigned_map) {  // four codes: the low 16 bits
  const uvec4 c = (uvec4(bits) >> uvec4(0, 4, 8, 12)) & 15u;
  return vec4(vko_q4_value(c.x, unsigned_map), vko_q4_value(c.y, unsigned_map), vko_q4_value(c.z, unsigned_map),
              vko_q4_value(c.w, unsigned_map));
}
// Four codes in the low 16 bits: nearest, or with `stochastic` up to the next code with
// probability proportional to the distance from the code below (rnd: 32 random bits per lane),
// so that a moving average whose change per step is below half a code's gap moves on average
// instead of sticking at its code.
uint vko_q4_encode4(vec4 y, bool unsigned_map, bool stochastic, uvec4 rnd) {
  const vec4 u = vec4(rnd >> 8u) * (1.0 / 16777216.0);  // [0, 1)
  uvec4 c;
  if (unsigned_map) {
    const vec4 t = clamp(y * 16.0 - 1.0, vec4(0.0), vec4(15.0));  // exact: y * 16 is
    c = stochastic ? min(uvec4(t) + uvec4(lessThan(u, fract(t))), uvec4(15u)) : uvec4(floor(t + 0.5));
  } else if (!stochastic) {
    // how many of the 15 midpoints between consecutive values lie at or below y
    const float mid[15] = {-0.775, -0.55, -0.325, -0.145, -0.055, -0.019, -0.00275, 0.00275, 0.019, 0.055, 0.145,
                           0.325, 0.55, 0.775, 0.94375};
    c = uvec4(0u);
    [[unroll]] for (uint k = 0; k < 15u; ++k) c += uvec4(greaterThanEqual(y, vec4(mid[k])));
  } else {
    // the code below y: how many of codes 1..14 have values at or below it
    const float value[14] = {-0.6625, -0.4375, -0.2125, -0.0775, -0.0325, -0.0055, 0.0, 0.0055, 0.0325, 0.0775,
                             0.2125, 0.4375, 0.6625, 0.8875};
    c = uvec4(0u);
    [[unroll]] for (uint k = 0; k < 14u; ++k) c += uvec4(greaterThanEqual(y, vec4(value[k])));
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
      const float below = vko_q4_value(c[l], false), above = vko_q4_value(c[l] + 1u, false);
      c[l] += u[l] < clamp((y[l] - below) / (above - below), 0.0, 1.0) ? 1u : 0u;
    }
  }
  return c.x | (c.y << 4) | (c.z << 8) | (c.w << 12);
}

bool vko_is_q4(uint dt) { return dt == VKO_Q4S || dt == VKO_Q4U; }
bool vko_is_quantized(uint dt) { return dt >= VKO_Q8S && dt <= VKO_Q4U; }
bool vko_is_unsigned_map(uint dt) { return dt == VKO_Q8U || dt == VKO_Q4U; }

// Per-block absmax of up to two quantized operands, for all of an invocation's items at once (an
// invocation's items lie in different blocks): every invocation posts its items' maxima, the
// first invocation of each block combines the block's VKO_QBLOCK / VKO_WIDTH posts in order, and all
// read the results. Max is exact: any order, any subgroup size, the same result. Two barriers per
// workgroup: on CPU drivers barriers cost more than the loads a tree would save. The host makes
// the workgroup a whole number of blocks and VKO_ITEMS <= VKO_MAX_ITEMS for quantized state. Called
// once, in uniform control flow.
#define VKO_MAX_ITEMS 4  // (vko_subgroup_blocks_absmax is written out for 4)
// (Sized for VKO_MAX_ITEMS only in pipelines with quantized state.)
const uint VKO_POSTS = (1u + (VKO_MAX_ITEMS - 1u) * ((VKO_PRECISION >> 2) & 1u)) * gl_WorkGroupSize.x;
shared vec2 vko_block_posts[VKO_POSTS];
shared vec2 vko_block_results[VKO_POSTS * VKO_WIDTH / VKO_QBLOCK + 1u];
vec2 vko_local_absmax[VKO_MAX_ITEMS];  // this invocation's items
vec2 vko_new_absmax[VKO_MAX_ITEMS];    // their blocks'
void vko_blocks_absmax(uint items) {
  const uint wg = gl_WorkGroupSize.x, per_block = VKO_QBLOCK / VKO_WIDTH, lid = gl_LocalInvocationID.x;
  const uint idx = lid % per_block, blocks = wg / per_block;
  for (uint j = 0; j < items; ++j) vko_block_posts[j * wg + lid] = vko_local_absmax[j];
  barrier();
  // (A loop of length 0 for the other invocations: CPU drivers, which run a loop while any lane
  // of a subgroup needs it, then skip it in subgroups holding no block's first invocation.)
  const uint first_items = idx == 0u ? items : 0u;
  for (uint j = 0; j < first_items; ++j) {
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
  const uint rows = VKO_QBLOCK / (max(VKO_SUBGROUP, 1u) * VKO_WIDTH);
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

#endif  // VKO_QUANT_GLSL
