#include "rules/rule.hpp"

#include "vkoptim/vkoptim.h"

#include <cmath>
#include <cstring>
#include <iterator>
#include <sstream>

namespace vkoptim::detail {

#define VKO_RULE(id, Options, c_enum, shaders, subgroup_build) const Rule& id##_rule();
#define VKO_RULE_ALIAS(id, c_enum, of, options)
#define VKO_SHADERS(shaders)
#include "rules/registry.def"
#undef VKO_RULE

namespace {
using RuleGetter = const Rule& (*)();
constexpr RuleGetter kRuleGetters[] = {
#define VKO_RULE(id, Options, c_enum, shaders, subgroup_build) id##_rule,
#include "rules/registry.def"
#undef VKO_RULE
};
// The registry lists the rules in RuleOptions' order, each once.
constexpr size_t kRegistryOrder[] = {
#define VKO_RULE(id, Options, c_enum, shaders, subgroup_build) RuleOptions(std::in_place_type<Options>).index(),
#include "rules/registry.def"
#undef VKO_RULE
};
constexpr bool registry_in_variant_order() {
  for (size_t i = 0; i < std::size(kRegistryOrder); ++i)
    if (kRegistryOrder[i] != i) return false;
  return std::size(kRegistryOrder) == std::variant_size_v<RuleOptions>;
}
static_assert(registry_in_variant_order(),
              "runtime/rules/registry.def: one line per RuleOptions alternative, in order");
}  // namespace

const Rule& rule_for(const RuleOptions& options) {
  return kRuleGetters[options.index()]();
}

}  // namespace vkoptim::detail

namespace vkoptim {

std::span<const RuleInfo> registered_rules() {
  static const RuleInfo rules[] = {
#define VKO_RULE(id, Options, c_enum, shaders, subgroup_build) {#id, Options{}, c_enum},
#undef VKO_RULE_ALIAS
#define VKO_RULE_ALIAS(id, c_enum, of, options) {#id, options, c_enum},
#include "rules/registry.def"
#undef VKO_RULE
#undef VKO_RULE_ALIAS
#undef VKO_SHADERS
  };
  return rules;
}

}  // namespace vkoptim

namespace vkoptim::detail {

void require(bool ok, const Rule& rule, size_t group, const char* option, double value, const char* why) {
  if (ok) return;
  std::ostringstream m;
  m.precision(17);
  m << rule.name() << " group " << group << ": " << option << " = " << value << ": " << why;
  throw Error(Status::invalid_argument, m.str());
}

void require_nonnegative(const Rule& rule, size_t group, const char* option, double value) {
  require(std::isfinite(value) && value >= 0, rule, group, option, value, "must be finite and >= 0");
}

void require_unit_interval(const Rule& rule, size_t group, const char* option, double value) {
  require(std::isfinite(value) && value >= 0 && value < 1, rule, group, option, value, "must be in [0, 1)");
}

void PushWriter::field(const char* name, uint32_t type, uint32_t bytes) {
  if (block_.rule_bytes + bytes > block_.rule.size() * 4)
    throw Error(Status::invalid_state, std::string("internal: push constants past 128 bytes at ") + name);
  if (block_.trace) block_.trace->push_back({name, block_.rule_bytes, type});
}

PushWriter& PushWriter::f32(const char* name, double value) {
  field(name, 0x1406, 4);
  const float f = float(value);
  std::memcpy(&block_.rule[block_.rule_bytes / 4], &f, 4);
  block_.rule_bytes += 4;
  return *this;
}

PushWriter& PushWriter::u32(const char* name, uint32_t value) {
  field(name, 0x1405, 4);
  block_.rule[block_.rule_bytes / 4] = value;
  block_.rule_bytes += 4;
  return *this;
}

PushWriter& PushWriter::u64(const char* name, uint64_t value) {
  field(name, 0x8dc6, 8);
  block_.rule[block_.rule_bytes / 4] = uint32_t(value);
  block_.rule[block_.rule_bytes / 4 + 1] = uint32_t(value >> 32);
  block_.rule_bytes += 8;
  return *this;
}

PushWriter& PushWriter::scratch_words() {
  static_assert(kScratchWords == 4);
  return u64("scratch_address", 0).u32("partials_base", 0).u32("sums_base", 0);
}

}  // namespace vkoptim::detail
