#pragma once
// The segment table: how one dispatch per group reaches every tensor of the group.
//
// Each tensor is cut into segments (one per tensor on the address path; on the descriptor path
// as many as needed so each operand's bound range stays within maxStorageBufferRange). Segments
// are packed into batches that share one descriptor set (descriptor path) or one dispatch
// (address path). Segments own consecutive runs of blocks (workgroups).
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
};

struct TableTensor {
  uint32_t group = 0;
  uint64_t count = 0;
  std::array<OperandLocation, kMaxOperands> operands{};
};

// Mirrors `Segment` in shaders/common.glsl (std430, 64 bytes).
struct SegmentRecord {
  uint32_t block_begin = 0;
  uint32_t count = 0;
  uint32_t vec4_ok = 0;
  uint32_t reserved = 0;
  uint32_t ref[kMaxOperands][2] = {};
};
static_assert(sizeof(SegmentRecord) == 64);

struct BoundRange {
  VkBuffer buffer = VK_NULL_HANDLE;  // null: bind a placeholder
  VkDeviceSize offset = 0;
  VkDeviceSize size = 0;
};

struct Batch {
  uint32_t group = 0;
  uint32_t seg_begin = 0, seg_end = 0;  // in the table
  uint32_t block_begin = 0, block_end = 0;
  BoundRange table_range;                          // descriptor path: the table's bound part
  uint32_t table_first_segment = 0;                // index of the bound part's first segment
  std::array<BoundRange, kMaxOperands> operands{};  // descriptor path
};

struct TablePlan {
  std::vector<SegmentRecord> segments;
  std::vector<uint32_t> segment_tensor;  // tensor index of each segment
  std::vector<Batch> batches;
};

struct TableLimits {
  bool device_address = false;
  uint32_t block_elements = 0;            // workgroup size * 4 * items
  VkDeviceSize max_range = 0;             // maxStorageBufferRange
  VkDeviceSize offset_alignment = 0;      // minStorageBufferOffsetAlignment
};

// Segments of one group are contiguous; within a group, tensors that share buffers are
// adjacent. The table buffer (for descriptor ranges) is bound later;
// batch.table_range.buffer is left null here.
TablePlan build_table(const std::vector<TableTensor>& tensors, const TableLimits& limits);

}  // namespace vkoptim::detail
