// Where operands live: the segment table, the block map, the current segment's operand
// references and the accesses through them, for both ways of reaching memory. Includes
// vko_base.glsl and vko_push.glsl.
//
// One dispatch updates many tensors. The host builds a segment table: each segment is a
// contiguous element range of one tensor with the location of each operand (parameter,
// gradient, state slots). Segments own consecutive runs of workgroups ("blocks"); a block map
// (one uint per block) tells each workgroup its segment in one load.
//
// Operands are reached in one of two ways, chosen at build time:
//   VKO_BDA  - 64-bit buffer device addresses in the table (GL_EXT_buffer_reference); the table
//              itself is reached through an address in the push header. No descriptors.
//   default  - descriptors: binding 0 is the table, binding 1 an array of VKO_MAX_OPS storage
//              buffer ranges (one per operand), binding 2 the block map; the table holds element
//              offsets within the ranges (in elements; 4-bit operands: in items' codes).
// The operand accesses are macros taking a constant operand index k: descriptor arrays need
// constant indices unless the device has, and the host enabled, dynamic indexing.
#ifndef VKO_ADDRESSING_GLSL
#define VKO_ADDRESSING_GLSL

#include "vko_base.glsl"
#include "vko_push.glsl"

// (runtime/tensor_table.hpp, Segment, is the host's copy.)
struct Segment {
  uvec4 head;    // x: first block (counted over the whole table), y: element count,
                 // z: 1 when every operand is aligned to the wide access, w: tensor index
  uvec4 ref[4];  // BDA: operand k's byte address (low, high) in words 2k, 2k+1;
                 // descriptors: operand k's element offset within its bound range in word k
  uvec4 extra;   // x: first element within the tensor, y: columns (2-D) or 0, z: tensor's count,
                 // w: storage types of the operands (as VKO_DTYPES)
  uvec4 pad[2];  // pad[0].x: scratch entry of the tensor's first 256-element chunk (grad_norm.comp);
                 // y: stochastic rounding's key for the tensor, z: the segment's first element
                 // within the whole tensor (a shard's piece: in the model's tensor);
                 // w: floats from the segment's absmax entry to its tensor's rank-1 maxima, 0: none;
                 // pad[1].x: rank-1: the tensor's element count (a piece's: its own);
                 // 128 bytes: bound table ranges stay aligned to whole records
};

// The current segment's operand references (Segment.ref), which the accesses below read.
uvec4 vko_refs[4];

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

uint vko_block_segment(VkoPushHeader h, uint block) { return BlockMap(h.map_address).seg[block]; }
uvec4 vko_table_head(VkoPushHeader h, uint si) { return SegmentTable(h.table_address).seg[si].head; }
uvec4 vko_table_extra(VkoPushHeader h, uint si) { return SegmentTable(h.table_address).seg[si].extra; }
uvec4 vko_table_ref(VkoPushHeader h, uint si, uint r) { return SegmentTable(h.table_address).seg[si].ref[r]; }
uvec4 vko_table_pad(VkoPushHeader h, uint si) { return SegmentTable(h.table_address).seg[si].pad[0]; }
uint vko_table_rank1_stride(VkoPushHeader h, uint si) { return SegmentTable(h.table_address).seg[si].pad[1].x; }

#define VKO_REF(k) uvec2(vko_refs[(k) >> 1][((k) & 1) * 2], vko_refs[(k) >> 1][((k) & 1) * 2 + 1])
#define VKO_LOAD1(k, i) FloatRef(VKO_REF(k)).x[i]
#define VKO_STORE1(k, i, v) FloatRef(VKO_REF(k)).x[i] = (v)
#define VKO_LOADW(k, i) WideRef(VKO_REF(k)).x[i]
#define VKO_STOREW(k, i, v) WideRef(VKO_REF(k)).x[i] = (v)
#define VKO_WIDE16(k, i) Wide16Ref(VKO_REF(k)).x[i]
#define VKO_WIDE8(k, i) Wide8Ref(VKO_REF(k)).x[i]
// The 32-bit word of item i of a 4-bit operand (VKO_WIDE: 8 codes; else 4 codes, in the 16-bit
// half VKO_HALF(k, i) of VKO_WORD).
#define VKO_WIDE4(k, i) WordRef(VKO_REF(k)).x[i]
// 16-bit element i of operand k: half VKO_HALF(k, i) of the 32-bit words VKO_WORD(k, w).
#define VKO_HALF(k, i) (((VKO_REF(k).x & 3u) >> 1) + (i))
#define VKO_WORD(k, w) WordRef(uvec2(VKO_REF(k).x & ~3u, VKO_REF(k).y)).x[w]
#define VKO_WORD_AT(k, i) WordRef(VKO_REF(k)).x[i]  // the word of float i of operand k (as VKO_LOAD1)
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

uint vko_block_segment(VkoPushHeader h, uint block) { return block_map.seg[block - h.map_address.x]; }
uvec4 vko_table_head(VkoPushHeader h, uint si) { return table.seg[si].head; }
uvec4 vko_table_extra(VkoPushHeader h, uint si) { return table.seg[si].extra; }
uvec4 vko_table_ref(VkoPushHeader h, uint si, uint r) { return table.seg[si].ref[r]; }
uvec4 vko_table_pad(VkoPushHeader h, uint si) { return table.seg[si].pad[0]; }
uint vko_table_rank1_stride(VkoPushHeader h, uint si) { return table.seg[si].pad[1].x; }

#define VKO_OFFSET(k) vko_refs[(k) >> 2][(k) & 3]
#define VKO_LOAD1(k, i) opf[k].x[VKO_OFFSET(k) + (i)]
#define VKO_STORE1(k, i, v) opf[k].x[VKO_OFFSET(k) + (i)] = (v)
#define VKO_LOADW(k, i) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_STOREW(k, i, v) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)] = (v)
#define VKO_WIDE16(k, i) opw16[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_WIDE8(k, i) opw8[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_WIDE4(k, i) opu[k].x[VKO_OFFSET(k) + (i)]  // (4-bit operands' unit is an item's codes)
#define VKO_HALF(k, i) (VKO_OFFSET(k) + (i))
#define VKO_WORD(k, w) opu[k].x[w]
#define VKO_WORD_AT(k, i) opu[k].x[VKO_OFFSET(k) + (i)]  // the word of float i of operand k (as VKO_LOAD1)
#endif

// A wide access of f32 data as two vec4 (lanes 0-3, 4-7) and back.
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

#endif  // VKO_ADDRESSING_GLSL
