// vkoptim::Context and vkoptim::Tensor on top of ContextState.
#include <cstring>
#include <limits>
#include <string>

#include "context_state.hpp"
#include "precision.hpp"

namespace vkoptim {
namespace detail {

std::shared_ptr<ContextState> create_context_state(const ContextOptions& options);
std::shared_ptr<ContextState> adopt_context_state(const DeviceBinding& binding, const ContextOptions& options);

const char* vk_result_name(VkResult r) {
  switch (r) {
#define VKO_CASE(x) \
  case x:           \
    return #x;
    VKO_CASE(VK_SUCCESS)
    VKO_CASE(VK_NOT_READY)
    VKO_CASE(VK_TIMEOUT)
    VKO_CASE(VK_INCOMPLETE)
    VKO_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    VKO_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    VKO_CASE(VK_ERROR_INITIALIZATION_FAILED)
    VKO_CASE(VK_ERROR_DEVICE_LOST)
    VKO_CASE(VK_ERROR_MEMORY_MAP_FAILED)
    VKO_CASE(VK_ERROR_LAYER_NOT_PRESENT)
    VKO_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    VKO_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    VKO_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    VKO_CASE(VK_ERROR_TOO_MANY_OBJECTS)
    VKO_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    VKO_CASE(VK_ERROR_FRAGMENTED_POOL)
    VKO_CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
#undef VKO_CASE
    default:
      return "VkResult(unknown)";
  }
}

void check_vk(VkResult result, const char* call) {
  if (result == VK_SUCCESS) return;
  const Status status = (result == VK_ERROR_OUT_OF_DEVICE_MEMORY || result == VK_ERROR_OUT_OF_HOST_MEMORY)
                            ? Status::out_of_memory
                            : Status::vulkan_error;
  throw Error(status,
              std::string(call) + " failed: " + vk_result_name(result) + " (" + std::to_string(int(result)) + ")");
}

void ContextState::initialise_device_objects() {
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.queueFamilyIndex = queue_family;
  check_vk(vkd.vkCreateCommandPool(device, &pci, nullptr, &command_pool), "vkCreateCommandPool");
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = command_pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  check_vk(vkd.vkAllocateCommandBuffers(device, &cai, &command_buffer), "vkAllocateCommandBuffers");
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  check_vk(vkd.vkCreateFence(device, &fci, nullptr, &fence), "vkCreateFence");

  // A saved cache must at least carry a version-one header (VUID-VkPipelineCacheCreateInfo-
  // initialDataSize-00768); one from another device or driver is handed on, which drivers ignore.
  if (!options.pipeline_cache_data.empty()) {
    VkPipelineCacheHeaderVersionOne header{};
    const auto& data = options.pipeline_cache_data;
    if (data.size() >= sizeof header) std::memcpy(&header, data.data(), sizeof header);
    if (data.size() < sizeof header || header.headerSize < sizeof header || header.headerSize > data.size() ||
        header.headerVersion != VK_PIPELINE_CACHE_HEADER_VERSION_ONE)
      throw Error(Status::invalid_argument, "ContextOptions.pipeline_cache_data (" + std::to_string(data.size()) +
                                                " bytes) is not a Vulkan pipeline cache (no version-one header)");
  }
  VkPipelineCacheCreateInfo cache{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  cache.initialDataSize = options.pipeline_cache_data.size();
  cache.pInitialData = options.pipeline_cache_data.empty() ? nullptr : options.pipeline_cache_data.data();
  check_vk(vkd.vkCreatePipelineCache(device, &cache, nullptr, &pipeline_cache), "vkCreatePipelineCache");

  VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes};
  VkPipelineLayoutCreateInfo bda{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  bda.pushConstantRangeCount = 1;
  bda.pPushConstantRanges = &push;
  check_vk(vkd.vkCreatePipelineLayout(device, &bda, nullptr, &bda_layout), "vkCreatePipelineLayout");

  VkDescriptorSetLayoutBinding bindings[5] = {
      {0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr},
      {1, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kMaxOperands, VK_SHADER_STAGE_COMPUTE_BIT, nullptr},
      {2, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr},
      {3, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr},
      {4, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr},
  };
  VkDescriptorSetLayoutCreateInfo dsl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dsl.bindingCount = 5;
  dsl.pBindings = bindings;
  check_vk(vkd.vkCreateDescriptorSetLayout(device, &dsl, nullptr, &descriptor_layout), "vkCreateDescriptorSetLayout");
  VkPipelineLayoutCreateInfo desc = bda;
  desc.setLayoutCount = 1;
  desc.pSetLayouts = &descriptor_layout;
  check_vk(vkd.vkCreatePipelineLayout(device, &desc, nullptr, &descriptor_pipeline_layout), "vkCreatePipelineLayout");
}

ContextState::~ContextState() {
  if (device && vkd.vkQueueWaitIdle) {  // (an adoption refused before the functions were loaded)
    // Only an owned device is waited for: an adopted queue belongs to the host, which waits for
    // its own submissions (vkoptim's own ones were waited for by their fences).
    if (owns_device) vkd.vkDeviceWaitIdle(device);
    for (auto& [key, p] : pipelines) vkd.vkDestroyPipeline(device, p, nullptr);
    if (pipeline_cache) vkd.vkDestroyPipelineCache(device, pipeline_cache, nullptr);
    if (bda_layout) vkd.vkDestroyPipelineLayout(device, bda_layout, nullptr);
    if (descriptor_pipeline_layout) vkd.vkDestroyPipelineLayout(device, descriptor_pipeline_layout, nullptr);
    if (descriptor_layout) vkd.vkDestroyDescriptorSetLayout(device, descriptor_layout, nullptr);
    if (fence) vkd.vkDestroyFence(device, fence, nullptr);
    if (command_pool) vkd.vkDestroyCommandPool(device, command_pool, nullptr);
    if (owns_device) vkd.vkDestroyDevice(device, nullptr);
  }
  if (owns_device && instance) {
    if (messenger) vki.vkDestroyDebugUtilsMessengerEXT(instance, messenger, nullptr);
    vki.vkDestroyInstance(instance, nullptr);
  }
}

VkDescriptorPool ContextState::allocate_descriptor_sets(uint32_t n, std::vector<VkDescriptorSet>& sets) {
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n * kDescriptorsPerSet};
  VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpci.maxSets = n;
  dpci.poolSizeCount = 1;
  dpci.pPoolSizes = &size;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  check_vk(vkd.vkCreateDescriptorPool(device, &dpci, nullptr, &pool), "vkCreateDescriptorPool");
  std::vector<VkDescriptorSetLayout> layouts(n, descriptor_layout);
  VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  dsai.descriptorPool = pool;
  dsai.descriptorSetCount = n;
  dsai.pSetLayouts = layouts.data();
  sets.assign(n, VK_NULL_HANDLE);
  const VkResult r = vkd.vkAllocateDescriptorSets(device, &dsai, sets.data());
  if (r != VK_SUCCESS) vkd.vkDestroyDescriptorPool(device, pool, nullptr);
  check_vk(r, "vkAllocateDescriptorSets");
  count(&ContextStats::descriptor_sets_allocated, n);
  return pool;
}

}  // namespace detail

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::u32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
    case DType::u32:
      return "u32";
  }
  return "unknown";
}

Context::Context(std::shared_ptr<detail::ContextState> state) : state_(std::move(state)) {}

std::shared_ptr<detail::ContextState> detail::context_state(const Context& context) {
  return context.state_;
}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;
Context::~Context() = default;

Context Context::create(const ContextOptions& options) {
  return Context(detail::create_context_state(options));
}
Context Context::adopt(const DeviceBinding& binding, const ContextOptions& options) {
  return Context(detail::adopt_context_state(binding, options));
}

const DeviceCaps& Context::caps() const {
  return state_->caps;
}
ContextStats Context::stats() const {
  std::lock_guard lock(state_->stats_mutex);
  return state_->stats;
}
bool Context::supports_buffer_device_address() const {
  return state_->use_bda;
}
VkInstance Context::instance() const {
  return state_->instance;
}
VkPhysicalDevice Context::physical_device() const {
  return state_->physical_device;
}
VkDevice Context::device() const {
  return state_->device;
}
VkQueue Context::queue() const {
  return state_->queue;
}
uint32_t Context::queue_family_index() const {
  return state_->queue_family;
}
PFN_vkGetDeviceProcAddr Context::device_proc_addr() const {
  return state_->gdpa;
}

std::vector<uint8_t> Context::pipeline_cache_data() const {
  auto& s = *state_;
  std::lock_guard lock(s.pipeline_mutex);
  size_t size = 0;
  detail::check_vk(s.vkd.vkGetPipelineCacheData(s.device, s.pipeline_cache, &size, nullptr), "vkGetPipelineCacheData");
  std::vector<uint8_t> data(size);
  detail::check_vk(s.vkd.vkGetPipelineCacheData(s.device, s.pipeline_cache, &size, data.data()),
                   "vkGetPipelineCacheData");
  data.resize(size);
  return data;
}

Tensor Context::create_tensor(size_t count, DType dtype) {
  if (count == 0) throw Error(Status::invalid_argument, "create_tensor: count is 0");
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16 && dtype != DType::u32)
    throw Error(Status::invalid_argument,
                "create_tensor: dtype = " + std::to_string(uint32_t(dtype)) + " is not a DType");
  // Rounded up to whole 32-bit words (16-bit elements are accessed as words).
  if (count > (std::numeric_limits<VkDeviceSize>::max() - 3) / dtype_size(dtype))
    throw Error(Status::invalid_argument, "create_tensor: count = " + std::to_string(count) + " elements of " +
                                              dtype_name(dtype) + ": the byte count overflows 64 bits");
  const VkDeviceSize limit = state_->largest_heap();
  if (count > limit / dtype_size(dtype))
    throw Error(Status::out_of_memory, "create_tensor: count = " + std::to_string(count) + " elements of " +
                                           dtype_name(dtype) + " exceed the device's largest memory heap (" +
                                           std::to_string(limit) + " bytes)");
  const VkDeviceSize bytes = (VkDeviceSize(count) * dtype_size(dtype) + 3) / 4 * 4;
  auto buffer = state_->create_buffer(bytes, state_->storage_usage(), detail::MemoryUse::device);
  state_->fill_zero(*buffer);
  return Tensor(state_, std::move(buffer), count, dtype);
}

Tensor Context::create_tensor(std::span<const float> values) {
  Tensor t = create_tensor(values.size(), DType::f32);
  t.upload(values);
  return t;
}

Tensor::Tensor(std::shared_ptr<detail::ContextState> context, std::unique_ptr<detail::OwnedBuffer> buffer, size_t count,
               DType dtype)
    : context_(std::move(context)), buffer_(std::move(buffer)), count_(count), dtype_(dtype) {}
Tensor::Tensor(Tensor&&) noexcept = default;
Tensor& Tensor::operator=(Tensor&&) noexcept = default;
Tensor::~Tensor() = default;

BufferRange Tensor::range() const {
  BufferRange r;
  r.buffer = buffer_->buffer;
  r.offset = 0;
  r.count = count_;
  r.dtype = dtype_;
  r.buffer_size = buffer_->size;
  r.device_address = buffer_->address != 0;
  r.owner = context_.get();
  return r;
}
size_t Tensor::count() const {
  return count_;
}
DType Tensor::dtype() const {
  return dtype_;
}

void Tensor::upload(std::span<const float> values) {
  if (dtype_ == DType::u32)
    throw Error(Status::invalid_argument, "Tensor::upload: a u32 tensor holds indices; use upload_indices");
  if (values.size() != count_)
    throw Error(Status::invalid_argument, "Tensor::upload: values has " + std::to_string(values.size()) +
                                              " elements, the tensor " + std::to_string(count_));
  const auto bytes = detail::encode(values, detail::dtype_code(dtype_));
  context_->write_buffer(buffer_->buffer, buffer_.get(), 0, bytes.data(), bytes.size());
}

std::vector<float> Tensor::download() const {
  if (dtype_ == DType::u32)
    throw Error(Status::invalid_argument, "Tensor::download: a u32 tensor holds indices; use download_indices");
  std::vector<uint8_t> bytes(count_ * dtype_size(dtype_));
  context_->read_buffer(buffer_->buffer, buffer_.get(), 0, bytes.data(), bytes.size());
  return detail::decode(bytes.data(), count_, detail::dtype_code(dtype_));
}

void Tensor::upload_indices(std::span<const uint32_t> values) {
  if (dtype_ != DType::u32)
    throw Error(Status::invalid_argument,
                std::string("Tensor::upload_indices: the tensor is ") + dtype_name(dtype_) + ", not u32");
  if (values.size() != count_)
    throw Error(Status::invalid_argument, "Tensor::upload_indices: values has " + std::to_string(values.size()) +
                                              " elements, the tensor " + std::to_string(count_));
  context_->write_buffer(buffer_->buffer, buffer_.get(), 0, values.data(), values.size_bytes());
}

std::vector<uint32_t> Tensor::download_indices() const {
  if (dtype_ != DType::u32)
    throw Error(Status::invalid_argument,
                std::string("Tensor::download_indices: the tensor is ") + dtype_name(dtype_) + ", not u32");
  std::vector<uint32_t> out(count_);
  context_->read_buffer(buffer_->buffer, buffer_.get(), 0, out.data(), out.size() * 4);
  return out;
}

}  // namespace vkoptim
