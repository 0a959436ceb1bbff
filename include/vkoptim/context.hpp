#pragma once
// A Context is vkoptim's view of one VkDevice: its own dispatch table, capability snapshot,
// pipeline cache, command pool and memory. Either it creates the instance and device itself
// (Context::create) or it borrows the host engine's (Context::adopt).
#include <vulkan/vulkan_core.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vkoptim/tensor.hpp"

namespace vkoptim {

class Context;
namespace detail {
struct ContextState;
// The context's internals, for the library's own components (and their tests).
std::shared_ptr<ContextState> context_state(const Context& context);
}  // namespace detail

// What vkoptim uses of a device, read once when the Context is made. Tests narrow it through
// ContextOptions::override_caps to exercise chunking and fallbacks on any device.
struct DeviceCaps {
  std::string device_name;
  VkPhysicalDeviceType device_type = VK_PHYSICAL_DEVICE_TYPE_OTHER;
  uint32_t vendor_id = 0;
  uint32_t api_version = 0;
  VkDeviceSize max_storage_buffer_range = 0;  // bytes one storage descriptor can cover
  VkDeviceSize min_storage_buffer_offset_alignment = 0;
  uint32_t max_compute_workgroup_count[3] = {0, 0, 0};
  uint32_t max_compute_workgroup_size_x = 0;
  uint32_t max_per_stage_storage_buffers = 0;
  uint32_t max_compute_shared_memory = 0;  // bytes of shared memory a workgroup may declare
  uint32_t subgroup_size = 0;
  // Subgroup arithmetic (subgroupMax) in compute shaders, and (Vulkan 1.3 subgroupSizeControl and
  // computeFullSubgroups, enabled) pipelines that require full subgroups of subgroup_size: with
  // both, 8-bit state takes each block's absmax within a subgroup instead of through shared memory
  // and barriers.
  bool subgroup_arithmetic = false;
  bool full_subgroups = false;
  uint32_t max_compute_workgroup_subgroups = 0;  // 0: not reported (before Vulkan 1.3)
  bool buffer_device_address = false;            // usable: supported and (when adopted) enabled by the host
  bool shader_int64 = false;                     // usable: 8-float (u64vec4) accesses instead of 4-float (vec4)
  bool host_visible_device_memory = false;       // device-local memory the host can map
  // storageBuffer16BitAccess. Reported, never required: 16-bit parameters, gradients and state
  // move as packed 32-bit words on every device (wide loads of 8 halves; lone halves at a
  // tensor's edges by 32-bit atomics), which is as fast and needs no 16-bit types.
  bool storage_buffer_16bit = false;
  bool timestamps = false;
  double timestamp_period_ns = 0;
  // Largest single allocation (Vulkan 1.1 maxMemoryAllocationSize) and largest buffer (Vulkan 1.3
  // maxBufferSize; 0: not reported). Larger requests fail with Status::out_of_memory.
  VkDeviceSize max_memory_allocation_size = 0;
  VkDeviceSize max_buffer_size = 0;
  uint32_t workgroup_size = 0;        // chosen for the update shaders (a multiple of subgroup_size)
  uint32_t items_per_invocation = 0;  // wide accesses (8 or 4 floats) each invocation makes per operand
  uint32_t access_width() const { return shader_int64 ? 8 : 4; }  // floats per wide access
};

// How shaders reach parameters, gradients and state.
enum class Addressing : uint32_t {
  // Descriptors when they need no more dispatches than addresses (every group's tensors share
  // one parameter and one gradient buffer), buffer device addresses otherwise. On CPU drivers
  // bounds-checked descriptor access is the faster of the two; on GPUs they are on par.
  automatic = 0,
  device_address = 1,  // always addresses: an optimizer fails if the device or a buffer cannot
  descriptors = 2,     // always descriptors (one dispatch per buffer combination and range)
};

struct ContextOptions {
  // Enable VK_LAYER_KHRONOS_validation with synchronization validation (Context::create only;
  // an adopted device carries whatever its host enabled).
  bool enable_validation = false;
  // Receives every validation message; when empty and validation is on, messages go to stderr.
  std::function<void(std::string_view message)> validation_callback;
  // Device to use, overriding VKOPTIM_DEVICE (index or case-insensitive name substring). -1: auto
  // (discrete GPU, then integrated, then virtual, then CPU drivers such as lavapipe).
  int device_index = -1;
  // Upload and read back through staging buffers even when memory is host-visible.
  bool force_staging = false;
  Addressing addressing = Addressing::automatic;
  // Called with the snapshot before it is used: narrow limits to test chunking and fallbacks.
  std::function<void(DeviceCaps&)> override_caps;
  // A previously saved Context::pipeline_cache_data() to warm the pipeline cache.
  std::vector<uint8_t> pipeline_cache_data;
};

// Borrowed handles of a host engine's device. Everything here must stay valid until the Context
// adopting it (and every Optimizer and Tensor made from it) is destroyed. Vulkan cannot be asked
// which features a device was created with, so the host declares them.
struct DeviceBinding {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice physical_device = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;  // a queue with compute; used only by explicit submitting calls
  uint32_t queue_family_index = 0;
  uint32_t api_version = 0;  // the VkApplicationInfo::apiVersion the instance was made with
  // Informational today: vkoptim needs no device extension (buffer device address and 64-bit
  // integers are Vulkan 1.2 / 1.0 core features, declared below).
  std::vector<std::string> enabled_device_extensions;
  bool buffer_device_address_enabled = false;  // VkPhysicalDeviceVulkan12Features::bufferDeviceAddress
  bool shader_int64_enabled = false;           // VkPhysicalDeviceFeatures::shaderInt64
  // VkPhysicalDeviceVulkan13Features::subgroupSizeControl and computeFullSubgroups, both (lets
  // 8-bit state reduce blocks within subgroups; see DeviceCaps::full_subgroups).
  bool full_subgroups_enabled = false;
  // Optional loaders; defaults are the Vulkan loader's exported functions.
  PFN_vkGetInstanceProcAddr get_instance_proc_addr = nullptr;
  PFN_vkGetDeviceProcAddr get_device_proc_addr = nullptr;
  // The host's lock for `queue` (Vulkan requires queue access to be externally synchronised).
  // vkoptim calls lock_queue(queue_lock_user) before and unlock_queue(queue_lock_user) after each
  // vkQueueSubmit / vkQueueWaitIdle it makes, from whichever thread made the vkoptim call. Give
  // both when the host (or another Context adopting the same queue) may use the queue from
  // another thread at the same time; without them vkoptim locks only its own submissions.
  void (*lock_queue)(void* user) = nullptr;
  void (*unlock_queue)(void* user) = nullptr;
  void* queue_lock_user = nullptr;
};

// Counters that make caching observable: a second step creates no pipeline and allocates nothing.
struct ContextStats {
  uint64_t pipelines_created = 0;
  uint64_t device_allocations = 0;  // vkAllocateMemory calls
  uint64_t buffers_created = 0;
  uint64_t descriptor_sets_allocated = 0;
  uint64_t submissions = 0;  // vkQueueSubmit calls made by vkoptim itself
};

class Optimizer;

// Movable handle.
//
// Threads: a Context's internals (pipeline registry, command pool, counters, queue access) are
// locked, so the Optimizers and Tensors of one Context may be used from different threads at the
// same time, each object by one thread at a time (an Optimizer is not itself locked). The Context
// handle itself (moving, destroying) belongs to one thread. Calls that submit hold the queue lock
// (DeviceBinding::lock_queue when adopted) only around vkQueueSubmit and vkQueueWaitIdle; do not
// call them while holding that lock (Optimizer::record takes none).
class Context {
 public:
  static Context create(const ContextOptions& options = {});
  static Context adopt(const DeviceBinding& binding, const ContextOptions& options = {});
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  ~Context();

  const DeviceCaps& caps() const;
  ContextStats stats() const;
  // Whether buffer device addresses are enabled and usable on this device.
  bool supports_buffer_device_address() const;

  // A vkoptim-owned device buffer of `count` elements, zero-filled.
  Tensor create_tensor(size_t count, DType dtype = DType::f32);
  // Same, holding `values` (f32).
  Tensor create_tensor(std::span<const float> values);

  // The serialised VkPipelineCache, for ContextOptions::pipeline_cache_data next time.
  std::vector<uint8_t> pipeline_cache_data() const;

  // Handles for interop (benchmarks, samples). Owned by the Context unless adopted.
  VkInstance instance() const;
  VkPhysicalDevice physical_device() const;
  VkDevice device() const;
  VkQueue queue() const;
  uint32_t queue_family_index() const;
  PFN_vkGetDeviceProcAddr device_proc_addr() const;

 private:
  friend class Optimizer;
  friend std::shared_ptr<detail::ContextState> detail::context_state(const Context& context);
  explicit Context(std::shared_ptr<detail::ContextState> state);
  std::shared_ptr<detail::ContextState> state_;
};

}  // namespace vkoptim
