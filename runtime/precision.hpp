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
enum DTypeCode : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kQ8Signed = 3,
  kQ8Unsigned = 4,
  kQ4Signed = 5,
  kQ4Unsigned = 6,
  kAbsent = 7
};
constexpr uint32_t kMaxQuantItems = 4;  // VKO_MAX_ITEMS: an invocation's items kept for the block reduction

inline uint32_t dtype_code(DType d) {
  return uint32_t(d);  // DType's values are the codes
}
// Bits per element of a storage code (quantized codes: 8 or 4; absmax is kept separately), and
// bytes per element of the codes that have whole bytes.
uint32_t code_bits(uint32_t code);
inline uint32_t code_bytes(uint32_t code) {
  return code_bits(code) / 8;
}
inline bool is_q4(uint32_t code) {
  return code == kQ4Signed || code == kQ4Unsigned;
}
inline bool is_quantized(uint32_t code) {
  return code >= kQ8Signed && code <= kQ4Unsigned;
}
inline bool is_unsigned_map(uint32_t code) {
  return code == kQ8Unsigned || code == kQ4Unsigned;
}
// Elements per block that share an absmax: 256 (8-bit, bitsandbytes), 128 (4-bit, torchao).
inline uint32_t quant_block(uint32_t code) {
  return is_q4(code) ? 128 : 256;
}
// The 4-bit code of an 8-bit map kind (kQ8Signed -> kQ4Signed, kQ8Unsigned -> kQ4Unsigned).
inline uint32_t four_bit(uint32_t q8_code) {
  return q8_code + 2;
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
// 4-bit blockwise (shaders/vko_quant.glsl): the value of a code, and the codes of values (packed
// two per byte, element 0 in the low nibble) + per-128-element absmax, as the shaders round.
float q4_value(uint32_t code, bool unsigned_map);
// Rank-1 normalised 4-bit second moments (PrecisionOptions::rank1_second_moment) of a rows x cols
// tensor: element (r, c) is its code's value on the unsigned 4-bit map times
// min(maxima[r], maxima[rows + c]). Quantizing sets the maxima (rows, then columns) from the
// values' magnitudes and encodes each value times the inverse of its element's scale (as the
// shaders do).
// (`count` codes from element `first` of the rows x cols matrix: a piece of a split one.)
std::vector<float> dequantize_rank1(std::span<const uint8_t> codes, uint64_t count, uint64_t first, uint64_t rows,
                                    uint64_t cols, const float* maxima);
std::vector<uint8_t> quantize_rank1(std::span<const float> values, uint64_t rows, uint64_t cols, float* maxima);
void q4_quantize(std::span<const float> values, bool unsigned_map, uint8_t* packed, float* absmax,
                 uint32_t absmax_stride);

// Quantized state <-> float32, whichever the code: codes as stored (8-bit: a byte each; 4-bit:
// packed) and the absmax of each block (absmax[b * stride]).
std::vector<float> dequantize(std::span<const uint8_t> codes, uint64_t count, uint32_t code, const float* absmax,
                              uint32_t absmax_stride);
std::vector<uint8_t> quantize(std::span<const float> values, uint32_t code, float* absmax, uint32_t absmax_stride);
// Bytes of the codes of `count` elements.
inline uint64_t quantized_bytes(uint64_t count, uint32_t code) {
  return is_q4(code) ? (count + 1) / 2 : count;
}

// 32 bits of a state region filled with `value` in storage type `code` (vkCmdFillBuffer data).
uint32_t fill_word(float value, uint32_t code);

// Stochastic rounding's key for (seed, step): pushed as round_key.
uint32_t round_key(uint64_t seed, uint64_t step);

}  // namespace vkoptim::detail
