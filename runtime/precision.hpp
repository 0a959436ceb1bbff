#pragma once
// Host side of storage types: the codes shaders/vko_base.glsl uses, conversions for uploads and
// state access, and the 8-bit dynamic maps.
#include <cstdint>
#include <span>
#include <vector>

#include "vkoptim/optimizer.hpp"
#include "vkoptim/tensor.hpp"

namespace vkoptim::detail {

// Storage type codes, 3 bits per operand (VKO_F32 ... VKO_ABSENT in shaders/vko_base.glsl).
enum DTypeCode : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8Signed = 3, kQ8Unsigned = 4, kAbsent = 7 };
constexpr uint32_t kQuantBlock = 256;  // elements per 8-bit block (one absmax each)
constexpr uint32_t kMaxQ8Items = 4;    // VKO_MAX_ITEMS: an invocation's items kept for the block reduction

inline uint32_t dtype_code(DType d) {
  return uint32_t(d);  // DType's values are the codes
}
// Bytes per element of a storage code (8-bit codes: 1; absmax is kept separately).
uint32_t code_bytes(uint32_t code);
inline bool is_q8(uint32_t code) {
  return code == kQ8Signed || code == kQ8Unsigned;
}

// Round-to-nearest-even conversions (the shaders' rounding without stochastic rounding).
uint16_t to_f16(float x);
uint16_t to_bf16(float x);
float from_f16(uint16_t h);
float from_bf16(uint16_t h);

// Elements <-> bytes of a 32-bit or 16-bit storage type.
std::vector<uint8_t> encode(std::span<const float> values, uint32_t code);
std::vector<float> decode(const uint8_t* bytes, size_t count, uint32_t code);

// 8-bit blockwise: map value of a code (as the shaders compute it), and quantization of values
// into codes + per-block absmax (nearest code).
float q8_value(uint32_t code_byte, bool unsigned_map);
void q8_quantize(std::span<const float> values, bool unsigned_map, uint8_t* codes, float* absmax,
                 uint32_t absmax_stride);

// 32 bits of a state region filled with `value` in storage type `code` (vkCmdFillBuffer data).
uint32_t fill_word(float value, uint32_t code);

// Stochastic rounding's key for (seed, step): pushed as round_key.
uint32_t round_key(uint64_t seed, uint64_t step);

}  // namespace vkoptim::detail
