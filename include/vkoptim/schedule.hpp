#pragma once
// Learning-rate schedules: a per-group value type saying how the lr changes with the step count.
//
// Convention (torch's `opt.step(); sched.step()` loop):
//   - the group's `lr` option is the base lr (torch's `initial_lr`);
//   - s = the number of steps already taken; the t-th step (t = 1, 2, ...) uses the schedule
//     evaluated at s = t - 1, so the first step uses s = 0;
//   - schedules that define absolute lrs (OneCycleLR's max_lr, CyclicLR's base_lr/max_lr) ignore
//     the group's lr; they say so below.
//   - OneCycleLR and CyclicLR with cycle_momentum also give a momentum value per step: the
//     `momentum` option of SGD-like rules, or beta1 of Adam-like rules (torch writes
//     betas[0] when the optimizer has betas). Every other schedule leaves momentum alone.
//
// Every option struct below has torch's (or Hugging Face's) defaults; options torch requires
// have no usable default (0) and are refused until set. `make_schedule(...)` wraps one in an
// LrSchedule; `sequential(...)` and `chained(...)` compose them.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace vkoptim {

enum class ScheduleKind : uint32_t {
  constant = 0,               // no schedule (the default): lr = base every step
  inverse_time = 1,           // base / (1 + decay_rate·s)
  exponential = 2,            // base · gamma^s (torch ExponentialLR)
  inverse_time_squared = 3,   // base / (1 + decay_rate·s)²
  step = 4,                   // torch StepLR
  multi_step = 5,             // torch MultiStepLR
  constant_factor = 6,        // torch ConstantLR
  linear = 7,                 // torch LinearLR
  polynomial = 8,             // torch PolynomialLR
  cosine_annealing = 9,       // torch CosineAnnealingLR
  cosine_warm_restarts = 10,  // torch CosineAnnealingWarmRestarts
  one_cycle = 11,             // torch OneCycleLR (absolute lrs)
  cyclic = 12,                // torch CyclicLR (absolute lrs)
  cosine_with_warmup = 13,    // Hugging Face get_cosine_schedule_with_warmup (+ min lr ratio)
  warmup_stable_decay = 14,   // Hugging Face get_wsd_schedule
  sequential = 15,            // torch SequentialLR of `pieces`
  chained = 16,               // torch ChainedScheduler of `pieces`
};

// Step counts are at most this (device arithmetic stays in 32 bits).
inline constexpr uint32_t kMaxScheduleSteps = 1u << 30;
// Pieces of a sequential or chained schedule.
inline constexpr size_t kMaxSchedulePieces = 4;
// Milestones of one MultiStepLR.
inline constexpr size_t kMaxMultiStepMilestones = 10;

// inverse_time: base / (1 + decay_rate·s); inverse_time_squared: base / (1 + decay_rate·s)².
// (Adagrad's lr_decay is inverse_time.) decay_rate >= 0.
struct InverseTimeDecay {
  double decay_rate = 0;
};

// base · gamma^s. gamma > 0 (required).
struct ExponentialLR {
  double gamma = 0;
};

// base · gamma^⌊s / step_size⌋. step_size > 0 (required), gamma > 0.
struct StepLR {
  uint32_t step_size = 0;
  double gamma = 0.1;
};

// base · gamma^(number of milestones <= s). Milestones strictly increasing, at most
// kMaxMultiStepMilestones of them.
struct MultiStepLR {
  std::vector<uint32_t> milestones;
  double gamma = 0.1;
};

// base · factor while s < total_iters, then base. factor in (0, 1], total_iters > 0.
struct ConstantLR {
  double factor = 1.0 / 3;
  uint32_t total_iters = 5;
};

// base · (start_factor + (end_factor - start_factor) · min(s, total_iters) / total_iters).
// start_factor in (0, 1], end_factor in [0, 1], total_iters > 0.
struct LinearLR {
  double start_factor = 1.0 / 3;
  double end_factor = 1.0;
  uint32_t total_iters = 5;
};

// base · (1 - min(s, total_iters) / total_iters)^power. total_iters > 0, power > 0.
struct PolynomialLR {
  uint32_t total_iters = 5;
  double power = 1.0;
};

// eta_min + (base - eta_min)·(1 + cos(π·s / t_max)) / 2, for every s: past t_max the lr rises
// again (torch does not restart or clamp). t_max > 0 (required), eta_min >= 0.
struct CosineAnnealingLR {
  uint32_t t_max = 0;
  double eta_min = 0;
};

// SGDR: eta_min + (base - eta_min)·(1 + cos(π·T_cur / T_i)) / 2, where cycle i lasts
// T_i = t_0·t_mult^i steps and T_cur counts steps since the last restart.
// t_0 > 0 (required), t_mult >= 1, eta_min >= 0.
struct CosineAnnealingWarmRestarts {
  uint32_t t_0 = 0;
  uint32_t t_mult = 1;
  double eta_min = 0;
};

enum class AnnealStrategy : uint32_t { cos = 0, linear = 1 };

// 1cycle. Absolute lrs: from max_lr/div_factor up to max_lr over the first pct_start of
// total_steps, then down to max_lr/div_factor/final_div_factor (three_phase: back to the
// initial lr symmetrically, then down to the minimum). With cycle_momentum the momentum (beta1)
// goes the other way between max_momentum and base_momentum.
// torch refuses s > total_steps; here every s >= total_steps holds the final values (min lr,
// max_momentum), which torch reaches at s = total_steps - 1.
// max_lr > 0 (required), total_steps > 0 (required), pct_start in (0, 1) with every phase at
// least one step long (pct_start·total_steps > 1; three_phase: 2·pct_start·total_steps - 1 <
// total_steps), div_factor > 0, final_div_factor > 0, momenta in [0, 1].
struct OneCycleLR {
  double max_lr = 0;
  uint32_t total_steps = 0;
  double pct_start = 0.3;
  AnnealStrategy anneal_strategy = AnnealStrategy::cos;
  bool three_phase = false;
  double div_factor = 25;
  double final_div_factor = 1e4;
  bool cycle_momentum = true;
  double base_momentum = 0.85;
  double max_momentum = 0.95;
};

enum class CyclicMode : uint32_t { triangular = 0, triangular2 = 1, exp_range = 2 };

// Cyclical lr. Absolute lrs: triangles between base_lr and max_lr, step_size_up steps up and
// step_size_down down (0: the same as step_size_up, torch's None); the amplitude is scaled by 1
// (triangular), 1/2^(cycle-1) (triangular2) or gamma^s (exp_range). With cycle_momentum
// (torch's default) the momentum (beta1) goes from max_momentum down to base_momentum as the
// lr goes up. base_lr, max_lr >= 0, step_size_up > 0, gamma > 0, momenta in [0, 1].
struct CyclicLR {
  double base_lr = 0;
  double max_lr = 0;
  uint32_t step_size_up = 2000;
  uint32_t step_size_down = 0;
  CyclicMode mode = CyclicMode::triangular;
  double gamma = 1.0;
  bool cycle_momentum = true;
  double base_momentum = 0.8;
  double max_momentum = 0.9;
};

// Hugging Face's cosine schedule with warmup: base · s / max(1, num_warmup_steps) while
// s < num_warmup_steps, then base · (r + (1 - r)·(1 + cos(2π·num_cycles·progress)) / 2) with
// progress = (s - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps), not
// clamped past num_training_steps, and r = min_lr_ratio (0: get_cosine_schedule_with_warmup;
// > 0: get_cosine_with_min_lr_schedule_with_warmup's min_lr_rate, or its min_lr / lr).
// num_training_steps > 0 (required), num_cycles >= 0, min_lr_ratio in [0, 1].
struct CosineWithWarmup {
  uint32_t num_warmup_steps = 0;
  uint32_t num_training_steps = 0;
  double num_cycles = 0.5;
  double min_lr_ratio = 0;
};

enum class WsdShape : uint32_t {
  linear = 0,
  cosine = 1,
  one_minus_sqrt = 2,  // Hugging Face's "1-sqrt"
};

// Hugging Face's warmup-stable-decay (get_wsd_schedule), r = min_lr_ratio:
//   s < W:            base · (r + (1 - r)·warmup(s / max(1, W)))   warmup: p, (1 - cos πp)/2, 1 - sqrt(1 - p)
//   s < W + S:        base
//   s < W + S + D:    base · (r + (1 - r)·decay(p)), p = (s - W - S) / D
//                     decay: 1 - p, (1 + cos(2π·num_cycles·p))/2, 1 - sqrt(p)
//   after:            base · r
// with W = num_warmup_steps, S = num_stable_steps, D = num_decay_steps (Hugging Face derives S
// from num_training_steps when not given: S = num_training_steps - W - D).
// num_decay_steps > 0 (required), num_cycles >= 0, min_lr_ratio in [0, 1].
struct WarmupStableDecay {
  uint32_t num_warmup_steps = 0;
  uint32_t num_stable_steps = 0;
  uint32_t num_decay_steps = 0;
  WsdShape warmup_shape = WsdShape::linear;
  WsdShape decay_shape = WsdShape::cosine;
  double num_cycles = 0.5;
  double min_lr_ratio = 0;
};

// One group's schedule: `kind` says which member is read; the others are ignored.
//
// Composition, one level (pieces are never sequential or chained themselves), at most
// kMaxSchedulePieces pieces:
//   - sequential (torch SequentialLR): piece i runs from milestones[i-1] (piece 0 from s = 0)
//     with its own step counter starting again at 0, i.e. the lr at s is piece_i(base,
//     s - milestones[i-1]). milestones: pieces.size() - 1 of them, strictly increasing, > 0.
//     Pieces may not be one_cycle or cyclic: torch's OneCycleLR and CyclicLR overwrite the
//     group's initial_lr or lr when constructed, which changes the base of the other pieces.
//   - chained (torch ChainedScheduler): the product base · Π_i piece_i(1, s) of multiplicative
//     pieces, i.e. the kinds torch's chainable forms multiply the current lr with: constant,
//     inverse_time, inverse_time_squared (torch: MultiplicativeLR), exponential, step,
//     multi_step, constant_factor, linear, polynomial. milestones must be empty.
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::constant;
  InverseTimeDecay inverse_time;  // inverse_time and inverse_time_squared
  ExponentialLR exponential;
  StepLR step;
  MultiStepLR multi_step;
  ConstantLR constant_factor;
  LinearLR linear;
  PolynomialLR polynomial;
  CosineAnnealingLR cosine_annealing;
  CosineAnnealingWarmRestarts cosine_warm_restarts;
  OneCycleLR one_cycle;
  CyclicLR cyclic;
  CosineWithWarmup cosine_with_warmup;
  WarmupStableDecay warmup_stable_decay;
  std::vector<LrSchedule> pieces;    // sequential, chained
  std::vector<uint32_t> milestones;  // sequential
};

inline LrSchedule inverse_time_decay(double decay_rate) {
  LrSchedule s;
  s.kind = ScheduleKind::inverse_time;
  s.inverse_time.decay_rate = decay_rate;
  return s;
}
inline LrSchedule inverse_time_squared_decay(double decay_rate) {
  LrSchedule s = inverse_time_decay(decay_rate);
  s.kind = ScheduleKind::inverse_time_squared;
  return s;
}

// An LrSchedule of one kind, e.g. make_schedule(vkoptim::StepLR{.step_size = 30}).
template <class Options>
LrSchedule make_schedule_of(ScheduleKind kind, Options LrSchedule::*member, const Options& options) {
  LrSchedule s;
  s.kind = kind;
  s.*member = options;
  return s;
}
inline LrSchedule make_schedule(const ExponentialLR& o) {
  return make_schedule_of(ScheduleKind::exponential, &LrSchedule::exponential, o);
}
inline LrSchedule make_schedule(const StepLR& o) {
  return make_schedule_of(ScheduleKind::step, &LrSchedule::step, o);
}
inline LrSchedule make_schedule(const MultiStepLR& o) {
  return make_schedule_of(ScheduleKind::multi_step, &LrSchedule::multi_step, o);
}
inline LrSchedule make_schedule(const ConstantLR& o) {
  return make_schedule_of(ScheduleKind::constant_factor, &LrSchedule::constant_factor, o);
}
inline LrSchedule make_schedule(const LinearLR& o) {
  return make_schedule_of(ScheduleKind::linear, &LrSchedule::linear, o);
}
inline LrSchedule make_schedule(const PolynomialLR& o) {
  return make_schedule_of(ScheduleKind::polynomial, &LrSchedule::polynomial, o);
}
inline LrSchedule make_schedule(const CosineAnnealingLR& o) {
  return make_schedule_of(ScheduleKind::cosine_annealing, &LrSchedule::cosine_annealing, o);
}
inline LrSchedule make_schedule(const CosineAnnealingWarmRestarts& o) {
  return make_schedule_of(ScheduleKind::cosine_warm_restarts, &LrSchedule::cosine_warm_restarts, o);
}
inline LrSchedule make_schedule(const OneCycleLR& o) {
  return make_schedule_of(ScheduleKind::one_cycle, &LrSchedule::one_cycle, o);
}
inline LrSchedule make_schedule(const CyclicLR& o) {
  return make_schedule_of(ScheduleKind::cyclic, &LrSchedule::cyclic, o);
}
inline LrSchedule make_schedule(const CosineWithWarmup& o) {
  return make_schedule_of(ScheduleKind::cosine_with_warmup, &LrSchedule::cosine_with_warmup, o);
}
inline LrSchedule make_schedule(const WarmupStableDecay& o) {
  return make_schedule_of(ScheduleKind::warmup_stable_decay, &LrSchedule::warmup_stable_decay, o);
}

// torch SequentialLR: pieces[i] runs from milestones[i-1] on, counting its steps from 0.
inline LrSchedule sequential(std::vector<LrSchedule> pieces, std::vector<uint32_t> milestones) {
  LrSchedule s;
  s.kind = ScheduleKind::sequential;
  s.pieces = std::move(pieces);
  s.milestones = std::move(milestones);
  return s;
}

// torch ChainedScheduler: the product of multiplicative pieces.
inline LrSchedule chained(std::vector<LrSchedule> pieces) {
  LrSchedule s;
  s.kind = ScheduleKind::chained;
  s.pieces = std::move(pieces);
  return s;
}

}  // namespace vkoptim
