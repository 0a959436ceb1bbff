#include "schedule.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "vkoptim/error.hpp"

namespace vkoptim::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Validation

std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Checks of one schedule's fields; every failure names the group and the field's full path.
class Checker {
 public:
  Checker(size_t group, std::string path) : group_(group), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& value, const std::string& why) const {
    throw Error(Status::invalid_argument,
                "group " + std::to_string(group_) + ": " + path_ + "." + field + " = " + value + ": " + why);
  }
  void finite(const std::string& field, double v) const {
    if (!std::isfinite(v)) fail(field, format_value(v), "must be finite");
  }
  void positive(const std::string& field, double v) const {
    finite(field, v);
    if (!(v > 0)) fail(field, format_value(v), "must be > 0");
  }
  void non_negative(const std::string& field, double v) const {
    finite(field, v);
    if (!(v >= 0)) fail(field, format_value(v), "must be >= 0");
  }
  // lo <= v <= hi, with lo (hi) excluded when open_lo (open_hi).
  void in_range(const std::string& field, double v, double lo, double hi, bool open_lo, bool open_hi) const {
    finite(field, v);
    const bool ok = (open_lo ? v > lo : v >= lo) && (open_hi ? v < hi : v <= hi);
    if (!ok)
      fail(field, format_value(v),
           std::string("must be in ") + (open_lo ? "(" : "[") + format_value(lo) + ", " + format_value(hi) +
               (open_hi ? ")" : "]"));
  }
  void steps(const std::string& field, uint32_t v, bool zero_allowed) const {
    if (!zero_allowed && v == 0) fail(field, "0", "must be > 0");
    if (v > kMaxScheduleSteps) fail(field, std::to_string(v), "must be <= " + std::to_string(kMaxScheduleSteps));
  }
  // Strictly increasing step counts.
  void increasing(const std::string& field, const std::vector<uint32_t>& v) const {
    for (size_t i = 0; i < v.size(); ++i) {
      steps(field + "[" + std::to_string(i) + "]", v[i], true);
      if (i > 0 && v[i] <= v[i - 1])
        fail(field + "[" + std::to_string(i) + "]", std::to_string(v[i]),
             "milestones must be strictly increasing (previous: " + std::to_string(v[i - 1]) + ")");
    }
  }
  const std::string& path() const { return path_; }

 private:
  size_t group_;
  std::string path_;
};

bool is_composite(ScheduleKind k) {
  return k == ScheduleKind::sequential || k == ScheduleKind::chained;
}

// Kinds whose torch chainable form multiplies the current lr by a factor of s alone.
bool is_multiplicative(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::constant:
    case ScheduleKind::inverse_time:
    case ScheduleKind::inverse_time_squared:
    case ScheduleKind::exponential:
    case ScheduleKind::step:
    case ScheduleKind::multi_step:
    case ScheduleKind::constant_factor:
    case ScheduleKind::linear:
    case ScheduleKind::polynomial:
      return true;
    default:
      return false;
  }
}

void validate_piece(const LrSchedule& p, const Checker& c) {
  switch (p.kind) {
    case ScheduleKind::constant:
      return;
    case ScheduleKind::inverse_time:
    case ScheduleKind::inverse_time_squared:
      c.non_negative("inverse_time.decay_rate", p.inverse_time.decay_rate);
      return;
    case ScheduleKind::exponential:
      c.positive("exponential.gamma", p.exponential.gamma);
      return;
    case ScheduleKind::step:
      c.steps("step.step_size", p.step.step_size, false);
      c.positive("step.gamma", p.step.gamma);
      return;
    case ScheduleKind::multi_step:
      if (p.multi_step.milestones.size() > kMaxMultiStepMilestones)
        c.fail("multi_step.milestones.size()", std::to_string(p.multi_step.milestones.size()),
               "must be <= " + std::to_string(kMaxMultiStepMilestones));
      c.increasing("multi_step.milestones", p.multi_step.milestones);
      c.positive("multi_step.gamma", p.multi_step.gamma);
      return;
    case ScheduleKind::constant_factor:
      c.in_range("constant_factor.factor", p.constant_factor.factor, 0, 1, true, false);
      c.steps("constant_factor.total_iters", p.constant_factor.total_iters, false);
      return;
    case ScheduleKind::linear:
      c.in_range("linear.start_factor", p.linear.start_factor, 0, 1, true, false);
      c.in_range("linear.end_factor", p.linear.end_factor, 0, 1, false, false);
      c.steps("linear.total_iters", p.linear.total_iters, false);
      return;
    case ScheduleKind::polynomial:
      c.steps("polynomial.total_iters", p.polynomial.total_iters, false);
      c.positive("polynomial.power", p.polynomial.power);
      return;
    case ScheduleKind::cosine_annealing:
      c.steps("cosine_annealing.t_max", p.cosine_annealing.t_max, false);
      c.non_negative("cosine_annealing.eta_min", p.cosine_annealing.eta_min);
      return;
    case ScheduleKind::cosine_warm_restarts:
      c.steps("cosine_warm_restarts.t_0", p.cosine_warm_restarts.t_0, false);
      if (p.cosine_warm_restarts.t_mult < 1)
        c.fail("cosine_warm_restarts.t_mult", std::to_string(p.cosine_warm_restarts.t_mult), "must be >= 1");
      c.non_negative("cosine_warm_restarts.eta_min", p.cosine_warm_restarts.eta_min);
      return;
    case ScheduleKind::one_cycle: {
      const auto& o = p.one_cycle;
      c.positive("one_cycle.max_lr", o.max_lr);
      c.steps("one_cycle.total_steps", o.total_steps, false);
      c.in_range("one_cycle.pct_start", o.pct_start, 0, 1, true, true);
      // Each phase must span at least one step: torch divides by its length.
      const double rise = o.pct_start * o.total_steps;
      if (!(rise > 1))
        c.fail("one_cycle.pct_start", format_value(o.pct_start),
               "pct_start * total_steps (" + format_value(rise) + ") must be > 1 (the rising phase has no steps)");
      if (o.three_phase && !(2 * rise - 1 < o.total_steps))
        c.fail("one_cycle.pct_start", format_value(o.pct_start),
               "with three_phase, 2 * pct_start * total_steps - 1 must be < total_steps (the last phase has no steps)");
      if (o.anneal_strategy != AnnealStrategy::cos && o.anneal_strategy != AnnealStrategy::linear)
        c.fail("one_cycle.anneal_strategy", std::to_string(uint32_t(o.anneal_strategy)), "must be cos or linear");
      c.positive("one_cycle.div_factor", o.div_factor);
      c.positive("one_cycle.final_div_factor", o.final_div_factor);
      if (!(o.max_lr / o.div_factor / o.final_div_factor > 0))
        c.fail("one_cycle.final_div_factor", format_value(o.final_div_factor),
               "max_lr / div_factor / final_div_factor underflows to 0");
      if (o.cycle_momentum) {
        c.in_range("one_cycle.base_momentum", o.base_momentum, 0, 1, false, false);
        c.in_range("one_cycle.max_momentum", o.max_momentum, 0, 1, false, false);
      }
      return;
    }
    case ScheduleKind::cyclic: {
      const auto& o = p.cyclic;
      c.non_negative("cyclic.base_lr", o.base_lr);
      c.non_negative("cyclic.max_lr", o.max_lr);
      c.steps("cyclic.step_size_up", o.step_size_up, false);
      c.steps("cyclic.step_size_down", o.step_size_down, true);
      if (o.mode != CyclicMode::triangular && o.mode != CyclicMode::triangular2 && o.mode != CyclicMode::exp_range)
        c.fail("cyclic.mode", std::to_string(uint32_t(o.mode)), "must be triangular, triangular2 or exp_range");
      c.positive("cyclic.gamma", o.gamma);
      if (o.cycle_momentum) {
        c.in_range("cyclic.base_momentum", o.base_momentum, 0, 1, false, false);
        c.in_range("cyclic.max_momentum", o.max_momentum, 0, 1, false, false);
      }
      return;
    }
    case ScheduleKind::cosine_with_warmup: {
      const auto& o = p.cosine_with_warmup;
      c.steps("cosine_with_warmup.num_warmup_steps", o.num_warmup_steps, true);
      c.steps("cosine_with_warmup.num_training_steps", o.num_training_steps, false);
      c.non_negative("cosine_with_warmup.num_cycles", o.num_cycles);
      c.in_range("cosine_with_warmup.min_lr_ratio", o.min_lr_ratio, 0, 1, false, false);
      return;
    }
    case ScheduleKind::warmup_stable_decay: {
      const auto& o = p.warmup_stable_decay;
      c.steps("warmup_stable_decay.num_warmup_steps", o.num_warmup_steps, true);
      c.steps("warmup_stable_decay.num_stable_steps", o.num_stable_steps, true);
      c.steps("warmup_stable_decay.num_decay_steps", o.num_decay_steps, false);
      for (auto [field, shape] : {std::pair{"warmup_stable_decay.warmup_shape", o.warmup_shape},
                                  std::pair{"warmup_stable_decay.decay_shape", o.decay_shape}})
        if (shape != WsdShape::linear && shape != WsdShape::cosine && shape != WsdShape::one_minus_sqrt)
          c.fail(field, std::to_string(uint32_t(shape)), "must be linear, cosine or one_minus_sqrt");
      c.non_negative("warmup_stable_decay.num_cycles", o.num_cycles);
      c.in_range("warmup_stable_decay.min_lr_ratio", o.min_lr_ratio, 0, 1, false, false);
      return;
    }
    case ScheduleKind::sequential:
    case ScheduleKind::chained:
      break;  // handled by the caller
  }
  c.fail("kind", std::to_string(uint32_t(p.kind)), "is not a ScheduleKind");
}

// ---------------------------------------------------------------------------------------------
// Host evaluation (double)

constexpr double kPi = 3.141592653589793238462643383279502884;

// torch's cosine anneal end + (start - end)·(1 + cos(π·pct))/2 for pct in [0, 1], written as
// near + (far - near)·sin²(π·r/2) around the endpoint nearer pct (r <= 1/2) so that it keeps
// its relative accuracy where the lr approaches a small endpoint.
double anneal_cos(double start, double end, double pct) {
  if (pct <= 0.5) {
    const double h = std::sin(kPi * pct / 2);
    return start + (end - start) * (h * h);
  }
  const double h = std::sin(kPi * (1 - pct) / 2);
  return end + (start - end) * (h * h);
}

double anneal_linear(double start, double end, double pct) {
  return start + (end - start) * pct;
}

// (1 + cos(π·x))/2 has period 2 and is even: the y in [0, 1] with the same value.
double fold_cosine_argument(double x) {
  const double y = std::fmod(x, 2.0);
  return y > 1 ? 2 - y : y;
}

struct OneCyclePoint {
  double lr, momentum;
};

OneCyclePoint one_cycle_at(const OneCycleLR& o, uint64_t s) {
  const double initial = o.max_lr / o.div_factor;
  const double min_lr = initial / o.final_div_factor;
  s = std::min<uint64_t>(s, o.total_steps - 1);  // past the end: hold the final values
  struct Phase {
    double end_step, start_lr, end_lr, start_momentum, end_momentum;
  };
  const double rise_end = o.pct_start * o.total_steps - 1;
  const double last = double(o.total_steps) - 1;
  Phase phases[3];
  size_t n;
  if (o.three_phase) {
    phases[0] = {rise_end, initial, o.max_lr, o.max_momentum, o.base_momentum};
    phases[1] = {2 * o.pct_start * o.total_steps - 2, o.max_lr, initial, o.base_momentum, o.max_momentum};
    phases[2] = {last, initial, min_lr, o.max_momentum, o.max_momentum};
    n = 3;
  } else {
    phases[0] = {rise_end, initial, o.max_lr, o.max_momentum, o.base_momentum};
    phases[1] = {last, o.max_lr, min_lr, o.base_momentum, o.max_momentum};
    n = 2;
  }
  double start_step = 0;
  for (size_t i = 0;; ++i) {
    const Phase& ph = phases[i];
    if (double(s) <= ph.end_step || i == n - 1) {
      const double pct = (double(s) - start_step) / (ph.end_step - start_step);
      if (o.anneal_strategy == AnnealStrategy::cos)
        return {anneal_cos(ph.start_lr, ph.end_lr, pct), anneal_cos(ph.start_momentum, ph.end_momentum, pct)};
      return {anneal_linear(ph.start_lr, ph.end_lr, pct), anneal_linear(ph.start_momentum, ph.end_momentum, pct)};
    }
    start_step = ph.end_step;
  }
}

struct CyclicPoint {
  double lr, momentum;
};

CyclicPoint cyclic_at(const CyclicLR& o, uint64_t s) {
  const uint64_t up = o.step_size_up, down = o.step_size_down ? o.step_size_down : up, total = up + down;
  const uint64_t cycle = s / total, r = s % total;  // torch's cycle is this + 1
  const double rise = r <= up ? double(r) / double(up) : double(total - r) / double(down);
  double scale = 1;
  if (o.mode == CyclicMode::triangular2)
    scale = std::ldexp(1.0, -int(std::min<uint64_t>(cycle, 2000)));
  else if (o.mode == CyclicMode::exp_range)
    scale = std::pow(o.gamma, double(s));
  const double height = rise * scale;
  return {o.base_lr + (o.max_lr - o.base_lr) * height, o.max_momentum - (o.max_momentum - o.base_momentum) * height};
}

// Position T_cur / T_i within the current SGDR cycle.
double warm_restart_phase(const CosineAnnealingWarmRestarts& o, uint64_t s) {
  uint64_t cycle_length = o.t_0, cur = s;
  if (o.t_mult == 1) {
    cur = s % cycle_length;
  } else {
    while (cur >= cycle_length) {
      cur -= cycle_length;
      // Saturate: past 2^64 / t_mult no remaining count can reach the next cycle's length.
      cycle_length = cycle_length > std::numeric_limits<uint64_t>::max() / o.t_mult
                         ? std::numeric_limits<uint64_t>::max()
                         : cycle_length * o.t_mult;
    }
  }
  return double(cur) / double(cycle_length);
}

double hf_cosine_factor(double num_cycles, double min_lr_ratio, double progress) {
  return anneal_cos(1.0, min_lr_ratio, fold_cosine_argument(2 * num_cycles * progress));
}

double wsd_factor(const WarmupStableDecay& o, uint64_t s) {
  const uint64_t w = o.num_warmup_steps, st = o.num_stable_steps, d = o.num_decay_steps;
  const double r = o.min_lr_ratio;
  if (s < w) {
    const double p = double(s) / double(w), q = double(w - s) / double(w);  // q = 1 - p
    switch (o.warmup_shape) {
      case WsdShape::linear:
        return r + (1 - r) * p;
      case WsdShape::cosine:
        return anneal_cos(r, 1.0, p);
      case WsdShape::one_minus_sqrt:
        return r + (1 - r) * (p / (1 + std::sqrt(q)));  // 1 - sqrt(q) without cancellation
    }
  }
  if (s - w < st) return 1.0;
  if (s - w - st < d) {
    const uint64_t k = s - w - st;
    const double p = double(k) / double(d), q = double(d - k) / double(d);
    switch (o.decay_shape) {
      case WsdShape::linear:
        return r + (1 - r) * q;
      case WsdShape::cosine:
        return hf_cosine_factor(o.num_cycles, r, p);
      case WsdShape::one_minus_sqrt:
        return r + (1 - r) * (q / (1 + std::sqrt(p)));  // 1 - sqrt(p)
    }
  }
  return r;
}

double piece_lr(const LrSchedule& p, double base, uint64_t s) {
  const double ds = double(s);
  switch (p.kind) {
    case ScheduleKind::constant:
      return base;
    case ScheduleKind::inverse_time:
      return base / (1 + p.inverse_time.decay_rate * ds);
    case ScheduleKind::inverse_time_squared: {
      const double d = 1 + p.inverse_time.decay_rate * ds;
      return base / (d * d);
    }
    case ScheduleKind::exponential:
      return base * std::pow(p.exponential.gamma, ds);
    case ScheduleKind::step:
      return base * std::pow(p.step.gamma, double(s / p.step.step_size));
    case ScheduleKind::multi_step: {
      const auto& m = p.multi_step.milestones;
      const auto passed = std::upper_bound(m.begin(), m.end(), s) - m.begin();
      return base * std::pow(p.multi_step.gamma, double(passed));
    }
    case ScheduleKind::constant_factor:
      return s < p.constant_factor.total_iters ? base * p.constant_factor.factor : base;
    case ScheduleKind::linear: {
      const auto& o = p.linear;
      const double f = double(std::min<uint64_t>(s, o.total_iters)) / o.total_iters;
      return base * (o.start_factor + (o.end_factor - o.start_factor) * f);
    }
    case ScheduleKind::polynomial: {
      const auto& o = p.polynomial;
      const double left = double(o.total_iters - std::min<uint64_t>(s, o.total_iters)) / o.total_iters;
      return base * std::pow(left, o.power);
    }
    case ScheduleKind::cosine_annealing: {
      // Period 2·t_max, even: fold s into [0, t_max] exactly.
      const uint64_t t = p.cosine_annealing.t_max;
      uint64_t y = s % (2 * t);
      if (y > t) y = 2 * t - y;
      return anneal_cos(base, p.cosine_annealing.eta_min, double(y) / double(t));
    }
    case ScheduleKind::cosine_warm_restarts:
      return anneal_cos(base, p.cosine_warm_restarts.eta_min, warm_restart_phase(p.cosine_warm_restarts, s));
    case ScheduleKind::one_cycle:
      return one_cycle_at(p.one_cycle, s).lr;
    case ScheduleKind::cyclic:
      return cyclic_at(p.cyclic, s).lr;
    case ScheduleKind::cosine_with_warmup: {
      const auto& o = p.cosine_with_warmup;
      if (s < o.num_warmup_steps) return base * ds / double(o.num_warmup_steps);
      const int64_t span = std::max<int64_t>(1, int64_t(o.num_training_steps) - int64_t(o.num_warmup_steps));
      const double progress = double(s - o.num_warmup_steps) / double(span);
      return base * hf_cosine_factor(o.num_cycles, o.min_lr_ratio, progress);
    }
    case ScheduleKind::warmup_stable_decay:
      return base * wsd_factor(p.warmup_stable_decay, s);
    case ScheduleKind::sequential:
    case ScheduleKind::chained:
      break;
  }
  return base;  // unreachable for validated pieces
}

// ---------------------------------------------------------------------------------------------
// Encoding

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

class RecordWriter {
 public:
  explicit RecordWriter(EncodedSchedule& record) : record_(record) {}
  void u(size_t at, uint32_t v) { record_.words.at(at) = v; }
  void f(size_t at, double v) { u(at, float_bits(float(v))); }
  // (hi, lo): hi = v rounded to float, lo = the rest rounded to float.
  void df(size_t at, double v) {
    const float hi = float(v);
    f(at, hi);
    f(at + 1, v - double(hi));
  }

 private:
  EncodedSchedule& record_;
};

void encode_piece(const LrSchedule& p, RecordWriter& w, size_t at) {
  w.u(at, uint32_t(p.kind));
  const size_t o = at;
  switch (p.kind) {
    case ScheduleKind::constant:
      break;
    case ScheduleKind::inverse_time:
    case ScheduleKind::inverse_time_squared:
      w.df(o + 1, p.inverse_time.decay_rate);
      break;
    case ScheduleKind::exponential:
      w.df(o + 1, p.exponential.gamma);
      break;
    case ScheduleKind::step:
      w.df(o + 1, p.step.gamma);
      w.u(o + 3, p.step.step_size);
      break;
    case ScheduleKind::multi_step:
      w.df(o + 1, p.multi_step.gamma);
      w.u(o + 3, uint32_t(p.multi_step.milestones.size()));
      for (size_t i = 0; i < p.multi_step.milestones.size(); ++i) w.u(o + 4 + i, p.multi_step.milestones[i]);
      break;
    case ScheduleKind::constant_factor:
      w.df(o + 1, p.constant_factor.factor);
      w.u(o + 3, p.constant_factor.total_iters);
      break;
    case ScheduleKind::linear:
      w.df(o + 1, p.linear.start_factor);
      w.df(o + 3, p.linear.end_factor);
      w.u(o + 5, p.linear.total_iters);
      break;
    case ScheduleKind::polynomial:
      w.df(o + 1, p.polynomial.power);
      w.u(o + 3, p.polynomial.total_iters);
      break;
    case ScheduleKind::cosine_annealing:
      w.df(o + 1, p.cosine_annealing.eta_min);
      w.u(o + 3, p.cosine_annealing.t_max);
      break;
    case ScheduleKind::cosine_warm_restarts:
      w.df(o + 1, p.cosine_warm_restarts.eta_min);
      w.u(o + 3, p.cosine_warm_restarts.t_0);
      w.u(o + 4, p.cosine_warm_restarts.t_mult);
      break;
    case ScheduleKind::one_cycle: {
      const auto& c = p.one_cycle;
      const double initial = c.max_lr / c.div_factor;
      w.df(o + 1, initial);
      w.df(o + 3, c.max_lr);
      w.df(o + 5, initial / c.final_div_factor);
      w.df(o + 7, c.pct_start * c.total_steps - 1);
      w.u(o + 9, c.total_steps);
      w.u(o + 10, (c.three_phase ? 1u : 0u) | (c.anneal_strategy == AnnealStrategy::linear ? 2u : 0u) |
                      (c.cycle_momentum ? 4u : 0u));
      w.f(o + 11, c.base_momentum);
      w.f(o + 12, c.max_momentum);
      break;
    }
    case ScheduleKind::cyclic: {
      const auto& c = p.cyclic;
      w.df(o + 1, c.base_lr);
      w.df(o + 3, c.max_lr);
      w.df(o + 5, c.gamma);
      w.u(o + 7, c.step_size_up);
      w.u(o + 8, c.step_size_down ? c.step_size_down : c.step_size_up);
      w.u(o + 9, uint32_t(c.mode));
      w.u(o + 10, c.cycle_momentum ? 1u : 0u);
      w.f(o + 11, c.base_momentum);
      w.f(o + 12, c.max_momentum);
      break;
    }
    case ScheduleKind::cosine_with_warmup:
      w.df(o + 1, p.cosine_with_warmup.num_cycles);
      w.df(o + 3, p.cosine_with_warmup.min_lr_ratio);
      w.u(o + 5, p.cosine_with_warmup.num_warmup_steps);
      w.u(o + 6, p.cosine_with_warmup.num_training_steps);
      break;
    case ScheduleKind::warmup_stable_decay: {
      const auto& c = p.warmup_stable_decay;
      w.df(o + 1, c.num_cycles);
      w.df(o + 3, c.min_lr_ratio);
      w.u(o + 5, c.num_warmup_steps);
      w.u(o + 6, c.num_stable_steps);
      w.u(o + 7, c.num_decay_steps);
      w.u(o + 8, uint32_t(c.warmup_shape));
      w.u(o + 9, uint32_t(c.decay_shape));
      break;
    }
    case ScheduleKind::sequential:
    case ScheduleKind::chained:
      break;
  }
}

}  // namespace

void validate_schedule(const LrSchedule& schedule, size_t group) {
  const Checker top(group, "schedule");
  if (!is_composite(schedule.kind)) {
    validate_piece(schedule, top);
    return;
  }
  const char* name = schedule.kind == ScheduleKind::sequential ? "sequential" : "chained";
  const auto& pieces = schedule.pieces;
  if (pieces.empty() || pieces.size() > kMaxSchedulePieces)
    top.fail("pieces.size()", std::to_string(pieces.size()),
             std::string(name) + " needs 1 to " + std::to_string(kMaxSchedulePieces) + " pieces");
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Checker c(group, "schedule.pieces[" + std::to_string(i) + "]");
    const ScheduleKind k = pieces[i].kind;
    if (is_composite(k))
      c.fail("kind", std::to_string(uint32_t(k)), "a piece cannot be sequential or chained (one level of composition)");
    if (schedule.kind == ScheduleKind::sequential && (k == ScheduleKind::one_cycle || k == ScheduleKind::cyclic))
      c.fail("kind", std::to_string(uint32_t(k)),
             "one_cycle and cyclic set absolute lrs and cannot be pieces of a sequential schedule");
    if (schedule.kind == ScheduleKind::chained && !is_multiplicative(k))
      c.fail("kind", std::to_string(uint32_t(k)), "a chained piece must be multiplicative (see LrSchedule)");
    validate_piece(pieces[i], c);
  }
  if (schedule.kind == ScheduleKind::sequential) {
    if (schedule.milestones.size() != pieces.size() - 1)
      top.fail("milestones.size()", std::to_string(schedule.milestones.size()),
               "must be pieces.size() - 1 = " + std::to_string(pieces.size() - 1));
    top.increasing("milestones", schedule.milestones);
    if (!schedule.milestones.empty() && schedule.milestones[0] == 0)
      top.fail("milestones[0]", "0", "must be > 0 (piece 0 starts at step 0)");
  } else if (!schedule.milestones.empty()) {
    top.fail("milestones.size()", std::to_string(schedule.milestones.size()), "must be 0 for a chained schedule");
  }
}

double schedule_lr(const LrSchedule& schedule, double base_lr, uint64_t s) {
  switch (schedule.kind) {
    case ScheduleKind::sequential: {
      const auto& m = schedule.milestones;
      const size_t active = size_t(std::upper_bound(m.begin(), m.end(), s) - m.begin());
      const uint64_t start = active == 0 ? 0 : m[active - 1];
      return piece_lr(schedule.pieces[active], base_lr, s - start);
    }
    case ScheduleKind::chained: {
      double lr = base_lr;
      for (const auto& p : schedule.pieces) lr = piece_lr(p, lr, s);
      return lr;
    }
    default:
      return piece_lr(schedule, base_lr, s);
  }
}

std::optional<double> schedule_momentum(const LrSchedule& schedule, uint64_t s) {
  // Compositions hold no one_cycle or cyclic piece, so only a lone schedule cycles momentum.
  if (schedule.kind == ScheduleKind::one_cycle && schedule.one_cycle.cycle_momentum)
    return one_cycle_at(schedule.one_cycle, s).momentum;
  if (schedule.kind == ScheduleKind::cyclic && schedule.cyclic.cycle_momentum)
    return cyclic_at(schedule.cyclic, s).momentum;
  return std::nullopt;
}

EncodedSchedule encode_schedule(const LrSchedule& schedule, double base_lr) {
  EncodedSchedule record;
  RecordWriter w(record);
  const bool composite = is_composite(schedule.kind);
  const ScheduleComposition composition = !composite                               ? ScheduleComposition::single
                                          : schedule.kind == ScheduleKind::chained ? ScheduleComposition::chained
                                                                                   : ScheduleComposition::sequential;
  w.u(0, uint32_t(composition));
  w.u(1, composite ? uint32_t(schedule.pieces.size()) : 1u);
  w.df(2, base_lr);
  for (size_t i = 0; i < 3; ++i)
    w.u(4 + i, composition == ScheduleComposition::sequential && i < schedule.milestones.size() ? schedule.milestones[i]
                                                                                                : 0xffffffffu);
  if (!composite) {
    encode_piece(schedule, w, kScheduleHeaderWords);
  } else {
    for (size_t i = 0; i < schedule.pieces.size(); ++i)
      encode_piece(schedule.pieces[i], w, kScheduleHeaderWords + i * kSchedulePieceWords);
  }
  return record;
}

}  // namespace vkoptim::detail
