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

}  // namespace vkoptim::detail
