// Checks of borrowed buffer ranges (buffer_checks.hpp).
#include "buffer_checks.hpp"

#include <algorithm>
#include <string>

namespace vkoptim::detail {

void check_range(const BufferRange& r, const std::string& what, const ContextState& ctx, RangeOf kind) {
  if (!r.buffer) throw Error(Status::invalid_argument, what + ".buffer is VK_NULL_HANDLE");
  if (r.owner && r.owner != &ctx)
    throw Error(Status::invalid_argument,
                what + " is a Tensor of another Context; an optimizer steps tensors of its own Context's device");
  if (r.count == 0) throw Error(Status::invalid_argument, what + ".count is 0");
  if (kind == RangeOf::indices && r.dtype != DType::u32)
    throw Error(Status::invalid_argument, what + ".dtype = " + dtype_name(r.dtype) + ": indices are u32");
  if (kind == RangeOf::floats && r.dtype == DType::u32)
    throw Error(Status::invalid_argument, what + ".dtype = u32: u32 is for indices, not floating-point data");
  if (kind == RangeOf::floats && r.dtype != DType::f32 && r.dtype != DType::f16 && r.dtype != DType::bf16)
    throw Error(Status::invalid_argument, what + ".dtype = " + std::to_string(uint32_t(r.dtype)) + " is not a DType");
  // No buffer is larger than the largest heap: this bounds every size computed from the range
  // (state regions, tables) far from overflow.
  if (r.buffer_size > ctx.largest_heap())
    throw Error(Status::invalid_argument, what + ".buffer_size = " + std::to_string(r.buffer_size) +
                                              " exceeds the device's largest memory heap (" +
                                              std::to_string(ctx.largest_heap()) + " bytes)");
  if (r.offset % dtype_size(r.dtype) != 0)
    throw Error(Status::invalid_argument, what + ".offset = " + std::to_string(r.offset) + " is not a multiple of " +
                                              std::to_string(dtype_size(r.dtype)) + " bytes");
  if (r.buffer_size == 0)
    throw Error(Status::invalid_argument,
                what + ".buffer_size is 0; declare the buffer's size so the range can be checked");
  if (r.count > r.buffer_size / dtype_size(r.dtype))  // (before count * size can overflow)
    throw Error(Status::invalid_argument, what + " range of " + std::to_string(r.count) + " elements of " +
                                              dtype_name(r.dtype) +
                                              " exceeds buffer_size = " + std::to_string(r.buffer_size));
  const VkDeviceSize bytes = VkDeviceSize(r.count) * dtype_size(r.dtype);
  if (r.offset > r.buffer_size || bytes > r.buffer_size - r.offset)
    throw Error(Status::invalid_argument, what + " range [" + std::to_string(r.offset) + ", " +
                                              std::to_string(r.offset + bytes) +
                                              ") exceeds buffer_size = " + std::to_string(r.buffer_size));
  // 16-bit elements are accessed as whole 32-bit words (see shaders/vko_operands.glsl).
  if ((r.offset + bytes) % 4 != 0 && r.offset + bytes + 2 > r.buffer_size)
    throw Error(Status::invalid_argument, what + " ends 2 bytes before buffer_size = " + std::to_string(r.buffer_size) +
                                              ": 16-bit tensors are accessed as 32-bit words, so the buffer must "
                                              "extend to the end of the last element's word");
}

// Parameters are written: no parameter may overlap another parameter or any gradient.
void check_overlaps(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.buffer != b.buffer ? a.buffer < b.buffer : a.begin < b.begin;
  });
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size() && spans[j].buffer == spans[i].buffer && spans[j].begin < spans[i].end; ++j)
      if (spans[i].written || spans[j].written)
        throw Error(Status::invalid_argument, spans[i].what + " overlaps " + spans[j].what +
                                                  " in the same buffer; parameters must not alias other tensors");
}

}  // namespace vkoptim::detail
