#pragma once
// Internal state behind vkoptim::Context, shared (by shared_ptr) with the Tensors and
// Optimizers made from it so it outlives them.
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dispatch.hpp"
#include "pipeline_key.hpp"
#include "vkoptim/context.hpp"
#include "vkoptim/error.hpp"

namespace vkoptim::detail {

// Throws vulkan_error naming the call when `result` is not VK_SUCCESS.
void check_vk(VkResult result, const char* call);
const char* vk_result_name(VkResult result);

// A buffer and its own memory, owned by vkoptim.
struct OwnedBuffer {
  struct ContextState* context = nullptr;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  void* mapped = nullptr;  // persistent mapping when the memory is host-visible and mapping is allowed
  bool coherent = false;
  VkDeviceAddress address = 0;  // 0 unless created with a device address

  OwnedBuffer() = default;
  OwnedBuffer(const OwnedBuffer&) = delete;
  OwnedBuffer& operator=(const OwnedBuffer&) = delete;
  ~OwnedBuffer();
};

enum class MemoryUse {
  device,   // device-local; mapped when also host-visible (and staging is not forced)
  staging,  // host-visible and coherent, for copies
  shared,   // host-visible and coherent, device-local when possible: small records that shaders
            // and the host both read and write (the device step's records)
};

// The compute pipeline layouts: one without descriptors (buffer device address), one with the
// segment table at binding 0, VKO_MAX_OPS operand ranges at binding 1, the block map at 2, the
// reduction scratch at 3 and the device step's buffer at 4.
constexpr uint32_t kMaxOperands = 8;  // p, g, 4 state slots, fp32 master, 8-bit absmax
constexpr uint32_t kDescriptorsPerSet = kMaxOperands + 4;
constexpr uint32_t kPushConstantBytes = 128;

struct ContextState {
  ContextOptions options;
  DeviceCaps caps;
  bool owns_device = false;
  bool use_bda = false;

  PFN_vkGetInstanceProcAddr gipa = nullptr;
  PFN_vkGetDeviceProcAddr gdpa = nullptr;
  InstanceFunctions vki;
  DeviceFunctions vkd;
  uint32_t api_version = 0;  // the instance's VkApplicationInfo::apiVersion
  VkInstance instance = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
  VkPhysicalDevice physical_device = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t queue_family = 0;
  VkPhysicalDeviceMemoryProperties memory_properties{};

  VkCommandPool command_pool = VK_NULL_HANDLE;
  VkCommandBuffer command_buffer = VK_NULL_HANDLE;  // for step() and staging copies
  VkFence fence = VK_NULL_HANDLE;

  VkPipelineCache pipeline_cache = VK_NULL_HANDLE;
  VkDescriptorSetLayout descriptor_layout = VK_NULL_HANDLE;
  VkPipelineLayout bda_layout = VK_NULL_HANDLE;
  VkPipelineLayout descriptor_pipeline_layout = VK_NULL_HANDLE;
  std::map<PipelineKey, VkPipeline> pipelines;

  ContextStats stats;

  // Thread safety (see Context in context.hpp), one lock per resource so that no lock is held
  // while waiting for another thread's queue lock except the submission's own:
  //   pipeline_mutex: the pipeline registry and cache (held while a pipeline is created);
  //   submit_mutex:   the command pool, buffer and fence, from recording to the fence's signal;
  //                   the queue lock is taken inside it (submit_mutex -> queue lock);
  //   stats_mutex:    the counters.
  // The queue is only touched between lock_queue() and unlock_queue(): the host's callbacks
  // when it gave them (DeviceBinding), else queue_mutex.
  mutable std::mutex pipeline_mutex;
  std::mutex submit_mutex;
  mutable std::mutex stats_mutex;
  std::mutex queue_mutex;
  void (*host_lock_queue)(void*) = nullptr;
  void (*host_unlock_queue)(void*) = nullptr;
  void* host_queue_lock_user = nullptr;
  void count(uint64_t ContextStats::*counter, uint64_t n = 1) {
    std::lock_guard lock(stats_mutex);
    stats.*counter += n;
  }
  void lock_queue();
  void unlock_queue();
  struct QueueLock {
    ContextState& s;
    explicit QueueLock(ContextState& state) : s(state) { s.lock_queue(); }
    ~QueueLock() { s.unlock_queue(); }
  };

  ContextState() = default;
  ContextState(const ContextState&) = delete;
  ContextState& operator=(const ContextState&) = delete;
  ~ContextState();

  // Device setup shared by create and adopt, once the handles are known.
  void initialise_device_objects();

  // Throws out_of_memory (before any Vulkan call that could not succeed) when no heap or
  // allocation limit of the device allows `size` bytes.
  std::unique_ptr<OwnedBuffer> create_buffer(VkDeviceSize size, VkBufferUsageFlags usage, MemoryUse use);
  // Bytes of the largest memory heap: no buffer can be larger.
  VkDeviceSize largest_heap() const;
  // Copy host bytes into / out of a buffer range: direct through the mapping when `owned` is
  // mapped, through a staging buffer otherwise. Waits for the queue to be idle first.
  void write_buffer(VkBuffer buffer, const OwnedBuffer* owned, VkDeviceSize offset, const void* data,
                    VkDeviceSize bytes);
  void read_buffer(VkBuffer buffer, const OwnedBuffer* owned, VkDeviceSize offset, void* data, VkDeviceSize bytes);
  // Zeroes a whole buffer: through the mapping, or with vkCmdFillBuffer (submitted, waited for).
  void fill_zero(const OwnedBuffer& buffer);
  // Records with `fill` into the context's command buffer, submits, waits.
  void submit_and_wait(const std::function<void(VkCommandBuffer)>& fill);
  void wait_idle();

  // The pipeline of `key`: created once (through the pipeline cache), then looked up.
  VkPipeline pipeline(const PipelineKey& key);
  // Whether shaders/<rule>.comp has the VKO_SUBGROUP_BLOCKS build.
  bool has_subgroup_build(const std::string& rule) const;
  // A descriptor pool holding `n` sets of the descriptor layout, and the sets (counted). The
  // caller destroys the pool; nothing is left behind when this throws.
  VkDescriptorPool allocate_descriptor_sets(uint32_t n, std::vector<VkDescriptorSet>& sets);
  VkPipelineLayout pipeline_layout(bool device_address) const {
    return device_address ? bda_layout : descriptor_pipeline_layout;
  }

  VkBufferUsageFlags storage_usage() const;
};

}  // namespace vkoptim::detail
