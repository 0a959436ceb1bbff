#include "precision.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace vkoptim::detail {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t hash32(uint32_t x) {  // lowbias32, as vko_hash
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

constexpr float kDecade[7] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f};

// Magnitude of rank r of a map, in float with the same operations as vko_q8_decode.
float magnitude(int r, bool unsigned_map) {
  const uint32_t b = unsigned_map ? 2 : 1;
  if (r < 0) return 0.0f;
  if (r > (unsigned_map ? 253 : 126)) return 1.0f;
  const uint32_t u = uint32_t(r) + b;
  int msb = 31;
  while (!(u >> msb)) --msb;
  const uint32_t n = 1u << msb;
  return kDecade[msb - int(b - 1)] * (0.1f + 0.9f * std::ldexp(float(u - n) + 0.5f, -msb));
}

}  // namespace

uint32_t code_bits(uint32_t code) {
  switch (code) {
    case kF32:
      return 32;
    case kF16:
    case kBF16:
      return 16;
    case kQ4Signed:
    case kQ4Unsigned:
      return 4;
    default:
      return 8;
  }
}

uint16_t to_bf16(float x) {
  const uint32_t u = bits_of(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40u);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  return float_of(uint32_t(h) << 16);
}

uint16_t to_f16(float x) {
  const uint32_t u = bits_of(x), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u);
  if (a >= 0x47800000u) return uint16_t(sign | 0x7C00u);
  const int e = int(a >> 23) - 127;
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  uint32_t code, rem, shift;
  if (e >= -14) {
    shift = 13;
    code = (uint32_t(e + 15) << 10) | ((m >> 13) & 0x3FFu);
    rem = m & 0x1FFFu;
  } else {
    shift = uint32_t(-1 - e);
    if (shift > 31) return uint16_t(sign);
    code = m >> shift;
    rem = m & ((1u << shift) - 1u);
  }
  const uint32_t half = 1u << (shift - 1);
  const bool up = rem > half || (rem == half && (code & 1u));
  return uint16_t(sign | (code + (up ? 1 : 0)));
}
float from_f16(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return float_of(sign | 0x7F800000u | (m << 13));
  if (e == 0) return (sign ? -1.0f : 1.0f) * std::ldexp(float(m), -24);
  return float_of(sign | ((e + 112) << 23) | (m << 13));
}

std::vector<uint8_t> encode(std::span<const float> values, uint32_t code) {
  std::vector<uint8_t> out(values.size() * code_bytes(code));
  for (size_t i = 0; i < values.size(); ++i) {
    if (code == kF32) {
      std::memcpy(&out[i * 4], &values[i], 4);
    } else {
      const uint16_t h = code == kF16 ? to_f16(values[i]) : to_bf16(values[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<float> decode(const uint8_t* bytes, size_t count, uint32_t code) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (code == kF32) {
      std::memcpy(&out[i], bytes + i * 4, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes + i * 2, 2);
      out[i] = code == kF16 ? from_f16(h) : from_bf16(h);
    }
  }
  return out;
}

float q8_value(uint32_t c, bool unsigned_map) {
  if (unsigned_map) return c == 255 ? 1.0f : magnitude(int(c) - 1, true);
  if (c == 255) return 1.0f;
  return c >= 127 ? magnitude(int(c) - 128, false) : -magnitude(126 - int(c), false);
}

namespace {
// Blockwise quantization's common part: each block's absmax (into absmax[b * stride]), then
// store(i, y) for each element with y its value over that absmax.
template <class Store>
void quantize_blocks(std::span<const float> values, size_t block, float* absmax, uint32_t stride, Store store) {
  for (size_t b = 0; b * block < values.size(); ++b) {
    const size_t begin = b * block, end = std::min(values.size(), begin + block);
    float m = 0;
    for (size_t i = begin; i < end; ++i) m = std::max(m, std::fabs(values[i]));
    absmax[b * stride] = m;
    const float inv = m > 0 ? 1.0f / m : 0.0f;
    for (size_t i = begin; i < end; ++i) store(i, values[i] * inv);
  }
}
}  // namespace

void q8_quantize(std::span<const float> values, bool unsigned_map, uint8_t* codes, float* absmax,
                 uint32_t absmax_stride) {
  // The map's values in code order, searched for the nearest (ties: the smaller magnitude).
  float map[256];
  for (uint32_t c = 0; c < 256; ++c) map[c] = q8_value(c, unsigned_map);
  quantize_blocks(values, 256, absmax, absmax_stride, [&](size_t i, float y) {
    uint32_t best = 0;
    for (uint32_t c = 1; c < 256; ++c) {
      const float d = std::fabs(map[c] - y), bd = std::fabs(map[best] - y);
      if (d < bd || (d == bd && std::fabs(map[c]) < std::fabs(map[best]))) best = c;
    }
    codes[i] = uint8_t(best);
  });
}

namespace {
// The signed 4-bit map's values and the midpoints between consecutive ones (vko_quant.glsl).
constexpr float kQ4SignedMap[16] = {-0.8875f, -0.6625f, -0.4375f, -0.2125f, -0.0775f, -0.0325f, -0.0055f, 0.0f,
                                    0.0055f,  0.0325f,  0.0775f,  0.2125f,  0.4375f,  0.6625f,  0.8875f,  1.0f};
constexpr float kQ4SignedMid[15] = {-0.775f, -0.55f, -0.325f, -0.145f, -0.055f, -0.019f, -0.00275f, 0.00275f,
                                    0.019f,  0.055f, 0.145f,  0.325f,  0.55f,   0.775f,  0.94375f};

uint32_t q4_code(float y, bool unsigned_map) {
  if (unsigned_map) return uint32_t(std::clamp(std::floor(y * 16.0f - 0.5f), 0.0f, 15.0f));
  uint32_t c = 0;
  for (float m : kQ4SignedMid) c += y >= m ? 1 : 0;
  return c;
}
}  // namespace

float q4_value(uint32_t code, bool unsigned_map) {
  return unsigned_map ? float(code + 1) * 0.0625f : kQ4SignedMap[code & 15];
}

void q4_quantize(std::span<const float> values, bool unsigned_map, uint8_t* packed, float* absmax,
                 uint32_t absmax_stride) {
  std::fill(packed, packed + quantized_bytes(values.size(), kQ4Signed), uint8_t(0));
  quantize_blocks(values, 128, absmax, absmax_stride,
                  [&](size_t i, float y) { packed[i / 2] |= uint8_t(q4_code(y, unsigned_map) << (4 * (i % 2))); });
}

std::vector<float> dequantize_rank1(std::span<const uint8_t> codes, uint64_t count, uint64_t first, uint64_t rows,
                                    uint64_t cols, const float* maxima) {
  std::vector<float> out(count);
  for (uint64_t i = 0; i < out.size(); ++i) {
    const uint64_t e = first + i;
    const float scale = std::min(maxima[e / cols], maxima[rows + e % cols]);
    out[i] = q4_value((codes[i / 2] >> (4 * (i % 2))) & 15u, true) * scale;
  }
  return out;
}

std::vector<uint8_t> quantize_rank1(std::span<const float> values, uint64_t rows, uint64_t cols, float* maxima) {
  std::fill(maxima, maxima + rows + cols, 0.0f);
  for (uint64_t i = 0; i < values.size(); ++i) {
    const float a = std::fabs(values[i]);
    maxima[i / cols] = std::max(maxima[i / cols], a);
    maxima[rows + i % cols] = std::max(maxima[rows + i % cols], a);
  }
  std::vector<uint8_t> out(quantized_bytes(values.size(), kQ4Unsigned), 0);
  for (uint64_t i = 0; i < values.size(); ++i) {
    const float scale = std::min(maxima[i / cols], maxima[rows + i % cols]);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    out[i / 2] |= uint8_t(q4_code(values[i] * inv, true) << (4 * (i % 2)));
  }
  return out;
}

std::vector<float> dequantize(std::span<const uint8_t> codes, uint64_t count, uint32_t code, const float* absmax,
                              uint32_t absmax_stride) {
  std::vector<float> out(count);
  const bool u = is_unsigned_map(code);
  const uint32_t block = quant_block(code);
  for (uint64_t i = 0; i < count; ++i) {
    const float scale = absmax[i / block * absmax_stride];
    out[i] = is_q4(code) ? q4_value((codes[i / 2] >> (4 * (i % 2))) & 15u, u) * scale : q8_value(codes[i], u) * scale;
  }
  return out;
}

std::vector<uint8_t> quantize(std::span<const float> values, uint32_t code, float* absmax, uint32_t absmax_stride) {
  std::vector<uint8_t> out(quantized_bytes(values.size(), code));
  if (is_q4(code))
    q4_quantize(values, is_unsigned_map(code), out.data(), absmax, absmax_stride);
  else
    q8_quantize(values, is_unsigned_map(code), out.data(), absmax, absmax_stride);
  return out;
}

uint32_t fill_word(float value, uint32_t code) {
  switch (code) {
    case kF32:
      return bits_of(value);
    case kF16:
      return uint32_t(to_f16(value)) * 0x10001u;
    case kBF16:
      return uint32_t(to_bf16(value)) * 0x10001u;
    case kQ8Signed:
      return 0x7F7F7F7Fu;  // 8-bit state starts at zero
    case kQ4Signed:
      return 0x77777777u;  // so does 4-bit (the unsigned maps' code 0 times an absmax of 0 is 0)
    default:
      return 0;
  }
}

uint32_t round_key(uint64_t seed, uint64_t step) {
  return hash32(uint32_t(seed) ^ hash32(uint32_t(seed >> 32) ^ hash32(uint32_t(step))));
}

}  // namespace vkoptim::detail
