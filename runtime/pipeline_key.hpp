#pragma once
// The key of the pipeline registry (ContextState::pipeline): which embedded build of which
// shader, with which specialization constants.
#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace vkoptim::detail {

struct PipelineKey {
  std::string shader;            // shaders/<shader>.comp
  bool device_address = false;   // the address build (VKO_BDA), else descriptors
  bool wide = false;             // 8-float accesses (VKO_WIDE, needs shaderInt64), else 4
  bool subgroup_blocks = false;  // the build with subgroup arithmetic (VKO_SUBGROUP_BLOCKS)
  // Index = constant id: 0 workgroup size, 1 items per invocation, 2 careful, 3.. the pass's own,
  // 24.. storage (see shaders).
  std::vector<uint32_t> spec_constants;

  auto operator<=>(const PipelineKey&) const = default;
  // The embedded module's name (cmake/EmbedShaders.cmake): <shader>_<bda|desc>_<w8|w4>[_sg].
  std::string module_name() const {
    return shader + (device_address ? "_bda" : "_desc") + (wide ? "_w8" : "_w4") + (subgroup_blocks ? "_sg" : "");
  }
};

}  // namespace vkoptim::detail
