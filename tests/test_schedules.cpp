// Learning-rate schedules: the host path (double) against torch's recursive definitions
// (reference/schedules.hpp) over 10,000 steps, the device path (shaders/schedule.glsl, float32,
// run by a probe shader) against both, and every invalid option refused.
#include <vulkan/vulkan.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

#include "../runtime/schedule.hpp"
#include "harness.hpp"
#include "reference/schedules.hpp"

namespace {

using namespace vkoptim;

constexpr uint32_t kSteps = 10000;
constexpr double kDoubleRoundoff = 1.1102230246251565e-16;  // 2^-53
// Host vs torch's recursion (reference/schedules.hpp): each recursive step rounds a ratio (a few
// operations, PolynomialLR a pow) and a product, so the reference's relative error grows by
// <= ~8·2^-53 per step; CosineAnnealingLR's ratio and the closed forms' 1 + cos(πx) carry
// absolute errors of a few 2^-53 of the amplitude per step instead. Both are covered by
//   |host - ref| <= 16·(s + 1)·2^-53·(|ref| + scale),   scale = the largest lr of the run.
double host_tolerance(uint64_t s, double ref, double scale) {
  return 16 * double(s + 1) * kDoubleRoundoff * (std::abs(ref) + scale);
}
// Device vs host: the bound documented in shaders/schedule.glsl (4e-7 relative), plus an
// absolute floor where the double-float lo halves underflow (lr < ~1e-30 of the scale).
constexpr double kDeviceRelative = 4e-7;
double device_tolerance(double host, double scale) {
  return kDeviceRelative * std::abs(host) + 1e-30 * scale;
}
// Momentum endpoints are single floats: absolute error <= 2e-7 (momenta are at most 1).
constexpr double kDeviceMomentum = 2e-7;

struct ScheduleCase {
  std::string name;
  LrSchedule schedule;
  double base_lr;
};

std::vector<ScheduleCase> all_cases() {
  std::vector<ScheduleCase> c;
  c.push_back({"constant", LrSchedule{}, 0.01});
  c.push_back({"inverse_time_1e-2", inverse_time_decay(1e-2), 0.1});
  c.push_back({"inverse_time_1e-4", inverse_time_decay(1e-4), 3e-4});
  c.push_back({"inverse_time_0.5", inverse_time_decay(0.5), 1.0});
  c.push_back({"inverse_time_squared_1e-2", inverse_time_squared_decay(1e-2), 0.1});
  c.push_back({"inverse_time_squared_1e-3", inverse_time_squared_decay(1e-3), 2e-3});
  c.push_back({"exponential_0.999", make_schedule(ExponentialLR{.gamma = 0.999}), 0.1});
  c.push_back({"exponential_0.9995", make_schedule(ExponentialLR{.gamma = 0.9995}), 1e-3});
  c.push_back({"exponential_1.0001", make_schedule(ExponentialLR{.gamma = 1.0001}), 1e-4});
  c.push_back({"exponential_0.9_underflows", make_schedule(ExponentialLR{.gamma = 0.9}), 0.5});
  c.push_back({"step_30_0.1", make_schedule(StepLR{.step_size = 30, .gamma = 0.1}), 0.05});
  c.push_back({"step_1000_0.5", make_schedule(StepLR{.step_size = 1000, .gamma = 0.5}), 0.1});
  c.push_back({"multi_step_30_80", make_schedule(MultiStepLR{.milestones = {30, 80}, .gamma = 0.1}), 0.05});
  c.push_back(
      {"multi_step_5", make_schedule(MultiStepLR{.milestones = {0, 100, 2500, 5000, 7500}, .gamma = 0.5}), 0.2});
  c.push_back({"constant_factor_default", make_schedule(ConstantLR{}), 0.05});
  c.push_back({"constant_factor_0.5_40", make_schedule(ConstantLR{.factor = 0.5, .total_iters = 40}), 0.05});
  c.push_back({"constant_factor_1_3000", make_schedule(ConstantLR{.factor = 1.0, .total_iters = 3000}), 0.01});
  c.push_back({"linear_warmup_40", make_schedule(LinearLR{.start_factor = 0.05, .total_iters = 40}), 0.05});
  c.push_back({"linear_to_zero_5000",
               make_schedule(LinearLR{.start_factor = 1.0, .end_factor = 0.0, .total_iters = 5000}), 0.1});
  c.push_back({"linear_0.25_0.75_10000",
               make_schedule(LinearLR{.start_factor = 0.25, .end_factor = 0.75, .total_iters = 10000}), 1e-3});
  c.push_back({"polynomial_50_0.9", make_schedule(PolynomialLR{.total_iters = 50, .power = 0.9}), 0.05});
  c.push_back({"polynomial_8000_2", make_schedule(PolynomialLR{.total_iters = 8000, .power = 2.0}), 0.1});
  c.push_back({"polynomial_3000_0.5", make_schedule(PolynomialLR{.total_iters = 3000, .power = 0.5}), 0.1});
  c.push_back({"polynomial_10000_1", make_schedule(PolynomialLR{.total_iters = 10000, .power = 1.0}), 1e-3});
  c.push_back({"cosine_100", make_schedule(CosineAnnealingLR{.t_max = 100}), 0.1});
  c.push_back({"cosine_3000_eta", make_schedule(CosineAnnealingLR{.t_max = 3000, .eta_min = 1e-4}), 0.1});
  c.push_back({"cosine_10000", make_schedule(CosineAnnealingLR{.t_max = 10000}), 3e-4});
  c.push_back({"cosine_7_eta", make_schedule(CosineAnnealingLR{.t_max = 7, .eta_min = 1e-3}), 0.01});
  c.push_back({"warm_restarts_20", make_schedule(CosineAnnealingWarmRestarts{.t_0 = 20}), 0.05});
  c.push_back({"warm_restarts_10_x2",
               make_schedule(CosineAnnealingWarmRestarts{.t_0 = 10, .t_mult = 2, .eta_min = 1e-5}), 0.1});
  c.push_back({"warm_restarts_100_x3", make_schedule(CosineAnnealingWarmRestarts{.t_0 = 100, .t_mult = 3}), 1e-3});
  c.push_back({"one_cycle_default", make_schedule(OneCycleLR{.max_lr = 0.1, .total_steps = 10000}), 0.01});
  c.push_back(
      {"one_cycle_three_phase_linear",
       make_schedule(OneCycleLR{
           .max_lr = 0.01, .total_steps = 10000, .anneal_strategy = AnnealStrategy::linear, .three_phase = true}),
       0.01});
  c.push_back({"one_cycle_three_phase_cos",
               make_schedule(OneCycleLR{.max_lr = 3e-3, .total_steps = 9000, .three_phase = true, .div_factor = 10}),
               0.01});
  c.push_back(
      {"one_cycle_no_momentum_1000",
       make_schedule(OneCycleLR{
           .max_lr = 1.0, .total_steps = 1000, .pct_start = 0.25, .final_div_factor = 100, .cycle_momentum = false}),
       0.01});
  c.push_back({"cyclic_triangular", make_schedule(CyclicLR{.base_lr = 1e-3, .max_lr = 6e-3}), 0.01});
  c.push_back({"cyclic_triangular2",
               make_schedule(CyclicLR{.base_lr = 1e-4,
                                      .max_lr = 1e-2,
                                      .step_size_up = 500,
                                      .step_size_down = 1500,
                                      .mode = CyclicMode::triangular2}),
               0.01});
  c.push_back({"cyclic_exp_range",
               make_schedule(CyclicLR{.base_lr = 1e-3,
                                      .max_lr = 0.1,
                                      .step_size_up = 300,
                                      .mode = CyclicMode::exp_range,
                                      .gamma = 0.9995,
                                      .base_momentum = 0.85,
                                      .max_momentum = 0.95}),
               0.01});
  c.push_back({"cyclic_no_momentum",
               make_schedule(CyclicLR{.base_lr = 0.0, .max_lr = 0.5, .step_size_up = 7, .cycle_momentum = false}),
               0.01});
  c.push_back({"hf_cosine_500_10000",
               make_schedule(CosineWithWarmup{.num_warmup_steps = 500, .num_training_steps = 10000}), 5e-4});
  c.push_back({"hf_cosine_0_8000", make_schedule(CosineWithWarmup{.num_training_steps = 8000}), 0.1});
  c.push_back({"hf_cosine_min_lr_1.5_cycles",
               make_schedule(CosineWithWarmup{
                   .num_warmup_steps = 1000, .num_training_steps = 5000, .num_cycles = 1.5, .min_lr_ratio = 0.1}),
               1e-3});
  c.push_back({"hf_cosine_training_below_warmup",
               make_schedule(CosineWithWarmup{.num_warmup_steps = 100, .num_training_steps = 50, .num_cycles = 0.3}),
               1e-2});
  c.push_back({"wsd_cosine_min",
               make_schedule(WarmupStableDecay{
                   .num_warmup_steps = 500, .num_stable_steps = 5000, .num_decay_steps = 2000, .min_lr_ratio = 0.1}),
               1e-3});
  c.push_back({"wsd_linear",
               make_schedule(WarmupStableDecay{.num_warmup_steps = 1000,
                                               .num_stable_steps = 3000,
                                               .num_decay_steps = 6000,
                                               .decay_shape = WsdShape::linear}),
               3e-4});
  c.push_back({"wsd_sqrt",
               make_schedule(WarmupStableDecay{.num_warmup_steps = 700,
                                               .num_stable_steps = 2000,
                                               .num_decay_steps = 4000,
                                               .warmup_shape = WsdShape::one_minus_sqrt,
                                               .decay_shape = WsdShape::one_minus_sqrt,
                                               .min_lr_ratio = 0.05}),
               1e-3});
  c.push_back({"wsd_cosine_warmup_full_cycle",
               make_schedule(WarmupStableDecay{.num_warmup_steps = 300,
                                               .num_stable_steps = 0,
                                               .num_decay_steps = 9000,
                                               .warmup_shape = WsdShape::cosine,
                                               .num_cycles = 1.0}),
               1e-3});
  c.push_back({"sequential_warmup_cosine",
               sequential({make_schedule(LinearLR{.start_factor = 0.01, .total_iters = 500}),
                           make_schedule(CosineAnnealingLR{.t_max = 9500})},
                          {500}),
               0.1});
  c.push_back({"sequential_torch_example",
               sequential({make_schedule(ConstantLR{.factor = 0.1, .total_iters = 20}),
                           make_schedule(ExponentialLR{.gamma = 0.9})},
                          {20}),
               0.05});
  c.push_back({"sequential_four",
               sequential({inverse_time_decay(0.01), make_schedule(StepLR{.step_size = 1000, .gamma = 0.5}),
                           make_schedule(CosineAnnealingWarmRestarts{.t_0 = 500, .t_mult = 2, .eta_min = 1e-4}),
                           make_schedule(WarmupStableDecay{
                               .num_warmup_steps = 100, .num_stable_steps = 1000, .num_decay_steps = 1500})},
                          {1000, 4000, 7000}),
               0.01});
  c.push_back({"sequential_hf_then_polynomial",
               sequential({make_schedule(CosineWithWarmup{.num_warmup_steps = 200, .num_training_steps = 3000}),
                           make_schedule(PolynomialLR{.total_iters = 2000, .power = 2.0})},
                          {3000}),
               1e-3});
  c.push_back({"chained_torch_example",
               chained({make_schedule(ConstantLR{.factor = 0.1, .total_iters = 20}),
                        make_schedule(ExponentialLR{.gamma = 0.999})}),
               0.05});
  c.push_back({"chained_three",
               chained({make_schedule(LinearLR{.start_factor = 0.1, .total_iters = 100}),
                        make_schedule(StepLR{.step_size = 1000, .gamma = 0.5}), inverse_time_squared_decay(1e-4)}),
               0.1});
  c.push_back({"chained_four",
               chained({make_schedule(MultiStepLR{.milestones = {2000, 6000}, .gamma = 0.3}),
                        make_schedule(PolynomialLR{.total_iters = 10000, .power = 1.5}), LrSchedule{},
                        inverse_time_decay(1e-3)}),
               0.1});
  return c;
}

// Steps at which torch's schedule is defined (OneCycleLR refuses s > total_steps; s =
// total_steps is the lr torch sets after the last step, which vkoptim does not reproduce).
uint64_t torch_defined_steps(const LrSchedule& s) {
  return s.kind == ScheduleKind::one_cycle ? std::min<uint64_t>(kSteps, s.one_cycle.total_steps) : kSteps;
}

struct Trajectory {
  std::vector<double> lr;
  std::vector<std::optional<double>> momentum;
};

Trajectory reference_trajectory(const ScheduleCase& c) {
  reference::Schedule ref(c.schedule, c.base_lr);
  Trajectory t;
  for (uint64_t s = 0; s < torch_defined_steps(c.schedule); ++s) {
    t.lr.push_back(ref.lr());
    t.momentum.push_back(ref.momentum());
    ref.step();
  }
  return t;
}

class ScheduleHostTest : public ::testing::TestWithParam<ScheduleCase> {};

TEST_P(ScheduleHostTest, MatchesTorchRecursionOver10000Steps) {
  const ScheduleCase& c = GetParam();
  ASSERT_NO_THROW(detail::validate_schedule(c.schedule, 0));
  const Trajectory ref = reference_trajectory(c);
  double scale = 0;
  for (double v : ref.lr) scale = std::max(scale, std::abs(v));
  double worst = 0;  // max |host - ref| / scale
  size_t bad = 0;
  for (uint64_t s = 0; s < ref.lr.size(); ++s) {
    const double host = detail::schedule_lr(c.schedule, c.base_lr, s);
    const double diff = std::abs(host - ref.lr[s]);
    worst = std::max(worst, diff / scale);
    if (!(diff <= host_tolerance(s, ref.lr[s], scale)) && bad++ < 5)
      ADD_FAILURE() << "s = " << s << ": host " << host << " torch " << ref.lr[s] << " |diff| " << diff;
    const auto host_m = detail::schedule_momentum(c.schedule, s);
    ASSERT_EQ(host_m.has_value(), ref.momentum[s].has_value()) << "s = " << s;
    if (host_m) {
      EXPECT_NEAR(*host_m, *ref.momentum[s], 16 * double(s + 1) * kDoubleRoundoff) << "momentum, s = " << s;
    }
  }
  // Past OneCycleLR's end the final values hold.
  if (c.schedule.kind == ScheduleKind::one_cycle) {
    const uint64_t last = c.schedule.one_cycle.total_steps - 1;
    for (uint64_t s : {last + 1, last + 2, last + 1000})
      EXPECT_EQ(detail::schedule_lr(c.schedule, c.base_lr, s), detail::schedule_lr(c.schedule, c.base_lr, last));
  }
  std::printf("[ SCHEDULE ] %-34s host vs torch: max |diff| / max lr = %.2e\n", c.name.c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, ScheduleHostTest, ::testing::ValuesIn(all_cases()), [](const auto& info) {
  std::string name = info.param.name;  // test names allow [A-Za-z0-9_] only
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
});

// ---------------------------------------------------------------------------------------------
// Device: tests/shaders/schedule_probe.comp writes (lr, momentum or NaN) for s = first + i.

alignas(4) const unsigned char kProbeSpirv[] = {
#include "schedule_probe.inc"
};

#define VK_OK(call) ASSERT_EQ((call), VK_SUCCESS) << #call

// The probe pipeline and its buffers, made with plain Vulkan on the test Context's device.
class Probe {
 public:
  static constexpr uint32_t kMaxCount = 16384;

  explicit Probe(const Context& ctx) : device_(ctx.device()), queue_(ctx.queue()) { create(ctx); }
  ~Probe() {
    if (device_ == VK_NULL_HANDLE) return;
    vkDeviceWaitIdle(device_);
    vkDestroyFence(device_, fence_, nullptr);
    vkDestroyCommandPool(device_, pool_, nullptr);
    vkDestroyDescriptorPool(device_, descriptor_pool_, nullptr);
    vkDestroyPipeline(device_, pipeline_, nullptr);
    vkDestroyPipelineLayout(device_, pipeline_layout_, nullptr);
    vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
    vkDestroyShaderModule(device_, module_, nullptr);
    for (auto& b : buffers_) {
      vkDestroyBuffer(device_, b.buffer, nullptr);
      vkFreeMemory(device_, b.memory, nullptr);
    }
  }
  bool ready() const { return ready_; }

  // (lr, momentum) for s = first .. first + count - 1.
  void run(const detail::EncodedSchedule& record, uint32_t first, uint32_t count, std::vector<float>& out) {
    std::memcpy(buffers_[0].mapped, record.words.data(), sizeof record.words);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::fill_n(static_cast<float*>(buffers_[1].mapped), 2 * count, nan);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_OK(vkResetCommandPool(device_, pool_, 0));
    VK_OK(vkBeginCommandBuffer(cmd_, &bi));
    VkMemoryBarrier host_to_shader{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    host_to_shader.srcAccessMask = VK_ACCESS_HOST_WRITE_BIT;
    host_to_shader.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
    vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_HOST_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &host_to_shader,
                         0, nullptr, 0, nullptr);
    vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline_);
    vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline_layout_, 0, 1, &set_, 0, nullptr);
    const uint32_t push[2] = {first, count};
    vkCmdPushConstants(cmd_, pipeline_layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, push);
    vkCmdDispatch(cmd_, (count + 63) / 64, 1, 1);
    VkMemoryBarrier shader_to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    shader_to_host.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
    shader_to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &shader_to_host,
                         0, nullptr, 0, nullptr);
    VK_OK(vkEndCommandBuffer(cmd_));
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    VK_OK(vkQueueSubmit(queue_, 1, &si, fence_));
    VK_OK(vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX));
    VK_OK(vkResetFences(device_, 1, &fence_));
    const float* values = static_cast<const float*>(buffers_[1].mapped);
    out.assign(values, values + 2 * count);
  }

 private:
  struct HostBuffer {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    void* mapped = nullptr;
  };

  void make_buffer(const Context& ctx, VkDeviceSize size, HostBuffer& b) {
    VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bci.size = size;
    bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
    VK_OK(vkCreateBuffer(device_, &bci, nullptr, &b.buffer));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, b.buffer, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(ctx.physical_device(), &mp);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = 0;
    while (type < mp.memoryTypeCount &&
           (!(req.memoryTypeBits & (1u << type)) || (mp.memoryTypes[type].propertyFlags & want) != want))
      ++type;
    ASSERT_LT(type, mp.memoryTypeCount) << "no host-visible coherent memory";
    VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = type;
    VK_OK(vkAllocateMemory(device_, &mai, nullptr, &b.memory));
    VK_OK(vkBindBufferMemory(device_, b.buffer, b.memory, 0));
    VK_OK(vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped));
  }

  void create(const Context& ctx) {
    make_buffer(ctx, detail::kScheduleWords * 4, buffers_[0]);
    make_buffer(ctx, 2 * kMaxCount * 4, buffers_[1]);

    VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    smci.codeSize = sizeof kProbeSpirv;
    smci.pCode = reinterpret_cast<const uint32_t*>(kProbeSpirv);
    VK_OK(vkCreateShaderModule(device_, &smci, nullptr, &module_));

    VkDescriptorSetLayoutBinding bindings[2] = {};
    for (uint32_t i = 0; i < 2; ++i) {
      bindings[i].binding = i;
      bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      bindings[i].descriptorCount = 1;
      bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dslci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dslci.bindingCount = 2;
    dslci.pBindings = bindings;
    VK_OK(vkCreateDescriptorSetLayout(device_, &dslci, nullptr, &set_layout_));

    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, 8};
    VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &set_layout_;
    plci.pushConstantRangeCount = 1;
    plci.pPushConstantRanges = &range;
    VK_OK(vkCreatePipelineLayout(device_, &plci, nullptr, &pipeline_layout_));

    VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    cpci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    cpci.stage.module = module_;
    cpci.stage.pName = "main";
    cpci.layout = pipeline_layout_;
    VK_OK(vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &cpci, nullptr, &pipeline_));

    VkDescriptorPoolSize pool_size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 2};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = 1;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &pool_size;
    VK_OK(vkCreateDescriptorPool(device_, &dpci, nullptr, &descriptor_pool_));
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = descriptor_pool_;
    dsai.descriptorSetCount = 1;
    dsai.pSetLayouts = &set_layout_;
    VK_OK(vkAllocateDescriptorSets(device_, &dsai, &set_));
    VkDescriptorBufferInfo infos[2] = {{buffers_[0].buffer, 0, VK_WHOLE_SIZE}, {buffers_[1].buffer, 0, VK_WHOLE_SIZE}};
    VkWriteDescriptorSet writes[2] = {};
    for (uint32_t i = 0; i < 2; ++i) {
      writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[i].dstSet = set_;
      writes[i].dstBinding = i;
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
    vkUpdateDescriptorSets(device_, 2, writes, 0, nullptr);

    VkCommandPoolCreateInfo cpoolci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpoolci.queueFamilyIndex = ctx.queue_family_index();
    VK_OK(vkCreateCommandPool(device_, &cpoolci, nullptr, &pool_));
    VkCommandBufferAllocateInfo cbai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cbai.commandPool = pool_;
    cbai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cbai.commandBufferCount = 1;
    VK_OK(vkAllocateCommandBuffers(device_, &cbai, &cmd_));
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK_OK(vkCreateFence(device_, &fci, nullptr, &fence_));
    ready_ = true;
  }

  VkDevice device_;
  VkQueue queue_;
  HostBuffer buffers_[2];  // record, values
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout pipeline_layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool_ = VK_NULL_HANDLE;
  VkDescriptorSet set_ = VK_NULL_HANDLE;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  bool ready_ = false;
};

class ScheduleDeviceTest : public vkt::VulkanTest {};

// Every case on one device and one pipeline (compiling the probe once): s = 0 .. 9,999 against
// the host and torch's recursion, and s = 10^7 - 2,000 .. 10^7 - 1 against the host.
TEST_F(ScheduleDeviceTest, AllKindsMatchHostAndTorchRecursion) {
  auto ctx = make_context();
  Probe probe(ctx);
  ASSERT_TRUE(probe.ready());
  std::vector<float> out;
  for (const ScheduleCase& c : all_cases()) {
    SCOPED_TRACE(c.name);
    const Trajectory ref = reference_trajectory(c);
    double scale = 0;
    for (double v : ref.lr) scale = std::max(scale, std::abs(v));
    const detail::EncodedSchedule record = detail::encode_schedule(c.schedule, c.base_lr);
    double worst_rel = 0, worst_momentum = 0;
    size_t bad = 0;
    auto check = [&](uint32_t first, uint32_t count, bool against_torch) {
      probe.run(record, first, count, out);
      for (uint32_t i = 0; i < count; ++i) {
        const uint64_t s = uint64_t(first) + i;
        const double host = detail::schedule_lr(c.schedule, c.base_lr, s);
        const double device = out[2 * i];
        // Beyond float's range (a growing ExponentialLR) the device gives +inf, as rounding would.
        const double diff =
            host > std::numeric_limits<float>::max() && std::isinf(device) ? 0.0 : std::abs(device - host);
        if (std::abs(host) > 1e-30 * scale) worst_rel = std::max(worst_rel, diff / std::abs(host));
        if (!(diff <= device_tolerance(host, scale)) && bad++ < 5)
          ADD_FAILURE() << "s = " << s << ": device " << device << " host " << host << " relative error "
                        << diff / std::abs(host);
        if (against_torch && s < ref.lr.size()) {
          const double tol = device_tolerance(ref.lr[s], scale) + host_tolerance(s, ref.lr[s], scale);
          if (!(std::abs(device - ref.lr[s]) <= tol) && bad++ < 5)
            ADD_FAILURE() << "s = " << s << ": device " << device << " torch " << ref.lr[s];
        }
        const auto host_m = detail::schedule_momentum(c.schedule, s);
        const float device_m = out[2 * i + 1];
        if (host_m.has_value() != !std::isnan(device_m)) {
          if (bad++ < 5) ADD_FAILURE() << "s = " << s << ": momentum presence differs";
        } else if (host_m) {
          worst_momentum = std::max(worst_momentum, std::abs(device_m - *host_m));
          if (!(std::abs(device_m - *host_m) <= kDeviceMomentum) && bad++ < 5)
            ADD_FAILURE() << "s = " << s << ": device momentum " << device_m << " host " << *host_m;
        }
      }
    };
    for (uint32_t first = 0; first < kSteps; first += Probe::kMaxCount)
      check(first, std::min(Probe::kMaxCount, kSteps - first), true);
    check(10'000'000 - 2000, 2000, false);
    EXPECT_EQ(bad, 0u);
    std::printf("[ SCHEDULE ] %-34s device vs host: max relative error %.2e (%.1f float ulps)", c.name.c_str(),
                worst_rel, worst_rel / vkt::kUnitRoundoff / 2);
    if (detail::schedule_momentum(c.schedule, 0)) std::printf(", momentum max |diff| %.1e", worst_momentum);
    std::printf("\n");
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input

struct BadCase {
  std::string what;
  LrSchedule schedule;
  std::vector<std::string> needles;  // in the message, beside "group 2: "
};

std::vector<BadCase> bad_cases() {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<BadCase> b;
  auto add = [&](std::string what, LrSchedule s, std::vector<std::string> needles) {
    b.push_back({std::move(what), std::move(s), std::move(needles)});
  };
  LrSchedule unknown;
  unknown.kind = ScheduleKind(99);
  add("unknown kind", unknown, {"schedule.kind = 99"});
  add("decay_rate < 0", inverse_time_decay(-1), {"schedule.inverse_time.decay_rate = -1", "must be >= 0"});
  add("decay_rate inf", inverse_time_squared_decay(inf), {"schedule.inverse_time.decay_rate = inf", "must be finite"});
  add("gamma nan", make_schedule(ExponentialLR{.gamma = nan}), {"schedule.exponential.gamma = ", "must be finite"});
  add("gamma 0", make_schedule(ExponentialLR{}), {"schedule.exponential.gamma = 0", "must be > 0"});
  add("step_size 0", make_schedule(StepLR{}), {"schedule.step.step_size = 0", "must be > 0"});
  add("step gamma < 0", make_schedule(StepLR{.step_size = 3, .gamma = -0.5}), {"schedule.step.gamma = -0.5"});
  add("step_size too large", make_schedule(StepLR{.step_size = (1u << 30) + 1}),
      {"schedule.step.step_size = 1073741825", "must be <= 1073741824"});
  add("milestones repeat", make_schedule(MultiStepLR{.milestones = {10, 10}}),
      {"schedule.multi_step.milestones[1] = 10", "strictly increasing"});
  add("too many milestones", make_schedule(MultiStepLR{.milestones = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}),
      {"schedule.multi_step.milestones.size() = 11", "must be <= 10"});
  add("factor 0", make_schedule(ConstantLR{.factor = 0}), {"schedule.constant_factor.factor = 0", "(0, 1]"});
  add("factor 1.5", make_schedule(ConstantLR{.factor = 1.5}), {"schedule.constant_factor.factor = 1.5"});
  add("constant total_iters 0", make_schedule(ConstantLR{.total_iters = 0}),
      {"schedule.constant_factor.total_iters = 0"});
  add("start_factor 0", make_schedule(LinearLR{.start_factor = 0}), {"schedule.linear.start_factor = 0"});
  add("end_factor 1.5", make_schedule(LinearLR{.end_factor = 1.5}), {"schedule.linear.end_factor = 1.5", "[0, 1]"});
  add("linear total_iters 0", make_schedule(LinearLR{.total_iters = 0}), {"schedule.linear.total_iters = 0"});
  add("polynomial total_iters 0", make_schedule(PolynomialLR{.total_iters = 0}),
      {"schedule.polynomial.total_iters = 0"});
  add("power 0", make_schedule(PolynomialLR{.power = 0}), {"schedule.polynomial.power = 0", "must be > 0"});
  add("t_max 0", make_schedule(CosineAnnealingLR{}), {"schedule.cosine_annealing.t_max = 0"});
  add("eta_min < 0", make_schedule(CosineAnnealingLR{.t_max = 10, .eta_min = -1e-3}),
      {"schedule.cosine_annealing.eta_min = -0.001"});
  add("t_0 0", make_schedule(CosineAnnealingWarmRestarts{}), {"schedule.cosine_warm_restarts.t_0 = 0"});
  add("t_mult 0", make_schedule(CosineAnnealingWarmRestarts{.t_0 = 5, .t_mult = 0}),
      {"schedule.cosine_warm_restarts.t_mult = 0", "must be >= 1"});
  add("restarts eta_min nan", make_schedule(CosineAnnealingWarmRestarts{.t_0 = 5, .eta_min = nan}),
      {"schedule.cosine_warm_restarts.eta_min"});
  const OneCycleLR one{.max_lr = 0.1, .total_steps = 100};
  auto one_cycle = [&](auto change) {
    OneCycleLR o = one;
    change(o);
    return make_schedule(o);
  };
  add("max_lr 0", one_cycle([](OneCycleLR& o) { o.max_lr = 0; }), {"schedule.one_cycle.max_lr = 0"});
  add("total_steps 0", one_cycle([](OneCycleLR& o) { o.total_steps = 0; }),
      {"schedule.one_cycle.total_steps = 0", "must be > 0"});
  add("pct_start 0", one_cycle([](OneCycleLR& o) { o.pct_start = 0; }), {"schedule.one_cycle.pct_start = 0", "(0, 1)"});
  add("pct_start 1", one_cycle([](OneCycleLR& o) { o.pct_start = 1; }), {"schedule.one_cycle.pct_start = 1"});
  add("rising phase empty", one_cycle([](OneCycleLR& o) { o.pct_start = 0.01; }),
      {"schedule.one_cycle.pct_start = 0.01", "rising phase"});
  add("last phase empty", one_cycle([](OneCycleLR& o) {
        o.pct_start = 0.6;
        o.three_phase = true;
      }),
      {"schedule.one_cycle.pct_start = 0.59999", "last phase"});
  add("anneal_strategy", one_cycle([](OneCycleLR& o) { o.anneal_strategy = AnnealStrategy(7); }),
      {"schedule.one_cycle.anneal_strategy = 7"});
  add("div_factor 0", one_cycle([](OneCycleLR& o) { o.div_factor = 0; }), {"schedule.one_cycle.div_factor = 0"});
  add("final_div_factor < 0", one_cycle([](OneCycleLR& o) { o.final_div_factor = -1; }),
      {"schedule.one_cycle.final_div_factor = -1"});
  add("base_momentum 1.5", one_cycle([](OneCycleLR& o) { o.base_momentum = 1.5; }),
      {"schedule.one_cycle.base_momentum = 1.5"});
  add("max_momentum nan", one_cycle([](OneCycleLR& o) { o.max_momentum = nan; }),
      {"schedule.one_cycle.max_momentum", "must be finite"});
  const CyclicLR cyc{.base_lr = 1e-3, .max_lr = 1e-2};
  auto cyclic = [&](auto change) {
    CyclicLR o = cyc;
    change(o);
    return make_schedule(o);
  };
  add("step_size_up 0", cyclic([](CyclicLR& o) { o.step_size_up = 0; }), {"schedule.cyclic.step_size_up = 0"});
  add("step_size_down too large", cyclic([](CyclicLR& o) { o.step_size_down = 1u << 31; }),
      {"schedule.cyclic.step_size_down = 2147483648"});
  add("base_lr < 0", cyclic([](CyclicLR& o) { o.base_lr = -1; }), {"schedule.cyclic.base_lr = -1"});
  add("max_lr inf", cyclic([](CyclicLR& o) { o.max_lr = inf; }), {"schedule.cyclic.max_lr = inf"});
  add("mode", cyclic([](CyclicLR& o) { o.mode = CyclicMode(3); }), {"schedule.cyclic.mode = 3"});
  add("cyclic gamma 0", cyclic([](CyclicLR& o) { o.gamma = 0; }), {"schedule.cyclic.gamma = 0"});
  add("cyclic base_momentum < 0", cyclic([](CyclicLR& o) { o.base_momentum = -0.1; }),
      {"schedule.cyclic.base_momentum = -0.1"});
  add("training steps 0", make_schedule(CosineWithWarmup{}), {"schedule.cosine_with_warmup.num_training_steps = 0"});
  add("num_cycles < 0", make_schedule(CosineWithWarmup{.num_training_steps = 10, .num_cycles = -1}),
      {"schedule.cosine_with_warmup.num_cycles = -1"});
  add("min_lr_ratio 1.5", make_schedule(CosineWithWarmup{.num_training_steps = 10, .min_lr_ratio = 1.5}),
      {"schedule.cosine_with_warmup.min_lr_ratio = 1.5"});
  add("decay steps 0", make_schedule(WarmupStableDecay{}), {"schedule.warmup_stable_decay.num_decay_steps = 0"});
  add("warmup shape", make_schedule(WarmupStableDecay{.num_decay_steps = 5, .warmup_shape = WsdShape(9)}),
      {"schedule.warmup_stable_decay.warmup_shape = 9"});
  add("decay shape", make_schedule(WarmupStableDecay{.num_decay_steps = 5, .decay_shape = WsdShape(9)}),
      {"schedule.warmup_stable_decay.decay_shape = 9"});
  add("wsd min_lr_ratio < 0", make_schedule(WarmupStableDecay{.num_decay_steps = 5, .min_lr_ratio = -0.1}),
      {"schedule.warmup_stable_decay.min_lr_ratio = -0.1"});
  add("wsd num_cycles inf", make_schedule(WarmupStableDecay{.num_decay_steps = 5, .num_cycles = inf}),
      {"schedule.warmup_stable_decay.num_cycles = inf"});

  const LrSchedule ok = make_schedule(ExponentialLR{.gamma = 0.9});
  add("no pieces", sequential({}, {}), {"schedule.pieces.size() = 0"});
  add("five pieces", chained({ok, ok, ok, ok, ok}), {"schedule.pieces.size() = 5", "1 to 4"});
  add("milestones count", sequential({ok, ok}, {}), {"schedule.milestones.size() = 0", "pieces.size() - 1"});
  add("milestone 0", sequential({ok, ok}, {0}), {"schedule.milestones[0] = 0", "must be > 0"});
  add("milestones not increasing", sequential({ok, ok, ok}, {50, 20}), {"schedule.milestones[1] = 20"});
  add("nested", sequential({ok, chained({ok})}, {10}), {"schedule.pieces[1].kind = 16", "one level"});
  add("one_cycle piece", sequential({ok, make_schedule(one)}, {10}), {"schedule.pieces[1].kind = 11", "absolute"});
  add("cyclic piece", sequential({make_schedule(cyc), ok}, {10}), {"schedule.pieces[0].kind = 12"});
  add("bad piece option", sequential({ok, make_schedule(StepLR{})}, {10}), {"schedule.pieces[1].step.step_size = 0"});
  add("chained cosine", chained({ok, make_schedule(CosineAnnealingLR{.t_max = 5})}),
      {"schedule.pieces[1].kind = 9", "multiplicative"});
  add("chained hf", chained({make_schedule(CosineWithWarmup{.num_training_steps = 5})}),
      {"schedule.pieces[0].kind = 13", "multiplicative"});
  LrSchedule chained_milestones = chained({ok});
  chained_milestones.milestones = {5};
  add("chained milestones", chained_milestones, {"schedule.milestones.size() = 1", "chained"});
  return b;
}

TEST(ScheduleValidationTest, EveryInvalidOptionIsRefusedNamingTheField) {
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    std::vector<std::string> needles = c.needles;
    needles.insert(needles.begin(), "group 2: ");
    vkt::expect_error([&] { detail::validate_schedule(c.schedule, 2); }, Status::invalid_argument, needles);
  }
}

TEST(ScheduleValidationTest, EveryTestedScheduleIsValid) {
  for (const ScheduleCase& c : all_cases()) EXPECT_NO_THROW(detail::validate_schedule(c.schedule, 0)) << c.name;
}

}  // namespace
