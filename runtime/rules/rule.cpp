#include "rules/rule.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

namespace vkoptim::detail {

const Rule& sgd_rule();
const Rule& adam_rule();

const Rule& rule_for(const RuleOptions& options) {
  if (std::holds_alternative<SgdOptions>(options)) return sgd_rule();
  return adam_rule();
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
