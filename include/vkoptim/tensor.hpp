#pragma once
// Tensors as vkoptim sees them: a range of a Vulkan buffer holding `count` elements of `dtype`.
#include <vulkan/vulkan_core.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace vkoptim {

// Storage type of a tensor's elements. Arithmetic is always float32 inside the shaders. u32
// holds indices (a SparseTable's rows), never parameters, gradients or state.
enum class DType : uint32_t { f32 = 0, f16 = 1, bf16 = 2, u32 = 3 };

// Bytes per element of `dtype`.
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

// A borrowed range of a buffer the caller owns. vkoptim never destroys it; the buffer must stay
// valid, and its memory bound, for as long as any Optimizer that holds this range exists.
struct BufferRange {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;  // bytes from the buffer's start; a multiple of the element size
  size_t count = 0;         // elements
  DType dtype = DType::f32;
  VkDeviceSize buffer_size = 0;  // the buffer's VkBufferCreateInfo::size, so ranges can be checked
  // True when the buffer was created with VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT and its memory
  // allocated with VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT: lets vkoptim reach it by address.
  bool device_address = false;
  // Which vkoptim Context owns the buffer (set by Tensor::range(); null for the host's own
  // buffers). An Optimizer refuses ranges of another Context's tensors.
  const void* owner = nullptr;
};

class Context;
namespace detail {
struct ContextState;
struct OwnedBuffer;
}  // namespace detail

// A device buffer owned by vkoptim holding one tensor. Created by Context::create_tensor (it keeps
// the Context's internals alive). Destroy it only when no submitted work still uses it. Movable,
// not copyable.
class Tensor {
 public:
  Tensor(Tensor&&) noexcept;
  Tensor& operator=(Tensor&&) noexcept;
  ~Tensor();

  // The whole tensor as a range to hand to an optimizer.
  BufferRange range() const;
  size_t count() const;
  DType dtype() const;

  // Copy host floats in or out, converted to and from the tensor's dtype (16-bit: round to
  // nearest even in, exact out). Waits for the context's queue to be idle first, then maps the
  // memory when it is host-visible or goes through a staging buffer otherwise.
  void upload(std::span<const float> values);
  std::vector<float> download() const;
  // The same for u32 tensors (indices), copied as they are; upload/download refuse u32 tensors.
  void upload_indices(std::span<const uint32_t> values);
  std::vector<uint32_t> download_indices() const;

 private:
  friend class Context;
  Tensor(std::shared_ptr<detail::ContextState> context, std::unique_ptr<detail::OwnedBuffer> buffer, size_t count,
         DType dtype);
  std::shared_ptr<detail::ContextState> context_;
  std::unique_ptr<detail::OwnedBuffer> buffer_;
  size_t count_ = 0;
  DType dtype_ = DType::f32;
};

}  // namespace vkoptim
