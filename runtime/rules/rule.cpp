#include "rules/rule.hpp"

#include <cmath>
#include <cstring>
#include <iterator>
#include <sstream>

namespace vkoptim::detail {

const Rule& sgd_rule();
const Rule& adam_rule();
const Rule& adagrad_rule();
const Rule& rmsprop_rule();
const Rule& adadelta_rule();
const Rule& adamax_rule();
const Rule& nadam_rule();
const Rule& radam_rule();
const Rule& asgd_rule();
const Rule& rprop_rule();
const Rule& lion_rule();
const Rule& schedule_free_adamw_rule();
const Rule& lamb_rule();
const Rule& adafactor_rule();

const Rule& rule_for(const RuleOptions& options) {
  // In RuleOptions' alternative order.
  using Getter = const Rule& (*)();
  static constexpr Getter rules[] = {sgd_rule,      adam_rule,     adagrad_rule, rmsprop_rule,
                                     adadelta_rule, adamax_rule,   nadam_rule,   radam_rule,
                                     asgd_rule,     rprop_rule,    lion_rule,    schedule_free_adamw_rule,
                                     lamb_rule,     adafactor_rule};
  static_assert(std::size(rules) == std::variant_size_v<RuleOptions>);
  return rules[options.index()]();
}

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

PushWriter& PushWriter::f32(double value) {
  const float f = float(value);
  std::memcpy(&block_.rule[block_.rule_bytes / 4], &f, 4);
  block_.rule_bytes += 4;
  return *this;
}

PushWriter& PushWriter::u32(uint32_t value) {
  block_.rule[block_.rule_bytes / 4] = value;
  block_.rule_bytes += 4;
  return *this;
}

}  // namespace vkoptim::detail
