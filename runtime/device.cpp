// Instance and device creation (Context::create), adoption of a host's device (Context::adopt),
// device selection and the capability snapshot.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "context_state.hpp"

namespace vkoptim::detail {
namespace {

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT,
                                                     VkDebugUtilsMessageTypeFlagsEXT,
                                                     const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  const auto* state = static_cast<const ContextState*>(user);
  const char* message = data && data->pMessage ? data->pMessage : "(no message)";
  if (state->options.validation_callback)
    state->options.validation_callback(message);
  else
    std::fprintf(stderr, "vkoptim validation: %s\n", message);
  return VK_FALSE;
}

int type_rank(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return 3;
    default:
      return 4;
  }
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

int find_compute_queue_family(const ContextState& s, VkPhysicalDevice pd) {
  uint32_t n = 0;
  s.vki.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  s.vki.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
  for (uint32_t i = 0; i < n; ++i)
    if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return int(i);
  return -1;
}

VkPhysicalDevice pick_physical_device(const ContextState& s, int requested_index) {
  uint32_t n = 0;
  check_vk(s.vki.vkEnumeratePhysicalDevices(s.instance, &n, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> devices(n);
  check_vk(s.vki.vkEnumeratePhysicalDevices(s.instance, &n, devices.data()), "vkEnumeratePhysicalDevices");
  if (devices.empty())
    throw Error(Status::unsupported, "no Vulkan device found (install mesa-vulkan-drivers for lavapipe)");

  std::vector<std::string> names;
  for (auto pd : devices) {
    VkPhysicalDeviceProperties p;
    s.vki.vkGetPhysicalDeviceProperties(pd, &p);
    names.emplace_back(p.deviceName);
  }
  auto describe = [&] {
    std::string all;
    for (size_t i = 0; i < names.size(); ++i) all += (i ? ", " : "") + std::to_string(i) + ": " + names[i];
    return all;
  };

  std::string selector;
  if (requested_index >= 0) {
    selector = std::to_string(requested_index);
  } else if (const char* env = std::getenv("VKOPTIM_DEVICE"); env && *env) {
    selector = env;
  }
  if (!selector.empty()) {
    char* end = nullptr;
    const long index = std::strtol(selector.c_str(), &end, 10);
    if (end && *end == '\0') {
      if (index < 0 || size_t(index) >= devices.size())
        throw Error(Status::invalid_argument,
                    "device index " + selector + " is out of range (devices: " + describe() + ")");
      return devices[size_t(index)];
    }
    for (size_t i = 0; i < devices.size(); ++i)
      if (lower(names[i]).find(lower(selector)) != std::string::npos) return devices[i];
    throw Error(Status::invalid_argument,
                "VKOPTIM_DEVICE=\"" + selector + "\" matches no device (devices: " + describe() + ")");
  }

  VkPhysicalDevice best = VK_NULL_HANDLE;
  int best_rank = 1 << 30;
  for (auto pd : devices) {
    VkPhysicalDeviceProperties p;
    s.vki.vkGetPhysicalDeviceProperties(pd, &p);
    if (find_compute_queue_family(s, pd) < 0) continue;
    if (type_rank(p.deviceType) < best_rank) {
      best_rank = type_rank(p.deviceType);
      best = pd;
    }
  }
  if (!best) throw Error(Status::unsupported, "no Vulkan device has a compute queue (devices: " + describe() + ")");
  return best;
}

// Reads the snapshot of what vkoptim uses. `bda_enabled` says whether the logical device has
// bufferDeviceAddress on.
DeviceCaps read_caps(const ContextState& s, bool bda_enabled, bool int64_enabled, bool full_subgroups_enabled) {
  DeviceCaps c;
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties size_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties maintenance3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceMaintenance4Properties maintenance4{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES};
  VkPhysicalDeviceProperties device_props;
  s.vki.vkGetPhysicalDeviceProperties(s.physical_device, &device_props);
  VkPhysicalDeviceProperties2 props2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props2.pNext = &subgroup;
  subgroup.pNext = &maintenance3;
  if (full_subgroups_enabled) maintenance3.pNext = &size_control;  // (a Vulkan 1.3 structure)
  // maxBufferSize is a Vulkan 1.3 property: asked only where instance and device are 1.3.
  if (std::min(device_props.apiVersion, s.api_version) >= VK_API_VERSION_1_3)
    (full_subgroups_enabled ? size_control.pNext : maintenance3.pNext) = &maintenance4;
  s.vki.vkGetPhysicalDeviceProperties2(s.physical_device, &props2);
  const auto& p = props2.properties;
  c.max_memory_allocation_size = maintenance3.maxMemoryAllocationSize;
  c.max_buffer_size = maintenance4.maxBufferSize;
  c.device_name = p.deviceName;
  c.device_type = p.deviceType;
  c.vendor_id = p.vendorID;
  c.api_version = p.apiVersion;
  c.max_storage_buffer_range = p.limits.maxStorageBufferRange;
  c.min_storage_buffer_offset_alignment = p.limits.minStorageBufferOffsetAlignment;
  for (int i = 0; i < 3; ++i) c.max_compute_workgroup_count[i] = p.limits.maxComputeWorkGroupCount[i];
  c.max_compute_workgroup_size_x =
      std::min(p.limits.maxComputeWorkGroupSize[0], p.limits.maxComputeWorkGroupInvocations);
  c.max_per_stage_storage_buffers = p.limits.maxPerStageDescriptorStorageBuffers;
  c.max_compute_shared_memory = p.limits.maxComputeSharedMemorySize;
  c.subgroup_size = std::max(1u, subgroup.subgroupSize);
  c.subgroup_arithmetic = (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  // Pipelines may require full subgroups of exactly subgroup_size in compute shaders.
  c.full_subgroups = full_subgroups_enabled &&
                     (size_control.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                     size_control.minSubgroupSize <= c.subgroup_size && c.subgroup_size <= size_control.maxSubgroupSize;
  c.max_compute_workgroup_subgroups = full_subgroups_enabled ? size_control.maxComputeWorkgroupSubgroups : 0;
  c.buffer_device_address = bda_enabled && s.vkd.vkGetBufferDeviceAddress != nullptr;
  c.shader_int64 = int64_enabled;
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &storage16;
  s.vki.vkGetPhysicalDeviceFeatures2(s.physical_device, &f2);
  c.storage_buffer_16bit = storage16.storageBuffer16BitAccess == VK_TRUE;
  c.timestamps = p.limits.timestampComputeAndGraphics && p.limits.timestampPeriod > 0;
  c.timestamp_period_ns = p.limits.timestampPeriod;
  for (uint32_t i = 0; i < s.memory_properties.memoryTypeCount; ++i) {
    const auto f = s.memory_properties.memoryTypes[i].propertyFlags;
    if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
      c.host_visible_device_memory = true;
  }
  // 256 invocations, at least one subgroup: a good default across vendors (8-64 wide subgroups).
  c.workgroup_size = std::min(c.max_compute_workgroup_size_x, std::max(256u, c.subgroup_size));
  // Two wide items per invocation: enough work to amortise finding the segment (4 loads) over
  // 14 data accesses for Adam, while a block stays 4096 floats so mid-sized tensors get whole
  // blocks (measured on lavapipe with vkoptim-bench --items/--workgroup).
  c.items_per_invocation = 2;
  return c;
}

bool device_supports_bda(const ContextState& s) {
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &f12;
  VkPhysicalDeviceProperties p;
  s.vki.vkGetPhysicalDeviceProperties(s.physical_device, &p);
  if (VK_API_VERSION_MINOR(p.apiVersion) < 2 && VK_API_VERSION_MAJOR(p.apiVersion) == 1) return false;
  s.vki.vkGetPhysicalDeviceFeatures2(s.physical_device, &f2);
  return f12.bufferDeviceAddress == VK_TRUE;
}

// Vulkan 1.3's subgroupSizeControl and computeFullSubgroups (instance and device at 1.3).
bool device_supports_full_subgroups(const ContextState& s, uint32_t instance_version) {
  VkPhysicalDeviceProperties p;
  s.vki.vkGetPhysicalDeviceProperties(s.physical_device, &p);
  if (instance_version < VK_API_VERSION_1_3 || p.apiVersion < VK_API_VERSION_1_3) return false;
  VkPhysicalDeviceVulkan13Features f13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &f13;
  s.vki.vkGetPhysicalDeviceFeatures2(s.physical_device, &f2);
  return f13.subgroupSizeControl == VK_TRUE && f13.computeFullSubgroups == VK_TRUE;
}

bool device_supports_int64(const ContextState& s) {
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  s.vki.vkGetPhysicalDeviceFeatures2(s.physical_device, &f2);
  return f2.features.shaderInt64 == VK_TRUE;
}

void finish_caps(ContextState& s, bool bda_enabled, bool int64_enabled, bool full_subgroups_enabled) {
  s.caps = read_caps(s, bda_enabled, int64_enabled, full_subgroups_enabled);
  const uint32_t device_subgroup_size = s.caps.subgroup_size;
  if (s.options.override_caps) s.options.override_caps(s.caps);
  // Pipelines can only require the device's own subgroup size.
  if (s.caps.subgroup_size != device_subgroup_size) s.caps.full_subgroups = false;
  const auto& c = s.caps;
  if (c.workgroup_size == 0 || c.items_per_invocation == 0 || c.max_storage_buffer_range < 1024 ||
      c.max_compute_workgroup_count[0] == 0 || c.max_compute_workgroup_count[1] == 0)
    throw Error(Status::invalid_argument, "override_caps left an unusable capability snapshot");
  s.use_bda = c.buffer_device_address && s.options.addressing != Addressing::descriptors;
}

void validate_context_options(const ContextOptions& o) {
  if (o.device_index < -1)
    throw Error(Status::invalid_argument,
                "ContextOptions.device_index = " + std::to_string(o.device_index) + ": must be -1 (automatic) or >= 0");
  if (o.addressing != Addressing::automatic && o.addressing != Addressing::device_address &&
      o.addressing != Addressing::descriptors)
    throw Error(Status::invalid_argument,
                "ContextOptions.addressing = " + std::to_string(uint32_t(o.addressing)) + " is not an Addressing");
}

}  // namespace

std::shared_ptr<ContextState> create_context_state(const ContextOptions& options) {
  validate_context_options(options);
  auto s = std::make_shared<ContextState>();
  s->options = options;
  s->owns_device = true;
  s->gipa = loader_get_instance_proc_addr();
  auto create_instance = reinterpret_cast<PFN_vkCreateInstance>(s->gipa(VK_NULL_HANDLE, "vkCreateInstance"));
  auto enumerate_version =
      reinterpret_cast<PFN_vkEnumerateInstanceVersion>(s->gipa(VK_NULL_HANDLE, "vkEnumerateInstanceVersion"));
  uint32_t loader_version = VK_API_VERSION_1_0;
  if (enumerate_version) enumerate_version(&loader_version);
  if (loader_version < VK_API_VERSION_1_1) throw Error(Status::unsupported, "the Vulkan loader is older than 1.1");

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "vkoptim";
  app.pEngineName = "vkoptim";
  app.apiVersion = std::min(loader_version, uint32_t(VK_API_VERSION_1_3));
  s->api_version = app.apiVersion;

  std::vector<const char*> layers, extensions;
  VkValidationFeatureEnableEXT sync_validation = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT validation_features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  validation_features.enabledValidationFeatureCount = 1;
  validation_features.pEnabledValidationFeatures = &sync_validation;
  VkDebugUtilsMessengerCreateInfoEXT messenger_info{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  messenger_info.messageSeverity =
      VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  messenger_info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  messenger_info.pfnUserCallback = on_validation_message;
  messenger_info.pUserData = s.get();

  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pApplicationInfo = &app;
  if (options.enable_validation) {
    layers.push_back("VK_LAYER_KHRONOS_validation");
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    extensions.push_back(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
    validation_features.pNext = &messenger_info;  // also report messages from vkCreateInstance
    ici.pNext = &validation_features;
  }
  ici.enabledLayerCount = uint32_t(layers.size());
  ici.ppEnabledLayerNames = layers.data();
  ici.enabledExtensionCount = uint32_t(extensions.size());
  ici.ppEnabledExtensionNames = extensions.data();
  const VkResult r = create_instance(&ici, nullptr, &s->instance);
  if (r == VK_ERROR_LAYER_NOT_PRESENT || r == VK_ERROR_EXTENSION_NOT_PRESENT)
    throw Error(Status::unsupported,
                "VK_LAYER_KHRONOS_validation is not installed (apt-get install vulkan-validationlayers)");
  check_vk(r, "vkCreateInstance");
  s->vki = load_instance_functions(s->gipa, s->instance);
  if (options.enable_validation)
    check_vk(s->vki.vkCreateDebugUtilsMessengerEXT(s->instance, &messenger_info, nullptr, &s->messenger),
             "vkCreateDebugUtilsMessengerEXT");

  s->physical_device = pick_physical_device(*s, options.device_index);
  const int family = find_compute_queue_family(*s, s->physical_device);
  if (family < 0) throw Error(Status::unsupported, "the selected device has no compute queue");
  s->queue_family = uint32_t(family);

  const bool bda = device_supports_bda(*s) && options.addressing != Addressing::descriptors;
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f12.bufferDeviceAddress = bda ? VK_TRUE : VK_FALSE;
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  if (bda) features.pNext = &f12;
  const bool int64 = device_supports_int64(*s);
  features.features.shaderInt64 = int64 ? VK_TRUE : VK_FALSE;
  const bool full_subgroups = device_supports_full_subgroups(*s, app.apiVersion);
  VkPhysicalDeviceSubgroupSizeControlFeatures size_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
  size_control.subgroupSizeControl = VK_TRUE;
  size_control.computeFullSubgroups = VK_TRUE;
  if (full_subgroups) {
    size_control.pNext = features.pNext;
    features.pNext = &size_control;
  }

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = s->queue_family;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &features;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  check_vk(s->vki.vkCreateDevice(s->physical_device, &dci, nullptr, &s->device), "vkCreateDevice");
  s->gdpa = s->vki.vkGetDeviceProcAddr;
  s->vkd = load_device_functions(s->gdpa, s->device);
  s->vkd.vkGetDeviceQueue(s->device, s->queue_family, 0, &s->queue);
  s->vki.vkGetPhysicalDeviceMemoryProperties(s->physical_device, &s->memory_properties);
  finish_caps(*s, bda, int64, full_subgroups);
  s->initialise_device_objects();
  return s;
}

std::shared_ptr<ContextState> adopt_context_state(const DeviceBinding& b, const ContextOptions& options) {
  if (!b.instance) throw Error(Status::invalid_argument, "DeviceBinding.instance is VK_NULL_HANDLE");
  if (!b.physical_device) throw Error(Status::invalid_argument, "DeviceBinding.physical_device is VK_NULL_HANDLE");
  if (!b.device) throw Error(Status::invalid_argument, "DeviceBinding.device is VK_NULL_HANDLE");
  if (!b.queue) throw Error(Status::invalid_argument, "DeviceBinding.queue is VK_NULL_HANDLE");
  if (b.api_version < VK_API_VERSION_1_1)
    throw Error(Status::invalid_argument,
                "DeviceBinding.api_version is " + std::to_string(VK_API_VERSION_MAJOR(b.api_version)) + "." +
                    std::to_string(VK_API_VERSION_MINOR(b.api_version)) + "; vkoptim needs Vulkan 1.1 or newer");
  validate_context_options(options);
  if (options.enable_validation)
    throw Error(Status::invalid_argument,
                "ContextOptions.enable_validation applies to Context::create only; "
                "an adopted device carries the layers its host enabled");
  auto s = std::make_shared<ContextState>();
  s->options = options;
  s->owns_device = false;
  s->gipa = b.get_instance_proc_addr ? b.get_instance_proc_addr : loader_get_instance_proc_addr();
  s->instance = b.instance;
  s->physical_device = b.physical_device;
  s->device = b.device;
  s->queue = b.queue;
  s->queue_family = b.queue_family_index;
  s->api_version = b.api_version;
  s->vki = load_instance_functions(s->gipa, s->instance);
  s->gdpa = b.get_device_proc_addr ? b.get_device_proc_addr : s->vki.vkGetDeviceProcAddr;
  if (!s->gdpa)
    throw Error(Status::invalid_argument,
                "vkGetDeviceProcAddr could not be loaded from DeviceBinding.get_instance_proc_addr");

  uint32_t nfam = 0;
  s->vki.vkGetPhysicalDeviceQueueFamilyProperties(s->physical_device, &nfam, nullptr);
  std::vector<VkQueueFamilyProperties> families(nfam);
  s->vki.vkGetPhysicalDeviceQueueFamilyProperties(s->physical_device, &nfam, families.data());
  if (b.queue_family_index >= nfam)
    throw Error(Status::invalid_argument, "DeviceBinding.queue_family_index " + std::to_string(b.queue_family_index) +
                                              " is out of range (the device has " + std::to_string(nfam) +
                                              " families)");
  if (!(families[b.queue_family_index].queueFlags & VK_QUEUE_COMPUTE_BIT))
    throw Error(Status::invalid_argument, "DeviceBinding.queue_family_index " + std::to_string(b.queue_family_index) +
                                              " has no compute capability");

  // Declared features must be ones the device has and the API version allows: a wrong
  // declaration would otherwise surface as undefined behaviour in a shader.
  VkPhysicalDeviceProperties props;
  s->vki.vkGetPhysicalDeviceProperties(s->physical_device, &props);
  const uint32_t version = std::min(props.apiVersion, b.api_version);
  if (props.apiVersion < VK_API_VERSION_1_1)
    throw Error(Status::unsupported,
                "the adopted device supports Vulkan " + std::to_string(VK_API_VERSION_MAJOR(props.apiVersion)) + "." +
                    std::to_string(VK_API_VERSION_MINOR(props.apiVersion)) + "; vkoptim needs Vulkan 1.1 or newer");
  auto declared_without = [](const char* field, const std::string& why) {
    return Error(Status::invalid_argument, std::string("DeviceBinding.") + field + " is true, but " + why);
  };
  if (b.buffer_device_address_enabled && version < VK_API_VERSION_1_2)
    throw declared_without("buffer_device_address_enabled", "bufferDeviceAddress needs api_version >= 1.2");
  if (b.buffer_device_address_enabled && !device_supports_bda(*s))
    throw declared_without("buffer_device_address_enabled", "the device does not support bufferDeviceAddress");
  if (b.shader_int64_enabled && !device_supports_int64(*s))
    throw declared_without("shader_int64_enabled", "the device does not support shaderInt64");
  if (b.full_subgroups_enabled && version < VK_API_VERSION_1_3)
    throw declared_without("full_subgroups_enabled", "subgroupSizeControl needs api_version >= 1.3");
  if (b.full_subgroups_enabled && !device_supports_full_subgroups(*s, b.api_version))
    throw declared_without("full_subgroups_enabled",
                           "the device does not support subgroupSizeControl and computeFullSubgroups");
  if (bool(b.lock_queue) != bool(b.unlock_queue))
    throw Error(Status::invalid_argument, "DeviceBinding.lock_queue and unlock_queue must be given together");
  if (!b.enabled_device_extensions.empty()) {
    uint32_t n = 0;
    check_vk(s->vki.vkEnumerateDeviceExtensionProperties(s->physical_device, nullptr, &n, nullptr),
             "vkEnumerateDeviceExtensionProperties");
    std::vector<VkExtensionProperties> available(n);
    check_vk(s->vki.vkEnumerateDeviceExtensionProperties(s->physical_device, nullptr, &n, available.data()),
             "vkEnumerateDeviceExtensionProperties");
    for (const auto& name : b.enabled_device_extensions)
      if (std::none_of(available.begin(), available.end(),
                       [&](const VkExtensionProperties& e) { return name == e.extensionName; }))
        throw Error(Status::invalid_argument,
                    "DeviceBinding.enabled_device_extensions names \"" + name + "\", which the device does not offer");
  }
  s->host_lock_queue = b.lock_queue;
  s->host_unlock_queue = b.unlock_queue;
  s->host_queue_lock_user = b.queue_lock_user;

  s->vkd = load_device_functions(s->gdpa, s->device);
  s->vki.vkGetPhysicalDeviceMemoryProperties(s->physical_device, &s->memory_properties);
  finish_caps(*s, b.buffer_device_address_enabled, b.shader_int64_enabled, b.full_subgroups_enabled);
  s->initialise_device_objects();
  return s;
}

}  // namespace vkoptim::detail
