#pragma once
// The push constants of shaders/sparse_rows.comp (SparseOptimizer's stages).
#include <cstdint>

#include "rules/rule.hpp"

namespace vkoptim::detail {

// control: the control buffer's address (0 on the descriptor path); the table's capacity
// (positions), rows and dim; its index and the number of tables.
void sparse_push_constants(VkDeviceAddress control, uint32_t capacity, uint32_t rows, uint32_t dim, uint32_t table,
                           uint32_t tables, PushBlock& out);

}  // namespace vkoptim::detail
