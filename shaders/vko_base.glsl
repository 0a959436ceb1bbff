// Build configuration every vkoptim shader shares: the extensions, the width of a wide access,
// the operand numbering, the storage-type codes and the specialization constants the host sets
// for every pipeline (workgroup size 0, items 1, careful 2, storage types 24, 25, subgroup 26).
// Needs no other include; include it (directly or through another include) before any
// declaration, as it holds the #extension directives.
//
// Build defines (cmake/EmbedShaders.cmake):
//   VKO_WIDE             wide accesses move 8 floats as a u64vec4 (needs shaderInt64); else 4
//                        as a vec4. Per-access cost dominates on CPU drivers such as lavapipe.
//   VKO_BDA              operands, the segment table and scratch are reached through 64-bit
//                        buffer device addresses (GL_EXT_buffer_reference); else descriptors.
//   VKO_SUBGROUP_BLOCKS  subgroup arithmetic (rules with 8-bit state, on devices that have it).
#ifndef VKO_BASE_GLSL
#define VKO_BASE_GLSL

#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_memory_scope_semantics : require  // (relaxed atomic loads: atomicLoad)
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
#define VKO_OP_ABSMAX 7  // per quantization block, the absmax of each 8-bit or 4-bit state operand

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint VKO_ITEMS = 1;       // wide items per invocation (fast path)
layout(constant_id = 2) const bool VKO_CAREFUL = false;  // this pipeline runs careful segments

// Storage types, 3 bits per operand (operand k at bits 3k..3k+2). Arithmetic is float32 always.
// (runtime/precision.hpp has the host's copy of these codes.)
#define VKO_F32 0u
#define VKO_F16 1u
#define VKO_BF16 2u
#define VKO_Q8S 3u     // 8-bit code of the signed dynamic map, times the block's absmax
#define VKO_Q8U 4u     // 8-bit code of the unsigned dynamic map, times the block's absmax
#define VKO_Q4S 5u     // 4-bit code of the signed 4-bit dynamic map, times the block's absmax
#define VKO_Q4U 6u     // 4-bit code of the zero-excluding linear map, times the block's absmax
#define VKO_ABSENT 7u  // (master and absmax operands only) not kept
// The storage type of every operand, when the whole dispatch agrees (see VKO_PRECISION).
layout(constant_id = 24) const uint VKO_DTYPES = 0xFC0000u;
// bit 0: types differ between segments: read each segment's from its record (extra.w);
// bit 1: 16-bit writes round stochastically (else to nearest even);
// bit 2: some segment keeps quantized state (workgroups reduce per-block absmax);
// bit 3: that state is 4-bit, in blocks of 128 elements (else 8-bit, in blocks of 256). A group
//        does not mix the two (the host refuses it);
// bit 4: some segment's 4-bit second moment is normalised rank-1 (Segment.pad[0].w, vko_operands.glsl).
layout(constant_id = 25) const uint VKO_PRECISION = 0u;
const bool VKO_MIXED = (VKO_PRECISION & 1u) != 0u;
const bool VKO_STOCHASTIC = (VKO_PRECISION & 2u) != 0u;
const bool VKO_ANY_QUANT = (VKO_PRECISION & 4u) != 0u;
const bool VKO_Q4 = (VKO_PRECISION & 8u) != 0u;
const bool VKO_RANK1 = (VKO_PRECISION & 16u) != 0u;
const uint VKO_QBLOCK = VKO_Q4 ? 128u : 256u;  // elements per quantization block
// Shaders built with VKO_SUBGROUP_BLOCKS (rules with 8-bit state, on devices with subgroup
// arithmetic in compute): the device's subgroup size, set by the host when it divides
// VKO_QBLOCK / VKO_WIDTH and a subgroup's items (VKO_ITEMS per invocation) are whole blocks.
// Fast segments then take each block's absmax with subgroupMax, without barriers; 0: through
// shared memory. (Modules below SPIR-V 1.6, created without ALLOW_VARYING_SUBGROUP_SIZE, run
// with exactly this subgroup size.)
layout(constant_id = 26) const uint VKO_SUBGROUP = 0u;

#endif  // VKO_BASE_GLSL
