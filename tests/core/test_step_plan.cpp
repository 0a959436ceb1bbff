// Host-only tests of the runtime core's pure parts: barrier placement from the passes' declared
// accesses (step_plan.hpp) and the segment table (tensor_table.hpp). No Vulkan device.
#include <gtest/gtest.h>

#include <random>

#include "step_plan.hpp"
#include "tensor_table.hpp"

namespace {

using namespace vkoptim::detail;

PlannedPass pass(std::vector<uint32_t> reads, std::vector<uint32_t> writes, uint32_t scratch_reads = 0,
                 uint32_t scratch_writes = 0, size_t dispatches = 1) {
  PlannedPass p;
  for (uint32_t t : reads) p.reads.add_tensor(t);
  for (uint32_t t : writes) p.writes.add_tensor(t);
  p.reads.scratch = scratch_reads;
  p.writes.scratch = scratch_writes;
  p.dispatches.resize(dispatches);
  return p;
}

std::vector<bool> barriers(std::vector<PlannedPass> passes) {
  StepPlan plan;
  plan.passes = std::move(passes);
  place_barriers(plan);
  std::vector<bool> out;
  for (const auto& p : plan.passes) out.push_back(p.barrier_before);
  return out;
}

TEST(PlaceBarriers, ReadAfterWriteWaits) {
  EXPECT_EQ(barriers({pass({0}, {0}), pass({0}, {})}), (std::vector<bool>{false, true}));
}

TEST(PlaceBarriers, WriteAfterReadWaits) {
  EXPECT_EQ(barriers({pass({1}, {}), pass({}, {1})}), (std::vector<bool>{false, true}));
}

TEST(PlaceBarriers, DisjointTensorsRunTogether) {
  EXPECT_EQ(barriers({pass({0}, {0}), pass({1}, {1}), pass({2, 3}, {2, 3})}), (std::vector<bool>{false, false, false}));
}

TEST(PlaceBarriers, ReadsDoNotConflict) {
  EXPECT_EQ(barriers({pass({0, 1}, {}), pass({0, 1}, {})}), (std::vector<bool>{false, false}));
}

TEST(PlaceBarriers, ScratchPartsAreResources) {
  // LAMB: moments write partial sums, reduce reads them and writes per-tensor sums, apply reads those.
  EXPECT_EQ(barriers({pass({0, 1}, {0, 1}, 0, kScratchPartials), pass({}, {}, kScratchPartials, kScratchTensorSums),
                      pass({0, 1}, {0, 1}, kScratchTensorSums, 0)}),
            (std::vector<bool>{false, true, true}));
  // A group-sum reader does not wait for a tensor-sum writer.
  EXPECT_EQ(barriers({pass({}, {}, 0, kScratchTensorSums), pass({5}, {5}, kScratchGroupSums, 0)}),
            (std::vector<bool>{false, false}));
}

TEST(PlaceBarriers, ABarrierCoversEverythingBeforeIt) {
  // After the barrier before pass 1, pass 2 only conflicts with pass 1's accesses.
  EXPECT_EQ(barriers({pass({0}, {0}), pass({0}, {0}), pass({1}, {1}), pass({0}, {})}),
            (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(barriers({pass({0}, {0}), pass({0}, {0}), pass({3}, {3}), pass({4}, {})}),
            (std::vector<bool>{false, true, false, false}));
}

TEST(PlaceBarriers, PassesWithoutDispatchesAreSkipped) {
  EXPECT_EQ(barriers({pass({0}, {0}), pass({0}, {0}, 0, 0, 0), pass({1}, {1})}),
            (std::vector<bool>{false, false, false}));
}

TEST(StepPlan, PipelinesAreKeyedOnce) {
  StepPlan plan;
  const PipelineKey a{"adam", true, true, false, {256, 2, 0, 1}};
  PipelineKey b = a;
  b.spec_constants[2] = 1;
  EXPECT_EQ(plan.pipeline_index(a), 0u);
  EXPECT_EQ(plan.pipeline_index(b), 1u);
  EXPECT_EQ(plan.pipeline_index(a), 0u);
  EXPECT_EQ(plan.pipelines.size(), 2u);
  EXPECT_EQ(a.module_name(), "adam_bda_w8");
}

// The segment table covers every element of every tensor exactly once, in blocks of its kind,
// for random tensor sizes and placements on both addressing paths.
TEST(SegmentTable, CoversEveryElementOnce) {
  std::mt19937_64 rng(20261201);
  for (int round = 0; round < 50; ++round) {
    const bool address = round % 2 == 0;
    std::vector<TableTensor> tensors;
    const size_t n = 1 + rng() % 12;
    VkDeviceSize offset = 0;
    for (size_t i = 0; i < n; ++i) {
      TableTensor t;
      t.group = uint32_t(i * 3 / n);
      t.count = 1 + rng() % 70000;
      for (int k = 0; k < 2; ++k) {
        t.operands[k].buffer = reinterpret_cast<VkBuffer>(uintptr_t(0x1000 + k));
        t.operands[k].offset = offset * 4;
        t.operands[k].address = 0x100000 + offset * 4;
      }
      offset += t.count + rng() % 9;  // some tensors unaligned
      tensors.push_back(t);
    }
    TableLimits limits;
    limits.device_address = address;
    limits.width = 8;
    limits.fast_block = {256 * 2 * 8, 256 * 2 * 8, 256 * 2 * 8};
    limits.careful_block = 256 * 8;
    limits.max_range = 128 << 20;
    limits.offset_alignment = 16;
    const TablePlan plan = build_table(tensors, limits);
    std::vector<std::vector<std::pair<uint64_t, uint64_t>>> covered(n);
    ASSERT_EQ(plan.segments.size(), plan.segment_tensor.size());
    for (size_t s = 0; s < plan.segments.size(); ++s) {
      const auto& seg = plan.segments[s];
      EXPECT_EQ(seg.tensor, plan.segment_tensor[s]);
      covered[seg.tensor].push_back({seg.first, seg.first + seg.count});
      for (uint32_t b = seg.block_begin; b < seg.block_begin + plan.segment_blocks[s]; ++b)
        EXPECT_EQ(plan.block_map[b], s) << "block " << b;
    }
    for (size_t t = 0; t < n; ++t) {
      auto& c = covered[t];
      std::sort(c.begin(), c.end());
      uint64_t next = 0;
      for (const auto& [begin, end] : c) {
        EXPECT_EQ(begin, next) << "tensor " << t;
        next = end;
      }
      EXPECT_EQ(next, tensors[t].count) << "tensor " << t;
    }
    for (const Batch& b : plan.batches)
      for (uint32_t s = b.seg_begin; s < b.seg_end; ++s) EXPECT_EQ(tensors[plan.segment_tensor[s]].group, b.group);
  }
}

}  // namespace
