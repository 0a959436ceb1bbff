// The device step's host side (device_step.hpp).
#include "device_step.hpp"

#include <cstring>
#include <type_traits>
#include <variant>

namespace vkoptim::detail {
namespace {

template <class T>
double as_double(T value) {
  if constexpr (std::is_enum_v<T>)
    return double(std::underlying_type_t<T>(value));
  else
    return double(value);
}

void put(std::array<uint32_t, kHyperWords>& words, uint32_t field, double value) {
  const float hi = float(value);
  const float lo = float(value - double(hi));
  std::memcpy(&words[2 * field], &hi, 4);
  std::memcpy(&words[2 * field + 1], &lo, 4);
}

}  // namespace

std::array<uint32_t, kHyperWords> encode_hyper(const RuleOptions& options) {
  std::array<uint32_t, kHyperWords> words{};
  std::visit(
      [&](const auto& o) {
#define VKO_HYPER(name) \
  if constexpr (requires { o.name; }) put(words, kHyper_##name, as_double(o.name));
#include "rules/hyper_fields.def"
#undef VKO_HYPER
      },
      options);
  return words;
}

StepBufferLayout plan_step_buffer(uint32_t groups, uint32_t tensors, std::vector<uint32_t> entry_bytes) {
  StepBufferLayout l;
  l.group_records = kControlBase + kControlWords + kRingSlots * kRingWords;
  l.tensor_records = l.group_records + groups * kGroupRecordWords;
  VkDeviceSize cursor = VkDeviceSize(l.tensor_records + tensors * kTensorRecordWords) * 4;
  for (uint32_t bytes : entry_bytes) {
    uint32_t base = 0;
    if (bytes) {  // an array of structs of `bytes` from the buffer's start: its first entry past cursor
      base = uint32_t((cursor + bytes - 1) / bytes);
      cursor = (VkDeviceSize(base) + tensors) * bytes;
    }
    l.entry_base.push_back(base);
  }
  l.entry_bytes = std::move(entry_bytes);
  l.bytes = (cursor + 15) / 16 * 16;
  return l;
}

}  // namespace vkoptim::detail
