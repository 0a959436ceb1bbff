#pragma once
// Checks of the buffer ranges an engine lends (Optimizer's tensors, SparseOptimizer's tables), made
// before anything is allocated or recorded.
#include <string>
#include <vector>

#include "context_state.hpp"
#include "vkoptim/tensor.hpp"

namespace vkoptim::detail {

enum class RangeOf { floats, indices };  // f32/f16/bf16 data, or u32 indices
// Throws invalid_argument naming `what` when the range is empty, of the wrong kind, misaligned,
// outside its declared buffer_size, or a Tensor of another Context.
void check_range(const BufferRange& r, const std::string& what, const ContextState& ctx, RangeOf kind);

// A byte range of a buffer, `written` when a step writes it.
struct Span {
  VkBuffer buffer;
  VkDeviceSize begin, end;
  bool written;
  std::string what;
};
// Throws invalid_argument when a written span overlaps any other.
void check_overlaps(std::vector<Span> spans);

}  // namespace vkoptim::detail
