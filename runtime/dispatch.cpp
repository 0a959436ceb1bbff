#include "dispatch.hpp"

#include <vulkan/vulkan.h>

#include <string>

#include "vkoptim/error.hpp"

namespace vkoptim::detail {

PFN_vkGetInstanceProcAddr loader_get_instance_proc_addr() {
  return &::vkGetInstanceProcAddr;
}

InstanceFunctions load_instance_functions(PFN_vkGetInstanceProcAddr gipa, VkInstance instance) {
  InstanceFunctions f;
#define VKO_LOAD_INSTANCE(name)                                 \
  f.name = reinterpret_cast<PFN_##name>(gipa(instance, #name)); \
  if (!f.name)                                                  \
    throw Error(Status::unsupported,                            \
                std::string("instance function ") + #name + " is not available (is the instance Vulkan 1.1?)");
  VKO_INSTANCE_FUNCTIONS(VKO_LOAD_INSTANCE)
#undef VKO_LOAD_INSTANCE
#define VKO_LOAD_OPTIONAL_INSTANCE(name) f.name = reinterpret_cast<PFN_##name>(gipa(instance, #name));
  VKO_OPTIONAL_INSTANCE_FUNCTIONS(VKO_LOAD_OPTIONAL_INSTANCE)
#undef VKO_LOAD_OPTIONAL_INSTANCE
  return f;
}

DeviceFunctions load_device_functions(PFN_vkGetDeviceProcAddr gdpa, VkDevice device) {
  DeviceFunctions f;
#define VKO_LOAD_DEVICE(name)                                 \
  f.name = reinterpret_cast<PFN_##name>(gdpa(device, #name)); \
  if (!f.name)                                                \
    throw Error(Status::unsupported,                          \
                std::string("device function ") + #name + " is not available (is the device Vulkan 1.2?)");
  VKO_DEVICE_FUNCTIONS(VKO_LOAD_DEVICE)
#undef VKO_LOAD_DEVICE
#define VKO_LOAD_OPTIONAL(name) f.name = reinterpret_cast<PFN_##name>(gdpa(device, #name));
  VKO_OPTIONAL_DEVICE_FUNCTIONS(VKO_LOAD_OPTIONAL)
#undef VKO_LOAD_OPTIONAL
  return f;
}

}  // namespace vkoptim::detail
