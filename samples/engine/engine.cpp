// A small Vulkan training engine that uses vkoptim the way a host engine does. It creates its own
// instance, device and queue; keeps the parameters and their gradients in one buffer; computes
// the forward and backward passes of a 784-256-10 MLP (ReLU, softmax cross-entropy) with its own
// compute shaders; and records vkoptim's step into its own command buffer after them. The whole
// training step is recorded once and replayed for every mini-batch: only the batch's sample
// indices change between submissions. It trains on Fashion-MNIST from Debian's
// dataset-fashion-mnist package (the gzip-compressed IDX files, read with zlib).
//
//   vkoptim-engine [--rule adamw] [--epochs 5] [--batch 128] [--lr X] [--constant-lr] [--seed 1]
//                  [--train-limit N] [--test-limit N] [--json FILE] [--export DIR] [--validate]
//
// The lr follows a cosine from the rule's lr to 0 over the run (torch's CosineAnnealingLR with
// t_max = the number of steps, computed by vkoptim on the device), except with --constant-lr and
// for Schedule-Free AdamW, which needs none.
//
// --export writes what a second implementation needs to train the same network from the same
// start in the same order (samples/engine/torch_check.py): init.bin and final.bin (float32 W1,
// b1, W2, b2 in torch's nn.Linear layouts, before the first step and after the last), order.bin
// (uint32 sample indices of every step's batch) and run.json (the settings, options and curves).
#include <vulkan/vulkan.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gather.h"
#include "gemm.h"
#include "stats.h"
#include "vkoptim/vkoptim.hpp"
#include "xent.h"

namespace {

#define VK_CHECK(expr)                                                                                \
  do {                                                                                                \
    const VkResult result_ = (expr);                                                                  \
    if (result_ != VK_SUCCESS) throw std::runtime_error(#expr " failed: " + std::to_string(result_)); \
  } while (0)

constexpr uint32_t kInputs = 784, kHidden = 256, kClasses = 10;
constexpr float kPixelMean = 0.2860f, kPixelStd = 0.3530f;  // Fashion-MNIST's training set
constexpr uint32_t kEvalBatch = 500;
constexpr uint32_t kLogEvery = 20;  // steps per point of the train-loss curve

struct Settings {
  std::string rule = "adamw";
  uint32_t epochs = 5;
  uint32_t batch = 128;
  double lr = 0;  // 0: the rule's default below
  uint32_t seed = 1;
  bool cosine = true;        // lr annealed to 0 over the run (torch's CosineAnnealingLR, t_max = steps)
  uint32_t train_limit = 0;  // 0: all 60000
  uint32_t test_limit = 0;   // 0: all 10000
  std::string json_path, export_dir;
  bool validate = false;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
};

// ---- Fashion-MNIST (IDX files, gzip) ----

// A gzip-compressed IDX file, read as far as needed: its header (`header` bytes: a magic number
// and sizes, big-endian) and then at most `limit` items of `item` bytes (0: all of them).
struct Idx {
  std::vector<uint8_t> bytes;  // the header, then the items read
  uint32_t word(size_t i) const {
    return uint32_t(bytes[4 * i]) << 24 | uint32_t(bytes[4 * i + 1]) << 16 | uint32_t(bytes[4 * i + 2]) << 8 |
           bytes[4 * i + 3];
  }
};
Idx read_idx(const std::string& path, uint32_t magic, size_t header, size_t item, uint32_t limit) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error("cannot open " + path + " (install Debian's dataset-fashion-mnist)");
  Idx idx;
  auto read = [&](size_t bytes) {
    const size_t at = idx.bytes.size();
    idx.bytes.resize(at + bytes);
    const int got = gzread(file, idx.bytes.data() + at, unsigned(bytes));
    return got == int(bytes);
  };
  bool ok = read(header) && idx.word(0) == magic;
  if (ok) {
    const uint32_t items = idx.word(1);
    ok = read(item * (limit ? std::min(limit, items) : items));
  }
  gzclose(file);
  if (!ok) throw std::runtime_error(path + ": not the IDX file expected, or shorter than its header says");
  return idx;
}

struct DataSet {
  std::vector<uint8_t> images;  // count x 784 bytes
  std::vector<uint8_t> labels;  // count bytes
  uint32_t count = 0;
};

DataSet load_set(const std::string& dir, const std::string& prefix, uint32_t limit) {
  const Idx images = read_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 2051, 16, kInputs, limit);
  const Idx labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 2049, 8, 1, limit);
  if (images.word(2) * images.word(3) != kInputs) throw std::runtime_error(prefix + " images: not 28x28");
  if (images.word(1) != labels.word(1)) throw std::runtime_error(prefix + ": image and label counts disagree");
  DataSet set;
  set.count = limit ? std::min(limit, images.word(1)) : images.word(1);
  set.images.assign(images.bytes.begin() + 16, images.bytes.end());
  set.labels.assign(labels.bytes.begin() + 8, labels.bytes.end());
  return set;
}

// ---- Vulkan plumbing ----

struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  void* mapped = nullptr;  // host-visible buffers only
};

uint32_t validation_messages = 0;

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT, VkDebugUtilsMessageTypeFlagsEXT,
                                             const VkDebugUtilsMessengerCallbackDataEXT* data, void*) {
  ++validation_messages;
  std::fprintf(stderr, "validation: %s\n", data->pMessage);
  return VK_FALSE;
}

// The layouts of the model buffer (parameters, then gradients in the same order) and of the
// activations buffer, in floats. Each tensor starts 256-byte aligned.
struct ModelLayout {
  static uint32_t align(uint32_t floats) { return (floats + 63u) / 64u * 64u; }
  uint32_t w1 = 0, b1 = 0, w2 = 0, b2 = 0, params = 0;  // params: floats of the parameter half
  ModelLayout() {
    b1 = align(w1 + kHidden * kInputs);
    w2 = align(b1 + kHidden);
    b2 = align(w2 + kClasses * kHidden);
    params = align(b2 + kClasses);
  }
  uint32_t grad(uint32_t param_offset) const { return params + param_offset; }
};

struct ActsLayout {
  uint32_t x, labels, hidden, logits, dlogits, dhidden, row_loss, row_correct, ones, total;
  explicit ActsLayout(uint32_t rows) {
    uint32_t at = 0;
    auto take = [&](uint32_t floats) {
      const uint32_t start = at;
      at = ModelLayout::align(at + floats);
      return start;
    };
    x = take(rows * kInputs);
    labels = take(rows);
    hidden = take(rows * kHidden);
    logits = take(rows * kClasses);
    dlogits = take(rows * kClasses);
    dhidden = take(rows * kHidden);
    row_loss = take(rows);
    row_correct = take(rows);
    ones = take(rows);
    total = at;
  }
};

struct GemmPush {
  uint32_t m, n, k;
  uint32_t a_off, a_si, a_sk;
  uint32_t b_off, b_sk, b_sj;
  uint32_t c_off, ldc;
  uint32_t bias_off, mask_off, flags;
};
enum GemmFlags : uint32_t { kModelA = 1, kModelB = 2, kModelC = 4, kRelu = 8, kBias = 16, kMask = 32 };

struct GatherPush {
  uint32_t rows, image_words, images_offset, labels_offset, x_offset, labels_out;
  float mean, inv_std;
};
struct XentPush {
  uint32_t rows, classes, logits, labels, dlogits, row_loss, row_correct;
};
struct StatsPush {
  uint32_t row_loss, row_correct;
};

class Engine {
 public:
  explicit Engine(bool validate) {
    try {
      create_device(validate);
      create_pipelines();
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~Engine() { destroy(); }

 private:
  // Waits for the queue, then destroys what exists (handles not made yet are null).
  void destroy() {
    if (device_) {
      vkDeviceWaitIdle(device_);
      for (auto& b : buffers_) {
        vkDestroyBuffer(device_, b.buffer, nullptr);
        vkFreeMemory(device_, b.memory, nullptr);
      }
      for (auto p : pipelines_) vkDestroyPipeline(device_, p, nullptr);
      vkDestroyPipelineLayout(device_, pipeline_layout_, nullptr);
      vkDestroyDescriptorPool(device_, descriptor_pool_, nullptr);
      vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
      vkDestroyFence(device_, fence_, nullptr);
      vkDestroyCommandPool(device_, pool_, nullptr);
      vkDestroyDevice(device_, nullptr);
      device_ = VK_NULL_HANDLE;
    }
    if (messenger_) {
      auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
      destroy(instance_, messenger_, nullptr);
      messenger_ = VK_NULL_HANDLE;
    }
    if (instance_) vkDestroyInstance(instance_, nullptr);
    instance_ = VK_NULL_HANDLE;
  }

 public:
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  vkoptim::DeviceBinding binding() const {
    vkoptim::DeviceBinding b;
    b.instance = instance_;
    b.physical_device = physical_;
    b.device = device_;
    b.queue = queue_;
    b.queue_family_index = family_;
    b.api_version = VK_API_VERSION_1_2;
    b.shader_int64_enabled = int64_;
    return b;
  }
  std::string device_name() const { return device_name_; }

  // A buffer in device-local memory (reached through staging), or host-visible and mapped: for
  // the host to write (upload) or to read (readback: cached memory where there is some).
  enum class Memory { device, upload, readback };
  Buffer& create_buffer(VkDeviceSize size, Memory kind) {
    Buffer b;
    b.size = size;
    VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bci.size = size;
    bci.usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    VK_CHECK(vkCreateBuffer(device_, &bci, nullptr, &b.buffer));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, b.buffer, &req);
    constexpr VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    const bool host_visible = kind != Memory::device;
    VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mai.allocationSize = req.size;
    mai.memoryTypeIndex =
        kind == Memory::device   ? memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0)
        : kind == Memory::upload ? memory_type(req.memoryTypeBits, host, 0)
                                 : memory_type(req.memoryTypeBits, host, VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    VK_CHECK(vkAllocateMemory(device_, &mai, nullptr, &b.memory));
    VK_CHECK(vkBindBufferMemory(device_, b.buffer, b.memory, 0));
    if (host_visible) VK_CHECK(vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped));
    buffers_.push_back(b);
    return buffers_.back();
  }

  // Copies host bytes into (or out of) a buffer through a staging buffer, waiting.
  void upload(const Buffer& dst, VkDeviceSize offset, const void* bytes, VkDeviceSize size) {
    Buffer staging = make_staging(size, Memory::upload);
    std::memcpy(staging.mapped, bytes, size);
    submit_once([&](VkCommandBuffer cmd) {
      const VkBufferCopy region{0, offset, size};
      vkCmdCopyBuffer(cmd, staging.buffer, dst.buffer, 1, &region);
    });
    destroy_staging(staging);
  }
  void download(const Buffer& src, VkDeviceSize offset, void* bytes, VkDeviceSize size) {
    Buffer staging = make_staging(size, Memory::readback);
    submit_once([&](VkCommandBuffer cmd) {
      const VkBufferCopy region{offset, 0, size};
      vkCmdCopyBuffer(cmd, src.buffer, staging.buffer, 1, &region);
      barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
              VK_ACCESS_HOST_READ_BIT);
    });
    std::memcpy(bytes, staging.mapped, size);
    destroy_staging(staging);
  }

  // Binds the five buffers the shaders see (common.glsl) to the one descriptor set.
  void bind(const Buffer& model, const Buffer& acts, const Buffer& data, const Buffer& batch, const Buffer& stats) {
    const Buffer* all[] = {&model, &acts, &data, &batch, &stats};
    VkDescriptorBufferInfo infos[5];
    VkWriteDescriptorSet writes[5];
    for (uint32_t i = 0; i < 5; ++i) {
      // Each buffer is bound whole: it must fit one storage descriptor (the spec's least is 128 MiB).
      if (all[i]->size > max_storage_range_)
        throw std::runtime_error("buffer " + std::to_string(i) + " (" + std::to_string(all[i]->size) +
                                 " bytes) is larger than this device's maxStorageBufferRange (use --train-limit)");
      infos[i] = {all[i]->buffer, 0, VK_WHOLE_SIZE};
      writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
      writes[i].dstSet = set_;
      writes[i].dstBinding = i;
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
    vkUpdateDescriptorSets(device_, 5, writes, 0, nullptr);
  }

  VkCommandBuffer allocate_command_buffer() {
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool_;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer cmd;
    VK_CHECK(vkAllocateCommandBuffers(device_, &cai, &cmd));
    return cmd;
  }
  void begin(VkCommandBuffer cmd) {
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    VK_CHECK(vkBeginCommandBuffer(cmd, &bi));
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline_layout_, 0, 1, &set_, 0, nullptr);
  }
  void submit_and_wait(VkCommandBuffer cmd) {
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    VK_CHECK(vkQueueSubmit(queue_, 1, &si, fence_));
    VK_CHECK(vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX));
    VK_CHECK(vkResetFences(device_, 1, &fence_));
  }

  // The engine's passes.
  void gemm(VkCommandBuffer cmd, const GemmPush& push) {
    dispatch(cmd, kGemm, &push, sizeof push, (push.n + 63) / 64, (push.m + 63) / 64);
  }
  void gather(VkCommandBuffer cmd, const GatherPush& push) {
    dispatch(cmd, kGather, &push, sizeof push, (push.rows * push.image_words + 63) / 64, 1);
  }
  void xent(VkCommandBuffer cmd, const XentPush& push) {
    dispatch(cmd, kXent, &push, sizeof push, (push.rows + 63) / 64, 1);
  }
  void stats(VkCommandBuffer cmd, const StatsPush& push) { dispatch(cmd, kStats, &push, sizeof push, 1, 1); }

  static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src_stage = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                      VkAccessFlags src_access = VK_ACCESS_SHADER_WRITE_BIT,
                      VkPipelineStageFlags dst_stage = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                      VkAccessFlags dst_access = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT) {
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = src_access;
    mb.dstAccessMask = dst_access;
    vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
  }

 private:
  enum Pipeline { kGemm, kGather, kXent, kStats };

  void create_device(bool validate) {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "vkoptim-engine";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ici.pApplicationInfo = &app;
    const char* layer = "VK_LAYER_KHRONOS_validation";
    const char* debug_ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    // Synchronization validation too: a missing barrier between the engine's passes and
    // vkoptim's is reported like any other error.
    const VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
    features.enabledValidationFeatureCount = 1;
    features.pEnabledValidationFeatures = &sync;
    VkDebugUtilsMessengerCreateInfoEXT dci{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    dci.messageSeverity =
        VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    dci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    dci.pfnUserCallback = on_validation;
    if (validate) {
      ici.enabledLayerCount = 1;
      ici.ppEnabledLayerNames = &layer;
      ici.enabledExtensionCount = 1;
      ici.ppEnabledExtensionNames = &debug_ext;
      features.pNext = &dci;
      ici.pNext = &features;
    }
    VK_CHECK(vkCreateInstance(&ici, nullptr, &instance_));
    if (validate) {
      auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkCreateDebugUtilsMessengerEXT"));
      VK_CHECK(create(instance_, &dci, nullptr, &messenger_));
    }

    // A discrete GPU, else an integrated one, else anything (lavapipe on a machine without GPU).
    uint32_t count = 0;
    vkEnumeratePhysicalDevices(instance_, &count, nullptr);
    std::vector<VkPhysicalDevice> devices(count);
    vkEnumeratePhysicalDevices(instance_, &count, devices.data());
    std::erase_if(devices, [](VkPhysicalDevice d) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(d, &p);
      return p.apiVersion < VK_API_VERSION_1_2;
    });
    if (devices.empty()) throw std::runtime_error("no Vulkan 1.2 device (install mesa-vulkan-drivers for lavapipe)");
    auto rank = [](VkPhysicalDevice d) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(d, &p);
      return p.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU     ? 0
             : p.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? 1
                                                                      : 2;
    };
    physical_ = *std::min_element(devices.begin(), devices.end(),
                                  [&](VkPhysicalDevice a, VkPhysicalDevice b) { return rank(a) < rank(b); });
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(physical_, &props);
    device_name_ = props.deviceName;

    uint32_t families = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &families, nullptr);
    std::vector<VkQueueFamilyProperties> fam(families);
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &families, fam.data());
    family_ = UINT32_MAX;
    for (uint32_t i = 0; i < families && family_ == UINT32_MAX; ++i)
      if (fam[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family_ = i;
    if (family_ == UINT32_MAX) throw std::runtime_error("no compute queue");

    VkPhysicalDeviceFeatures supported;
    vkGetPhysicalDeviceFeatures(physical_, &supported);
    VkPhysicalDeviceFeatures enable{};
    int64_ = supported.shaderInt64;  // lets vkoptim move 8 floats per access
    enable.shaderInt64 = supported.shaderInt64;
    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qci.queueFamilyIndex = family_;
    qci.queueCount = 1;
    qci.pQueuePriorities = &priority;
    VkDeviceCreateInfo dci2{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    dci2.queueCreateInfoCount = 1;
    dci2.pQueueCreateInfos = &qci;
    dci2.pEnabledFeatures = &enable;
    VK_CHECK(vkCreateDevice(physical_, &dci2, nullptr, &device_));
    vkGetDeviceQueue(device_, family_, 0, &queue_);
    vkGetPhysicalDeviceMemoryProperties(physical_, &memory_properties_);

    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pci.queueFamilyIndex = family_;
    VK_CHECK(vkCreateCommandPool(device_, &pci, nullptr, &pool_));
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK_CHECK(vkCreateFence(device_, &fci, nullptr, &fence_));
    max_storage_range_ = props.limits.maxStorageBufferRange;
  }

  void create_pipelines() {
    VkDescriptorSetLayoutBinding bindings[5];
    for (uint32_t i = 0; i < 5; ++i)
      bindings[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo lci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    lci.bindingCount = 5;
    lci.pBindings = bindings;
    VK_CHECK(vkCreateDescriptorSetLayout(device_, &lci, nullptr, &set_layout_));
    const VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(GemmPush)};
    VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &set_layout_;
    plci.pushConstantRangeCount = 1;
    plci.pPushConstantRanges = &range;
    VK_CHECK(vkCreatePipelineLayout(device_, &plci, nullptr, &pipeline_layout_));
    const VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 5};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = 1;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &size;
    VK_CHECK(vkCreateDescriptorPool(device_, &dpci, nullptr, &descriptor_pool_));
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = descriptor_pool_;
    dsai.descriptorSetCount = 1;
    dsai.pSetLayouts = &set_layout_;
    VK_CHECK(vkAllocateDescriptorSets(device_, &dsai, &set_));

    const std::pair<const uint32_t*, size_t> code[] = {{gemm_spv, sizeof gemm_spv},
                                                       {gather_spv, sizeof gather_spv},
                                                       {xent_spv, sizeof xent_spv},
                                                       {stats_spv, sizeof stats_spv}};
    for (const auto& [words, bytes] : code) {
      VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
      smci.codeSize = bytes;
      smci.pCode = words;
      VkShaderModule module;
      VK_CHECK(vkCreateShaderModule(device_, &smci, nullptr, &module));
      VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
      cpci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
      cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
      cpci.stage.module = module;
      cpci.stage.pName = "main";
      cpci.layout = pipeline_layout_;
      VkPipeline pipeline;
      const VkResult result = vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &cpci, nullptr, &pipeline);
      vkDestroyShaderModule(device_, module, nullptr);
      VK_CHECK(result);
      pipelines_.push_back(pipeline);
    }
  }

  void dispatch(VkCommandBuffer cmd, Pipeline p, const void* push, uint32_t bytes, uint32_t x, uint32_t y) {
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipelines_[p]);
    vkCmdPushConstants(cmd, pipeline_layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, bytes, push);
    vkCmdDispatch(cmd, x, y, 1);
  }

  // The first memory type with `need`, preferring one that also has `prefer`.
  uint32_t memory_type(uint32_t allowed, VkMemoryPropertyFlags need, VkMemoryPropertyFlags prefer) const {
    for (const VkMemoryPropertyFlags want : {need | prefer, need})
      for (uint32_t i = 0; i < memory_properties_.memoryTypeCount; ++i)
        if ((allowed & (1u << i)) && (memory_properties_.memoryTypes[i].propertyFlags & want) == want) return i;
    throw std::runtime_error("no memory type with the properties needed");
  }

  Buffer make_staging(VkDeviceSize size, Memory kind) {
    Buffer& b = create_buffer(size, kind);
    Buffer copy = b;
    buffers_.pop_back();  // owned by the caller until destroy_staging
    return copy;
  }
  void destroy_staging(Buffer& b) {
    vkDestroyBuffer(device_, b.buffer, nullptr);
    vkFreeMemory(device_, b.memory, nullptr);
  }

  template <class Record>
  void submit_once(Record&& record) {
    VkCommandBuffer cmd = allocate_command_buffer();
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_CHECK(vkBeginCommandBuffer(cmd, &bi));
    // Earlier shader work on the same buffers finishes before the copy.
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
    record(cmd);
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    VK_CHECK(vkEndCommandBuffer(cmd));
    submit_and_wait(cmd);
    vkFreeCommandBuffers(device_, pool_, 1, &cmd);
  }

  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t family_ = 0;
  bool int64_ = false;
  std::string device_name_;
  VkPhysicalDeviceMemoryProperties memory_properties_{};
  VkDeviceSize max_storage_range_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout pipeline_layout_ = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool_ = VK_NULL_HANDLE;
  VkDescriptorSet set_ = VK_NULL_HANDLE;
  std::vector<VkPipeline> pipelines_;
  std::deque<Buffer> buffers_;  // a deque: references handed out stay valid
};

// ---- the rules the sample knows, with the settings it trains them with ----

struct RuleChoice {
  vkoptim::RuleOptions options;
  vkoptim::PrecisionOptions precision;
  const char* description;
};

RuleChoice rule_choice(const std::string& name, double lr) {
  RuleChoice c;
  if (name == "adamw" || name == "adam" || name == "adam8bit") {
    vkoptim::AdamOptions o = name == "adamw" ? vkoptim::adamw_options() : vkoptim::AdamOptions{};
    o.lr = lr ? lr : 1e-3;
    c.options = o;
    if (name == "adam8bit") c.precision.state = vkoptim::StateDType::q8;
    c.description = name == "adamw"  ? "AdamW (betas 0.9, 0.999, weight decay 0.01)"
                    : name == "adam" ? "Adam (betas 0.9, 0.999)"
                                     : "Adam with 8-bit blockwise state";
  } else if (name == "sgd") {
    vkoptim::SgdOptions o;
    o.lr = lr ? lr : 0.05;
    o.momentum = 0.9;
    c.options = o;
    c.description = "SGD with momentum 0.9";
  } else if (name == "lion") {
    vkoptim::LionOptions o;
    o.lr = lr ? lr : 3e-4;  // the paper: 3-10x below AdamW's lr, weight decay as much above
    o.weight_decay = 0.03;
    c.options = o;
    c.description = "Lion (betas 0.9, 0.99, weight decay 0.03)";
  } else if (name == "sfadamw") {
    vkoptim::ScheduleFreeAdamwOptions o;
    o.lr = lr ? lr : 2.5e-3;
    o.warmup_steps = 100;
    c.options = o;
    c.description = "Schedule-Free AdamW (100 warmup steps; evaluated at x)";
  } else {
    throw std::runtime_error("unknown rule '" + name + "' (adamw, adam, sgd, lion, adam8bit, sfadamw)");
  }
  return c;
}

double rule_lr(const vkoptim::RuleOptions& options) {
  return std::visit([](const auto& o) { return o.lr; }, options);
}

// The options a run used, for run.json (torch_check.py builds torch's optimizer from them).
nlohmann::json options_json(const RuleChoice& c) {
  nlohmann::json j = std::visit(
      [](const auto& o) -> nlohmann::json {
        using O = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<O, vkoptim::AdamOptions>)
          return {{"betas", {o.beta1, o.beta2}},
                  {"eps", o.eps},
                  {"weight_decay", o.weight_decay},
                  {"decoupled_weight_decay", o.decoupled_weight_decay},
                  {"amsgrad", o.amsgrad}};
        else if constexpr (std::is_same_v<O, vkoptim::SgdOptions>)
          return {{"momentum", o.momentum},
                  {"dampening", o.dampening},
                  {"nesterov", o.nesterov},
                  {"weight_decay", o.weight_decay}};
        else if constexpr (std::is_same_v<O, vkoptim::LionOptions>)
          return {{"betas", {o.beta1, o.beta2}}, {"weight_decay", o.weight_decay}};
        else if constexpr (std::is_same_v<O, vkoptim::ScheduleFreeAdamwOptions>)
          return {{"betas", {o.beta1, o.beta2}},
                  {"eps", o.eps},
                  {"weight_decay", o.weight_decay},
                  {"warmup_steps", o.warmup_steps}};
        else
          return nlohmann::json::object();
      },
      c.options);
  j["lr"] = rule_lr(c.options);
  j["state"] = c.precision.state == vkoptim::StateDType::q8 ? "q8" : "f32";
  return j;
}

// ---- training ----

Settings parse(int argc, char** argv) {
  Settings s;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::runtime_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rule")
      s.rule = value(i);
    else if (a == "--epochs")
      s.epochs = std::stoul(value(i));
    else if (a == "--batch")
      s.batch = std::stoul(value(i));
    else if (a == "--lr")
      s.lr = std::stod(value(i));
    else if (a == "--seed")
      s.seed = std::stoul(value(i));
    else if (a == "--train-limit")
      s.train_limit = std::stoul(value(i));
    else if (a == "--test-limit")
      s.test_limit = std::stoul(value(i));
    else if (a == "--json")
      s.json_path = value(i);
    else if (a == "--export")
      s.export_dir = value(i);
    else if (a == "--data")
      s.data_dir = value(i);
    else if (a == "--validate")
      s.validate = true;
    else if (a == "--constant-lr")
      s.cosine = false;
    else
      throw std::runtime_error("unknown argument " + a + " (see the comment at the top of samples/engine/engine.cpp)");
  }
  if (s.epochs == 0 || s.batch == 0 || s.batch > 4096)
    throw std::runtime_error("--epochs and --batch (1..4096) must be positive");
  return s;
}

// torch.nn.Linear's default initialisation: weights and biases uniform in +-1/sqrt(fan_in).
std::vector<float> initial_parameters(const ModelLayout& m, uint32_t seed) {
  std::vector<float> p(m.params, 0.0f);
  std::mt19937 rng(seed);
  auto fill = [&](uint32_t at, uint32_t count, uint32_t fan_in) {
    std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(fan_in)), 1.0f / std::sqrt(float(fan_in)));
    for (uint32_t i = 0; i < count; ++i) p[at + i] = u(rng);
  };
  fill(m.w1, kHidden * kInputs, kInputs);
  fill(m.b1, kHidden, kInputs);
  fill(m.w2, kClasses * kHidden, kHidden);
  fill(m.b2, kClasses, kHidden);
  return p;
}

int run(const Settings& s) {
  const auto t_load = std::chrono::steady_clock::now();
  const DataSet train = load_set(s.data_dir, "train", s.train_limit);
  const DataSet test = load_set(s.data_dir, "t10k", s.test_limit);
  if (train.count < s.batch) throw std::runtime_error("--batch is larger than the training set");

  Engine engine(s.validate);
  const ModelLayout model_layout;
  const uint32_t rows = std::max(s.batch, kEvalBatch);
  const ActsLayout acts_layout(rows);

  // Data: train images | test images | train labels | test labels, as words of 4 bytes, the first
  // byte lowest (the shaders unpack them so: a little-endian host, as every Vulkan host is).
  const uint32_t image_words = kInputs / 4;
  const uint32_t train_images = 0, test_images = train.count * image_words;
  const uint32_t train_labels = test_images + test.count * image_words;
  const uint32_t test_labels = train_labels + (train.count + 3) / 4;
  const uint32_t data_words = test_labels + (test.count + 3) / 4;

  Buffer& model = engine.create_buffer(VkDeviceSize(model_layout.params) * 2 * 4, Engine::Memory::device);
  Buffer& acts = engine.create_buffer(VkDeviceSize(acts_layout.total) * 4, Engine::Memory::device);
  Buffer& data = engine.create_buffer(VkDeviceSize(data_words) * 4, Engine::Memory::device);
  Buffer& batch = engine.create_buffer(VkDeviceSize(rows + 1) * 4, Engine::Memory::upload);
  Buffer& stats = engine.create_buffer(16, Engine::Memory::readback);
  engine.bind(model, acts, data, batch, stats);

  {
    std::vector<uint8_t> bytes(size_t(data_words) * 4, 0);
    std::memcpy(bytes.data() + size_t(train_images) * 4, train.images.data(), train.images.size());
    std::memcpy(bytes.data() + size_t(test_images) * 4, test.images.data(), test.images.size());
    std::memcpy(bytes.data() + size_t(train_labels) * 4, train.labels.data(), train.labels.size());
    std::memcpy(bytes.data() + size_t(test_labels) * 4, test.labels.data(), test.labels.size());
    engine.upload(data, 0, bytes.data(), bytes.size());
    std::vector<float> a(acts_layout.total, 0.0f);
    std::fill(a.begin() + acts_layout.ones, a.begin() + acts_layout.ones + rows, 1.0f);
    engine.upload(acts, 0, a.data(), a.size() * 4);
  }
  const std::vector<float> init = initial_parameters(model_layout, s.seed);
  engine.upload(model, 0, init.data(), init.size() * 4);

  // vkoptim on the engine's device, over the engine's buffer.
  vkoptim::Context ctx = vkoptim::Context::adopt(engine.binding());
  const RuleChoice choice = rule_choice(s.rule, s.lr);
  auto range = [&](uint32_t offset, uint32_t count) {
    vkoptim::BufferRange r;
    r.buffer = model.buffer;
    r.offset = VkDeviceSize(offset) * 4;
    r.count = count;
    r.buffer_size = model.size;
    return r;
  };
  struct Named {
    const char* name;
    uint32_t offset, count, rows;
  };
  const Named tensors[] = {{"fc1.weight", model_layout.w1, kHidden * kInputs, kHidden},
                           {"fc1.bias", model_layout.b1, kHidden, 0},
                           {"fc2.weight", model_layout.w2, kClasses * kHidden, kClasses},
                           {"fc2.bias", model_layout.b2, kClasses, 0}};
  const uint32_t steps_per_epoch = train.count / s.batch;  // the last partial batch is dropped
  const bool schedule_free = std::holds_alternative<vkoptim::ScheduleFreeAdamwOptions>(choice.options);
  const bool cosine = s.cosine && !schedule_free;
  vkoptim::ParamGroup group;
  group.options = choice.options;
  group.precision = choice.precision;
  if (cosine) group.schedule = vkoptim::make_schedule(vkoptim::CosineAnnealingLR{steps_per_epoch * s.epochs, 0.0});
  for (const Named& t : tensors)
    group.tensors.push_back({range(t.offset, t.count), range(model_layout.grad(t.offset), t.count), t.name, t.rows});
  vkoptim::Optimizer opt(ctx, {group});
  opt.initialize();  // record() on an adopted device never submits: state is made now
  // On an error path, no submission may still use the optimizer when it is destroyed.
  struct WaitIdleOnExit {
    VkDevice device;
    ~WaitIdleOnExit() { vkDeviceWaitIdle(device); }
  } wait_idle{engine.binding().device};

  uint32_t* batch_slots = static_cast<uint32_t*>(batch.mapped);
  const float* stat_values = static_cast<const float*>(stats.mapped);

  // A forward pass over `batch_rows` rows (the first batch[0] of them in use) of the image set
  // at word `images` and the label set at word `labels` of the data buffer: logits, the loss, its
  // gradient with respect to the logits, and the batch's loss sum and correct count in `stats`.
  auto record_forward = [&](VkCommandBuffer cmd, uint32_t batch_rows, uint32_t images, uint32_t labels) {
    const ActsLayout& a = acts_layout;
    engine.gather(cmd, {batch_rows, image_words, images, labels, a.x, a.labels, kPixelMean, 1.0f / kPixelStd});
    Engine::barrier(cmd);
    // hidden = relu(x W1^T + b1)
    engine.gemm(cmd, {batch_rows, kHidden, kInputs, a.x, kInputs, 1, model_layout.w1, 1, kInputs, a.hidden, kHidden,
                      model_layout.b1, 0, kModelB | kBias | kRelu});
    Engine::barrier(cmd);
    // logits = hidden W2^T + b2
    engine.gemm(cmd, {batch_rows, kClasses, kHidden, a.hidden, kHidden, 1, model_layout.w2, 1, kHidden, a.logits,
                      kClasses, model_layout.b2, 0, kModelB | kBias});
    Engine::barrier(cmd);
    engine.xent(cmd, {batch_rows, kClasses, a.logits, a.labels, a.dlogits, a.row_loss, a.row_correct});
    Engine::barrier(cmd);
    engine.stats(cmd, {a.row_loss, a.row_correct});
    Engine::barrier(cmd);
  };

  // The training step, recorded once: forward, backward into the gradient half of the model
  // buffer, then vkoptim's step, replayed (the device counts steps and computes the scalars).
  VkCommandBuffer train_cmd = engine.allocate_command_buffer();
  engine.begin(train_cmd);
  record_forward(train_cmd, s.batch, train_images, train_labels);
  {
    // A barrier after every pass: the shaders bind whole buffers, so passes that touch
    // different parts of one buffer still look like a hazard to synchronization validation.
    const ActsLayout& a = acts_layout;
    const uint32_t b = s.batch;
    // dW2 = dlogits^T hidden ; db2 = dlogits^T 1 ; dhidden = (dlogits W2) * [hidden > 0]
    engine.gemm(train_cmd, {kClasses, kHidden, b, a.dlogits, 1, kClasses, a.hidden, kHidden, 1,
                            model_layout.grad(model_layout.w2), kHidden, 0, 0, kModelC});
    Engine::barrier(train_cmd);
    engine.gemm(train_cmd, {kClasses, 1, b, a.dlogits, 1, kClasses, a.ones, 1, 0, model_layout.grad(model_layout.b2), 1,
                            0, 0, kModelC});
    Engine::barrier(train_cmd);
    engine.gemm(train_cmd, {b, kHidden, kClasses, a.dlogits, kClasses, 1, model_layout.w2, kHidden, 1, a.dhidden,
                            kHidden, 0, a.hidden, kModelB | kMask});
    Engine::barrier(train_cmd);
    // dW1 = dhidden^T x ; db1 = dhidden^T 1
    engine.gemm(train_cmd, {kHidden, kInputs, b, a.dhidden, 1, kHidden, a.x, kInputs, 1,
                            model_layout.grad(model_layout.w1), kInputs, 0, 0, kModelC});
    Engine::barrier(train_cmd);
    engine.gemm(train_cmd, {kHidden, 1, b, a.dhidden, 1, kHidden, a.ones, 1, 0, model_layout.grad(model_layout.b1), 1,
                            0, 0, kModelC});
  }
  vkoptim::RecordOptions record;
  record.replay = true;
  opt.record(train_cmd, record);  // its entry barrier orders it after the gradients' writes
  // The host reads `stats` once the fence signals: make the forward pass's writes visible to it.
  Engine::barrier(train_cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  VK_CHECK(vkEndCommandBuffer(train_cmd));

  VkCommandBuffer eval_cmd = engine.allocate_command_buffer();
  engine.begin(eval_cmd);
  record_forward(eval_cmd, kEvalBatch, test_images, test_labels);
  Engine::barrier(eval_cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  VK_CHECK(vkEndCommandBuffer(eval_cmd));

  // Schedule-Free AdamW's parameters hold y, where gradients are taken; it is evaluated at x.
  const bool eval_at_x = schedule_free;
  auto evaluate = [&](double& loss, double& accuracy) {
    std::vector<float> y;
    if (eval_at_x) {
      y.resize(model_layout.params);
      engine.download(model, 0, y.data(), y.size() * 4);
      for (size_t i = 0; i < std::size(tensors); ++i) {
        const auto x = opt.read_state(i, "x");
        engine.upload(model, VkDeviceSize(tensors[i].offset) * 4, x.data(), x.size() * 4);
      }
    }
    double loss_sum = 0, correct = 0;
    for (uint32_t first = 0; first < test.count; first += kEvalBatch) {
      const uint32_t n = std::min(kEvalBatch, test.count - first);
      batch_slots[0] = n;
      for (uint32_t r = 0; r < n; ++r) batch_slots[1 + r] = first + r;
      engine.submit_and_wait(eval_cmd);
      loss_sum += stat_values[0];
      correct += stat_values[1];
    }
    if (eval_at_x) engine.upload(model, 0, y.data(), y.size() * 4);
    loss = loss_sum / test.count;
    accuracy = correct / test.count;
  };

  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::printf("device: %s\n", engine.device_name().c_str());
  std::printf("rule: %s, lr %g%s, batch %u, %u training and %u test images (set-up %.1f s)\n", choice.description,
              rule_lr(choice.options), cosine ? " (cosine to 0)" : "", s.batch, train.count, test.count, load_seconds);

  nlohmann::json curves = nlohmann::json::array(), epochs = nlohmann::json::array();
  std::vector<uint32_t> order;  // every step's sample indices, for --export
  std::mt19937 shuffle_rng(s.seed + 1);
  std::vector<uint32_t> perm(train.count);
  double interval_loss = 0;
  uint32_t interval_steps = 0, step = 0;
  double final_accuracy = 0;
  for (uint32_t epoch = 1; epoch <= s.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < train.count; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), shuffle_rng);
    double epoch_loss = 0;
    for (uint32_t b = 0; b < steps_per_epoch; ++b) {
      batch_slots[0] = s.batch;
      std::memcpy(batch_slots + 1, perm.data() + size_t(b) * s.batch, size_t(s.batch) * 4);
      if (!s.export_dir.empty())
        order.insert(order.end(), perm.begin() + size_t(b) * s.batch, perm.begin() + size_t(b + 1) * s.batch);
      engine.submit_and_wait(train_cmd);
      const double loss = stat_values[0] / s.batch;
      epoch_loss += loss;
      interval_loss += loss;
      ++step;
      if (++interval_steps == kLogEvery) {
        curves.push_back(
            {{"step", step}, {"epoch", double(step) / steps_per_epoch}, {"train_loss", interval_loss / kLogEvery}});
        interval_loss = 0;
        interval_steps = 0;
      }
    }
    const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double test_loss = 0, accuracy = 0;
    evaluate(test_loss, accuracy);
    final_accuracy = accuracy;
    std::printf("epoch %u  train loss %.4f  test loss %.4f  test accuracy %.2f %%  %.1f s (%.2f ms/step)\n", epoch,
                epoch_loss / steps_per_epoch, test_loss, 100 * accuracy, train_seconds,
                1e3 * train_seconds / steps_per_epoch);
    std::fflush(stdout);
    epochs.push_back({{"epoch", epoch},
                      {"train_loss", epoch_loss / steps_per_epoch},
                      {"test_loss", test_loss},
                      {"test_accuracy", accuracy},
                      {"seconds", train_seconds}});
  }
  if (opt.step_count(0) != step) throw std::runtime_error("vkoptim counted a different number of steps");

  nlohmann::json out = {{"rule", s.rule},
                        {"description", choice.description},
                        {"lr", rule_lr(choice.options)},
                        {"options", options_json(choice)},
                        {"data_dir", s.data_dir},
                        {"cosine", cosine},
                        {"batch", s.batch},
                        {"epochs", s.epochs},
                        {"seed", s.seed},
                        {"train_images", train.count},
                        {"test_images", test.count},
                        {"pixel_mean", kPixelMean},
                        {"pixel_std", kPixelStd},
                        {"log_every", kLogEvery},
                        {"device", engine.device_name()},
                        {"curve", curves},
                        {"per_epoch", epochs}};
  auto write = [](const std::string& path, const void* bytes, size_t size) {
    std::ofstream f(path, std::ios::binary);
    f.write(static_cast<const char*>(bytes), std::streamsize(size));
    if (!f) throw std::runtime_error("cannot write " + path);
  };
  if (!s.json_path.empty()) {
    const std::string text = out.dump(1);
    write(s.json_path, text.data(), text.size());
  }
  if (!s.export_dir.empty()) {
    std::filesystem::create_directories(s.export_dir);
    std::vector<float> torch_order;  // W1, b1, W2, b2 packed, as torch's parameters() lists them
    for (const Named& t : tensors)
      torch_order.insert(torch_order.end(), init.begin() + t.offset, init.begin() + t.offset + t.count);
    write(s.export_dir + "/init.bin", torch_order.data(), torch_order.size() * 4);
    std::vector<float> now(model_layout.params), final_params;
    engine.download(model, 0, now.data(), now.size() * 4);
    for (const Named& t : tensors)
      final_params.insert(final_params.end(), now.begin() + t.offset, now.begin() + t.offset + t.count);
    write(s.export_dir + "/final.bin", final_params.data(), final_params.size() * 4);
    write(s.export_dir + "/order.bin", order.data(), order.size() * 4);
    const std::string text = out.dump(1);
    write(s.export_dir + "/run.json", text.data(), text.size());
  }
  std::printf("final test accuracy %.2f %% after %u steps\n", 100 * final_accuracy, step);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Settings s = parse(argc, argv);
    const int code = run(s);
    if (s.validate && validation_messages) {
      std::fprintf(stderr, "%u validation messages\n", validation_messages);
      return 1;
    }
    return code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkoptim-engine: %s\n", e.what());
    return 1;
  }
}
