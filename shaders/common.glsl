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

#extension GL_EXT_control_flow_attributes : require
#ifdef VKO_BDA
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#endif
#ifdef VKO_WIDE
#extension GL_ARB_gpu_shader_int64 : require
#define VKO_WIDTH 8
#else
#define VKO_WIDTH 4
#endif

#define VKO_MAX_OPS 6

// A rule that reads the segment's extra words (vko_segment_extra) defines this as true before
// including this file.
#ifndef VKO_NEEDS_EXTRA
#define VKO_NEEDS_EXTRA false
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint VKO_ITEMS = 1;       // wide items per invocation (fast path)
layout(constant_id = 2) const bool VKO_CAREFUL = false;  // this pipeline runs careful segments

struct Segment {
  uvec4 head;    // x: first block (counted over the whole table), y: element count,
                 // z: 1 when every operand is aligned to the wide access, w: tensor index
  uvec4 ref[3];  // BDA: operand k's byte address (low, high) in words 2k, 2k+1;
                 // descriptors: operand k's element offset within its bound range in word k
  uvec4 extra;   // x: first element within the tensor, y: columns (2-D) or 0, z: tensor's count
  uvec4 pad[3];  // 128 bytes: bound table ranges stay aligned to whole records
};

// Every push-constant block starts with this header (32 bytes); rule scalars follow.
//   table_address  BDA: address of the segment table
//   map_address    BDA: address of the block map; descriptors: .x = block of the bound map's
//                  first entry
//   seg_base       subtracted from block-map entries (descriptors: first bound segment)
//   block_base     first block of this dispatch; workgroup (x, y) adds x + y * countX
//   block_end      one past the last block of this dispatch
#define VKO_PUSH_HEADER \
  uvec2 table_address;  \
  uvec2 map_address;    \
  uint seg_base;        \
  uint block_base;      \
  uint block_end;       \
  uint header_reserved

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer SegmentTable {
  Segment seg[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatRef { float x[]; };
#ifdef VKO_WIDE
layout(buffer_reference, std430, buffer_reference_align = 32) buffer WideRef { u64vec4 x[]; };
#else
layout(buffer_reference, std430, buffer_reference_align = 16) buffer WideRef { vec4 x[]; };
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
#else
layout(std430, set = 0, binding = 0) readonly buffer SegmentTable { Segment seg[]; } table;
layout(std430, set = 0, binding = 2) readonly buffer BlockMap { uint seg[]; } block_map;
// Two views of the same ranges: scalar for careful segments, wide for fast ones.
layout(std430, set = 0, binding = 1) buffer OperandF { float x[]; } opf[VKO_MAX_OPS];
#ifdef VKO_WIDE
layout(std430, set = 0, binding = 1) buffer OperandW { u64vec4 x[]; } opw[VKO_MAX_OPS];
#else
layout(std430, set = 0, binding = 1) buffer OperandW { vec4 x[]; } opw[VKO_MAX_OPS];
#endif
#define VKO_OPS_PER_REF 4  // operands per uvec4 of Segment.ref
#define VKO_SEGMENT(i) table.seg[i]
#define VKO_BLOCK_SEGMENT(b) block_map.seg[(b) - pc.map_address.x]
#define VKO_OFFSET(k) ref[(k) >> 2][(k) & 3]
#define VKO_LOAD1(k, i) opf[k].x[VKO_OFFSET(k) + (i)]
#define VKO_STORE1(k, i, v) opf[k].x[VKO_OFFSET(k) + (i)] = (v)
#define VKO_LOADW(k, i) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)]
#define VKO_STOREW(k, i, v) opw[k].x[VKO_OFFSET(k) / VKO_WIDTH + (i)] = (v)
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

// Weight decay of a rule with a DECOUPLED specialization constant and push fields weight_decay
// and decay_scale (= 1 - lr*wd): decoupled p <- p*(1 - lr*wd), else L2 g <- g + wd*p.
#define VKO_WEIGHT_DECAY(p, g)     \
  if (DECOUPLED) {                 \
    p *= pc.decay_scale;           \
  } else {                         \
    g += pc.weight_decay * p;      \
  }

// Operand loops are unrolled by the preprocessor: descriptor arrays need constant indices
// unless the device has (and the host enabled) dynamic indexing.
#define VKO_FOR_EACH_OP(X) X(0) X(1) X(2) X(3) X(4) X(5)

#ifdef VKO_WIDE
#define VKO_LOAD_ITEM(k) \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) vko_unpack(VKO_LOADW(k, item), lo[k], hi[k]);
#define VKO_STORE_ITEM(k) \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) VKO_STOREW(k, item, vko_pack(lo[k], hi[k]));
#define VKO_UPDATE_ITEM()        \
  vko_lane_base = item * VKO_WIDTH; \
  rule_update(lo);               \
  vko_lane_base += 4;            \
  rule_update(hi);
#else
#define VKO_LOAD_ITEM(k) \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) lo[k] = VKO_LOADW(k, item);
#define VKO_STORE_ITEM(k) \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) VKO_STOREW(k, item, lo[k]);
#define VKO_UPDATE_ITEM()        \
  vko_lane_base = item * VKO_WIDTH; \
  rule_update(lo);
#endif
// Element `first + l` of a partial or unaligned item: lanes 0-3 in lo, 4-7 in hi.
#define VKO_LOAD_LANE(k)                              \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) {            \
    const float v = VKO_LOAD1(k, first + l);          \
    if (l < 4) lo[k][l] = v; else hi[k][l - 4] = v;   \
  }
#define VKO_STORE_LANE(k) \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) VKO_STORE1(k, first + l, l < 4 ? lo[k][l] : hi[k][l - 4]);

// The current segment's operand references, head and extra words, for rules that need them, and
// the index within the segment of lane 0 of the vec4 rule_update is working on.
uvec4 ref[3];
uvec4 vko_segment_head;
uvec4 vko_segment_extra;
uint vko_lane_base;

// Reductions. A rule that defines VKO_PARTIALS provides
//   vec2 vko_contribution(vec4 x[VKO_MAX_OPS], vec4 mask)  (two sums over the masked lanes)
// and each workgroup writes the sums over its elements to scratch[pc.partials_base + block],
// reduced in a fixed-order tree (same result on every run, any subgroup size).
#ifdef VKO_PARTIALS
shared vec2 vko_shared[gl_WorkGroupSize.x];
vec4 vko_lane_mask(uint lanes) { return vec4(lessThan(uvec4(0, 1, 2, 3), uvec4(lanes))); }
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

#define VKO_ELEMENTWISE_MAIN                                                                      \
  void main() {                                                                                 \
    const uint block = pc.block_base + gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; \
    if (block >= pc.block_end) return;                                                          \
    const uint si = VKO_BLOCK_SEGMENT(block) - pc.seg_base;                                     \
    const uvec4 head = VKO_SEGMENT(si).head;                                                    \
    vko_segment_head = head;                                                                    \
    vko_segment_extra = VKO_NEEDS_EXTRA ? VKO_SEGMENT(si).extra : uvec4(0);                      \
    ref[0] = VKO_SEGMENT(si).ref[0];                                                            \
    ref[1] = VKO_NUM_OPS > VKO_OPS_PER_REF ? VKO_SEGMENT(si).ref[1] : uvec4(0);                 \
    ref[2] = VKO_NUM_OPS > 2 * VKO_OPS_PER_REF ? VKO_SEGMENT(si).ref[2] : uvec4(0);             \
    const uint wg = gl_WorkGroupSize.x;                                                         \
    vec4 lo[VKO_MAX_OPS], hi[VKO_MAX_OPS];                                                      \
    vec2 vko_acc = vec2(0);                                                                     \
    [[unroll]] for (uint k = 0; k < VKO_MAX_OPS; ++k) lo[k] = hi[k] = vec4(0); /* partial items */ \
    if (VKO_CAREFUL) {                                                                          \
      const uint item = (block - head.x) * wg + gl_LocalInvocationID.x;                         \
      const uint first = item * VKO_WIDTH;                                                      \
      if (first < head.y) {                                                                     \
        if (head.z != 0 && first + VKO_WIDTH <= head.y) {                                       \
          VKO_FOR_EACH_OP(VKO_LOAD_ITEM)                                                        \
          VKO_UPDATE_ITEM()                                                                     \
          VKO_ACCUMULATE_ITEM(VKO_WIDTH)                                                        \
          VKO_FOR_EACH_OP(VKO_STORE_ITEM)                                                       \
        } else {                                                                                \
          const uint lanes = min(uint(VKO_WIDTH), head.y - first);                              \
          for (uint l = 0; l < lanes; ++l) {                                                    \
            VKO_FOR_EACH_OP(VKO_LOAD_LANE)                                                      \
          }                                                                                     \
          VKO_UPDATE_ITEM()                                                                     \
          VKO_ACCUMULATE_ITEM(lanes)                                                            \
          for (uint l = 0; l < lanes; ++l) {                                                    \
            VKO_FOR_EACH_OP(VKO_STORE_LANE)                                                     \
          }                                                                                     \
        }                                                                                       \
      }                                                                                         \
    } else {                                                                                    \
      /* whole blocks: every item is in range and aligned */                                    \
      const uint first_item = (block - head.x) * wg * VKO_ITEMS + gl_LocalInvocationID.x;      \
      [[unroll]] for (uint k = 0; k < VKO_ITEMS; ++k) {                                         \
        const uint item = first_item + k * wg;                                                  \
        VKO_FOR_EACH_OP(VKO_LOAD_ITEM)                                                          \
        VKO_UPDATE_ITEM()                                                                       \
        VKO_ACCUMULATE_ITEM(VKO_WIDTH)                                                          \
        VKO_FOR_EACH_OP(VKO_STORE_ITEM)                                                         \
      }                                                                                         \
    }                                                                                           \
    VKO_WRITE_PARTIALS()                                                                        \
  }
