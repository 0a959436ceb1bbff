// Shared pieces of every elementwise update rule.
//
// One dispatch updates many tensors. The host builds a segment table: each segment is a
// contiguous element range of one tensor with the location of each operand (parameter,
// gradient, state slots). Segments own consecutive runs of workgroups ("blocks"); a workgroup
// finds its segment by binary search over the segments' first blocks.
//
// Operands are reached in one of two ways, chosen at build time:
//   VKO_BDA  - 64-bit buffer device addresses in the table (GL_EXT_buffer_reference); the table
//              itself is reached through an address in the push constants. No descriptors.
//   default  - descriptors: binding 0 is the table, binding 1 an array of VKO_MAX_OPS storage
//              buffer ranges (one per operand); the table holds element offsets within them.
//
// A rule file defines VKO_NUM_OPS, VKO_OP_READ(k), VKO_OP_WRITE(k) (constant expressions) and
// `void rule_update(inout vec4 x[VKO_MAX_OPS])`, then includes this file's main via
// VKO_ELEMENTWISE_MAIN. Math is float32; per-step scalars arrive as push constants.

#ifdef VKO_BDA
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#endif

#define VKO_MAX_OPS 6

// Workgroup size and vec4 items per invocation: specialization constants so they follow the
// device (subgroup size, core count) without rebuilding.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint VKO_ITEMS = 1;

struct Segment {
  uint block_begin;  // first block (workgroup) of this segment, counted over the whole table
  uint count;        // elements in this segment
  uint vec4_ok;      // 1 when every operand starts 16-byte aligned: use vec4 loads and stores
  uint reserved;
  uvec2 ref[VKO_MAX_OPS];  // BDA: byte address of each operand's first element;
                           // descriptors: .x = element offset within the operand's bound range
};

// Every push-constant block starts with this header (32 bytes); rule scalars follow.
#define VKO_PUSH_HEADER \
  uvec2 table_address;  \
  uint seg_begin;       \
  uint seg_end;         \
  uint block_base;      \
  uint block_end;       \
  uint header_pad0;     \
  uint header_pad1

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer SegmentTable {
  Segment seg[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatRef { float x[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Ref { vec4 x[]; };
#define VKO_SEGMENT(i) SegmentTable(pc.table_address).seg[i]
#define VKO_LOAD1(k, s, i) FloatRef(s.ref[k]).x[i]
#define VKO_STORE1(k, s, i, v) FloatRef(s.ref[k]).x[i] = (v)
#define VKO_LOAD4(k, s, i4) Vec4Ref(s.ref[k]).x[i4]
#define VKO_STORE4(k, s, i4, v) Vec4Ref(s.ref[k]).x[i4] = (v)
#else
layout(std430, set = 0, binding = 0) readonly buffer SegmentTable { Segment seg[]; } table;
// Two views of the same ranges: scalar for unaligned tails, vec4 for the aligned body.
layout(std430, set = 0, binding = 1) buffer OperandF { float x[]; } opf[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer Operand4 { vec4 x[]; } op4[VKO_MAX_OPS];
#define VKO_SEGMENT(i) table.seg[i]
#define VKO_LOAD1(k, s, i) opf[k].x[s.ref[k].x + (i)]
#define VKO_STORE1(k, s, i, v) opf[k].x[s.ref[k].x + (i)] = (v)
#define VKO_LOAD4(k, s, i4) op4[k].x[(s.ref[k].x >> 2) + (i4)]
#define VKO_STORE4(k, s, i4, v) op4[k].x[(s.ref[k].x >> 2) + (i4)] = (v)
#endif

// Operand loops are unrolled by the preprocessor: descriptor arrays need constant indices
// unless the device has (and the host enabled) dynamic indexing.
#define VKO_FOR_EACH_OP(X) X(0) X(1) X(2) X(3) X(4) X(5)

#define VKO_ELEMENTWISE_MAIN                                                                 \
  void main() {                                                                            \
    const uint block = pc.block_base + gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; \
    if (block >= pc.block_end) return;                                                     \
    /* last segment whose first block <= block */                                          \
    uint lo = pc.seg_begin, hi = pc.seg_end - 1;                                           \
    while (lo < hi) {                                                                      \
      const uint mid = (lo + hi + 1) >> 1;                                                 \
      if (VKO_SEGMENT(mid).block_begin <= block) lo = mid; else hi = mid - 1;              \
    }                                                                                      \
    const Segment s = VKO_SEGMENT(lo);                                                     \
    const uint wg = gl_WorkGroupSize.x;                                                    \
    const uint first4 = (block - s.block_begin) * wg * VKO_ITEMS;                          \
    vec4 x[VKO_MAX_OPS];                                                                   \
    for (uint item = 0; item < VKO_ITEMS; ++item) {                                        \
      const uint i4 = first4 + item * wg + gl_LocalInvocationID.x;                         \
      const uint first = i4 * 4;                                                           \
      if (first >= s.count) break;                                                         \
      if (s.vec4_ok != 0 && first + 4 <= s.count) {                                        \
        VKO_FOR_EACH_OP(VKO_LOAD_VEC4)                                                     \
        rule_update(x);                                                                    \
        VKO_FOR_EACH_OP(VKO_STORE_VEC4)                                                    \
      } else {                                                                             \
        const uint lanes = min(4u, s.count - first);                                       \
        for (uint l = 0; l < lanes; ++l) {                                                 \
          VKO_FOR_EACH_OP(VKO_LOAD_LANE)                                                   \
        }                                                                                  \
        rule_update(x);                                                                    \
        for (uint l = 0; l < lanes; ++l) {                                                 \
          VKO_FOR_EACH_OP(VKO_STORE_LANE)                                                  \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }

#define VKO_LOAD_VEC4(k) \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) x[k] = VKO_LOAD4(k, s, i4);
#define VKO_STORE_VEC4(k) \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) VKO_STORE4(k, s, i4, x[k]);
#define VKO_LOAD_LANE(k) \
  if (k < VKO_NUM_OPS && VKO_OP_READ(k)) x[k][l] = VKO_LOAD1(k, s, first + l);
#define VKO_STORE_LANE(k) \
  if (k < VKO_NUM_OPS && VKO_OP_WRITE(k)) VKO_STORE1(k, s, first + l, x[k][l]);
