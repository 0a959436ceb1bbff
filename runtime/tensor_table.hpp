#pragma once
// The segment table: how one dispatch per group (and kind) reaches every tensor of the group.
//
// Each tensor is cut into segments. Fast segments cover whole blocks of aligned data and run
// without bounds checks with wide accesses; careful segments cover the rest (a tensor's tail,
// or all of a tensor whose operands are not aligned to the access width) one element per
// invocation. On the descriptor path a segment is also small enough that each operand's bound
// range stays within maxStorageBufferRange. Segments are packed into batches: one dispatch (and
// on the descriptor path one descriptor set) each. Segments own consecutive runs of blocks.
#include <array>
#include <cstdint>
#include <vector>

#include "context_state.hpp"

namespace vkoptim::detail {

// Where one operand of one tensor lives. buffer == VK_NULL_HANDLE: the operand is unused.
struct OperandLocation {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;      // bytes
  VkDeviceAddress address = 0;  // buffer's device address + offset (address path only)
  // Indexed per tensor (e.g. Adafactor's row factors), not per element: every segment of the
  // tensor refers to its start. Address path only.
  bool per_tensor = false;
  // Bytes per 256 elements (f32 1024, 16-bit 512, 8-bit 256, 4-bit 128; an absmax operand 4 per
  // block and quantized slot) and the size of the unit the shader indexes it in (element, float
  // for absmax, an item's codes for 4-bit).
  uint32_t bytes_per_256 = 1024;
  uint32_t unit = 4;
  bool per_block = false;  // one entry per quantization block (absmax), not per element...
  uint32_t block = 256;    // ...of this many elements
  // Per-block operands: bytes after the whole tensor's entries that every piece reaches (the
  // rank-1 maxima of a 4-bit second moment); Segment.pad[0].w gives the distance in floats.
  VkDeviceSize tail_bytes = 0;
  // A region vkoptim allocated, padded to whole wide items: accessed whole items at a time even
  // in a tensor's partial last item.
  bool padded = false;
  bool wide() const { return !per_block; }  // accessed in wide items
  VkDeviceSize bytes_at(uint64_t element) const { return (element * bytes_per_256 + 255) / 256; }
};

struct TableTensor {
  uint32_t group = 0;
  uint64_t count = 0;
  uint64_t whole_count = 0;   // a shard's piece: the whole tensor's count (per-tensor means); 0: count
  uint64_t cols = 0;          // 2-D tensors (rows x cols, row-major); 0 for 1-D
  uint32_t round_stream = 0;  // stochastic rounding's key for the tensor (ParamTensor::whole_index)
  uint64_t whole_offset = 0;  // a piece's first element within the whole tensor
  std::array<OperandLocation, kMaxOperands> operands{};
  uint32_t dtypes = 0;  // storage type codes of the operands, 3 bits each (precision.hpp)
};

// Mirrors `Segment` in shaders/vko_addressing.glsl (std430, 128 bytes: a power of two keeps bound
// table ranges aligned to whole records).
struct SegmentRecord {
  uint32_t block_begin = 0;
  uint32_t count = 0;
  uint32_t aligned = 0;  // every operand aligned to the wide access
  uint32_t tensor = 0;   // the optimizer's tensor index (reductions: per-tensor sums)
  // Address path: operand k's address in words 2k (low), 2k+1 (high).
  // Descriptor path: operand k's offset (in its units) within its bound range in word k.
  uint32_t ref[kMaxOperands * 2] = {};
  uint32_t first = 0;         // the segment's first element within its tensor
  uint32_t cols = 0;          // 2-D tensors: columns; 0 for 1-D
  uint32_t tensor_count = 0;  // the whole tensor's element count
  uint32_t dtypes = 0;        // the tensor's operand storage types
  uint32_t first_chunk = 0;   // scratch entry of the tensor's first 256-element chunk (grad_norm; partials)
  uint32_t round_stream = 0;  // stochastic rounding: the tensor's key
  uint32_t round_first = 0;   // stochastic rounding: the segment's first element in the whole tensor
  uint32_t rank1 = 0;         // floats from the segment's absmax entry to the tensor's rank-1 maxima; 0: none
  uint32_t rank1_stride = 0;  // rank-1: the tensor's (a split piece's) elements, its clearing stride
  uint32_t reserved[3] = {};
};
static_assert(sizeof(SegmentRecord) == 128);

struct BoundRange {
  VkBuffer buffer = VK_NULL_HANDLE;  // null: bind a placeholder
  VkDeviceSize offset = 0;
  VkDeviceSize size = 0;
};

struct Batch {
  uint32_t group = 0;
  bool careful = false;
  uint32_t seg_begin = 0, seg_end = 0;  // in the table
  uint32_t block_begin = 0, block_end = 0;
  BoundRange table_range;                           // descriptor path: the table's bound part
  uint32_t table_first_segment = 0;                 // index of the bound part's first segment
  BoundRange map_range;                             // descriptor path: the block map's bound part
  uint32_t map_first_block = 0;                     // block of the bound part's first entry
  std::array<BoundRange, kMaxOperands> operands{};  // descriptor path
};

// The table buffer holds the segments, then (from map_offset) the block map: the segment
// index of every block.
struct TablePlan {
  std::vector<SegmentRecord> segments;
  std::vector<uint32_t> segment_tensor;  // tensor index of each segment
  std::vector<uint32_t> block_map;       // segment of each block
  std::vector<uint32_t> segment_blocks;  // blocks of each segment
  std::vector<Batch> batches;            // per group: fast batches, then careful ones
  VkDeviceSize map_offset = 0;           // bytes
  VkDeviceSize bytes() const { return map_offset + block_map.size() * 4; }
};

struct TableLimits {
  bool device_address = false;
  uint32_t width = 4;                 // elements per wide access (fast segments need it aligned)
  std::vector<uint32_t> fast_block;   // per group, elements per fast block: workgroup size * items * width
  uint32_t careful_block = 0;         // elements per careful block: workgroup size * width
  VkDeviceSize max_range = 0;         // maxStorageBufferRange
  VkDeviceSize offset_alignment = 0;  // minStorageBufferOffsetAlignment
};

// The order segments take in the table: by group, then parameter and gradient buffer, then
// offset, so tensors sharing buffers are adjacent (a descriptor batch binds one range per
// operand). State is laid out in the same order so each batch's state is contiguous too.
std::vector<uint32_t> table_order(const std::vector<TableTensor>& tensors);

TablePlan build_table(const std::vector<TableTensor>& tensors, const TableLimits& limits);

}  // namespace vkoptim::detail
