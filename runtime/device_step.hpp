#pragma once
// The device step (replayable recordings): what the host writes for the device to compute a
// step's scalars itself. Each group has a record in a host-visible buffer: its schedule
// (schedule.hpp, 64 words) and its hyperparameters (encode_hyper, 64 words), rewritten whenever
// the group's options or schedule change, so a replayed command buffer sees them.
#include <array>
#include <cstdint>
#include <vector>

#include <vulkan/vulkan_core.h>

#include "vkoptim/rules.hpp"

namespace vkoptim::detail {

// The group record's layout (step_record.def, shared with the shaders).
enum GroupRecordWord : uint32_t {
#define VKO_GROUP_WORD(name, word) kGroupWord_##name = word,
#include "step_record.def"
#undef VKO_GROUP_WORD
};
inline constexpr uint32_t kHyperWords = kGroupWord_HYPER_WORDS;  // rules/hyper_fields.def, 2 words per field

// Index of each field of rules/hyper_fields.def.
enum HyperField : uint32_t {
#define VKO_HYPER(name) kHyper_##name,
#include "rules/hyper_fields.def"
#undef VKO_HYPER
  kHyperFields
};
static_assert(2 * kHyperFields <= kHyperWords);

// The step buffer (shaders/vko_step.glsl has its layout): in 32-bit words, the layout words, the
// group records, the tensor records, then per elementwise pass of the rule the entries of its
// scalar struct, one per tensor.
// Gradient control (shaders/vko_grads.glsl has the layout): the control record and the report
// ring, at word kControlBase.
inline constexpr uint32_t kControlBase = 4;
enum ControlWord : uint32_t {
  kControlScale = 0,
  kControlGrowthTracker = 1,
  kControlInvScale = 2,
  kControlClipCoef = 3,
  kControlSkip = 6,
  kControlSteps = 7,
  kControlSums = 10,  // f32 x 2: a step in two parts (RecordOptions::part)
  kControlScaler = 16,
  kControlGrowthFactor = 17,
  kControlBackoffFactor = 18,
  kControlGrowthInterval = 19,
  kControlMaxNorm = 20,
  kControlNormKind = 21,
  kControlNormP = 22,
  kControlErrorNonfinite = 23,
  kControlClipValue = 24,
};
enum NormKind : uint32_t { kNormP = 0, kNorm2 = 1, kNorm1 = 2, kNormInf = 3 };
inline constexpr uint32_t kControlWords = 32;
inline constexpr uint32_t kRingSlots = 16, kRingWords = 8;  // at kControlBase + kControlWords
// Per group (step_record.def): schedule, hyperparameters, flags, seed, Lookahead, SAM.
inline constexpr uint32_t kGroupRecordWords = kGroupWord_GROUP_RECORD_WORDS;
inline constexpr uint32_t kGroupFlags = kGroupWord_GROUP_FLAGS, kGroupSeed = kGroupWord_GROUP_SEED,
                          kGroupLookaheadK = kGroupWord_GROUP_LOOKAHEAD_K,
                          kGroupLookaheadAlpha = kGroupWord_GROUP_LOOKAHEAD_ALPHA,
                          kGroupSamPending = kGroupWord_GROUP_SAM_PENDING, kGroupEmaDecay = kGroupWord_GROUP_EMA_DECAY,
                          kGroupEmaWarmup = kGroupWord_GROUP_EMA_WARMUP,
                          kGroupEmaInvGamma = kGroupWord_GROUP_EMA_INV_GAMMA,
                          kGroupEmaPower = kGroupWord_GROUP_EMA_POWER,
                          kGroupEmaMinDecay = kGroupWord_GROUP_EMA_MIN_DECAY,
                          kGroupEmaAfter = kGroupWord_GROUP_EMA_AFTER;
// t, fresh, lr (double-float), carry[4], next_carry[4], momentum, cycled, 2 spare (vko_step.glsl)
inline constexpr uint32_t kTensorRecordWords = 16;
struct StepBufferLayout {
  uint32_t group_records = 0, tensor_records = 0;  // word offsets
  // Per pass of the rule: index of tensor 0's entry in an array of that pass's scalar structs
  // from the buffer's start (entry_bytes of that pass each); 0 bytes: the pass has none.
  std::vector<uint32_t> entry_base, entry_bytes;
  VkDeviceSize bytes = 0;
};
StepBufferLayout plan_step_buffer(uint32_t groups, uint32_t tensors, std::vector<uint32_t> entry_bytes);

// The group's options as double-float pairs (hi = float(x), lo = float(x - hi)) per field; fields
// the options lack are 0.
std::array<uint32_t, kHyperWords> encode_hyper(const RuleOptions& options);

}  // namespace vkoptim::detail
