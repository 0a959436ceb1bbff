// Learning-rate schedules driving steps (host path: the scalars of each recorded step use the
// schedule's lr, in double): SGD over one group per schedule kind against p - g·Σ lr_t from
// torch's recursive definitions (reference/schedules.hpp); Adam under OneCycleLR with beta1
// cycling against the double reference; and the schedules a group cannot take.
#include "harness.hpp"
#include "reference/adam.hpp"
#include "reference/schedules.hpp"

namespace {

using namespace vkoptim;

struct Case {
  // A failing case prints as its name rather than as bytes.
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
  std::string name;
  LrSchedule schedule;
};

// Every kind once (and both compositions), with horizons inside the run's 60 steps.
std::vector<Case> kinds() {
  return {
      {"inverse_time", inverse_time_decay(0.05)},
      {"inverse_time_squared", inverse_time_squared_decay(0.02)},
      {"exponential", make_schedule(ExponentialLR{.gamma = 0.95})},
      {"step", make_schedule(StepLR{.step_size = 10, .gamma = 0.5})},
      {"multi_step", make_schedule(MultiStepLR{.milestones = {5, 20, 41}, .gamma = 0.3})},
      {"constant_factor", make_schedule(ConstantLR{.factor = 0.25, .total_iters = 13})},
      {"linear", make_schedule(LinearLR{.start_factor = 0.1, .total_iters = 20})},
      {"polynomial", make_schedule(PolynomialLR{.total_iters = 50, .power = 1.7})},
      {"cosine", make_schedule(CosineAnnealingLR{.t_max = 23, .eta_min = 1e-3})},
      {"warm_restarts", make_schedule(CosineAnnealingWarmRestarts{.t_0 = 7, .t_mult = 2, .eta_min = 1e-4})},
      {"one_cycle",
       make_schedule(OneCycleLR{.max_lr = 0.2, .total_steps = 60, .three_phase = true, .cycle_momentum = false})},
      {"cyclic", make_schedule(CyclicLR{.base_lr = 0.01,
                                        .max_lr = 0.1,
                                        .step_size_up = 6,
                                        .mode = CyclicMode::triangular2,
                                        .cycle_momentum = false})},
      {"hf_cosine",
       make_schedule(CosineWithWarmup{.num_warmup_steps = 10, .num_training_steps = 60, .min_lr_ratio = 0.05})},
      {"wsd", make_schedule(WarmupStableDecay{.num_warmup_steps = 10,
                                              .num_stable_steps = 20,
                                              .num_decay_steps = 30,
                                              .decay_shape = WsdShape::one_minus_sqrt})},
      {"sequential", sequential({make_schedule(LinearLR{.start_factor = 0.05, .total_iters = 10}),
                                 make_schedule(CosineAnnealingLR{.t_max = 50})},
                                {10})},
      {"chained",
       chained({make_schedule(ExponentialLR{.gamma = 0.97}), make_schedule(StepLR{.step_size = 15, .gamma = 0.5})})},
  };
}

class ScheduledStepTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};

// One SGD group per schedule, each with a fixed gradient: after T steps p = p0 - g·Σ_t lr_t.
TEST_P(ScheduledStepTest, SgdFollowsEveryKind) {
  auto options = validated_options();
  options.addressing = GetParam() ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  constexpr int kSteps = 60;
  constexpr size_t n = 257;
  constexpr double base_lr = 0.1;
  std::uniform_real_distribution<double> dist(-1, 1);
  const auto cases = kinds();
  std::vector<std::vector<double>> p0, g;
  std::vector<Tensor> params, grads;
  std::vector<ParamGroup> groups;
  for (const auto& c : cases) {
    p0.emplace_back(n);
    g.emplace_back(n);
    for (size_t i = 0; i < n; ++i) p0.back()[i] = dist(rng_), g.back()[i] = dist(rng_);
    params.push_back(ctx.create_tensor(vkt::to_float(p0.back())));
    grads.push_back(ctx.create_tensor(vkt::to_float(g.back())));
    SgdOptions sgd;
    sgd.lr = base_lr;
    ParamGroup group;
    group.options = sgd;
    group.tensors = {{params.back().range(), grads.back().range(), c.name}};
    group.schedule = c.schedule;
    groups.push_back(group);
  }
  Optimizer opt(ctx, groups);
  for (int t = 1; t <= kSteps; ++t) opt.step();

  for (size_t k = 0; k < cases.size(); ++k) {
    SCOPED_TRACE(cases[k].name);
    // The host float p, rounded after each step: |error| <= T u max|p| + 2 u Σ |lr_t g|.
    reference::Schedule ref(cases[k].schedule, base_lr);
    double sum_lr = 0;
    for (int t = 1; t <= kSteps; ++t) {
      EXPECT_NEAR(std::get<SgdOptions>(opt.step_options(k, uint64_t(t))).lr, ref.lr(), 1e-12 * base_lr) << "t " << t;
      sum_lr += ref.lr();
      ref.step();
    }
    const auto p = params[k].download();
    for (size_t i = 0; i < n; ++i) {
      const double expected = p0[k][i] - g[k][i] * sum_lr;
      const double bound = vkt::kUnitRoundoff * (kSteps * (std::abs(p0[k][i]) + std::abs(g[k][i]) * sum_lr) +
                                                 2 * std::abs(g[k][i]) * sum_lr);
      ASSERT_NEAR(p[i], expected, bound) << "element " << i;
    }
  }
}

// OneCycleLR on Adam: the lr and beta1 of every step (beta1 also enters the bias correction),
// against the double reference fed the same values, over fresh gradients each step.
TEST_P(ScheduledStepTest, AdamCyclesBeta1UnderOneCycle) {
  auto options = validated_options();
  options.addressing = GetParam() ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  constexpr int kSteps = 50;
  constexpr size_t n = 4099;
  std::uniform_real_distribution<double> dist(-1, 1);
  std::vector<double> p_ref(n), grad(n);
  for (auto& v : p_ref) v = dist(rng_);
  auto param = ctx.create_tensor(vkt::to_float(p_ref));
  auto g = ctx.create_tensor(n);
  const LrSchedule schedule = make_schedule(OneCycleLR{.max_lr = 0.01, .total_steps = kSteps, .pct_start = 0.4});
  ParamGroup group;
  group.options = AdamOptions{};
  group.tensors = {{param.range(), g.range(), "w"}};
  group.schedule = schedule;
  Optimizer opt(ctx, {group});
  reference::Schedule sched(schedule, AdamOptions{}.lr);
  reference::Adam ref(reference::AdamHyper{}, n);
  double sum_update = 0, max_p = 0;
  for (int t = 1; t <= kSteps; ++t) {
    for (auto& v : grad) v = dist(rng_);
    g.upload(vkt::to_float(grad));
    opt.step();
    ASSERT_TRUE(sched.momentum().has_value());
    ref.set_lr(sched.lr());
    ref.set_beta1(*sched.momentum());
    const auto before = p_ref;
    ref.step(p_ref, grad);
    for (size_t i = 0; i < n; ++i) {
      sum_update = std::max(sum_update, std::abs(p_ref[i] - before[i]));
      max_p = std::max(max_p, std::abs(p_ref[i]));
    }
    sched.step();
  }
  // Adam's bound (test_adam.cpp, K = 1024) over the run: 8 u T max|p| + K u Σ max|dp|.
  const double bound = vkt::kUnitRoundoff * (8.0 * kSteps * max_p + 1024.0 * kSteps * sum_update);
  vkt::expect_close(param.download(), p_ref, std::vector<double>(n, bound), "Adam under OneCycleLR");
}

INSTANTIATE_TEST_SUITE_P(Paths, ScheduledStepTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "bda" : "desc"); });

// A schedule that cycles momentum needs a beta1 or a momentum whose state exists; invalid
// schedules are refused naming the field, and nothing changes.
TEST_F(ScheduledStepTest, SchedulesAGroupCannotTakeAreRefused) {
  auto ctx = make_context();
  auto p = ctx.create_tensor(16), g = ctx.create_tensor(16);
  const LrSchedule cycling = make_schedule(OneCycleLR{.max_lr = 0.1, .total_steps = 100});
  auto group_of = [&](RuleOptions o, LrSchedule s) {
    ParamGroup group;
    group.options = o;
    group.tensors = {{p.range(), g.range(), "w"}};
    group.schedule = std::move(s);
    return group;
  };
  vkt::expect_error([&] { Optimizer(ctx, {group_of(AdagradOptions{}, cycling)}); }, Status::invalid_argument,
                    {"group 0", "cycles momentum", "neither beta1 nor momentum"});
  vkt::expect_error([&] { Optimizer(ctx, {group_of(SgdOptions{}, cycling)}); }, Status::invalid_argument,
                    {"momentum = 0"});
  AdafactorOptions adafactor;
  vkt::expect_error([&] { Optimizer(ctx, {group_of(adafactor, cycling)}); }, Status::invalid_argument, {"beta1 = 0"});
  SgdOptions sgd;
  sgd.momentum = 0.9;
  Optimizer opt(ctx, {group_of(sgd, cycling)});  // accepted
  vkt::expect_error([&] { opt.set_schedule(0, make_schedule(StepLR{})); }, Status::invalid_argument,
                    {"group 0", "step_size"});
  EXPECT_EQ(opt.schedule(0).kind, ScheduleKind::one_cycle);
  vkt::expect_error([&] { opt.step_options(0, 0); }, Status::invalid_argument, {"t = 0"});
  // set_options keeps the schedule's requirement: momentum 0 would leave nothing to cycle.
  vkt::expect_error([&] { opt.set_options(0, SgdOptions{}); }, Status::invalid_argument, {"momentum = 0"});
}

}  // namespace
