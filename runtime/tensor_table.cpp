#include "tensor_table.hpp"

#include <algorithm>
#include <string>

namespace vkoptim::detail {
namespace {

constexpr VkDeviceSize kSegmentBytes = sizeof(SegmentRecord);

VkDeviceSize align_down(VkDeviceSize v, VkDeviceSize a) {
  return v / a * a;
}
uint64_t round_up_to(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

struct Piece {
  uint32_t tensor;
  uint64_t first;  // element offset within the tensor
  uint64_t count;
  bool careful;
};

}  // namespace

std::vector<uint32_t> table_order(const std::vector<TableTensor>& tensors) {
  std::vector<uint32_t> order(tensors.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const TableTensor &x = tensors[a], &y = tensors[b];
    if (x.group != y.group) return x.group < y.group;
    for (uint32_t k = 0; k < 2; ++k)
      if (x.operands[k].buffer != y.operands[k].buffer) return x.operands[k].buffer < y.operands[k].buffer;
    return x.operands[0].offset < y.operands[0].offset;
  });
  return order;
}

TablePlan build_table(const std::vector<TableTensor>& tensors, const TableLimits& limits) {
  TablePlan plan;
  const VkDeviceSize access_bytes = VkDeviceSize(limits.width) * 4;  // of an f32 operand, the widest
  // Wide accesses need range starts aligned to the access; device alignments are powers of two.
  const VkDeviceSize align = std::max(limits.offset_alignment, access_bytes);
  // Largest piece: every operand's range, including the slack of aligning its start down, fits
  // one descriptor. Whole fast blocks of the group, so later pieces keep the first one's alignment.
  const uint64_t max_elements = limits.device_address ? (uint64_t(1) << 30) : (limits.max_range - align) / 4;
  auto max_piece = [&](uint64_t fast_block) {
    return std::max<uint64_t>(fast_block, max_elements / fast_block * fast_block);
  };
  const uint64_t max_batch_segments =
      limits.device_address ? UINT32_MAX : std::max<uint64_t>(1, (limits.max_range - align) / kSegmentBytes);
  const uint64_t max_batch_blocks =
      limits.device_address ? UINT32_MAX : std::max<uint64_t>(1, (limits.max_range - align) / 4);

  auto operands_aligned = [&](const TableTensor& t) {
    for (const auto& op : t.operands)
      if (op.buffer && op.wide() && (limits.device_address ? op.address : op.offset) % op.bytes_at(limits.width) != 0)
        return false;
    return true;
  };

  // One past the last byte of a piece an operand's accesses reach: whole items in padded
  // regions, whole blocks of per-block data, whole 32-bit words for 16-bit elements.
  auto range_end = [&](const OperandLocation& op, const Piece& piece) {
    const uint64_t end = piece.first + piece.count;
    const uint64_t reach = op.per_block ? round_up_to(end, op.block) : op.padded ? round_up_to(end, limits.width) : end;
    if (op.tail_bytes)  // (every piece reaches the tail after the whole tensor's entries)
      return round_up_to(op.offset + op.bytes_at(round_up_to(tensors[piece.tensor].count, op.block)) + op.tail_bytes,
                         4);
    return round_up_to(op.offset + op.bytes_at(reach), 4);
  };

  const std::vector<uint32_t> order = table_order(tensors);

  // Cut tensors into pieces: per group, fast pieces first, then careful ones.
  std::vector<Piece> pieces;
  for (size_t begin = 0; begin < order.size();) {
    size_t end = begin;
    while (end < order.size() && tensors[order[end]].group == tensors[order[begin]].group) ++end;
    std::vector<Piece> careful;
    for (size_t o = begin; o < end; ++o) {
      const TableTensor& t = tensors[order[o]];
      const bool aligned = operands_aligned(t);
      const uint64_t fast_block = limits.fast_block.at(t.group), piece_max = max_piece(fast_block);
      for (uint64_t first = 0; first < t.count; first += piece_max) {
        const uint64_t n = std::min(piece_max, t.count - first);
        const uint64_t body = aligned ? n / fast_block * fast_block : 0;
        if (body) pieces.push_back({order[o], first, body, false});
        if (n > body) careful.push_back({order[o], first + body, n - body, true});
      }
    }
    pieces.insert(pieces.end(), careful.begin(), careful.end());
    begin = end;
  }

  // Table parts bound per batch start at multiples of this (of a record, and of 4).
  const VkDeviceSize table_align = std::max<VkDeviceSize>(limits.offset_alignment, kSegmentBytes);
  uint64_t next_block = 0;
  std::vector<uint64_t> segment_first;  // element offset of each segment within its tensor
  Batch current;
  bool open = false;
  std::array<VkDeviceSize, kMaxOperands> lo{}, hi{};  // span of each operand in the open batch

  auto close_batch = [&] {
    if (!open) return;
    current.seg_end = uint32_t(plan.segments.size());
    current.block_end = uint32_t(next_block);
    if (!limits.device_address) {
      for (uint32_t k = 0; k < kMaxOperands; ++k) {
        if (!current.operands[k].buffer) continue;
        const VkDeviceSize start = align_down(lo[k], align);
        current.operands[k].offset = start;
        current.operands[k].size = hi[k] - start;
      }
      const VkDeviceSize table_start = align_down(current.seg_begin * kSegmentBytes, table_align);
      current.table_first_segment = uint32_t(table_start / kSegmentBytes);
      current.table_range.offset = table_start;
      current.table_range.size = current.seg_end * kSegmentBytes - table_start;
      // Map offsets are relative to the map here; made absolute once the map's place is known.
      const VkDeviceSize map_start = align_down(VkDeviceSize(current.block_begin) * 4, table_align);
      current.map_first_block = uint32_t(map_start / 4);
      current.map_range.offset = map_start;
      current.map_range.size = VkDeviceSize(current.block_end) * 4 - map_start;
    }
    plan.batches.push_back(current);
    open = false;
  };

  for (const Piece& piece : pieces) {
    const TableTensor& t = tensors[piece.tensor];
    const uint64_t block = piece.careful ? limits.careful_block : limits.fast_block.at(t.group);
    const uint64_t piece_blocks = (piece.count + block - 1) / block;
    bool fits = open && current.group == t.group && current.careful == piece.careful &&
                plan.segments.size() - current.seg_begin < max_batch_segments &&
                next_block + piece_blocks - current.block_begin <= max_batch_blocks;
    if (fits && !limits.device_address) {
      for (uint32_t k = 0; k < kMaxOperands && fits; ++k) {
        const auto& op = t.operands[k];
        if (!op.buffer || !current.operands[k].buffer) continue;
        const VkDeviceSize s = op.offset + op.bytes_at(piece.first), e = range_end(op, piece);
        fits = op.buffer == current.operands[k].buffer &&
               std::max(hi[k], e) - align_down(std::min(lo[k], s), align) <= limits.max_range;
      }
    }
    if (!fits) {
      close_batch();
      current = Batch{};
      current.group = t.group;
      current.careful = piece.careful;
      current.seg_begin = uint32_t(plan.segments.size());
      current.block_begin = uint32_t(next_block);
      lo.fill(~VkDeviceSize(0));
      hi.fill(0);
      open = true;
    }
    for (uint32_t k = 0; k < kMaxOperands; ++k) {
      const auto& op = t.operands[k];
      if (!op.buffer) continue;
      current.operands[k].buffer = op.buffer;
      lo[k] = std::min(lo[k], op.offset + op.bytes_at(piece.first));
      hi[k] = std::max(hi[k], range_end(op, piece));
    }
    SegmentRecord seg;
    seg.block_begin = uint32_t(next_block);
    seg.count = uint32_t(piece.count);
    plan.block_map.insert(plan.block_map.end(), piece_blocks, uint32_t(plan.segments.size()));
    plan.segment_blocks.push_back(uint32_t(piece_blocks));
    plan.segments.push_back(seg);
    plan.segment_tensor.push_back(piece.tensor);
    segment_first.push_back(piece.first);
    next_block += piece_blocks;
    if (next_block > UINT32_MAX)
      throw Error(Status::invalid_argument, "too many elements for one optimizer (more than 2^32 workgroups)");
  }
  close_batch();

  plan.map_offset = (plan.segments.size() * kSegmentBytes + table_align - 1) / table_align * table_align;
  for (Batch& b : plan.batches) b.map_range.offset += plan.map_offset;

  // Operand references, now that every batch's bound ranges are known.
  for (const Batch& b : plan.batches) {
    for (uint32_t si = b.seg_begin; si < b.seg_end; ++si) {
      SegmentRecord& seg = plan.segments[si];
      const TableTensor& t = tensors[plan.segment_tensor[si]];
      const uint64_t first = segment_first[si];
      seg.aligned = operands_aligned(t) ? 1 : 0;
      seg.tensor = plan.segment_tensor[si];
      seg.first = uint32_t(first);
      seg.cols = uint32_t(t.cols);
      seg.tensor_count = uint32_t(t.whole_count ? t.whole_count : t.count);
      seg.dtypes = t.dtypes;
      seg.round_stream = t.round_stream;
      seg.round_first = uint32_t(t.whole_offset + first);  // (a key: wraps as `first` does)
      if (const auto& am = t.operands[kMaxOperands - 1]; am.buffer && am.tail_bytes) {
        seg.rank1 = uint32_t((am.bytes_at(round_up_to(t.count, am.block)) - am.bytes_at(first)) / 4);
        seg.rank1_stride = uint32_t(t.count);
      }
      for (uint32_t k = 0; k < kMaxOperands; ++k) {
        const auto& op = t.operands[k];
        if (!op.buffer) continue;
        if (limits.device_address) {
          const VkDeviceAddress a = op.address + (op.per_tensor ? 0 : op.bytes_at(first));
          seg.ref[2 * k] = uint32_t(a);
          seg.ref[2 * k + 1] = uint32_t(a >> 32);
        } else {
          seg.ref[k] = uint32_t((op.offset + op.bytes_at(first) - b.operands[k].offset) / op.unit);
        }
      }
    }
  }
  return plan;
}

}  // namespace vkoptim::detail
