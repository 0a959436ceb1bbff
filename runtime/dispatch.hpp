#pragma once
// Per-Context Vulkan function tables. No global function pointers: each Context loads its own
// through vkGetInstanceProcAddr / vkGetDeviceProcAddr (the host's, when adopted).
#include <vulkan/vulkan_core.h>

namespace vkoptim::detail {

#define VKO_INSTANCE_FUNCTIONS(X)             \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)                      \
  X(vkEnumerateDeviceExtensionProperties)

// Loaded when present (VK_EXT_debug_utils, with validation).
#define VKO_OPTIONAL_INSTANCE_FUNCTIONS(X) \
  X(vkCreateDebugUtilsMessengerEXT)        \
  X(vkDestroyDebugUtilsMessengerEXT)

#define VKO_DEVICE_FUNCTIONS(X)     \
  X(vkDestroyDevice)                \
  X(vkGetDeviceQueue)               \
  X(vkDeviceWaitIdle)               \
  X(vkQueueWaitIdle)                \
  X(vkQueueSubmit)                  \
  X(vkCreateBuffer)                 \
  X(vkDestroyBuffer)                \
  X(vkGetBufferMemoryRequirements)  \
  X(vkAllocateMemory)               \
  X(vkFreeMemory)                   \
  X(vkBindBufferMemory)             \
  X(vkMapMemory)                    \
  X(vkUnmapMemory)                  \
  X(vkFlushMappedMemoryRanges)      \
  X(vkInvalidateMappedMemoryRanges) \
  X(vkCreateShaderModule)           \
  X(vkDestroyShaderModule)          \
  X(vkCreatePipelineCache)          \
  X(vkDestroyPipelineCache)         \
  X(vkGetPipelineCacheData)         \
  X(vkCreateComputePipelines)       \
  X(vkDestroyPipeline)              \
  X(vkCreatePipelineLayout)         \
  X(vkDestroyPipelineLayout)        \
  X(vkCreateDescriptorSetLayout)    \
  X(vkDestroyDescriptorSetLayout)   \
  X(vkCreateDescriptorPool)         \
  X(vkDestroyDescriptorPool)        \
  X(vkAllocateDescriptorSets)       \
  X(vkUpdateDescriptorSets)         \
  X(vkCreateCommandPool)            \
  X(vkDestroyCommandPool)           \
  X(vkResetCommandPool)             \
  X(vkAllocateCommandBuffers)       \
  X(vkBeginCommandBuffer)           \
  X(vkEndCommandBuffer)             \
  X(vkCreateFence)                  \
  X(vkDestroyFence)                 \
  X(vkResetFences)                  \
  X(vkWaitForFences)                \
  X(vkCmdBindPipeline)              \
  X(vkCmdBindDescriptorSets)        \
  X(vkCmdPushConstants)             \
  X(vkCmdDispatch)                  \
  X(vkCmdPipelineBarrier)           \
  X(vkCmdCopyBuffer)                \
  X(vkCmdFillBuffer)                \
  X(vkCmdUpdateBuffer)              \
  X(vkCmdWriteTimestamp)

// Loaded when present; null on devices without Vulkan 1.2 (no buffer device address).
#define VKO_OPTIONAL_DEVICE_FUNCTIONS(X) X(vkGetBufferDeviceAddress)

#define VKO_DECLARE_PFN(name) PFN_##name name = nullptr;

struct InstanceFunctions {
  VKO_INSTANCE_FUNCTIONS(VKO_DECLARE_PFN)
  VKO_OPTIONAL_INSTANCE_FUNCTIONS(VKO_DECLARE_PFN)
};

struct DeviceFunctions {
  VKO_DEVICE_FUNCTIONS(VKO_DECLARE_PFN)
  VKO_OPTIONAL_DEVICE_FUNCTIONS(VKO_DECLARE_PFN)
};

// The Vulkan loader's exported vkGetInstanceProcAddr.
PFN_vkGetInstanceProcAddr loader_get_instance_proc_addr();

// Loads every instance function; throws unsupported naming the first required one missing
// (optional extension functions may stay null).
InstanceFunctions load_instance_functions(PFN_vkGetInstanceProcAddr gipa, VkInstance instance);
// Loads every device function; throws unsupported naming the first one missing.
DeviceFunctions load_device_functions(PFN_vkGetDeviceProcAddr gdpa, VkDevice device);

}  // namespace vkoptim::detail
