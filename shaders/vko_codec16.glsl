// 16-bit storage types (f16, bf16): unpacking to float32 (exact) and rounding float32 to them,
// to nearest even or stochastically, with the counter-based generator stochastic rounding draws
// from. Includes vko_base.glsl (the type codes and VKO_STOCHASTIC).
#ifndef VKO_CODEC16_GLSL
#define VKO_CODEC16_GLSL

#include "vko_base.glsl"

// Two 16-bit values (low half first) of storage type dt as floats; exact.
vec2 vko_unpack16(uint w, uint dt) {
  if (dt == VKO_F16) return unpackHalf2x16(w);
  return uintBitsToFloat(uvec2(w << 16, w & 0xFFFF0000u));
}

// A counter-based generator (a 32-bit integer hash, "lowbias32"); vko_random
// (vko_operands.glsl) keys it per element and operand with (seed, step).
uint vko_hash(uint x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// x rounded to f16 or bf16 (dt), as bits. Round to nearest even, or (VKO_STOCHASTIC) up in
// magnitude with probability (|x| - lo) / (hi - lo) from the top bits of `rnd`: unbiased.
// Integer arithmetic throughout, so every device rounds alike.
uint vko_round16(float x, uint dt, uint rnd) {
  const uint bits = floatBitsToUint(x);
  const uint sign = (bits >> 16) & 0x8000u;
  const uint a = bits & 0x7FFFFFFFu;
  uint code, rem, shift;
  if (dt == VKO_BF16) {
    if (a > 0x7F800000u) return sign | 0x7FC0u;  // NaN stays NaN
    code = a >> 16;
    rem = a & 0xFFFFu;
    shift = 16u;
  } else {
    if (a > 0x7F800000u) return sign | 0x7E00u;
    if (a >= 0x47800000u) return sign | 0x7C00u;  // |x| >= 65536: infinity
    const int e = int(a >> 23) - 127;
    const uint m = (a & 0x7FFFFFu) | 0x800000u;
    if (e >= -14) {  // normal: keep 10 of the 23 fraction bits
      shift = 13u;
      code = (uint(e + 15) << 10) | ((m >> 13) & 0x3FFu);
      rem = m & 0x1FFFu;
    } else {  // subnormal: units of 2^-24
      shift = uint(-1 - e);
      if (shift > 31u) return sign;  // below 2^-32
      code = m >> shift;
      rem = m & ((1u << shift) - 1u);
    }
  }
  bool up;
  if (VKO_STOCHASTIC) {
    up = (rnd >> (32u - shift)) < rem;
  } else {
    const uint half_unit = 1u << (shift - 1u);
    up = rem > half_unit || (rem == half_unit && (code & 1u) != 0u);
  }
  return sign | (code + (up ? 1u : 0u));  // a carry moves into the exponent, as it should
}

#endif  // VKO_CODEC16_GLSL
