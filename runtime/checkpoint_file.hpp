#pragma once
// A vkoptim checkpoint file from its parts, for code that writes one without an optimizer
// (resharding, runtime/shard.cpp): the header with its "crc32" (runtime/checkpoint.cpp), then the
// data. `specs` are laid out (safetensors::layout) over `data`.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "safetensors.hpp"

namespace vkoptim::detail {

std::vector<uint8_t> checkpoint_file(const std::vector<safetensors::TensorSpec>& specs, std::span<const uint8_t> data,
                                     std::map<std::string, std::string> metadata);

}  // namespace vkoptim::detail
