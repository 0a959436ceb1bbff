// The engine contract under misuse: command buffers that are dropped or submitted twice, sizes
// near overflow, objects of another context, bad RecordOptions, empty groups, and optimizers of
// one context stepped from several threads. Validation is on (any message fails the test).
#include <vulkan/vulkan.h>

#include <cstring>
#include <limits>
#include <thread>

#include "harness.hpp"

namespace {

using vkoptim::Error;
using vkoptim::Status;

#define VK_CHECK(call) ASSERT_EQ((call), VK_SUCCESS) << #call

using vkt::bits;

// One needle.
template <class F>
void expect_error(F&& bad, Status status, const std::string& needle) {
  vkt::expect_error(std::forward<F>(bad), status, {needle});
}

using vkt::Engine;
using vkt::host_reads;

class RecordLifetimeTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    VulkanTest::SetUp();
    auto options = validated_options();
    options.addressing = GetParam() ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
    ctx_ = std::make_unique<vkoptim::Context>(make_context(options));
    if (GetParam() && !ctx_->supports_buffer_device_address()) GTEST_SKIP() << "no buffer device address";
    std::normal_distribution<float> normal;
    p0_.resize(n_);
    g_.resize(n_);
    for (auto& x : p0_) x = normal(rng_);
    for (auto& x : g_) x = normal(rng_);
  }
  void TearDown() override {
    ctx_.reset();
    VulkanTest::TearDown();
  }
  const size_t n_ = 4099;  // whole blocks and a tail
  std::unique_ptr<vkoptim::Context> ctx_;
  std::vector<float> p0_, g_;
};

// The first recorded step is never submitted (a dropped frame): the next one is a complete step
// t = 2 from freshly initialised state, on both addressing paths.
TEST_P(RecordLifetimeTest, DroppedFirstRecordCostsOnlyItsStep) {
  auto p = ctx_->create_tensor(p0_), g = ctx_->create_tensor(g_);
  vkoptim::AdamOptions o;
  o.lr = 0.01;
  vkoptim::Optimizer opt(*ctx_, {{o, {{p.range(), g.range(), "w"}}}});
  Engine engine(*ctx_);
  VkCommandBuffer first = engine.recorded(opt);
  engine.drop(first);
  VkCommandBuffer second = engine.recorded(opt);
  engine.submit(second);

  EXPECT_EQ(opt.step_count(0), 2u);
  const auto m = opt.read_state(0, "exp_avg"), v = opt.read_state(0, "exp_avg_sq");
  const auto out = p.download();
  const double bc1 = 1 - o.beta1 * o.beta1, bc2 = 1 - o.beta2 * o.beta2;
  for (size_t i = 0; i < n_; ++i) {
    const double gi = g_[i], m_ref = (1 - o.beta1) * gi, v_ref = (1 - o.beta2) * gi * gi;
    const double p_ref = p0_[i] - o.lr / bc1 * m_ref / (std::sqrt(v_ref) / std::sqrt(bc2) + o.eps);
    ASSERT_NEAR(m[i], m_ref, 4e-7 * std::abs(m_ref) + 1e-30) << i;
    ASSERT_NEAR(v[i], v_ref, 4e-7 * v_ref + 1e-30) << i;
    ASSERT_NEAR(out[i], p_ref, 1e-6 * std::abs(p_ref) + 1e-6 * o.lr) << i;
  }
}

// The first recorded step submitted twice: the second submission repeats the step on live state
// (m = (1-b1) g (1 + b1)); it never initialises it again.
TEST_P(RecordLifetimeTest, ResubmittedFirstRecordRepeatsTheStepWithoutReinitialising) {
  auto p = ctx_->create_tensor(p0_), g = ctx_->create_tensor(g_);
  vkoptim::AdamOptions o;
  vkoptim::Optimizer opt(*ctx_, {{o, {{p.range(), g.range(), "w"}}}});
  Engine engine(*ctx_);
  VkCommandBuffer first = engine.recorded(opt);
  engine.submit(first);
  const auto m1 = opt.read_state(0, "exp_avg");
  engine.submit(first);
  const auto m2 = opt.read_state(0, "exp_avg");
  for (size_t i = 0; i < n_; ++i) {
    const double once = (1 - o.beta1) * double(g_[i]);
    ASSERT_NEAR(m1[i], once, 4e-7 * std::abs(once) + 1e-30) << i;
    ASSERT_NEAR(m2[i], once * (1 + o.beta1), 8e-7 * std::abs(once) + 1e-30) << i;
  }
}

// Lookahead's slow weights and fp32 masters start from the parameters in the initialisation, not
// in the first recorded step: dropping that step leaves them right.
TEST_P(RecordLifetimeTest, SlowWeightsAndMastersDoNotDependOnTheFirstRecord) {
  auto p = ctx_->create_tensor(p0_), g = ctx_->create_tensor(g_);
  auto half = ctx_->create_tensor(n_, vkoptim::DType::bf16);
  half.upload(p0_);
  const auto half0 = half.download();
  vkoptim::SgdOptions o;
  o.lr = 0.1;
  vkoptim::ParamGroup la{o, {{p.range(), g.range(), "la"}}, {2, 0.5}};
  vkoptim::ParamGroup master{o, {{half.range(), g.range(), "master"}}};
  master.precision.master_weights = true;
  vkoptim::Optimizer opt(*ctx_, {la, master});
  Engine engine(*ctx_);
  VkCommandBuffer first = engine.recorded(opt);
  engine.drop(first);
  VkCommandBuffer second = engine.recorded(opt);  // step 2: Lookahead synchronises (k = 2)
  engine.submit(second);
  const auto out = p.download(), masters = opt.read_state(1, "master_param");
  for (size_t i = 0; i < n_; ++i) {
    // slow = p0; p = p0 - lr g; slow += 0.5 (p - slow); p = slow.
    const float fast = p0_[i] - float(o.lr) * g_[i];
    const double expect = p0_[i] + 0.5 * (double(fast) - p0_[i]);
    ASSERT_NEAR(out[i], expect, 2e-7 * (std::abs(p0_[i]) + 1)) << i;
    const double master_expect = double(half0[i]) - o.lr * g_[i];
    ASSERT_NEAR(masters[i], master_expect, 2e-7 * (std::abs(master_expect) + 1)) << i;
  }
}

// Rules whose first step is special in torch or the reference: Schedule-Free's z and x start at
// the parameter (copied by initialize()), SGD's momentum buffer starts as g (the regular step
// from the zero-filled buffer when dampening = 0). Dropping the first record or submitting it
// twice neither loses that start nor redoes it.
TEST_P(RecordLifetimeTest, FirstStepRulesNeitherLoseNorRedoTheirStart) {
  auto p_sf = ctx_->create_tensor(p0_), p_sgd = ctx_->create_tensor(p0_), g = ctx_->create_tensor(g_);
  vkoptim::ScheduleFreeAdamwOptions sf;
  sf.lr = 0.01;
  vkoptim::SgdOptions sgd;
  sgd.lr = 0.01;
  sgd.momentum = 0.9;
  vkoptim::Optimizer sf_opt(*ctx_, {{sf, {{p_sf.range(), g.range(), "sf"}}}});
  vkoptim::Optimizer sgd_opt(*ctx_, {{sgd, {{p_sgd.range(), g.range(), "sgd"}}}});
  Engine engine(*ctx_);
  // Schedule-Free, first record dropped: step 2 starts from z = p0 (no collapse towards 0).
  VkCommandBuffer dropped = engine.recorded(sf_opt, sgd_opt);
  engine.drop(dropped);
  VkCommandBuffer second = engine.recorded(sf_opt);
  engine.submit(second);
  const auto z = sf_opt.read_state(0, "z");
  const double lr_k = sf.lr * std::sqrt(1 - sf.beta2 * sf.beta2);  // step 2, no warmup
  for (size_t i = 0; i < n_; ++i) {
    const double gi = g_[i], v = (1 - sf.beta2) * gi * gi;
    const double z_ref = p0_[i] - lr_k * gi / (std::sqrt(v) + sf.eps);
    ASSERT_NEAR(z[i], z_ref, 1e-6 * (std::abs(z_ref) + 1)) << i;
  }
  // SGD momentum: the dropped first step leaves the buffer to start at g on step 2; that step
  // submitted twice then gives b = mu g + g, not g again.
  VkCommandBuffer sgd_step = engine.recorded(sgd_opt);
  engine.submit(sgd_step);
  const auto b1 = sgd_opt.read_state(0, "momentum_buffer");
  engine.submit(sgd_step);
  const auto b2 = sgd_opt.read_state(0, "momentum_buffer");
  for (size_t i = 0; i < n_; ++i) {
    ASSERT_EQ(b1[i], g_[i]) << i;
    ASSERT_NEAR(b2[i], sgd.momentum * g_[i] + g_[i], 2e-7 * std::abs(g_[i])) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, RecordLifetimeTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "device_address" : "descriptors"; });

class HardeningTest : public vkt::VulkanTest {
 protected:
  void SetUp() override {
    VulkanTest::SetUp();
    ctx_ = std::make_unique<vkoptim::Context>(make_context());
  }
  void TearDown() override {
    ctx_.reset();
    VulkanTest::TearDown();
  }
  std::unique_ptr<vkoptim::Context> ctx_;
};

TEST_F(HardeningTest, SizesNearOverflowAreRefusedBeforeAnyAllocation) {
  const auto allocations = ctx_->stats().device_allocations, buffers = ctx_->stats().buffers_created;
  expect_error([&] { ctx_->create_tensor(size_t(1) << 62); }, Status::invalid_argument, "overflows");
  expect_error([&] { ctx_->create_tensor(size_t(1) << 63, vkoptim::DType::bf16); }, Status::invalid_argument,
               "overflows");
  expect_error([&] { ctx_->create_tensor(std::numeric_limits<size_t>::max()); }, Status::invalid_argument, "overflows");
  expect_error([&] { ctx_->create_tensor(size_t(1) << 40); }, Status::out_of_memory, "largest memory heap");
  // Just over one allocation's limit (lavapipe: 2 GiB, its heap too): refused before
  // vkAllocateMemory, which the validation layer would flag.
  const size_t over_one_allocation = size_t(ctx_->caps().max_memory_allocation_size / 4) + 1024;
  expect_error([&] { ctx_->create_tensor(over_one_allocation); }, Status::out_of_memory, "the device's");
  EXPECT_EQ(ctx_->stats().device_allocations, allocations);
  EXPECT_EQ(ctx_->stats().buffers_created, buffers) << "a refused size reached vkCreateBuffer";

  auto p = ctx_->create_tensor(257), g = ctx_->create_tensor(257);
  auto huge = p.range();
  huge.count = size_t(1) << 62;
  huge.buffer_size = std::numeric_limits<VkDeviceSize>::max();
  expect_error(
      [&] {
        vkoptim::Optimizer(*ctx_, {{vkoptim::SgdOptions{}, {{huge, huge, ""}}}});
      },
      Status::invalid_argument, "largest memory heap");
  auto long_range = p.range();
  long_range.count = size_t(1) << 62;
  expect_error(
      [&] {
        vkoptim::Optimizer(*ctx_, {{vkoptim::SgdOptions{}, {{long_range, long_range, ""}}}});
      },
      Status::invalid_argument, "exceeds buffer_size");
  auto far_offset = p.range();
  far_offset.offset = std::numeric_limits<VkDeviceSize>::max() - 3;
  expect_error(
      [&] {
        vkoptim::Optimizer(*ctx_, {{vkoptim::SgdOptions{}, {{far_offset, g.range(), ""}}}});
      },
      Status::invalid_argument, "param range");
}

TEST_F(HardeningTest, TensorsOfAnotherContextAreRefused) {
  auto other = make_context();
  auto p = ctx_->create_tensor(64), g = other.create_tensor(64);
  expect_error(
      [&] {
        vkoptim::Optimizer(*ctx_, {{vkoptim::SgdOptions{}, {{p.range(), g.range(), ""}}}});
      },
      Status::invalid_argument, "grad is a Tensor of another Context");
}

TEST_F(HardeningTest, RecordOptionsThatMakeNoValidBarrierAreRefusedAndRecordNothing) {
  std::vector<float> p0(300, 1.0f), g0(300, 0.5f);
  auto p = ctx_->create_tensor(p0), g = ctx_->create_tensor(g0);
  vkoptim::Optimizer opt(*ctx_, {{vkoptim::AdamOptions{}, {{p.range(), g.range(), ""}}}});
  opt.step();
  const auto before = bits(p.download());
  const auto m_before = bits(opt.read_state(0, "exp_avg"));
  Engine engine(*ctx_);
  VkCommandBuffer cmd = engine.begin();
  vkoptim::RecordOptions zero_stage;
  zero_stage.exit_stage_mask = 0;
  expect_error([&] { opt.record(cmd, zero_stage); }, Status::invalid_argument, "exit_stage_mask is 0");
  vkoptim::RecordOptions unknown_stage;
  unknown_stage.exit_stage_mask = 0x40000000;
  expect_error([&] { opt.record(cmd, unknown_stage); }, Status::invalid_argument, "not Vulkan 1.0 pipeline stages");
  vkoptim::RecordOptions unknown_access;
  unknown_access.exit_access_mask = 0x80000000;
  expect_error([&] { opt.record(cmd, unknown_access); }, Status::invalid_argument, "not Vulkan 1.0 access flags");
  vkoptim::RecordOptions host_read_without_host;
  host_read_without_host.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  expect_error([&] { opt.record(cmd, host_read_without_host); }, Status::invalid_argument, "HOST_READ");
  expect_error([&] { opt.record(VK_NULL_HANDLE); }, Status::invalid_argument, "cmd is VK_NULL_HANDLE");
  vkoptim::RecordOptions last_query;
  last_query.timestamp_pool = reinterpret_cast<VkQueryPool>(uint64_t(1));  // (refused before it is used)
  last_query.first_query = UINT32_MAX - 1;
  expect_error([&] { opt.record(cmd, last_query); }, Status::invalid_argument, "first_query");
  // What the refused calls left in the command buffer, submitted: nothing.
  engine.end(cmd);
  engine.submit(cmd);
  EXPECT_EQ(opt.step_count(0), 1u);
  EXPECT_EQ(bits(p.download()), before) << "a refused record changed parameters";
  EXPECT_EQ(bits(opt.read_state(0, "exp_avg")), m_before);
  // exit_barrier = false makes the masks irrelevant.
  VkCommandBuffer cmd2 = engine.begin();
  vkoptim::RecordOptions no_exit;
  no_exit.exit_barrier = false;
  no_exit.exit_stage_mask = 0;
  EXPECT_NO_THROW(opt.record(cmd2, no_exit));
  EXPECT_EQ(opt.step_count(0), 2u);
  engine.end(cmd2);
  engine.drop(cmd2);
}

// Empty groups and an empty group list are both allowed; what cannot exist is state for an
// optimizer without tensors.
TEST_F(HardeningTest, EmptyGroupsAreAcceptedEverywhereAndAStepNeedsATensor) {
  std::vector<float> p0(100, 1.0f), g0(100, 0.5f);
  auto p = ctx_->create_tensor(p0), g = ctx_->create_tensor(g0);
  vkoptim::SgdOptions o;
  o.lr = 0.5;

  vkoptim::Optimizer none(*ctx_, {});
  EXPECT_EQ(none.group_count(), 0u);
  expect_error([&] { none.step(); }, Status::invalid_state, "no tensors");
  none.add_param_group({o, {}});
  expect_error([&] { none.step(); }, Status::invalid_state, "no tensors");
  expect_error([&] { none.initialize(); }, Status::invalid_state, "no tensors");
  none.add_param_group({o, {{p.range(), g.range(), "w"}}});
  none.step();
  EXPECT_EQ(none.group_count(), 2u);
  EXPECT_EQ(p.download()[7], 0.75f);

  vkoptim::Optimizer only_empty(*ctx_, {{o, {}}});
  Engine engine(*ctx_);
  VkCommandBuffer cmd = engine.begin();
  expect_error([&] { only_empty.record(cmd); }, Status::invalid_state, "no tensors");
  engine.end(cmd);
  engine.drop(cmd);
}

// Two optimizers of one Context, stepped from two threads at once (uploads, steps, state reads),
// end bit-identical to the same work done on one thread; the validation layer's thread checks
// see no concurrent use of the queue or command pool.
TEST_F(HardeningTest, OptimizersOfOneContextStepFromTwoThreads) {
  const size_t n = 5000;
  const int steps = 25;
  std::vector<std::vector<float>> p0(2, std::vector<float>(n)), grads(2 * steps, std::vector<float>(n));
  std::normal_distribution<float> normal;
  for (auto& v : p0)
    for (auto& x : v) x = normal(rng_);
  for (auto& v : grads)
    for (auto& x : v) x = normal(rng_);

  // Each run on a fresh Context, the threaded one first: pipelines are created, state
  // initialised and steps recorded concurrently.
  auto run = [&](bool threaded) {
    auto ctx = std::make_unique<vkoptim::Context>(make_context());
    std::vector<vkoptim::Tensor> ps, gs;
    std::vector<vkoptim::Optimizer> opts;
    for (int k = 0; k < 2; ++k) {
      ps.push_back(ctx->create_tensor(p0[k]));
      gs.push_back(ctx->create_tensor(n));
      vkoptim::ParamGroup group{
          k == 0 ? vkoptim::RuleOptions(vkoptim::adamw_options()) : vkoptim::RuleOptions(vkoptim::LionOptions{}),
          {{ps[k].range(), gs[k].range(), ""}}};
      opts.emplace_back(*ctx, std::vector<vkoptim::ParamGroup>{group});
    }
    auto work = [&](int k) {
      for (int s = 0; s < steps; ++s) {
        gs[k].upload(grads[size_t(2 * s + k)]);
        opts[k].step();
        if (s % 5 == 0) opts[k].read_state(0, "exp_avg");
      }
    };
    if (threaded) {
      std::thread a(work, 0), b(work, 1);
      a.join();
      b.join();
    } else {
      work(0);
      work(1);
    }
    return std::vector<std::vector<uint32_t>>{bits(ps[0].download()), bits(ps[1].download())};
  };
  const auto threaded = run(true);
  const auto sequential = run(false);
  EXPECT_EQ(threaded, sequential);
}

}  // namespace
