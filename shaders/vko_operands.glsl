// Loads and stores of one item (VKO_WIDTH elements) of each operand, converting between the
// storage types and float32, and the state of the segment at hand they read (its head and extra
// words, operand storage types, quantized columns). Includes vko_base.glsl, vko_addressing.glsl,
// vko_codec16.glsl and vko_quant.glsl.
//
// Storage types (specialization constants 24, 25): every operand is f32, f16 or bf16, state may
// also be 8-bit or 4-bit blockwise; a 16-bit parameter may have an fp32 master (operand 6) that the rule
// sees in its place. Loads convert to float32, stores round. The rule code never sees any of it.
#ifndef VKO_OPERANDS_GLSL
#define VKO_OPERANDS_GLSL

#include "vko_base.glsl"
#include "vko_addressing.glsl"
#include "vko_codec16.glsl"
#include "vko_quant.glsl"

// The current segment's head and extra words (Segment.head, .extra; rules may read them),
// storage types, and the index within the segment of lane 0 of the vec4 rule_update is working
// on. (The operand references are vko_refs, in vko_addressing.glsl.)
uvec4 vko_segment_head;
uvec4 vko_segment_extra;
uint vko_dtypes;
uint vko_lane_base;
uint vko_round_key;  // vko_hash of the push header's round_key
uvec2 vko_round_at;  // the segment's stochastic rounding key: tensor, first element in the whole tensor (Segment.pad[0].yz)

uint vko_dtype(uint k) { return (vko_dtypes >> (3u * k)) & 7u; }

// The random bits of element `lane` of the segment for operand k, keyed by (seed, step) through
// round_key.
uint vko_random(uint k, uint lane) {
  return vko_hash(vko_round_at.y + lane + vko_hash(vko_round_at.x * 8u + k + vko_round_key));
}

// One load and one store function per operand (descriptor arrays need constant indices unless
// the device has, and the host enabled, dynamic indexing). An item's lanes 0-3 are in `a`, 4-7
// in `b` (VKO_WIDE only).
//   Parameters and gradients (operands 0, 1; the caller's buffers; f32, f16 or bf16): whole
//   items (aligned, every lane in range) move in wide accesses, others element by element. A
//   16-bit element may share its 32-bit word with an element another invocation writes, so
//   element accesses to 16-bit operands are atomic.
//   State (operands 2-5; f32, bf16, 8-bit or 4-bit) and masters (6; f32) live in regions vkoptim
//   allocates 32-byte aligned and padded, whose segments start at whole items: they always move
//   whole items (lanes past a tensor's end fall in its padding).

uint vko_quant_slots;      // the quantized operands' column in the absmax region, 2 bits per operand
// The quantization block of the item at hand, computed from lane-independent values where it is
// the same for a subgroup's lanes, so that CPU drivers load its absmax once for all of them.
uint vko_quant_block;
uint vko_quant_count;      // quantized operands of the segment
uint vko_quant_written;    // the columns of those this pass writes, 1 bit each (only they get a new
                        // absmax: a pass that writes none, e.g. Lookahead's, leaves the blocks)
// The updated values of an item's quantized operands (columns 0, 1; lanes 0-3, 4-7), kept from the
// update to the store that follows the block reduction.
vec4 vko_quant_keep[VKO_MAX_ITEMS][2][2];

float vko_lane(vec4 a, vec4 b, uint l) { return l < 4u ? a[l] : b[l - 4u]; }
uint vko_round_lane(vec4 a, vec4 b, uint l, uint k, uint dt, uint item) {
  return vko_round16(vko_lane(a, b, l), dt, VKO_STOCHASTIC ? vko_random(k, item * VKO_WIDTH + l) : 0u);
}
uint vko_round_pair(vec4 a, vec4 b, uint l, uint k, uint dt, uint item) {
  return vko_round_lane(a, b, l, k, dt, item) | (vko_round_lane(a, b, l + 1u, k, dt, item) << 16);
}
uint vko_quant_column(uint k) { return (vko_quant_slots >> (2u * k)) & 3u; }

// Rank-1 normalisation of a 4-bit second moment (VKO_RANK1; PrecisionOptions::rank1_second_moment,
// after Li et al. 2023): element (r, c) of a rows x cols tensor decodes as code value times
// min(row_max[r], col_max[c]) of the moment's previous maxima, and encodes against the new
// moment's maxima, which a pass before (VKO_RANK1_MAXIMA) found with atomicMax on their bits (max
// is exact: the same bits in any order). The maxima follow the tensor's per-block absmax entries
// (Segment.pad[0].w floats from the segment's first entry) in three sets of rows + cols floats,
// rows first: step t writes set t % 3, reads set (t - 1) % 3 and clears set (t + 1) % 3 for the
// next step (runtime/optimizer_state.hpp).
uint vko_rank1;        // floats from the segment's absmax entry to the maxima; 0: blockwise
uint vko_rank1_first;  // the segment's first element within its matrix (a split piece's: the whole one's)
uint vko_rank1_local;  // the segment's first element within its tensor (a piece: the piece)
uint vko_rank1_stride; // the tensor's (piece's) element count
uint vko_rank1_rows, vko_rank1_cols;
uint vko_rank1_old, vko_rank1_new, vko_rank1_clear;  // the sets' first floats (from the absmax entry)
bool vko_is_rank1(uint dt) { return VKO_RANK1 && vko_rank1 != 0u && dt == VKO_Q4U; }
// min(row max, column max) of the four elements e.. e + 3 of the tensor in set `set` (indices
// clamped: lanes past the tensor's end fall in its padding).
vec4 vko_rank1_scales(uint set, uint e) {
  // (One division and one row maximum per four lanes unless they cross a row: CPU drivers
  // divide and load lane by lane.)
  uint r = e / vko_rank1_cols, c = e - r * vko_rank1_cols;
  float row_max = VKO_LOAD1(VKO_OP_ABSMAX, set + min(r, vko_rank1_rows - 1u));
  vec4 s;
  [[unroll]] for (uint l = 0u; l < 4u; ++l) {
    s[l] = min(row_max, VKO_LOAD1(VKO_OP_ABSMAX, set + vko_rank1_rows + c));
    if (++c == vko_rank1_cols && l < 3u) {
      c = 0u;
      ++r;
      row_max = VKO_LOAD1(VKO_OP_ABSMAX, set + min(r, vko_rank1_rows - 1u));
    }
  }
  return s;
}
vec4 vko_rank1_inverse(uint set, uint e) {
  const vec4 s = vko_rank1_scales(set, e);
  return mix(vec4(0.0), vec4(1.0) / s, greaterThan(s, vec4(0.0)));
}

#ifdef VKO_WIDE
#define VKO_LOAD_WIDE(k, dt)                                  \
  if (dt == VKO_F32) {                                        \
    vko_unpack(VKO_LOADW(k, item), a, b);                     \
  } else {                                                    \
    const u64vec2 v = VKO_WIDE16(k, item);                    \
    const uvec4 w = uvec4(unpackUint2x32(v.x), unpackUint2x32(v.y)); \
    a = vec4(vko_unpack16(w.x, dt), vko_unpack16(w.y, dt));   \
    b = vec4(vko_unpack16(w.z, dt), vko_unpack16(w.w, dt));   \
  }
#define VKO_STORE_WIDE(k, dt)                                                                            \
  if (dt == VKO_F32) {                                                                                   \
    VKO_STOREW(k, item, vko_pack(a, b));                                                                 \
  } else {                                                                                               \
    VKO_WIDE16(k, item) =                                                                                \
        u64vec2(packUint2x32(uvec2(vko_round_pair(a, b, 0u, k, dt, item), vko_round_pair(a, b, 2u, k, dt, item))), \
                packUint2x32(uvec2(vko_round_pair(a, b, 4u, k, dt, item), vko_round_pair(a, b, 6u, k, dt, item)))); \
  }
#define VKO_LOAD_Q8(k, dt, absmax)         \
  {                                        \
    const uvec2 w = unpackUint2x32(VKO_WIDE8(k, item)); \
    a = vko_q8_decode4(w.x, dt) * absmax;  \
    b = vko_q8_decode4(w.y, dt) * absmax;  \
  }
#define VKO_STORE_Q8(k, dt, inv) \
  VKO_WIDE8(k, item) = packUint2x32(uvec2(vko_q8_encode4(a * inv, dt), vko_q8_encode4(b * inv, dt)));
#else
#define VKO_LOAD_WIDE(k, dt)                                  \
  if (dt == VKO_F32) {                                        \
    a = VKO_LOADW(k, item);                                   \
  } else {                                                    \
    const uvec2 w = VKO_WIDE16(k, item);                      \
    a = vec4(vko_unpack16(w.x, dt), vko_unpack16(w.y, dt));   \
  }
#define VKO_STORE_WIDE(k, dt)                                                                                   \
  if (dt == VKO_F32) {                                                                                          \
    VKO_STOREW(k, item, a);                                                                                     \
  } else {                                                                                                      \
    VKO_WIDE16(k, item) = uvec2(vko_round_pair(a, b, 0u, k, dt, item), vko_round_pair(a, b, 2u, k, dt, item)); \
  }
#define VKO_LOAD_Q8(k, dt, absmax) a = vko_q8_decode4(VKO_WIDE8(k, item), dt) * absmax;
#define VKO_STORE_Q8(k, dt, inv) VKO_WIDE8(k, item) = vko_q8_encode4(a * inv, dt);
#endif
// 4-bit: an item's 8 codes are one word; without VKO_WIDE its 4 codes are half a word, which
// another invocation's item shares: those halves move atomically, as 16-bit elements do.
// vko_q4_codes: the codes of lanes first_lane.. first_lane + 3 of an item.
uint vko_q4_codes(vec4 y, uint dt, uint k, uint item, uint first_lane) {
  const uint e = item * VKO_WIDTH + first_lane;
  const uvec4 rnd = VKO_STOCHASTIC ? uvec4(vko_random(k, e), vko_random(k, e + 1u), vko_random(k, e + 2u), vko_random(k, e + 3u))
                                   : uvec4(0u);
  return vko_q4_encode4(y, dt == VKO_Q4U, VKO_STOCHASTIC, rnd);
}
#ifdef VKO_WIDE
#define VKO_LOAD_Q4(k, dt, absmax)                                \
  {                                                               \
    const uint w = VKO_WIDE4(k, item);                            \
    a = vko_q4_decode4(w, dt == VKO_Q4U) * absmax;                \
    b = vko_q4_decode4(w >> 16, dt == VKO_Q4U) * absmax;          \
  }
#define VKO_STORE_Q4(k, dt, inv) \
  VKO_WIDE4(k, item) = vko_q4_codes(a * inv, dt, k, item, 0u) | (vko_q4_codes(b * inv, dt, k, item, 4u) << 16);
#else
#define VKO_LOAD_Q4(k, dt, absmax)                                                          \
  {                                                                                         \
    const uint h = VKO_HALF(k, item);                                                       \
    a = vko_q4_decode4(atomicOr(VKO_WORD(k, h >> 1), 0u) >> ((h & 1u) * 16u), dt == VKO_Q4U) * absmax; \
  }
#define VKO_STORE_Q4(k, dt, inv)                                       \
  {                                                                    \
    const uint h = VKO_HALF(k, item), s = (h & 1u) * 16u;              \
    atomicAnd(VKO_WORD(k, h >> 1), ~(0xFFFFu << s));                   \
    atomicOr(VKO_WORD(k, h >> 1), vko_q4_codes(a * inv, dt, k, item, 0u) << s); \
  }
#endif

// Parameters and gradients.
#define VKO_USER_OPERAND(k)                                                                    \
  void vko_load##k(inout vec4 a, inout vec4 b, uint item, uint first, uint lanes, bool whole) { \
    const uint dt = vko_dtype(k);                                                              \
    if (whole) {                                                                               \
      VKO_LOAD_WIDE(k, dt)                                                                     \
      return;                                                                                  \
    }                                                                                          \
    for (uint l = 0; l < lanes; ++l) {                                                         \
      float v;                                                                                 \
      if (dt == VKO_F32) {                                                                     \
        v = VKO_LOAD1(k, first + l);                                                           \
      } else {                                                                                 \
        const uint h = VKO_HALF(k, first + l);                                                 \
        v = vko_unpack16(atomicOr(VKO_WORD(k, h >> 1), 0u) >> ((h & 1u) * 16u), dt).x;         \
      }                                                                                        \
      if (l < 4) a[l] = v; else b[l - 4] = v;                                                  \
    }                                                                                          \
  }                                                                                            \
  void vko_store##k(vec4 a, vec4 b, uint item, uint first, uint lanes, bool whole) {           \
    const uint dt = vko_dtype(k);                                                              \
    if (whole) {                                                                               \
      VKO_STORE_WIDE(k, dt)                                                                    \
      return;                                                                                  \
    }                                                                                          \
    for (uint l = 0; l < lanes; ++l) {                                                         \
      if (dt == VKO_F32) {                                                                     \
        VKO_STORE1(k, first + l, vko_lane(a, b, l));                                           \
      } else {                                                                                 \
        const uint h = VKO_HALF(k, first + l), s = (h & 1u) * 16u;                             \
        const uint bits = vko_round_lane(a, b, l, k, dt, item);                                \
        atomicAnd(VKO_WORD(k, h >> 1), ~(0xFFFFu << s));                                       \
        atomicOr(VKO_WORD(k, h >> 1), bits << s);                                              \
      }                                                                                        \
    }                                                                                          \
  }                                                                                             \
  void vko_store_quant##k(vec4 a, vec4 b, uint item, float absmax) {} /* never quantized */

// State slots. 8-bit and 4-bit: code * the block's absmax on load; on store (vko_store_quant<k>)
// the codes of value / the block's new absmax.
#define VKO_STATE_OPERAND(k)                                                                   \
  void vko_load##k(inout vec4 a, inout vec4 b, uint item, uint first, uint lanes, bool whole) { \
    const uint dt = vko_dtype(k);                                                              \
    if (VKO_ANY_QUANT && vko_is_rank1(dt)) {                                                   \
      VKO_LOAD_Q4(k, dt, 1.0)                                                                  \
      a *= vko_rank1_scales(vko_rank1_old, vko_rank1_first + item * VKO_WIDTH);                \
      if (VKO_WIDTH > 4u) b *= vko_rank1_scales(vko_rank1_old, vko_rank1_first + item * VKO_WIDTH + 4u); \
    } else if (VKO_ANY_QUANT && vko_is_quantized(dt)) {                                        \
      const float absmax = VKO_LOAD1(VKO_OP_ABSMAX, vko_quant_block * vko_quant_count + vko_quant_column(k));      \
      if (VKO_Q4) {                                                                            \
        VKO_LOAD_Q4(k, dt, absmax)                                                             \
      } else {                                                                                 \
        VKO_LOAD_Q8(k, dt, absmax)                                                             \
      }                                                                                        \
    } else {                                                                                   \
      VKO_LOAD_WIDE(k, dt)                                                                     \
    }                                                                                          \
  }                                                                                            \
  void vko_store##k(vec4 a, vec4 b, uint item, uint first, uint lanes, bool whole) {           \
    VKO_STORE_WIDE(k, vko_dtype(k))                                                            \
  }                                                                                            \
  void vko_store_quant##k(vec4 a, vec4 b, uint item, float absmax) {                              \
    const uint dt = vko_dtype(k);                                                              \
    float inv = absmax > 0.0 ? 1.0 / absmax : 0.0;                                             \
    if (vko_is_rank1(dt)) {                                                                    \
      a *= vko_rank1_inverse(vko_rank1_new, vko_rank1_first + item * VKO_WIDTH);               \
      if (VKO_WIDTH > 4u) b *= vko_rank1_inverse(vko_rank1_new, vko_rank1_first + item * VKO_WIDTH + 4u); \
      inv = 1.0;                                                                               \
    }                                                                                          \
    if (VKO_Q4) {                                                                              \
      VKO_STORE_Q4(k, dt, inv)                                                                 \
    } else {                                                                                   \
      VKO_STORE_Q8(k, dt, inv)                                                                 \
    }                                                                                          \
  }

VKO_USER_OPERAND(0)
VKO_USER_OPERAND(1)
VKO_STATE_OPERAND(2)
VKO_STATE_OPERAND(3)
VKO_STATE_OPERAND(4)
VKO_STATE_OPERAND(5)
VKO_STATE_OPERAND(6)  // a Kahan compensation (16-bit), in the master's place

// The master copy of the parameter (f32).
void vko_load_master(inout vec4 a, inout vec4 b, uint item) {
#ifdef VKO_WIDE
  vko_unpack(VKO_LOADW(VKO_OP_MASTER, item), a, b);
#else
  a = VKO_LOADW(VKO_OP_MASTER, item);
#endif
}
void vko_store_master(vec4 a, vec4 b, uint item) {
#ifdef VKO_WIDE
  VKO_STOREW(VKO_OP_MASTER, item, vko_pack(a, b));
#else
  VKO_STOREW(VKO_OP_MASTER, item, a);
#endif
}

#endif  // VKO_OPERANDS_GLSL
