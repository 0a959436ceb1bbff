#pragma once
// Learning-rate schedules (include/vkoptim/schedule.hpp): validation, evaluation on the host in
// double, and the fixed-size record shaders/schedule.glsl evaluates on the device in float32.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "vkoptim/schedule.hpp"

namespace vkoptim::detail {

// Throws Error(Status::invalid_argument) naming the group, the field and its value, e.g.
// "group 0: schedule.one_cycle.total_steps = 0: must be > 0".
void validate_schedule(const LrSchedule& schedule, size_t group);

// The lr of a validated schedule at s steps already taken (the lr of step t = s + 1), given the
// group's base lr. Double precision: every kind is computed in closed form, with the cosines
// written as sin² of the half angle nearest the endpoint so that the result keeps its relative
// accuracy near zero (a few units in the last place of a double).
double schedule_lr(const LrSchedule& schedule, double base_lr, uint64_t s);

// The momentum (SGD momentum or Adam beta1) the schedule sets at s, if it cycles momentum
// (one_cycle and cyclic with cycle_momentum); nullopt: the group keeps its own option.
std::optional<double> schedule_momentum(const LrSchedule& schedule, uint64_t s);

// The record shaders/schedule.glsl reads: kScheduleWords 32-bit words (256 bytes), the same
// size for every schedule, so a buffer of per-group records is an array. Floats that need more
// than float32 precision are stored as two floats (hi, lo) whose sum is the double value to
// about 2^-48 relative.
//
// Layout (word offsets; "df" = two words hi, lo; "u" = uint32; "f" = float32 bits):
//   0  u  composition: 0 single (piece 0), 1 sequential, 2 chained
//   1  u  number of pieces n (1..4)
//   2  df base lr (the group's lr option)
//   4  u  sequential milestones 1..3 (piece i starts at word 3 + i; unused: 0xffffffff)
//   7  u  0
//   8 + 14·i: piece i, kind (ScheduleKind) then 13 words of options:
//     inverse_time(_squared)  1 df decay_rate
//     exponential             1 df gamma
//     step                    1 df gamma, 3 u step_size
//     multi_step              1 df gamma, 3 u count, 4.. u milestones (at most 10)
//     constant_factor         1 df factor, 3 u total_iters
//     linear                  1 df start_factor, 3 df end_factor, 5 u total_iters
//     polynomial              1 df power, 3 u total_iters
//     cosine_annealing        1 df eta_min, 3 u t_max
//     cosine_warm_restarts    1 df eta_min, 3 u t_0, 4 u t_mult
//     one_cycle               1 df initial lr, 3 df max lr, 5 df min lr, 7 df end of phase 1
//                             (pct_start·total_steps - 1), 9 u total_steps, 10 u flags (1 three
//                             phase, 2 linear anneal, 4 cycle momentum), 11 f base_momentum,
//                             12 f max_momentum
//     cyclic                  1 df base_lr, 3 df max_lr, 5 df gamma, 7 u step_size_up, 8 u
//                             step_size_down (resolved), 9 u mode, 10 u cycle momentum (0/1),
//                             11 f base_momentum, 12 f max_momentum
//     cosine_with_warmup      1 df num_cycles, 3 df min_lr_ratio, 5 u warmup, 6 u training steps
//     warmup_stable_decay     1 df num_cycles, 3 df min_lr_ratio, 5 u warmup, 6 u stable,
//                             7 u decay, 8 u warmup shape, 9 u decay shape
// Momenta are single floats: the value the rule receives is a float32 anyway.
inline constexpr size_t kScheduleWords = 64;
inline constexpr size_t kScheduleHeaderWords = 8;
inline constexpr size_t kSchedulePieceWords = 14;
static_assert(kScheduleHeaderWords + kMaxSchedulePieces * kSchedulePieceWords == kScheduleWords);

enum class ScheduleComposition : uint32_t { single = 0, sequential = 1, chained = 2 };

struct EncodedSchedule {
  std::array<uint32_t, kScheduleWords> words{};
};
static_assert(sizeof(EncodedSchedule) == kScheduleWords * 4);

// The device record of a validated schedule for a group whose lr option is base_lr.
EncodedSchedule encode_schedule(const LrSchedule& schedule, double base_lr);

}  // namespace vkoptim::detail
