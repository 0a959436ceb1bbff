// Buffers, memory and host<->device copies (mapped when possible, staged otherwise).
#include <algorithm>
#include <cstring>
#include <string>

#include "context_state.hpp"

namespace vkoptim::detail {
namespace {

// First memory type allowed by `bits` that has all of `required` and a heap of at least `size`
// bytes, preferring `preferred` too.
int find_memory_type(const VkPhysicalDeviceMemoryProperties& mp, uint32_t bits, VkMemoryPropertyFlags required,
                     VkMemoryPropertyFlags preferred, VkDeviceSize size) {
  int fallback = -1;
  for (uint32_t i = 0; i < mp.memoryTypeCount; ++i) {
    if (!(bits & (1u << i))) continue;
    const auto f = mp.memoryTypes[i].propertyFlags;
    if ((f & required) != required) continue;
    if (mp.memoryHeaps[mp.memoryTypes[i].heapIndex].size < size) continue;
    if ((f & preferred) == preferred) return int(i);
    if (fallback < 0) fallback = int(i);
  }
  return fallback;
}

}  // namespace

OwnedBuffer::~OwnedBuffer() {
  if (!context) return;
  const auto& d = context->vkd;
  if (mapped) d.vkUnmapMemory(context->device, memory);
  if (buffer) d.vkDestroyBuffer(context->device, buffer, nullptr);
  if (memory) d.vkFreeMemory(context->device, memory, nullptr);
}

VkBufferUsageFlags ContextState::storage_usage() const {
  VkBufferUsageFlags usage =
      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  if (use_bda) usage |= VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
  return usage;
}

VkDeviceSize ContextState::largest_heap() const {
  VkDeviceSize largest = 0;
  for (uint32_t i = 0; i < memory_properties.memoryHeapCount; ++i)
    largest = std::max(largest, memory_properties.memoryHeaps[i].size);
  return largest;
}

std::unique_ptr<OwnedBuffer> ContextState::create_buffer(VkDeviceSize size, VkBufferUsageFlags usage, MemoryUse use) {
  if (size == 0) throw Error(Status::invalid_argument, "create_buffer: size is 0");
  // Requests the device cannot satisfy fail here, not inside the driver.
  auto too_large = [&](VkDeviceSize bytes, const char* limit, VkDeviceSize value) {
    return Error(Status::out_of_memory, "a buffer of " + std::to_string(bytes) + " bytes exceeds the device's " +
                                            limit + " (" + std::to_string(value) + " bytes)");
  };
  if (size > largest_heap()) throw too_large(size, "largest memory heap", largest_heap());
  if (caps.max_memory_allocation_size && size > caps.max_memory_allocation_size)
    throw too_large(size, "maxMemoryAllocationSize", caps.max_memory_allocation_size);
  if (caps.max_buffer_size && size > caps.max_buffer_size) throw too_large(size, "maxBufferSize", caps.max_buffer_size);

  auto b = std::make_unique<OwnedBuffer>();
  b->context = this;
  b->size = size;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = size;
  bci.usage = usage;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check_vk(vkd.vkCreateBuffer(device, &bci, nullptr, &b->buffer), "vkCreateBuffer");
  count(&ContextStats::buffers_created);

  VkMemoryRequirements req;
  vkd.vkGetBufferMemoryRequirements(device, b->buffer, &req);
  if (caps.max_memory_allocation_size && req.size > caps.max_memory_allocation_size)
    throw too_large(req.size, "maxMemoryAllocationSize", caps.max_memory_allocation_size);
  const VkMemoryPropertyFlags required =
      use != MemoryUse::device
          ? VkMemoryPropertyFlags(VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
          : VkMemoryPropertyFlags(0);
  const VkMemoryPropertyFlags preferred =
      use == MemoryUse::staging ? VkMemoryPropertyFlags(0) : VkMemoryPropertyFlags(VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  const int type = find_memory_type(memory_properties, req.memoryTypeBits, required, preferred, req.size);
  if (type < 0) {
    if (find_memory_type(memory_properties, req.memoryTypeBits, required, preferred, 0) >= 0)
      throw Error(Status::out_of_memory,
                  "no memory heap the buffer may use holds " + std::to_string(req.size) + " bytes");
    throw Error(Status::unsupported, "no memory type fits a buffer of " + std::to_string(size) + " bytes");
  }

  VkMemoryAllocateFlagsInfo flags{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
  flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = uint32_t(type);
  if (usage & VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT) mai.pNext = &flags;
  const VkResult r = vkd.vkAllocateMemory(device, &mai, nullptr, &b->memory);
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
    throw Error(Status::out_of_memory,
                "device allocation of " + std::to_string(req.size) + " bytes failed (" + vk_result_name(r) + ")");
  check_vk(r, "vkAllocateMemory");
  count(&ContextStats::device_allocations);
  check_vk(vkd.vkBindBufferMemory(device, b->buffer, b->memory, 0), "vkBindBufferMemory");

  const auto props = memory_properties.memoryTypes[type].propertyFlags;
  const bool may_map = use != MemoryUse::device || !options.force_staging;
  if (may_map && (props & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
    check_vk(vkd.vkMapMemory(device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped), "vkMapMemory");
    b->coherent = (props & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
  }
  if (usage & VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT) {
    VkBufferDeviceAddressInfo info{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    info.buffer = b->buffer;
    b->address = vkd.vkGetBufferDeviceAddress(device, &info);
  }
  return b;
}

void ContextState::lock_queue() {
  if (host_lock_queue)
    host_lock_queue(host_queue_lock_user);
  else
    queue_mutex.lock();
}

void ContextState::unlock_queue() {
  if (host_unlock_queue)
    host_unlock_queue(host_queue_lock_user);
  else
    queue_mutex.unlock();
}

void ContextState::submit_and_wait(const std::function<void(VkCommandBuffer)>& fill) {
  std::lock_guard lock(submit_mutex);  // the command buffer and fence until the fence signals
  check_vk(vkd.vkResetCommandPool(device, command_pool, 0), "vkResetCommandPool");
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check_vk(vkd.vkBeginCommandBuffer(command_buffer, &begin), "vkBeginCommandBuffer");
  fill(command_buffer);
  check_vk(vkd.vkEndCommandBuffer(command_buffer), "vkEndCommandBuffer");
  check_vk(vkd.vkResetFences(device, 1, &fence), "vkResetFences");
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &command_buffer;
  {
    QueueLock queue_lock(*this);
    check_vk(vkd.vkQueueSubmit(queue, 1, &submit, fence), "vkQueueSubmit");
  }
  count(&ContextStats::submissions);
  check_vk(vkd.vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
}

void ContextState::wait_idle() {
  QueueLock queue_lock(*this);
  check_vk(vkd.vkQueueWaitIdle(queue), "vkQueueWaitIdle");
}

namespace {
// Makes transfer/compute writes visible to what follows (host reads or further transfers).
void full_barrier(const DeviceFunctions& d, VkCommandBuffer cmd, VkPipelineStageFlags dst_stage,
                  VkAccessFlags dst_access) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT;
  mb.dstAccessMask = dst_access;
  d.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, dst_stage, 0, 1,
                         &mb, 0, nullptr, 0, nullptr);
}
}  // namespace

void ContextState::write_buffer(VkBuffer buffer, const OwnedBuffer* owned, VkDeviceSize offset, const void* data,
                                VkDeviceSize bytes) {
  if (bytes == 0) return;
  wait_idle();
  if (owned && owned->mapped) {
    std::memcpy(static_cast<char*>(owned->mapped) + offset, data, bytes);
    if (!owned->coherent) {
      VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
      range.memory = owned->memory;
      range.size = VK_WHOLE_SIZE;
      check_vk(vkd.vkFlushMappedMemoryRanges(device, 1, &range), "vkFlushMappedMemoryRanges");
    }
    return;
  }
  auto staging = create_buffer(bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, MemoryUse::staging);
  std::memcpy(staging->mapped, data, bytes);
  submit_and_wait([&](VkCommandBuffer cmd) {
    full_barrier(vkd, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
    VkBufferCopy region{0, offset, bytes};
    vkd.vkCmdCopyBuffer(cmd, staging->buffer, buffer, 1, &region);
  });
}

void ContextState::fill_zero(const OwnedBuffer& b) {
  wait_idle();
  if (b.mapped) {
    std::memset(b.mapped, 0, b.size);
    if (!b.coherent) {
      VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
      range.memory = b.memory;
      range.size = VK_WHOLE_SIZE;
      check_vk(vkd.vkFlushMappedMemoryRanges(device, 1, &range), "vkFlushMappedMemoryRanges");
    }
    return;
  }
  submit_and_wait([&](VkCommandBuffer cmd) {
    vkd.vkCmdFillBuffer(cmd, b.buffer, 0, VK_WHOLE_SIZE, 0);
    full_barrier(vkd, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                 VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT);
  });
}

void ContextState::read_buffer(VkBuffer buffer, const OwnedBuffer* owned, VkDeviceSize offset, void* data,
                               VkDeviceSize bytes) {
  if (bytes == 0) return;
  wait_idle();
  if (owned && owned->mapped) {
    if (!owned->coherent) {
      VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
      range.memory = owned->memory;
      range.size = VK_WHOLE_SIZE;
      check_vk(vkd.vkInvalidateMappedMemoryRanges(device, 1, &range), "vkInvalidateMappedMemoryRanges");
    }
    std::memcpy(data, static_cast<const char*>(owned->mapped) + offset, bytes);
    return;
  }
  auto staging = create_buffer(bytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::staging);
  submit_and_wait([&](VkCommandBuffer cmd) {
    full_barrier(vkd, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy region{offset, 0, bytes};
    vkd.vkCmdCopyBuffer(cmd, buffer, staging->buffer, 1, &region);
    full_barrier(vkd, cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  });
  std::memcpy(data, staging->mapped, bytes);
}

}  // namespace vkoptim::detail
