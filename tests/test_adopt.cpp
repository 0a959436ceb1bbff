// Adoption: the test plays a host engine. It creates its own instance (with the validation layer
// and synchronization validation), device, queue, buffers and command buffer, hands vkoptim the
// borrowed handles, records the step into its own command buffer, submits itself, checks the
// results against the reference, and destroys its own objects after vkoptim is gone.
#include <vulkan/vulkan.h>

#include <cstring>
#include <mutex>
#include <thread>

#include "harness.hpp"
#include "reference/adam.hpp"

namespace {

#define VK_CHECK(call) ASSERT_EQ((call), VK_SUCCESS) << #call

VKAPI_ATTR VkBool32 VKAPI_CALL host_messenger(VkDebugUtilsMessageSeverityFlagBitsEXT, VkDebugUtilsMessageTypeFlagsEXT,
                                              const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  static_cast<vkt::Messages*>(user)->add(data->pMessage);
  return VK_FALSE;
}

// What the host engine owns.
struct Host {
  VkInstance instance = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t family = 0;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  VkBuffer buffer = VK_NULL_HANDLE;  // params, then grads, in one buffer
  VkDeviceMemory memory = VK_NULL_HANDLE;
  float* mapped = nullptr;
  bool bda = false;
  bool int64 = false;

  // The handles vkoptim borrows; the caller declares the API version and features.
  vkoptim::DeviceBinding binding() const {
    vkoptim::DeviceBinding b;
    b.instance = instance;
    b.physical_device = physical;
    b.device = device;
    b.queue = queue;
    b.queue_family_index = family;
    return b;
  }

  // Records `fill` into the host's command buffer, submits it and waits, as an engine's frame.
  template <class Fill>
  void submit(Fill fill) {
    VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_CHECK(vkBeginCommandBuffer(cmd, &begin));
    fill(cmd);
    VK_CHECK(vkEndCommandBuffer(cmd));
    VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    info.commandBufferCount = 1;
    info.pCommandBuffers = &cmd;
    VK_CHECK(vkQueueSubmit(queue, 1, &info, fence));
    VK_CHECK(vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX));
    VK_CHECK(vkResetFences(device, 1, &fence));
    VK_CHECK(vkResetCommandBuffer(cmd, 0));
  }

  void destroy() {
    if (device) {
      vkDeviceWaitIdle(device);
      if (mapped) vkUnmapMemory(device, memory);
      vkDestroyBuffer(device, buffer, nullptr);
      vkFreeMemory(device, memory, nullptr);
      vkDestroyFence(device, fence, nullptr);
      vkDestroyCommandPool(device, pool, nullptr);
      vkDestroyDevice(device, nullptr);
    }
    if (messenger) {
      auto destroy_messenger = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT"));
      destroy_messenger(instance, messenger, nullptr);
    }
    if (instance) vkDestroyInstance(instance, nullptr);
  }
};

// full_subgroups: a Vulkan 1.3 instance and device with subgroupSizeControl and
// computeFullSubgroups on (the test skips where the device lacks them), and shaderInt64 where the
// device has it.
void create_host(Host& h, vkt::Messages* messages, bool want_bda, size_t floats, bool full_subgroups = false) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.apiVersion = full_subgroups ? VK_API_VERSION_1_3 : VK_API_VERSION_1_2;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  const char* extensions[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME};
  VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  features.enabledValidationFeatureCount = 1;
  features.pEnabledValidationFeatures = &sync;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pNext = &features;
  ici.pApplicationInfo = &app;
  ici.enabledLayerCount = 1;
  ici.ppEnabledLayerNames = &layer;
  ici.enabledExtensionCount = 2;
  ici.ppEnabledExtensionNames = extensions;
  VK_CHECK(vkCreateInstance(&ici, nullptr, &h.instance));
  VkDebugUtilsMessengerCreateInfoEXT mci{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  mci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  mci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT;
  mci.pfnUserCallback = host_messenger;
  mci.pUserData = messages;
  auto create_messenger = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
      vkGetInstanceProcAddr(h.instance, "vkCreateDebugUtilsMessengerEXT"));
  VK_CHECK(create_messenger(h.instance, &mci, nullptr, &h.messenger));

  uint32_t n = 1;
  VkResult r = vkEnumeratePhysicalDevices(h.instance, &n, &h.physical);
  ASSERT_TRUE(r == VK_SUCCESS || r == VK_INCOMPLETE);
  ASSERT_EQ(n, 1u);
  uint32_t nf = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(h.physical, &nf, nullptr);
  std::vector<VkQueueFamilyProperties> fams(nf);
  vkGetPhysicalDeviceQueueFamilyProperties(h.physical, &nf, fams.data());
  while (h.family < nf && !(fams[h.family].queueFlags & VK_QUEUE_COMPUTE_BIT)) ++h.family;
  ASSERT_LT(h.family, nf);

  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &f12;
  vkGetPhysicalDeviceFeatures2(h.physical, &f2);
  h.bda = want_bda && f12.bufferDeviceAddress;
  VkPhysicalDeviceVulkan12Features enable12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  enable12.bufferDeviceAddress = h.bda;
  VkPhysicalDeviceVulkan13Features enable13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
  if (full_subgroups) {
    VkPhysicalDeviceVulkan13Features f13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
    f2.pNext = &f13;
    vkGetPhysicalDeviceFeatures2(h.physical, &f2);
    if (!f13.subgroupSizeControl || !f13.computeFullSubgroups) GTEST_SKIP() << "no computeFullSubgroups";
    enable13.subgroupSizeControl = VK_TRUE;
    enable13.computeFullSubgroups = VK_TRUE;
    enable12.pNext = &enable13;
    h.int64 = f2.features.shaderInt64;
  }
  VkPhysicalDeviceFeatures2 enable{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  enable.pNext = &enable12;
  enable.features.shaderInt64 = h.int64;
  const float priority = 1;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = h.family;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &enable;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  VK_CHECK(vkCreateDevice(h.physical, &dci, nullptr, &h.device));
  vkGetDeviceQueue(h.device, h.family, 0, &h.queue);

  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = h.family;
  VK_CHECK(vkCreateCommandPool(h.device, &pci, nullptr, &h.pool));
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = h.pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  VK_CHECK(vkAllocateCommandBuffers(h.device, &cai, &h.cmd));
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VK_CHECK(vkCreateFence(h.device, &fci, nullptr, &h.fence));

  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = floats * 4;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | (h.bda ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0);
  VK_CHECK(vkCreateBuffer(h.device, &bci, nullptr, &h.buffer));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(h.device, h.buffer, &req);
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(h.physical, &mp);
  uint32_t type = 0;
  const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  while (type < mp.memoryTypeCount &&
         (!(req.memoryTypeBits & (1u << type)) || (mp.memoryTypes[type].propertyFlags & want) != want))
    ++type;
  ASSERT_LT(type, mp.memoryTypeCount);
  VkMemoryAllocateFlagsInfo flags{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
  flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.pNext = h.bda ? &flags : nullptr;
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = type;
  VK_CHECK(vkAllocateMemory(h.device, &mai, nullptr, &h.memory));
  VK_CHECK(vkBindBufferMemory(h.device, h.buffer, h.memory, 0));
  VK_CHECK(vkMapMemory(h.device, h.memory, 0, VK_WHOLE_SIZE, 0, reinterpret_cast<void**>(&h.mapped)));
}

class AdoptTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};
class AdoptBindingTest : public vkt::VulkanTest {};

TEST_P(AdoptTest, RecordsIntoHostCommandBufferAndMatchesReference) {
  const bool want_bda = GetParam();
  const std::vector<size_t> sizes{1, 255, 4099, 257, 3};
  std::vector<size_t> p_off, g_off;
  size_t total = 0;
  for (size_t n : sizes) {
    p_off.push_back(total + 1);  // 1-element gaps: some ranges are not 16-byte aligned
    total += n + 1;
  }
  for (size_t n : sizes) {
    g_off.push_back(total + 2);
    total += n + 2;
  }
  Host host;
  create_host(host, messages_.get(), want_bda, total);
  if (HasFatalFailure()) {
    host.destroy();
    return;
  }
  const float nan = std::nanf("");
  std::fill(host.mapped, host.mapped + total, nan);
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<std::vector<double>> p_ref(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i)
    for (size_t e = 0; e < sizes[i]; ++e) {
      host.mapped[p_off[i] + e] = float(uniform(rng_));
      p_ref[i].push_back(host.mapped[p_off[i] + e]);
    }

  vkoptim::AdamOptions o = vkoptim::adamw_options();
  o.lr = 1e-2;
  o.amsgrad = true;
  const reference::AdamHyper h{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, true, false, true};
  std::vector<reference::Adam> refs;
  const int steps = 55;
  {
    vkoptim::DeviceBinding b = host.binding();
    b.api_version = VK_API_VERSION_1_2;
    b.buffer_device_address_enabled = host.bda;
    vkoptim::ContextOptions options;
    options.addressing = host.bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
    auto ctx = vkoptim::Context::adopt(b, options);
    EXPECT_EQ(ctx.supports_buffer_device_address(), host.bda);
    vkoptim::ParamGroup group{o, {}};
    for (size_t i = 0; i < sizes.size(); ++i) {
      vkoptim::BufferRange p{host.buffer, p_off[i] * 4, sizes[i], vkoptim::DType::f32, total * 4, host.bda};
      vkoptim::BufferRange g{host.buffer, g_off[i] * 4, sizes[i], vkoptim::DType::f32, total * 4, host.bda};
      group.tensors.push_back({p, g, ""});
      refs.emplace_back(h, sizes[i]);
    }
    vkoptim::Optimizer opt(ctx, {group});
    opt.initialize();  // at load time: the one submission vkoptim makes itself
    const auto submissions_before = ctx.stats().submissions;
    vkoptim::RecordOptions ro;
    ro.exit_stage_mask = VK_PIPELINE_STAGE_HOST_BIT;  // the host reads results through its mapping
    ro.exit_access_mask = VK_ACCESS_HOST_READ_BIT;
    std::normal_distribution<double> normal;
    for (int s = 0; s < steps; ++s) {
      for (size_t i = 0; i < sizes.size(); ++i) {
        std::vector<double> grad(sizes[i]);
        for (size_t e = 0; e < sizes[i]; ++e) {
          host.mapped[g_off[i] + e] = float(normal(rng_));
          grad[e] = host.mapped[g_off[i] + e];
        }
        refs[i].step(p_ref[i], grad);
      }
      host.submit([&](VkCommandBuffer cmd) { opt.record(cmd, ro); });
    }
    EXPECT_EQ(ctx.stats().submissions, submissions_before) << "record() after initialize() must never submit";
    if (host.bda) {
      EXPECT_EQ(opt.last_dispatch_count(), 1u);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<float> gpu(host.mapped + p_off[i], host.mapped + p_off[i] + sizes[i]);
      std::vector<double> tol(sizes[i]);
      for (size_t e = 0; e < sizes[i]; ++e)
        tol[e] = 8 * vkt::kUnitRoundoff * steps * 1.5 + 512 * vkt::kUnitRoundoff * steps * o.lr * 2;
      vkt::expect_close(gpu, p_ref[i], tol, "param");
      vkt::expect_close(opt.read_state(i, "max_exp_avg_sq"), refs[i].state().at("max_exp_avg_sq"),
                        std::vector<double>(sizes[i], 8 * vkt::kUnitRoundoff * steps * 10), "max_exp_avg_sq");
    }
    // Gaps between the host's tensors stay poisoned.
    size_t clobbered = 0;
    for (size_t i = 0; i < sizes.size(); ++i)
      clobbered += !std::isnan(host.mapped[p_off[i] - 1]) + !std::isnan(host.mapped[g_off[i] - 1]);
    EXPECT_EQ(clobbered, 0u);
  }  // vkoptim is gone; the host's objects are still valid and destroyed by the host.
  host.destroy();
}

// 8-bit state on an adopted device: with the host's full-subgroup features declared, the step
// reduces blocks within subgroups (validated by the host's layer) and gives the same bits as a
// device vkoptim made itself; undeclared, it takes the shared-memory path.
class AdoptQ8Test : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};

TEST_P(AdoptQ8Test, EightBitAdamMatchesAnOwnDevice) {
  const bool declared = GetParam();
  const size_t n = 20000;  // whole fast blocks and a tail
  Host host;
  create_host(host, messages_.get(), false, 2 * n, true);
  if (HasFatalFailure() || IsSkipped()) {
    host.destroy();
    return;
  }
  std::normal_distribution<double> normal;
  for (size_t e = 0; e < n; ++e) host.mapped[e] = float(normal(rng_));
  auto own_ctx = make_context();
  auto own_p = own_ctx.create_tensor(std::vector<float>(host.mapped, host.mapped + n));
  auto own_g = own_ctx.create_tensor(n);
  vkoptim::ParamGroup own_group{vkoptim::adamw_options(), {{own_p.range(), own_g.range()}}};
  own_group.precision.state = vkoptim::StateDType::q8;
  vkoptim::Optimizer own(own_ctx, {own_group});
  {
    vkoptim::DeviceBinding b = host.binding();
    b.api_version = VK_API_VERSION_1_3;
    b.full_subgroups_enabled = declared;
    b.shader_int64_enabled = host.int64;
    auto ctx = vkoptim::Context::adopt(b);
    vkoptim::BufferRange p{host.buffer, 0, n, vkoptim::DType::f32, 2 * n * 4, false};
    vkoptim::BufferRange g{host.buffer, n * 4, n, vkoptim::DType::f32, 2 * n * 4, false};
    vkoptim::ParamGroup group{vkoptim::adamw_options(), {{p, g, ""}}};
    group.precision.state = vkoptim::StateDType::q8;
    vkoptim::Optimizer opt(ctx, {group});
    opt.initialize();
    // Declared, the adopted device reduces as a device vkoptim made itself does (both have the
    // same features on); undeclared, through shared memory.
    EXPECT_EQ(opt.shape().subgroup_reduced_groups, declared ? own.shape().subgroup_reduced_groups : 0u);
    vkoptim::RecordOptions ro;
    ro.exit_stage_mask = VK_PIPELINE_STAGE_HOST_BIT;
    ro.exit_access_mask = VK_ACCESS_HOST_READ_BIT;
    for (int s = 0; s < 6; ++s) {
      std::vector<float> grad(n);
      for (auto& x : grad) x = float(normal(rng_));
      std::copy(grad.begin(), grad.end(), host.mapped + n);
      own_g.upload(grad);
      own.step();
      host.submit([&](VkCommandBuffer cmd) { opt.record(cmd, ro); });
    }
    // Same per-element arithmetic on the same driver, and a block's max is exact whichever way it
    // is taken: the same bits either way.
    const auto own_p_now = own_p.download();
    size_t p_differ = 0;
    for (size_t e = 0; e < n; ++e) p_differ += own_p_now[e] != host.mapped[e];
    EXPECT_EQ(p_differ, 0u) << "parameters";
    for (const char* name : {"exp_avg", "exp_avg_sq"}) {
      const auto a = own.read_state(0, name), b_state = opt.read_state(0, name);
      size_t differ = 0;
      for (size_t e = 0; e < n; ++e) differ += a[e] != b_state[e];
      EXPECT_EQ(differ, 0u) << name;
    }
  }
  host.destroy();
}

// Every DeviceBinding field is checked: declarations the device or API version cannot back, an
// extension the device lacks, half a queue lock.
TEST_F(AdoptBindingTest, DeclarationsTheDeviceCannotBackAreRefused) {
  Host host;
  create_host(host, messages_.get(), true, 16);
  if (HasFatalFailure()) {
    host.destroy();
    return;
  }
  auto expect_refused = [&](vkoptim::DeviceBinding b, const std::string& needle) {
    vkt::expect_error([&] { vkoptim::Context::adopt(b); }, vkoptim::Status::invalid_argument, {needle});
  };
  vkoptim::DeviceBinding b = host.binding();
  b.api_version = VK_API_VERSION_1_1;
  b.buffer_device_address_enabled = true;
  expect_refused(b, "buffer_device_address_enabled");
  b = host.binding();
  b.api_version = VK_API_VERSION_1_2;
  b.full_subgroups_enabled = true;
  expect_refused(b, "full_subgroups_enabled");
  b = host.binding();
  b.api_version = VK_API_VERSION_1_2;
  b.enabled_device_extensions = {"VK_KHR_no_such_extension"};
  expect_refused(b, "VK_KHR_no_such_extension");
  b = host.binding();
  b.api_version = VK_API_VERSION_1_2;
  b.lock_queue = [](void*) {};
  expect_refused(b, "lock_queue and unlock_queue");
  b = host.binding();
  b.api_version = VK_API_VERSION_1_2;
  b.queue_family_index = 1000;
  expect_refused(b, "queue_family_index");
  host.destroy();
}

// The host and two Contexts adopting its one queue, each on its own thread: vkoptim takes the
// host's queue lock around every submission and wait, so the validation layer's thread checks
// (on in the host's instance) see no simultaneous use of the queue.
TEST_F(AdoptBindingTest, HostAndTwoAdoptedContextsShareOneQueueThroughTheHostsLock) {
  Host host;
  create_host(host, messages_.get(), false, 16);
  if (HasFatalFailure()) {
    host.destroy();
    return;
  }
  std::mutex queue_mutex;
  {
    vkoptim::DeviceBinding b = host.binding();
    b.api_version = VK_API_VERSION_1_2;
    b.lock_queue = [](void* m) { static_cast<std::mutex*>(m)->lock(); };
    b.unlock_queue = [](void* m) { static_cast<std::mutex*>(m)->unlock(); };
    b.queue_lock_user = &queue_mutex;
    const size_t n = 3000;
    const int steps = 20;
    std::vector<vkoptim::Context> contexts;
    for (int k = 0; k < 2; ++k) contexts.push_back(vkoptim::Context::adopt(b));
    std::vector<vkoptim::Tensor> ps, gs;
    std::vector<vkoptim::Optimizer> opts;
    for (int k = 0; k < 2; ++k) {
      ps.push_back(contexts[size_t(k)].create_tensor(std::vector<float>(n, 1.0f)));
      gs.push_back(contexts[size_t(k)].create_tensor(std::vector<float>(n, 0.25f)));
      vkoptim::SgdOptions o;
      o.lr = 1.0 / 1024;
      opts.emplace_back(contexts[size_t(k)],
                        std::vector<vkoptim::ParamGroup>{{o, {{ps[size_t(k)].range(), gs[size_t(k)].range(), ""}}}});
    }
    // On a host's device record() does not submit the initialisation itself: it asks for it.
    VkCommandBufferBeginInfo first{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(host.cmd, &first);
    vkt::expect_error([&] { opts[0].record(host.cmd); }, vkoptim::Status::invalid_state, {"initialize()"});
    vkEndCommandBuffer(host.cmd);
    vkResetCommandBuffer(host.cmd, 0);
    auto vkoptim_work = [&](size_t k) {
      for (int s = 0; s < steps; ++s) {
        gs[k].upload(std::vector<float>(n, 0.25f));
        opts[k].step();
      }
    };
    auto host_work = [&] {
      for (int s = 0; s < steps; ++s) {
        VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
        begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
        vkBeginCommandBuffer(host.cmd, &begin);
        VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};  // some work of the host's own
        mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
        vkCmdPipelineBarrier(host.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                             &mb, 0, nullptr, 0, nullptr);
        vkEndCommandBuffer(host.cmd);
        VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
        info.commandBufferCount = 1;
        info.pCommandBuffers = &host.cmd;
        {
          std::lock_guard lock(queue_mutex);
          vkQueueSubmit(host.queue, 1, &info, host.fence);
        }
        vkWaitForFences(host.device, 1, &host.fence, VK_TRUE, UINT64_MAX);
        vkResetFences(host.device, 1, &host.fence);
        vkResetCommandBuffer(host.cmd, 0);
      }
    };
    std::thread a(vkoptim_work, 0), c(vkoptim_work, 1), h(host_work);
    a.join();
    c.join();
    h.join();
    for (auto& p : ps) {
      const auto out = p.download();  // 1 - 20 * 0.25 / 1024, exact in float
      EXPECT_EQ(out.front(), 1.0f - float(steps) * 0.25f / 1024);
      EXPECT_EQ(out.back(), out.front());
    }
  }
  host.destroy();
}

INSTANTIATE_TEST_SUITE_P(FullSubgroups, AdoptQ8Test, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "declared" : "undeclared"; });

INSTANTIATE_TEST_SUITE_P(Paths, AdoptTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "device_address" : "descriptors"; });

}  // namespace
