// Shared pieces of every elementwise update rule.
//
// One dispatch updates many tensors. The host builds a segment table: each segment is a
// contiguous element range of one tensor with the location of each operand (parameter,
// gradient, state slots). Segments own consecutive runs of workgroups ("blocks"); a block map
// (one uint per block) tells each workgroup its segment in one load.
//
// Two kinds of segments, two pipelines (specialization constant VKO_CAREFUL):
//   fast     - whole blocks of aligned data: no bounds checks, VKO_ITEMS wide accesses per
//              invocation and operand;
//   careful  - the rest (tails, unaligned tensors): one wide item per invocation, bounds-checked,
//              element by element where the item is partial or the operands unaligned.
// Wide loads move VKO_WIDTH floats per access: 8 as a u64vec4 when built with VKO_WIDE (needs
// shaderInt64), else 4 as a vec4. Per-access cost dominates on CPU drivers such as lavapipe.
//
// Operands are reached in one of two ways, chosen at build time:
//   VKO_BDA  - 64-bit buffer device addresses in the table (GL_EXT_buffer_reference); the table
//              itself is reached through an address in the push constants. No descriptors.
//   default  - descriptors: binding 0 is the table, binding 1 an array of VKO_MAX_OPS storage
//              buffer ranges (one per operand); the table holds element offsets within them.
//
// A rule file defines VKO_NUM_OPS, VKO_OP_READ(k), VKO_OP_WRITE(k) (constant expressions) and
// `void rule_update(inout vec4 x[VKO_MAX_OPS])`, then expands VKO_ELEMENTWISE_MAIN. Math is
// float32; per-step scalars arrive as push constants.
//
// Storage types (specialization constants 24, 25; see "Storage conversions" below): every operand
// is f32, f16 or bf16, state may also be 8-bit blockwise; a 16-bit parameter may have an fp32
// master (operand 6) that the rule sees in its place. Loads convert to float32, stores round. The
// rule code never sees any of it.

#extension GL_EXT_control_flow_attributes : require
#ifdef VKO_SUBGROUP_BLOCKS
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#ifdef VKO_BDA
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#endif
#ifdef VKO_WIDE
#extension GL_ARB_gpu_shader_int64 : require
#define VKO_WIDTH 8
// One wide access of a 16-bit operand (8 halves) and of an 8-bit operand (8 codes), in 64-bit
// components: CPU drivers move each component of an access separately, lane by lane.
#define VKO_WORDS16 u64vec2
#define VKO_WORDS8 uint64_t
#else
#define VKO_WIDTH 4
#define VKO_WORDS16 uvec2
#define VKO_WORDS8 uint
#endif

#define VKO_MAX_OPS 8
// Operands after the rule's (which are 0: parameter, 1: gradient, 2-5: state slots):
#define VKO_OP_MASTER 6  // fp32 master copy of a 16-bit parameter: read and written in its place
#define VKO_OP_ABSMAX 7  // per 256-element block, the absmax of each 8-bit state operand

// A rule that reads the segment's extra words (vko_segment_extra) defines this as true before
// including this file.
#ifndef VKO_NEEDS_EXTRA
#define VKO_NEEDS_EXTRA false
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint VKO_ITEMS = 1;       // wide items per invocation (fast path)
layout(constant_id = 2) const bool VKO_CAREFUL = false;  // this pipeline runs careful segments

// Storage types, 3 bits per operand (operand k at bits 3k..3k+2). Arithmetic is float32 always.
#define VKO_F32 0u
#define VKO_F16 1u
#define VKO_BF16 2u
#define VKO_Q8S 3u     // 8-bit code of the signed dynamic map, times the block's absmax
#define VKO_Q8U 4u     // 8-bit code of the unsigned dynamic map, times the block's absmax
#define VKO_ABSENT 7u  // (master and absmax operands only) not kept
// The storage type of every operand, when the whole dispatch agrees (see VKO_PRECISION).
layout(constant_id = 24) const uint VKO_DTYPES = 0xFC0000u;
// bit 0: types differ between segments: read each segment's from its record (extra.w);
// bit 1: 16-bit writes round stochastically (else to nearest even);
// bit 2: some segment keeps 8-bit state (workgroups reduce per-block absmax).
layout(constant_id = 25) const uint VKO_PRECISION = 0u;
const bool VKO_MIXED = (VKO_PRECISION & 1u) != 0u;
const bool VKO_STOCHASTIC = (VKO_PRECISION & 2u) != 0u;
const bool VKO_ANY_Q8 = (VKO_PRECISION & 4u) != 0u;
// Shaders built with VKO_SUBGROUP_BLOCKS (rules with 8-bit state, on devices with subgroup
// arithmetic in compute): the device's subgroup size, set by the host when it divides
// 256 / VKO_WIDTH and a subgroup's items (VKO_ITEMS per invocation) are whole 256-element blocks.
// Fast segments then take each block's absmax with subgroupMax, without barriers; 0: through
// shared memory. (Modules below SPIR-V 1.6, created without ALLOW_VARYING_SUBGROUP_SIZE, run
// with exactly this subgroup size.)
layout(constant_id = 26) const uint VKO_SUBGROUP = 0u;

struct Segment {
  uvec4 head;    // x: first block (counted over the whole table), y: element count,
                 // z: 1 when every operand is aligned to the wide access, w: tensor index
  uvec4 ref[4];  // BDA: operand k's byte address (low, high) in words 2k, 2k+1;
                 // descriptors: operand k's element offset within its bound range in word k
  uvec4 extra;   // x: first element within the tensor, y: columns (2-D) or 0, z: tensor's count,
                 // w: storage types of the operands (as VKO_DTYPES)
  uvec4 pad[2];  // 128 bytes: bound table ranges stay aligned to whole records
};

// Every push-constant block starts with this header (32 bytes); rule scalars follow.
//   table_address  BDA: address of the segment table
//   map_address    BDA: address of the block map; descriptors: .x = block of the bound map's
//                  first entry
//   seg_base       subtracted from block-map entries (descriptors: first bound segment)
//   block_base     first block of this dispatch; workgroup (x, y) adds x + y * countX
//   block_end      one past the last block of this dispatch
//   round_key      stochastic rounding: a hash of (seed, step)
#define VKO_PUSH_HEADER \
  uvec2 table_address;  \
  uvec2 map_address;    \
  uint seg_base;        \
  uint block_base;      \
  uint block_end;       \
  uint round_key

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer SegmentTable {
  Segment seg[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatRef { float x[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer WordRef { uint x[]; };
#ifdef VKO_WIDE
layout(buffer_reference, std430, buffer_reference_align = 32) buffer WideRef { u64vec4 x[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Wide16Ref { VKO_WORDS16 x[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Wide8Ref { VKO_WORDS8 x[]; };
#else
layout(buffer_reference, std430, buffer_reference_align = 16) buffer WideRef { vec4 x[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Wide16Ref { VKO_WORDS16 x[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Wide8Ref { VKO_WORDS8 x[]; };
#endif
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer BlockMap { uint seg[]; };
#define VKO_OPS_PER_REF 2  // operands per uvec4 of Segment.ref
#define VKO_SEGMENT(i) SegmentTable(pc.table_address).seg[i]
#define VKO_BLOCK_SEGMENT(b) BlockMap(pc.map_address).seg[b]
#define VKO_REF(k) uvec2(ref[(k) >> 1][((k) & 1) * 2], ref[(k) >> 1][((k) & 1) * 2 + 1])
#define VKO_LOAD1(k, i) FloatRef(VKO_REF(k)).x[i]
#define VKO_STORE1(k, i, v) FloatRef(VKO_REF(k)).x[i] = (v)
#define VKO_LOADW(k, i) WideRef(VKO_REF(k)).x[i]
#define VKO_STOREW(k, i, v) WideRef(VKO_REF(k)).x[i] = (v)
#define VKO_WIDE16(k, i) Wide16Ref(VKO_REF(k)).x[i]
#define VKO_WIDE8(k, i) Wide8Ref(VKO_REF(k)).x[i]
// 16-bit element i of operand k: half VKO_HALF(k, i) of the 32-bit words VKO_WORD(k, w).
#define VKO_HALF(k, i) (((VKO_REF(k).x & 3u) >> 1) + (i))
#define VKO_WORD(k, w) WordRef(uvec2(VKO_REF(k).x & ~3u, VKO_REF(k).y)).x[w]
#else
layout(std430, set = 0, binding = 0) readonly buffer SegmentTable { Segment seg[]; } table;
layout(std430, set = 0, binding = 2) readonly buffer BlockMap { uint seg[]; } block_map;
// Views of the same ranges: scalar for careful segments, wide for fast ones, words for 16-bit
// elements.
layout(std430, set = 0, binding = 1) buffer OperandF { float x[]; } opf[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandU { uint x[]; } opu[VKO_MAX_OPS];
#ifdef VKO_WIDE
layout(std430, set = 0, binding = 1) buffer OperandW { u64vec4 x[]; } opw[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandW16 { VKO_WORDS16 x[]; } opw16[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandW8 { VKO_WORDS8 x[]; } opw8[VKO_MAX_OPS];
#else
layout(std430, set = 0, binding = 1) buffer OperandW { vec4 x[]; } opw[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandW16 { VKO_WORDS16 x[]; } opw16[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandW8 { VKO_WORDS8 x[]; } opw8[VKO_MAX_OPS];
#endif
#define VKO_OPS_PER_REF 4  // operands per uvec4 of Segment.ref
#define VKO_SEGMENT(i) table.seg[i]
#define VKO_BLOCK_SEGMENT(b) block_map.seg[(b) - pc.map_address.x]
#define VKO_OFFSET(k) ref[(k) >> 2][(k) & 3]
#define VKO_LOAD1(k, i) opf[k].x[VKO_OFFSET(k) + (i)]
#define VKO_STORE1(k, i, v) opf[k].x[VKO_OFFSET(k) + (i)] = (v)
#define VKO_LOADW(k, i) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_STOREW(k, i, v) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)] = (v)
#define VKO_WIDE16(k, i) opw16[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_WIDE8(k, i) opw8[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_HALF(k, i) (VKO_OFFSET(k) + (i))
#define VKO_WORD(k, w) opu[k].x[w]
#endif

// Scratch (reductions): per-block partial sums, per-tensor and per-group sums, the reduce lists.
// BDA: its address is the rule's first push field after the header (scratch_address);
// descriptors: binding 3.
#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 8) buffer ScratchRef { vec2 sums[]; };
#define VKO_SCRATCH(i) ScratchRef(pc.scratch_address).sums[i]
#else
layout(std430, set = 0, binding = 3) buffer Scratch { vec2 sums[]; } scratch;
#define VKO_SCRATCH(i) scratch.sums[i]
#endif

#ifdef VKO_WIDE
void vko_unpack(u64vec4 w, out vec4 lo, out vec4 hi) {
  lo = uintBitsToFloat(uvec4(unpackUint2x32(w.x), unpackUint2x32(w.y)));
  hi = uintBitsToFloat(uvec4(unpackUint2x32(w.z), unpackUint2x32(w.w)));
}
u64vec4 vko_pack(vec4 lo, vec4 hi) {
  const uvec4 a = floatBitsToUint(lo), b = floatBitsToUint(hi);
  return u64vec4(packUint2x32(a.xy), packUint2x32(a.zw), packUint2x32(b.xy), packUint2x32(b.zw));
}
#endif

// torch's CPU arithmetic, so one step rounds as torch.optim's float32 CPU step does. x86-64
// builds of torch compile `a + b*c` in their kernels to one fused multiply-add (GCC contracts it
// under AVX2/AVX-512, and the vectorized kernels call fmadd), so:
//   t.add(o, alpha=a)            -> fma(a, o, t)
//   t.addcmul(t1, t2, value=c)   -> fma(c*t1, t2, t)
//   t.addcdiv(t1, t2, value=c)   -> t + c*t1/t2          (rounded after each operation)
//   t.lerp(end, w)               -> vko_lerp(t, end, w)  (aten/src/ATen/native/Lerp.h)
// Rules use `precise` so that no other product is fused into a sum.
vec4 vko_lerp(vec4 self, vec4 end, float w) {
  precise const vec4 d = end - self;
  precise vec4 r;
  if (abs(w) < 0.5)
    r = fma(vec4(w), d, self);
  else
    r = fma(-d, vec4(1.0 - w), end);  // torch: end - (end - self) * (1 - w), 1 - w in float
  return r;
}

// ---- Storage conversions -------------------------------------------------------------------

// The current segment's operand references, head and extra words, storage types, and the
// index within the segment of lane 0 of the vec4 rule_update is working on.
uvec4 ref[4];
uvec4 vko_segment_head;
uvec4 vko_segment_extra;
uint vko_dtypes;
uint vko_lane_base;
uint vko_round_key;  // vko_hash(pc.round_key)

uint vko_dtype(uint k) { return (vko_dtypes >> (3u * k)) & 7u; }

// Two 16-bit values (low half first) of storage type dt as floats; exact.
vec2 vko_unpack16(uint w, uint dt) {
  if (dt == VKO_F16) return unpackHalf2x16(w);
  return uintBitsToFloat(uvec2(w << 16, w & 0xFFFF0000u));
}

// A counter-based generator (a 32-bit integer hash, "lowbias32"): the random bits of element
// `lane` of the segment for operand k, keyed by (seed, step) through round_key.
uint vko_hash(uint x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
uint vko_random(uint k, uint lane) {
  return vko_hash(vko_segment_extra.x + lane + vko_hash(vko_segment_head.w * 8u + k + vko_round_key));
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

// ---- Loads and stores of one item (VKO_WIDTH elements) -------------------------------------
// One load and one store function per operand (descriptor arrays need constant indices unless
// the device has, and the host enabled, dynamic indexing). An item's lanes 0-3 are in `a`, 4-7
// in `b` (VKO_WIDE only).
//   Parameters and gradients (operands 0, 1; the caller's buffers; f32, f16 or bf16): whole
//   items (aligned, every lane in range) move in wide accesses, others element by element. A
//   16-bit element may share its 32-bit word with an element another invocation writes, so
//   element accesses to 16-bit operands are atomic.
//   State (operands 2-5; f32, bf16 or 8-bit) and masters (6; f32) live in regions vkoptim
//   allocates 32-byte aligned and padded, whose segments start at whole items: they always move
//   whole items (lanes past a tensor's end fall in its padding).

uint vko_q8_slots;      // the 8-bit operands' column in the absmax region, 2 bits per operand
// The 256-element block of the item at hand, computed from lane-independent values where it is
// the same for a subgroup's lanes, so that CPU drivers load its absmax once for all of them.
uint vko_q8_block;
uint vko_q8_count;      // 8-bit operands of the segment
uint vko_q8_written;    // the columns of those this pass writes, 1 bit each (only they get a new
                        // absmax: a pass that writes none, e.g. Lookahead's, leaves the blocks)
// The updated values of an item's 8-bit operands (columns 0, 1; lanes 0-3, 4-7), kept from the
// update to the store that follows the block reduction.
vec4 vko_q8_keep[VKO_MAX_ITEMS][2][2];

float vko_lane(vec4 a, vec4 b, uint l) { return l < 4u ? a[l] : b[l - 4u]; }
uint vko_round_lane(vec4 a, vec4 b, uint l, uint k, uint dt, uint item) {
  return vko_round16(vko_lane(a, b, l), dt, VKO_STOCHASTIC ? vko_random(k, item * VKO_WIDTH + l) : 0u);
}
uint vko_round_pair(vec4 a, vec4 b, uint l, uint k, uint dt, uint item) {
  return vko_round_lane(a, b, l, k, dt, item) | (vko_round_lane(a, b, l + 1u, k, dt, item) << 16);
}
bool vko_is_q8(uint dt) { return dt == VKO_Q8S || dt == VKO_Q8U; }
uint vko_q8_column(uint k) { return (vko_q8_slots >> (2u * k)) & 3u; }

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
  void vko_store_q8##k(vec4 a, vec4 b, uint item, float absmax) {} /* never 8-bit */

// State slots. 8-bit: code * the block's absmax on load; on store (VKO_STORE_Q8_ITEM) the codes
// of value / the block's new absmax.
#define VKO_STATE_OPERAND(k)                                                                   \
  void vko_load##k(inout vec4 a, inout vec4 b, uint item, uint first, uint lanes, bool whole) { \
    const uint dt = vko_dtype(k);                                                              \
    if (VKO_ANY_Q8 && vko_is_q8(dt)) {                                                         \
      const float absmax = VKO_LOAD1(VKO_OP_ABSMAX, vko_q8_block * vko_q8_count + vko_q8_column(k));      \
      VKO_LOAD_Q8(k, dt, absmax)                                                               \
    } else {                                                                                   \
      VKO_LOAD_WIDE(k, dt)                                                                     \
    }                                                                                          \
  }                                                                                            \
  void vko_store##k(vec4 a, vec4 b, uint item, uint first, uint lanes, bool whole) {           \
    VKO_STORE_WIDE(k, vko_dtype(k))                                                            \
  }                                                                                            \
  void vko_store_q8##k(vec4 a, vec4 b, uint item, float absmax) {                              \
    const uint dt = vko_dtype(k);                                                              \
    const float inv = absmax > 0.0 ? 1.0 / absmax : 0.0;                                       \
    VKO_STORE_Q8(k, dt, inv)                                                                   \
  }

VKO_USER_OPERAND(0)
VKO_USER_OPERAND(1)
VKO_STATE_OPERAND(2)
VKO_STATE_OPERAND(3)
VKO_STATE_OPERAND(4)
VKO_STATE_OPERAND(5)

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

#define VKO_FOR_EACH_OP(X) X(0) X(1) X(2) X(3) X(4) X(5)

// A master copy, when the segment's parameter has one, stands in for the parameter: it is read
// instead, and written along with the rounded parameter. A shader that initialises masters
// defines VKO_MASTER_INIT: it reads the parameter and writes only the master.
#ifndef VKO_MASTER_INIT
#define VKO_MASTER_INIT false
#endif
#define VKO_HAS_MASTER (vko_dtype(VKO_OP_MASTER) != VKO_ABSENT)
#define VKO_LOAD_ITEM(k)                                         \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) {                       \
    if (k == 0 && VKO_HAS_MASTER && !VKO_MASTER_INIT)            \
      vko_load_master(lo[k], hi[k], item);                       \
    else                                                         \
      vko_load##k(lo[k], hi[k], item, first, lanes, whole);      \
  }
#define VKO_IS_Q8_OP(k) (VKO_ANY_Q8 && k >= 2 && vko_is_q8(vko_dtype(k)))
#define VKO_STORE_ITEM(k)                                              \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k) && !VKO_IS_Q8_OP(k)) {        \
    if (k == 0 && VKO_HAS_MASTER) vko_store_master(lo[k], hi[k], item); \
    if (k != 0 || !VKO_MASTER_INIT) vko_store##k(lo[k], hi[k], item, first, lanes, whole); \
  }

#ifdef VKO_WIDE
#define VKO_UPDATE_ITEM()           \
  vko_lane_base = item * VKO_WIDTH; \
  rule_update(lo);                  \
  vko_lane_base += 4;               \
  rule_update(hi);
#else
#define VKO_UPDATE_ITEM()           \
  vko_lane_base = item * VKO_WIDTH; \
  rule_update(lo);
#endif

vec4 vko_lane_mask(uint lanes) { return vec4(lessThan(uvec4(0, 1, 2, 3), uvec4(lanes))); }

// The new absmax of each written 8-bit operand's block, from this item's `lanes` lanes; the
// block's first invocation stores it. Uniform control flow (every invocation calls it).
// (Lanes out of range are selected away, not multiplied: they may hold anything.)
vec4 vko_abs_in_range(vec4 x, uint lanes) { return mix(vec4(0), abs(x), lessThan(uvec4(0, 1, 2, 3), uvec4(lanes))); }
#ifdef VKO_WIDE
#define VKO_ITEM_ABS(k) max(vko_abs_in_range(lo[k], lanes), vko_abs_in_range(hi[k], lanes > 4u ? lanes - 4u : 0u))
#else
#define VKO_ITEM_ABS(k) vko_abs_in_range(lo[k], lanes)
#endif
// After the update: keep a written 8-bit operand's values and its item's absmax.
#define VKO_Q8_KEEP(k)                                                                   \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k) && VKO_IS_Q8_OP(k)) {                           \
    const uint c = vko_q8_column(k);                                                     \
    vko_q8_keep[j][c][0] = lo[k];                                                        \
    vko_q8_keep[j][c][1] = hi[k];                                                        \
    const vec4 a = VKO_ITEM_ABS(k);                                                      \
    vko_local_absmax[j][c] = max(max(a.x, a.y), max(a.z, a.w));                          \
  }
// After the block reduction: the codes, and (the block's first invocation) the absmax.
#define VKO_Q8_STORE(k)                                                                  \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k) && VKO_IS_Q8_OP(k)) {                           \
    const uint c = vko_q8_column(k);                                                     \
    vko_store_q8##k(vko_q8_keep[j][c][0], vko_q8_keep[j][c][1], item, vko_new_absmax[j][c]); \
  }

// Reductions. A rule that defines VKO_PARTIALS provides
//   vec2 vko_contribution(vec4 x[VKO_MAX_OPS], vec4 mask)  (two sums over the masked lanes)
// and each workgroup writes the sums over its elements to scratch[pc.partials_base + block],
// reduced in a fixed-order tree (same result on every run, any subgroup size).
#ifdef VKO_PARTIALS
shared vec2 vko_shared[gl_WorkGroupSize.x];
#ifdef VKO_WIDE
#define VKO_ACCUMULATE_ITEM(lanes)                                   \
  vko_acc += vko_contribution(lo, vko_lane_mask(min(lanes, 4u)));   \
  vko_acc += vko_contribution(hi, vko_lane_mask(lanes > 4u ? lanes - 4u : 0u));
#else
#define VKO_ACCUMULATE_ITEM(lanes) vko_acc += vko_contribution(lo, vko_lane_mask(lanes));
#endif
#define VKO_WRITE_PARTIALS()                                                        \
  vko_shared[gl_LocalInvocationID.x] = vko_acc;                                     \
  uint vko_span = 1;                                                                \
  while (vko_span < wg) vko_span <<= 1;                                             \
  for (uint s = vko_span >> 1; s > 0; s >>= 1) {                                    \
    barrier();                                                                      \
    if (gl_LocalInvocationID.x < s && gl_LocalInvocationID.x + s < wg)              \
      vko_shared[gl_LocalInvocationID.x] += vko_shared[gl_LocalInvocationID.x + s]; \
  }                                                                                 \
  barrier();                                                                        \
  if (gl_LocalInvocationID.x == 0) VKO_SCRATCH(pc.partials_base + block) = vko_shared[0];
#else
#define VKO_ACCUMULATE_ITEM(lanes)
#define VKO_WRITE_PARTIALS()
#endif

// One item (item j of this invocation): load, update, store all but 8-bit operands, whose values
// and absmax are kept for the block reduction. `lanes` of its VKO_WIDTH elements are in range
// (0: the invocation only takes part in the block reduction); `whole`: all of them, with every
// operand aligned.
vec2 vko_acc = vec2(0);
#define VKO_ITEM_FUNCTION                                                                      \
  void vko_item(uint item, uint first, uint lanes, bool whole, uint j) {                      \
    vec4 lo[VKO_MAX_OPS], hi[VKO_MAX_OPS];                                                    \
    [[unroll]] for (uint k = 0; k < VKO_MAX_OPS; ++k) lo[k] = hi[k] = vec4(0); /* partial items */ \
    if (VKO_ANY_Q8) vko_local_absmax[j] = vec2(0);                                            \
    if (lanes == 0u) return;                                                                  \
    VKO_FOR_EACH_OP(VKO_LOAD_ITEM)                                                            \
    VKO_UPDATE_ITEM()                                                                         \
    VKO_ACCUMULATE_ITEM(lanes)                                                                \
    VKO_FOR_EACH_OP(VKO_STORE_ITEM)                                                           \
    if (VKO_ANY_Q8) {                                                                         \
      VKO_FOR_EACH_OP(VKO_Q8_KEEP)                                                            \
    }                                                                                         \
  }                                                                                           \
  void vko_item_q8(uint item, uint lanes, uint j) {                                           \
    if (lanes == 0u) return;                                                                  \
    VKO_FOR_EACH_OP(VKO_Q8_STORE)                                                             \
    if ((item * VKO_WIDTH) % 256u == 0u) {                                                    \
      const uint base = vko_q8_block * vko_q8_count;                                          \
      if ((vko_q8_written & 1u) != 0u) VKO_STORE1(VKO_OP_ABSMAX, base, vko_new_absmax[j].x);  \
      if ((vko_q8_written & 2u) != 0u) VKO_STORE1(VKO_OP_ABSMAX, base + 1u, vko_new_absmax[j].y); \
    }                                                                                         \
  }

// Fast segments: an invocation's items are VKO_FAST_STRIDE apart from its first, the workgroup's
// first item + VKO_FAST_LANE (consecutive lanes, consecutive items).
#ifdef VKO_SUBGROUP_BLOCKS
#define VKO_FAST_LANE \
  (VKO_SUBGROUP != 0u ? gl_SubgroupID * VKO_SUBGROUP * VKO_ITEMS + gl_SubgroupInvocationID : gl_LocalInvocationID.x)
#define VKO_FAST_STRIDE (VKO_SUBGROUP != 0u ? VKO_SUBGROUP : gl_WorkGroupSize.x)
// (A subgroup's lanes span less than a block: the block of lane 0's item is theirs.)
#define VKO_FAST_Q8_BLOCK(item, j)                                                                          \
  (VKO_SUBGROUP != 0u                                                                                       \
       ? ((block - head.x) * wg * VKO_ITEMS + gl_SubgroupID * VKO_SUBGROUP * VKO_ITEMS + (j) * VKO_SUBGROUP) * \
             VKO_WIDTH / 256u                                                                               \
       : (item) * VKO_WIDTH / 256u)
#define VKO_FAST_BLOCKS_ABSMAX()     \
  if (VKO_SUBGROUP != 0u)            \
    vko_subgroup_blocks_absmax();    \
  else                               \
    vko_blocks_absmax(VKO_ITEMS)
#else
#define VKO_FAST_LANE gl_LocalInvocationID.x
#define VKO_FAST_STRIDE gl_WorkGroupSize.x
#define VKO_FAST_Q8_BLOCK(item, j) ((item) * VKO_WIDTH / 256u)
#define VKO_FAST_BLOCKS_ABSMAX() vko_blocks_absmax(VKO_ITEMS)
#endif
#define VKO_ELEMENTWISE_MAIN                                                                      \
  VKO_ITEM_FUNCTION                                                                             \
  void main() {                                                                                 \
    const uint block = pc.block_base + gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; \
    if (block >= pc.block_end) return;                                                          \
    const uint si = VKO_BLOCK_SEGMENT(block) - pc.seg_base;                                     \
    const uvec4 head = VKO_SEGMENT(si).head;                                                    \
    vko_segment_head = head;                                                                    \
    vko_segment_extra = VKO_NEEDS_EXTRA || VKO_MIXED || VKO_STOCHASTIC ? VKO_SEGMENT(si).extra : uvec4(0); \
    vko_dtypes = VKO_MIXED ? vko_segment_extra.w : VKO_DTYPES;                                  \
    vko_round_key = VKO_STOCHASTIC ? vko_hash(pc.round_key) : 0u;                               \
    const uint ops = VKO_HAS_MASTER || vko_dtype(VKO_OP_ABSMAX) != VKO_ABSENT ? VKO_MAX_OPS : VKO_NUM_OPS; \
    [[unroll]] for (uint r = 0; r < 4; ++r)                                                     \
      ref[r] = r == 0 || ops > r * VKO_OPS_PER_REF ? VKO_SEGMENT(si).ref[r] : uvec4(0);         \
    vko_q8_slots = 0;                                                                           \
    vko_q8_count = 0;                                                                           \
    vko_q8_written = 0;                                                                         \
    if (VKO_ANY_Q8)                                                                             \
      [[unroll]] for (uint k = 2; k < 6; ++k)                                                   \
        if (vko_is_q8(vko_dtype(k))) {                                                          \
          if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) vko_q8_written |= 1u << vko_q8_count;         \
          vko_q8_slots |= (vko_q8_count++) << (2u * k);                                         \
        }                                                                                       \
    const uint wg = gl_WorkGroupSize.x;                                                         \
    if (VKO_CAREFUL) {                                                                          \
      const uint item = (block - head.x) * wg + gl_LocalInvocationID.x;                         \
      const uint first = item * VKO_WIDTH;                                                      \
      const uint lanes = first < head.y ? min(uint(VKO_WIDTH), head.y - first) : 0u;            \
      vko_q8_block = first / 256u;                                                              \
      vko_item(item, first, lanes, head.z != 0 && lanes == VKO_WIDTH, 0u);                     \
      if (VKO_ANY_Q8 && vko_q8_written != 0u) {                                                 \
        vko_blocks_absmax(1u);                                                                  \
        vko_item_q8(item, lanes, 0u);                                                           \
      }                                                                                         \
    } else {                                                                                    \
      /* whole blocks: every item is in range and aligned */                                    \
      const uint first_item = (block - head.x) * wg * VKO_ITEMS + VKO_FAST_LANE;               \
      [[unroll]] for (uint j = 0; j < VKO_ITEMS; ++j) {                                         \
        const uint item = first_item + j * VKO_FAST_STRIDE;                                     \
        vko_q8_block = VKO_FAST_Q8_BLOCK(item, j);                                              \
        vko_item(item, item * VKO_WIDTH, VKO_WIDTH, true, j);                                   \
      }                                                                                         \
      if (VKO_ANY_Q8 && vko_q8_written != 0u) {                                                 \
        VKO_FAST_BLOCKS_ABSMAX();                                                               \
        for (uint j = 0; j < VKO_ITEMS; ++j) {                                                  \
          const uint item = first_item + j * VKO_FAST_STRIDE;                                   \
          vko_q8_block = VKO_FAST_Q8_BLOCK(item, j);                                            \
          vko_item_q8(item, VKO_WIDTH, j);                                                      \
        }                                                                                       \
      }                                                                                         \
    }                                                                                           \
    VKO_WRITE_PARTIALS()                                                                        \
  }
