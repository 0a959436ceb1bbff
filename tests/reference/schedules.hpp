#pragma once
// Double-precision reference for learning-rate schedules, written from torch/optim/lr_scheduler.py
// and transformers/optimization.py *as they compute*: each torch scheduler holds the group's lr
// and rewrites it one step at a time with its chainable get_lr (StepLR multiplies by gamma at
// each multiple of step_size, CosineAnnealingLR multiplies lr - eta_min by
// (1 + cos(π·t/T)) / (1 + cos(π·(t-1)/T)), ...), SequentialLR switches schedulers at milestones
// through their closed form at 0 (`_update_lr(0)`), ChainedScheduler steps each scheduler on the
// same lr in turn. Hugging Face schedules are LambdaLRs: base · lambda(s), evaluated literally.
// The loop is torch's: construct (the constructor's initial step gives the lr of s = 0), then
// lr() is the lr of step s + 1 and step() moves to s + 1.
//
// Where the recursive forms differ from closed forms, numerically: each chainable step rounds
// a ratio and a product, so the relative error of the lr grows by a few units of 2^-53 per step
// (after 10^4 steps: ~1e-12); CosineAnnealingLR's ratio divides by 1 + cos(π(t-1)/T), which is
// computed with absolute (not relative) error, so near the trough its error is absolute, a few
// 2^-53 of (base - eta_min) per step; torch's closed forms (Hugging Face, warm restarts,
// OneCycleLR) compute 1 + cos(πx) directly, also with absolute error ~2^-51 of the amplitude.
// Tolerances that follow from this are in tests/test_schedules.cpp.
//
// The classic decays base/(1 + λs), base/(1 + λs)² are no torch class: alone or in a sequence
// they are LambdaLRs; in a chain MultiplicativeLRs with factor f(s)/f(s-1), as a torch user
// would write them. Shares no code with runtime/; reads the public vkoptim::LrSchedule.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "vkoptim/schedule.hpp"

namespace reference {

// What schedulers read and write in a torch param group.
struct ParamGroup {
  double lr = 0;
  std::optional<double> initial_lr;  // set by the first scheduler constructed (setdefault)
  std::optional<double> momentum;    // group["momentum"] or betas[0], once a scheduler writes it
};

// One torch LRScheduler on one param group.
class TorchScheduler {
 public:
  virtual ~TorchScheduler() = default;
  // __init__ with last_epoch = -1: base_lrs from initial_lr, then _initial_step().
  virtual void construct(ParamGroup& g) {
    if (!g.initial_lr) g.initial_lr = g.lr;
    base_lr_ = *g.initial_lr;
    last_epoch_ = 0;
    is_initial_ = true;
    g.lr = get_lr(g);
    is_initial_ = false;
  }
  // step(): last_epoch += 1, lr = get_lr() (chainable form).
  virtual void step(ParamGroup& g) {
    ++last_epoch_;
    g.lr = get_lr(g);
  }
  // _update_lr(0), as SequentialLR calls it at a milestone: the closed form when the class has
  // one, else get_lr().
  virtual void update_lr_at_zero(ParamGroup& g) {
    last_epoch_ = 0;
    g.lr = has_closed_form() ? closed_form() : get_lr(g);
  }

 protected:
  virtual double get_lr(ParamGroup& g) = 0;
  virtual bool has_closed_form() const { return false; }
  virtual double closed_form() const { return 0; }
  double base_lr_ = 0;
  int64_t last_epoch_ = -1;
  bool is_initial_ = false;
};

constexpr double kPi = 3.141592653589793;  // math.pi

// Python's a % m for m > 0 (never negative).
inline int64_t py_mod(int64_t a, int64_t m) {
  return ((a % m) + m) % m;
}

class LambdaLR : public TorchScheduler {
 public:
  explicit LambdaLR(std::function<double(int64_t)> f) : f_(std::move(f)) {}

 protected:
  double get_lr(ParamGroup&) override { return base_lr_ * f_(last_epoch_); }
  std::function<double(int64_t)> f_;
};

class MultiplicativeLR : public TorchScheduler {
 public:
  explicit MultiplicativeLR(std::function<double(int64_t)> f) : f_(std::move(f)) {}

 protected:
  double get_lr(ParamGroup& g) override { return is_initial_ ? g.lr : g.lr * f_(last_epoch_); }
  std::function<double(int64_t)> f_;
};

class StepLR : public TorchScheduler {
 public:
  StepLR(int64_t step_size, double gamma) : step_size_(step_size), gamma_(gamma) {}

 protected:
  double get_lr(ParamGroup& g) override {
    if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return g.lr;
    return g.lr * gamma_;
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override { return base_lr_ * std::pow(gamma_, double(last_epoch_ / step_size_)); }
  int64_t step_size_;
  double gamma_;
};

class MultiStepLR : public TorchScheduler {
 public:
  MultiStepLR(std::vector<uint32_t> milestones, double gamma) : milestones_(std::move(milestones)), gamma_(gamma) {}

 protected:
  double get_lr(ParamGroup& g) override {
    const auto n = std::count(milestones_.begin(), milestones_.end(), uint32_t(last_epoch_));
    if (n == 0) return g.lr;
    return g.lr * std::pow(gamma_, double(n));
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override {
    const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
    return base_lr_ * std::pow(gamma_, double(passed));
  }
  std::vector<uint32_t> milestones_;
  double gamma_;
};

class ConstantLR : public TorchScheduler {
 public:
  ConstantLR(double factor, int64_t total_iters) : factor_(factor), total_iters_(total_iters) {}

 protected:
  double get_lr(ParamGroup& g) override {
    if (last_epoch_ == 0) return g.lr * factor_;
    if (last_epoch_ != total_iters_) return g.lr;
    return g.lr * (1.0 / factor_);
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override {
    return base_lr_ * (factor_ + double(last_epoch_ >= total_iters_) * (1 - factor_));
  }
  double factor_;
  int64_t total_iters_;
};

class LinearLR : public TorchScheduler {
 public:
  LinearLR(double start, double end, int64_t total_iters) : start_(start), end_(end), total_iters_(total_iters) {}

 protected:
  double get_lr(ParamGroup& g) override {
    if (last_epoch_ == 0) return g.lr * start_;
    if (is_initial_ || last_epoch_ > total_iters_) return g.lr;
    return g.lr * (1.0 + (end_ - start_) / (double(total_iters_) * start_ + double(last_epoch_ - 1) * (end_ - start_)));
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override {
    return base_lr_ * (start_ + (end_ - start_) * double(std::min(total_iters_, last_epoch_)) / double(total_iters_));
  }
  double start_, end_;
  int64_t total_iters_;
};

class ExponentialLR : public TorchScheduler {
 public:
  explicit ExponentialLR(double gamma) : gamma_(gamma) {}

 protected:
  double get_lr(ParamGroup& g) override { return is_initial_ ? g.lr : g.lr * gamma_; }
  bool has_closed_form() const override { return true; }
  double closed_form() const override { return base_lr_ * std::pow(gamma_, double(last_epoch_)); }
  double gamma_;
};

class PolynomialLR : public TorchScheduler {
 public:
  PolynomialLR(int64_t total_iters, double power) : total_iters_(total_iters), power_(power) {}

 protected:
  double get_lr(ParamGroup& g) override {
    if (is_initial_ || last_epoch_ > total_iters_) return g.lr;
    const double t = double(total_iters_);
    const double decay = std::pow((1.0 - double(last_epoch_) / t) / (1.0 - double(last_epoch_ - 1) / t), power_);
    return g.lr * decay;
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override {
    return base_lr_ * std::pow(1.0 - double(std::min(total_iters_, last_epoch_)) / double(total_iters_), power_);
  }
  int64_t total_iters_;
  double power_;
};

class CosineAnnealingLR : public TorchScheduler {
 public:
  CosineAnnealingLR(int64_t t_max, double eta_min) : t_max_(t_max), eta_min_(eta_min) {}

 protected:
  double get_lr(ParamGroup& g) override {
    if (is_initial_) return g.lr;
    const double t = double(t_max_);
    if (py_mod(last_epoch_ - 1 - t_max_, 2 * t_max_) == 0)
      return g.lr + (base_lr_ - eta_min_) * (1 - std::cos(kPi / t)) / 2;
    return (1 + std::cos(kPi * double(last_epoch_) / t)) / (1 + std::cos(kPi * double(last_epoch_ - 1) / t)) *
               (g.lr - eta_min_) +
           eta_min_;
  }
  bool has_closed_form() const override { return true; }
  double closed_form() const override {
    return eta_min_ + (base_lr_ - eta_min_) * (1 + std::cos(kPi * double(last_epoch_) / double(t_max_))) / 2;
  }
  int64_t t_max_;
  double eta_min_;
};

class CosineAnnealingWarmRestarts : public TorchScheduler {
 public:
  CosineAnnealingWarmRestarts(int64_t t_0, int64_t t_mult, double eta_min)
      : t_0_(t_0), t_i_(t_0), t_mult_(t_mult), eta_min_(eta_min) {}
  // Its own step(): the epoch = 0 path on construction, T_cur += 1 with restarts after.
  void construct(ParamGroup& g) override {
    if (!g.initial_lr) g.initial_lr = g.lr;
    base_lr_ = *g.initial_lr;
    t_i_ = t_0_;
    t_cur_ = 0;
    last_epoch_ = 0;
    g.lr = get_lr(g);
  }
  void step(ParamGroup& g) override {
    ++last_epoch_;
    t_cur_ = t_cur_ + 1;
    if (t_cur_ >= t_i_) {
      t_cur_ = t_cur_ % t_i_;
      t_i_ = t_i_ * t_mult_;
    }
    g.lr = get_lr(g);
  }

 protected:
  double get_lr(ParamGroup&) override {
    return eta_min_ + (base_lr_ - eta_min_) * (1 + std::cos(kPi * double(t_cur_) / double(t_i_))) / 2;
  }
  int64_t t_0_, t_i_, t_mult_, t_cur_ = -1;
  double eta_min_;
};

class OneCycleLR : public TorchScheduler {
 public:
  explicit OneCycleLR(const vkoptim::OneCycleLR& o) : o_(o) {
    const double t = double(o.total_steps);
    if (o.three_phase) {
      phases_ = {{o.pct_start * t - 1, kInitial, kMax, true, false},
                 {2 * o.pct_start * t - 2, kMax, kInitial, false, true},
                 {t - 1, kInitial, kMin, true, true}};
    } else {
      phases_ = {{o.pct_start * t - 1, kInitial, kMax, true, false}, {t - 1, kMax, kMin, false, true}};
    }
  }
  void construct(ParamGroup& g) override {
    g.initial_lr = o_.max_lr / o_.div_factor;
    max_lr_ = o_.max_lr;
    min_lr_ = *g.initial_lr / o_.final_div_factor;
    if (o_.cycle_momentum) g.momentum = o_.max_momentum;
    TorchScheduler::construct(g);
  }

 protected:
  enum Which { kInitial, kMax, kMin };
  struct Phase {
    double end_step;
    Which start_lr, end_lr;
    bool start_momentum_is_max, end_momentum_is_max;
  };
  double value(Which w) const { return w == kInitial ? base_lr_ : w == kMax ? max_lr_ : min_lr_; }
  double anneal(double start, double end, double pct) const {
    if (o_.anneal_strategy == vkoptim::AnnealStrategy::cos)
      return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1);
    return (end - start) * pct + start;
  }
  double get_lr(ParamGroup& g) override {
    const double step_num = double(last_epoch_);
    double start_step = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& ph = phases_[i];
      if (step_num <= ph.end_step || i == phases_.size() - 1) {
        const double pct = (step_num - start_step) / (ph.end_step - start_step);
        if (o_.cycle_momentum)
          g.momentum = anneal(ph.start_momentum_is_max ? o_.max_momentum : o_.base_momentum,
                              ph.end_momentum_is_max ? o_.max_momentum : o_.base_momentum, pct);
        return anneal(value(ph.start_lr), value(ph.end_lr), pct);
      }
      start_step = ph.end_step;
    }
    return g.lr;
  }
  vkoptim::OneCycleLR o_;
  std::vector<Phase> phases_;
  double max_lr_ = 0, min_lr_ = 0;
};

class CyclicLR : public TorchScheduler {
 public:
  explicit CyclicLR(const vkoptim::CyclicLR& o) : o_(o) {
    const double up = double(o.step_size_up);
    const double down = o.step_size_down ? double(o.step_size_down) : up;
    total_size_ = up + down;
    step_ratio_ = up / total_size_;
  }
  void construct(ParamGroup& g) override {
    g.lr = o_.base_lr;
    if (o_.cycle_momentum) g.momentum = o_.max_momentum;
    TorchScheduler::construct(g);
    base_lr_ = o_.base_lr;
  }

 protected:
  double scale_fn(double x) const {
    switch (o_.mode) {
      case vkoptim::CyclicMode::triangular:
        return 1.0;
      case vkoptim::CyclicMode::triangular2:
        return 1 / std::pow(2.0, x - 1);
      case vkoptim::CyclicMode::exp_range:
        return std::pow(o_.gamma, x);
    }
    return 1.0;
  }
  double get_lr(ParamGroup& g) override {
    const double le = double(last_epoch_);
    const double cycle = std::floor(1 + le / total_size_);
    const double x = 1.0 + le / total_size_ - cycle;
    const double scale_factor = x <= step_ratio_ ? x / step_ratio_ : (x - 1) / (step_ratio_ - 1);
    // triangular, triangular2: scale_mode "cycle"; exp_range: "iterations".
    const double scale = o_.mode == vkoptim::CyclicMode::exp_range ? scale_fn(le) : scale_fn(cycle);
    const double base_height = (o_.max_lr - o_.base_lr) * scale_factor;
    if (o_.cycle_momentum) g.momentum = o_.max_momentum - (o_.max_momentum - o_.base_momentum) * scale_factor * scale;
    return o_.base_lr + base_height * scale;
  }
  vkoptim::CyclicLR o_;
  double total_size_ = 0, step_ratio_ = 0;
};

// transformers: _get_cosine_schedule_with_warmup_lr_lambda (with min_lr_rate; 0 is the plain one).
inline double hf_cosine_lambda(int64_t current_step, int64_t num_warmup_steps, int64_t num_training_steps,
                               double num_cycles, double min_lr_rate) {
  if (current_step < num_warmup_steps) return double(current_step) / double(std::max<int64_t>(1, num_warmup_steps));
  const double progress =
      double(current_step - num_warmup_steps) / double(std::max<int64_t>(1, num_training_steps - num_warmup_steps));
  double factor = 0.5 * (1.0 + std::cos(kPi * num_cycles * 2.0 * progress));
  factor = factor * (1 - min_lr_rate) + min_lr_rate;
  return std::max(0.0, factor);
}

// transformers: _get_wsd_scheduler_lambda.
inline double hf_wsd_lambda(int64_t current_step, const vkoptim::WarmupStableDecay& o) {
  const int64_t w = o.num_warmup_steps, st = o.num_stable_steps, d = o.num_decay_steps;
  const double r = o.min_lr_ratio;
  double factor = 0;
  if (current_step < w) {
    const double progress = double(current_step) / double(std::max<int64_t>(1, w));
    switch (o.warmup_shape) {
      case vkoptim::WsdShape::linear:
        factor = progress;
        break;
      case vkoptim::WsdShape::cosine:
        factor = 0.5 * (1.0 - std::cos(kPi * progress));
        break;
      case vkoptim::WsdShape::one_minus_sqrt:
        factor = 1.0 - std::sqrt(1.0 - progress);
        break;
    }
    factor = factor * (1.0 - r) + r;
    return std::max(0.0, factor);
  }
  if (current_step < w + st) return 1.0;
  if (current_step < w + st + d) {
    const double progress = double(current_step - w - st) / double(std::max<int64_t>(1, d));
    switch (o.decay_shape) {
      case vkoptim::WsdShape::linear:
        factor = 1.0 - progress;
        break;
      case vkoptim::WsdShape::cosine:
        factor = 0.5 * (1.0 + std::cos(kPi * o.num_cycles * 2.0 * progress));
        break;
      case vkoptim::WsdShape::one_minus_sqrt:
        factor = 1.0 - std::sqrt(progress);
        break;
    }
    factor = factor * (1.0 - r) + r;
    return std::max(0.0, factor);
  }
  return r;
}

// f(s) of the classic decays, for LambdaLR (alone) or f(s)/f(s-1) for MultiplicativeLR (chained).
inline std::function<double(int64_t)> classic_decay(const vkoptim::LrSchedule& p) {
  const double lambda = p.inverse_time.decay_rate;
  if (p.kind == vkoptim::ScheduleKind::inverse_time)
    return [lambda](int64_t s) { return 1 / (1 + lambda * double(s)); };
  if (p.kind == vkoptim::ScheduleKind::inverse_time_squared)
    return [lambda](int64_t s) { return 1 / ((1 + lambda * double(s)) * (1 + lambda * double(s))); };
  return [](int64_t) { return 1.0; };  // constant
}

// The torch scheduler of one (non-composite) schedule; `in_chain`: as a ChainedScheduler member.
inline std::unique_ptr<TorchScheduler> make_scheduler(const vkoptim::LrSchedule& p, bool in_chain) {
  using K = vkoptim::ScheduleKind;
  switch (p.kind) {
    case K::constant:
    case K::inverse_time:
    case K::inverse_time_squared: {
      auto f = classic_decay(p);
      if (in_chain) return std::make_unique<MultiplicativeLR>([f](int64_t s) { return f(s) / f(s - 1); });
      return std::make_unique<LambdaLR>(f);
    }
    case K::exponential:
      return std::make_unique<ExponentialLR>(p.exponential.gamma);
    case K::step:
      return std::make_unique<StepLR>(p.step.step_size, p.step.gamma);
    case K::multi_step:
      return std::make_unique<MultiStepLR>(p.multi_step.milestones, p.multi_step.gamma);
    case K::constant_factor:
      return std::make_unique<ConstantLR>(p.constant_factor.factor, p.constant_factor.total_iters);
    case K::linear:
      return std::make_unique<LinearLR>(p.linear.start_factor, p.linear.end_factor, p.linear.total_iters);
    case K::polynomial:
      return std::make_unique<PolynomialLR>(p.polynomial.total_iters, p.polynomial.power);
    case K::cosine_annealing:
      return std::make_unique<CosineAnnealingLR>(p.cosine_annealing.t_max, p.cosine_annealing.eta_min);
    case K::cosine_warm_restarts:
      return std::make_unique<CosineAnnealingWarmRestarts>(p.cosine_warm_restarts.t_0, p.cosine_warm_restarts.t_mult,
                                                           p.cosine_warm_restarts.eta_min);
    case K::one_cycle:
      return std::make_unique<OneCycleLR>(p.one_cycle);
    case K::cyclic:
      return std::make_unique<CyclicLR>(p.cyclic);
    case K::cosine_with_warmup: {
      const auto o = p.cosine_with_warmup;
      return std::make_unique<LambdaLR>([o](int64_t s) {
        return hf_cosine_lambda(s, o.num_warmup_steps, o.num_training_steps, o.num_cycles, o.min_lr_ratio);
      });
    }
    case K::warmup_stable_decay: {
      const auto o = p.warmup_stable_decay;
      return std::make_unique<LambdaLR>([o](int64_t s) { return hf_wsd_lambda(s, o); });
    }
    case K::sequential:
    case K::chained:
      break;
  }
  return nullptr;
}

// A schedule on one param group whose lr option is base_lr, stepped as torch's loop does.
class Schedule {
 public:
  Schedule(const vkoptim::LrSchedule& s, double base_lr) : kind_(s.kind), milestones_(s.milestones) {
    group_.lr = base_lr;
    const bool chain = s.kind == vkoptim::ScheduleKind::chained;
    if (s.kind == vkoptim::ScheduleKind::sequential || chain) {
      // Every member is constructed on the optimizer first, in order.
      for (const auto& p : s.pieces) {
        schedulers_.push_back(make_scheduler(p, chain));
        schedulers_.back()->construct(group_);
      }
      if (!chain) {
        // SequentialLR.__init__: lr back to initial_lr, then only the first scheduler's initial
        // step (the others' last_epoch is undone; update_lr_at_zero sets it again).
        group_.lr = *group_.initial_lr;
        schedulers_[0]->construct(group_);
      }
    } else {
      schedulers_.push_back(make_scheduler(s, false));
      schedulers_[0]->construct(group_);
    }
  }

  double lr() const { return group_.lr; }
  std::optional<double> momentum() const { return group_.momentum; }

  void step() {
    ++last_epoch_;
    if (kind_ == vkoptim::ScheduleKind::chained) {
      for (auto& s : schedulers_) s->step(group_);
    } else if (kind_ == vkoptim::ScheduleKind::sequential) {
      const size_t idx =
          size_t(std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin());
      if (idx > 0 && milestones_[idx - 1] == last_epoch_)
        schedulers_[idx]->update_lr_at_zero(group_);
      else
        schedulers_[idx]->step(group_);
    } else {
      schedulers_[0]->step(group_);
    }
  }

 private:
  vkoptim::ScheduleKind kind_;
  std::vector<uint32_t> milestones_;
  std::vector<std::unique_ptr<TorchScheduler>> schedulers_;
  ParamGroup group_;
  int64_t last_epoch_ = 0;
};

}  // namespace reference
