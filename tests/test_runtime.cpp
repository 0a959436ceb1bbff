// Runtime behaviour: the validation fixture itself, chunking, staging, caching, one dispatch per
// group, vendor-like workgroup sizes, state access, per-tensor steps, the pipeline cache.
#include <vulkan/vulkan.h>

#include <cstring>

#include "harness.hpp"
#include "reference/adam.hpp"
#include "reference/sgd.hpp"

namespace {

using vkoptim::AdamOptions;
using vkoptim::SgdOptions;

class RuntimeTest : public vkt::VulkanTest {};

vkt::GroupSpec<reference::Adam> adam_group(double lr, bool amsgrad, std::vector<size_t> sizes) {
  AdamOptions o = vkoptim::adamw_options();
  o.lr = lr;
  o.amsgrad = amsgrad;
  reference::AdamHyper h{lr, o.beta1, o.beta2, o.eps, o.weight_decay, amsgrad, false, true};
  return {o, [h](size_t n) { return reference::Adam(h, n); }, std::move(sizes)};
}

// The fixture must be able to fail: an invalid call is reported through the callback.
TEST_F(RuntimeTest, ValidationLayerReportsMisuse) {
  auto ctx = make_context();
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = 0;  // invalid: size must be > 0
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  auto create = reinterpret_cast<PFN_vkCreateBuffer>(ctx.device_proc_addr()(ctx.device(), "vkCreateBuffer"));
  auto destroy = reinterpret_cast<PFN_vkDestroyBuffer>(ctx.device_proc_addr()(ctx.device(), "vkDestroyBuffer"));
  VkBuffer buffer = VK_NULL_HANDLE;
  if (create(ctx.device(), &bci, nullptr, &buffer) == VK_SUCCESS && buffer) destroy(ctx.device(), buffer, nullptr);
  std::lock_guard lock(messages_->mutex);
  EXPECT_FALSE(messages_->list.empty()) << "the validation layer did not report a zero-sized buffer";
  messages_->list.clear();
}

// Tensors larger than maxStorageBufferRange and more blocks than maxComputeWorkGroupCount,
// forced small, with vendor-like workgroup sizes (AMD 64, NVIDIA 32, Intel 16, lavapipe 8),
// with and without 8-float accesses (devices without shaderInt64 use 4-float ones).
class ChunkingTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<bool, uint32_t, bool>> {};

TEST_P(ChunkingTest, SmallLimitsStillMatchReference) {
  const auto [bda, subgroup, wide] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
  options.override_caps = [subgroup = subgroup, wide = wide](vkoptim::DeviceCaps& c) {
    c.shader_int64 = c.shader_int64 && wide;
    c.max_storage_buffer_range = 16384;  // 4096 floats per descriptor
    c.max_compute_workgroup_count[0] = 5;
    c.max_compute_workgroup_count[1] = 3;
    c.subgroup_size = subgroup;
    c.workgroup_size = subgroup * 2;
    c.items_per_invocation = 2;
  };
  auto ctx = make_context(options);
  vkt::TrajectoryConfig cfg;
  cfg.update_error_factor = 512;
  uint32_t max_dispatches = 0;
  cfg.before_step = [&](vkoptim::Optimizer& opt, int) {
    max_dispatches = std::max(max_dispatches, opt.last_dispatch_count());
  };
  vkt::run_trajectory<reference::Adam>(ctx, {adam_group(1e-2, true, {1, 4099, 20011, 3, 257})}, cfg, rng_);
  // 15 blocks per dispatch at most: a 20011-element tensor needs several dispatches.
  EXPECT_GT(max_dispatches, 1u);
}

INSTANTIATE_TEST_SUITE_P(Limits, ChunkingTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(8u, 16u, 32u, 64u), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "bda" : "desc") + "_subgroup" +
                                  std::to_string(std::get<1>(info.param)) + (std::get<2>(info.param) ? "_w8" : "_w4");
                         });

// Discrete GPUs: memory is not host-visible, so copies go through staging buffers.
TEST_F(RuntimeTest, StagingPathMatchesReference) {
  for (bool bda : {true, false}) {
    auto options = validated_options();
    options.force_staging = true;
    options.addressing = bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
    auto ctx = make_context(options);
    auto t = ctx.create_tensor(std::vector<float>{1, 2, 3});
    const auto before = ctx.stats().submissions;
    t.upload(std::vector<float>{4, 5, 6});
    EXPECT_GT(ctx.stats().submissions, before) << "an upload with forced staging must copy on the device";
    EXPECT_EQ(t.download(), (std::vector<float>{4, 5, 6}));
    vkt::TrajectoryConfig cfg;
    cfg.steps = 51;
    cfg.update_error_factor = 512;
    vkt::run_trajectory<reference::Adam>(ctx, {adam_group(1e-2, false, {1, 3, 255, 257, 4099})}, cfg, rng_);
  }
}

// Many tensors in many buffers: one dispatch per group on the address path, and the second step
// creates no pipeline and allocates nothing.
TEST_F(RuntimeTest, OneDispatchPerGroupAndNothingCreatedAfterFirstStep) {
  for (bool bda : {true, false}) {
    auto options = validated_options();
    options.addressing = bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
    auto ctx = make_context(options);
    std::vector<vkoptim::Tensor> buffers;
    for (int b = 0; b < 7; ++b) buffers.push_back(ctx.create_tensor(100 * 1000));
    std::vector<vkoptim::ParamGroup> groups(2);
    groups[0].options = vkoptim::adamw_options();
    groups[1].options = AdamOptions{};
    for (int i = 0; i < 300; ++i) {
      vkoptim::ParamTensor t;
      t.param = buffers[size_t(i % 7)].range();
      t.param.offset = 4 * size_t(i / 7) * 1000;
      t.param.count = 1 + size_t(i * 37 % 900);
      t.grad = buffers[size_t((i + 3) % 7)].range();
      t.grad.offset = 4 * (50000 + size_t(i / 7) * 1000);
      t.grad.count = t.param.count;
      groups[size_t(i % 2)].tensors.push_back(t);
    }
    vkoptim::Optimizer opt(ctx, groups);
    EXPECT_EQ(opt.uses_device_addresses(), bda);
    opt.step();
    if (bda) {
      EXPECT_EQ(opt.last_dispatch_count(), 2u) << "one dispatch per group";
    }
    const auto after_first = ctx.stats();
    for (int s = 0; s < 3; ++s) {
      opt.set_lr(0, 1e-3 * (s + 2));
      opt.step();
    }
    const auto after = ctx.stats();
    EXPECT_EQ(after.pipelines_created, after_first.pipelines_created);
    EXPECT_EQ(after.device_allocations, after_first.device_allocations);
    EXPECT_EQ(after.buffers_created, after_first.buffers_created);
    EXPECT_EQ(after.descriptor_sets_allocated, after_first.descriptor_sets_allocated);
    std::printf("[   INFO   ] %s path: %u dispatches for 300 tensors in 7 buffers, 2 groups\n",
                bda ? "address" : "descriptor", opt.last_dispatch_count());
    EXPECT_EQ(opt.state_bytes() % 16, 0u);
  }
}

// Hundreds of tensors of random sizes in a few shared buffers, two groups, against the
// reference: the segment table, batching (a small descriptor range forces many batches) and
// the fast/careful split at scale.
TEST_F(RuntimeTest, ManyTensorsMatchReference) {
  for (bool bda : {true, false}) {
    auto options = validated_options();
    options.addressing = bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
    options.override_caps = [](vkoptim::DeviceCaps& c) { c.max_storage_buffer_range = 1 << 16; };
    auto ctx = make_context(options);
    std::uniform_int_distribution<size_t> size(1, 6000);
    std::vector<size_t> sizes_a, sizes_b;
    for (int i = 0; i < 120; ++i) sizes_a.push_back(size(rng_));
    for (int i = 0; i < 80; ++i) sizes_b.push_back(size(rng_));
    vkt::TrajectoryConfig cfg;
    cfg.steps = 12;
    cfg.param_buffers = 5;
    cfg.grad_buffers = 4;
    cfg.update_error_factor = 512;
    auto group = [](double lr, std::vector<size_t> sizes) {
      AdamOptions o;
      o.lr = lr;
      const reference::AdamHyper h{lr, o.beta1, o.beta2, o.eps, 0, false, false, false};
      return vkt::GroupSpec<reference::Adam>{o, [h](size_t n) { return reference::Adam(h, n); }, std::move(sizes)};
    };
    vkt::run_trajectory<reference::Adam>(ctx, {group(1e-2, sizes_a), group(3e-3, sizes_b)}, cfg, rng_);
  }
}

// Automatic addressing: descriptors when every group's tensors share buffers (no extra
// dispatches), addresses when they are spread over many.
TEST_F(RuntimeTest, AutomaticAddressingPicksFewestDispatches) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "the device has no buffer device address";
  auto shared_p = ctx.create_tensor(1000), shared_g = ctx.create_tensor(1000);
  std::vector<vkoptim::ParamTensor> in_one_buffer;
  for (size_t i = 0; i < 4; ++i) {
    vkoptim::ParamTensor t{shared_p.range(), shared_g.range(), ""};
    t.param.offset = t.grad.offset = i * 1000;
    t.param.count = t.grad.count = 250;
    in_one_buffer.push_back(t);
  }
  vkoptim::Optimizer one(ctx, {{AdamOptions{}, in_one_buffer}});
  EXPECT_FALSE(one.uses_device_addresses());
  std::vector<vkoptim::Tensor> own;
  std::vector<vkoptim::ParamTensor> spread;
  for (int i = 0; i < 4; ++i) {
    own.push_back(ctx.create_tensor(250));
    own.push_back(ctx.create_tensor(250));
    spread.push_back({own[own.size() - 2].range(), own.back().range(), ""});
  }
  vkoptim::Optimizer many(ctx, {{AdamOptions{}, spread}});
  EXPECT_TRUE(many.uses_device_addresses());
  many.step();
  EXPECT_EQ(many.last_dispatch_count(), 1u);
}

// Loaded state and step counts are honoured, including tensors of one group at different steps.
TEST_F(RuntimeTest, WrittenStateAndPerTensorStepsMatchReference) {
  auto ctx = make_context();
  const std::vector<size_t> sizes{257, 4099, 3};
  std::uniform_real_distribution<double> uniform(-1, 1);
  auto random = [&](size_t n, double lo, double hi) {
    std::vector<double> v(n);
    for (auto& x : v) x = double(float(lo + (hi - lo) * (uniform(rng_) + 1) / 2));
    return v;
  };
  AdamOptions o;
  o.lr = 1e-2;
  o.amsgrad = true;
  reference::AdamHyper h{o.lr, o.beta1, o.beta2, o.eps, 0, true, false, false};
  std::vector<vkoptim::Tensor> p, g;
  std::vector<reference::Adam> refs;
  std::vector<std::vector<double>> p_ref;
  vkoptim::ParamGroup group{o, {}};
  for (size_t n : sizes) {
    p_ref.push_back(random(n, -1, 1));
    p.push_back(ctx.create_tensor(vkt::to_float(p_ref.back())));
    g.push_back(ctx.create_tensor(n));
    group.tensors.push_back({p.back().range(), g.back().range(), ""});
    refs.emplace_back(h, n);
  }
  vkoptim::Optimizer opt(ctx, {group});
  for (size_t i = 0; i < sizes.size(); ++i) {
    const long step = long(10 * i + 3);  // different steps: the group is dispatched in runs
    opt.write_state(i, "step", std::vector<float>{float(step)});
    refs[i].set_step(step);
    for (const char* name : {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}) {
      const auto values = std::string(name) == "exp_avg" ? random(sizes[i], -1, 1) : random(sizes[i], 0, 2);
      opt.write_state(i, name, vkt::to_float(values));
      EXPECT_EQ(opt.read_state(i, name), vkt::to_float(values)) << name;
      refs[i].set_state(name, values);
    }
  }
  const int steps = 50;
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto grad = random(sizes[i], -2, 2);
      g[i].upload(vkt::to_float(grad));
      refs[i].step(p_ref[i], grad);
    }
    opt.step();
    // Tensors at different steps take a dispatch each (per kind: fast blocks and careful tails).
    EXPECT_GE(opt.last_dispatch_count(), 3u);
    EXPECT_LE(opt.last_dispatch_count(), 6u);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(opt.read_state(i, "step"), std::vector<float>{float(10 * i + 3 + steps)});
    std::vector<double> tol(sizes[i]);
    for (size_t e = 0; e < sizes[i]; ++e)
      tol[e] = 8 * vkt::kUnitRoundoff * steps * 2 + 512 * vkt::kUnitRoundoff * steps * 0.03;
    vkt::expect_close(p[i].download(), p_ref[i], tol, "param");
  }
}

// SGD: a loaded momentum buffer means the first step is a regular momentum step (torch).
TEST_F(RuntimeTest, SgdLoadedMomentumBufferSkipsFirstStepRule) {
  auto ctx = make_context();
  SgdOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.dampening = 0.5;
  auto p = ctx.create_tensor(std::vector<float>{1, 2, 3});
  auto g = ctx.create_tensor(std::vector<float>{0.5f, -1, 2});
  vkoptim::Optimizer opt(ctx, {{o, {{p.range(), g.range(), "w"}}}});
  opt.write_state(opt.tensor_index("w"), "momentum_buffer", std::vector<float>{1, 1, 1});
  opt.step();
  reference::Sgd ref({0.1, 0.9, 0.5, 0, false, false, false}, 3);
  ref.set_state("momentum_buffer", {1, 1, 1});
  std::vector<double> pr{1, 2, 3};
  ref.step(pr, {0.5, -1, 2});
  vkt::expect_close(p.download(), pr, {1e-6, 1e-6, 1e-6}, "param");
  vkt::expect_close(opt.read_state(0, "momentum_buffer"), ref.state().at("momentum_buffer"), {1e-6, 1e-6, 1e-6},
                    "momentum_buffer");
}

// State before the first step is readable (zeros) and nothing else.
TEST_F(RuntimeTest, StateNamesFollowOptions) {
  auto ctx = make_context();
  auto p = ctx.create_tensor(5), g = ctx.create_tensor(5);
  AdamOptions o;
  vkoptim::Optimizer adam(ctx, {{o, {{p.range(), g.range(), ""}}}});
  EXPECT_EQ(adam.state_names(0), (std::vector<std::string>{"exp_avg", "exp_avg_sq", "step"}));
  EXPECT_EQ(adam.read_state(0, "exp_avg"), std::vector<float>(5, 0.0f));
  EXPECT_EQ(adam.read_state(0, "step"), std::vector<float>{0});
  SgdOptions s;
  vkoptim::Optimizer sgd(ctx, {{s, {{p.range(), g.range(), ""}}}});
  EXPECT_EQ(sgd.state_names(0), (std::vector<std::string>{"step"}));
}

TEST_F(RuntimeTest, PipelineCacheRoundTrips) {
  std::vector<uint8_t> data;
  {
    auto ctx = make_context();
    auto p = ctx.create_tensor(5), g = ctx.create_tensor(5);
    vkoptim::Optimizer opt(ctx, {{AdamOptions{}, {{p.range(), g.range(), ""}}}});
    opt.step();
    data = ctx.pipeline_cache_data();
    EXPECT_FALSE(data.empty());
  }
  auto options = validated_options();
  options.pipeline_cache_data = data;
  auto ctx = make_context(options);
  auto p = ctx.create_tensor(std::vector<float>{1, 2, 3, 4, 5}),
       g = ctx.create_tensor(std::vector<float>{1, 1, 1, 1, 1});
  vkoptim::Optimizer opt(ctx, {{AdamOptions{}, {{p.range(), g.range(), ""}}}});
  opt.step();
  // Adam's first step moves every element by lr against the gradient's sign.
  const auto out = p.download();
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(out[i], float(i + 1) - 1e-3f, 1e-6f);
}

}  // namespace
