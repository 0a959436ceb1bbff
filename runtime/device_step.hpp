#pragma once
// The device step (replayable recordings): what the host writes for the device to compute a
// step's scalars itself. Each group has a record in a host-visible buffer: its schedule
// (schedule.hpp, 64 words) and its hyperparameters (encode_hyper, 64 words), rewritten whenever
// the group's options or schedule change, so a replayed command buffer sees them.
#include <array>
#include <cstdint>

#include "vkoptim/rules.hpp"

namespace vkoptim::detail {

inline constexpr uint32_t kHyperWords = 64;  // 32 fields (rules/hyper_fields.def), 2 words each

// Index of each field of rules/hyper_fields.def.
enum HyperField : uint32_t {
#define VKO_HYPER(name) kHyper_##name,
#include "rules/hyper_fields.def"
#undef VKO_HYPER
  kHyperFields
};
static_assert(2 * kHyperFields <= kHyperWords);

// The group's options as double-float pairs (hi = float(x), lo = float(x - hi)) per field; fields
// the options lack are 0.
std::array<uint32_t, kHyperWords> encode_hyper(const RuleOptions& options);

}  // namespace vkoptim::detail
