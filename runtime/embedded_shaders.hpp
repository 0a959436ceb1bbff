#pragma once
// Lookup of the SPIR-V embedded at build time (see cmake/EmbedShaders.cmake).
#include <span>
#include <string_view>

namespace vkoptim::detail {
// The SPIR-V of `name` (e.g. "adam_bda"); empty when no such shader was built.
std::span<const unsigned char> embedded_shader(std::string_view name);
}  // namespace vkoptim::detail
