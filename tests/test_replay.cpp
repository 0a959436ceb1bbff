// Replayable steps (RecordOptions::replay): a command buffer recorded once and submitted K
// times equals K steps recorded one by one, bit for bit (parameters, state, step counters), and
// follows the double reference over the same gradients and scheduled learning rates; options
// changed between submissions reach the recorded command buffer.
#include "harness.hpp"
#include "reference/from_options.hpp"
#include "reference/schedules.hpp"

namespace {

using namespace vkoptim;

struct ReplayCase {
  // A failing case prints as its name rather than as bytes.
  friend void PrintTo(const ReplayCase& c, std::ostream* os) { *os << c.name; }
  std::string name;
  RuleOptions options;
  LrSchedule schedule;
};

// Each case replays kSteps steps; the schedules below span them.
constexpr int kSteps = 200;

std::vector<ReplayCase> cases() {
  SgdOptions nesterov;
  nesterov.lr = 0.05, nesterov.momentum = 0.9, nesterov.nesterov = true, nesterov.weight_decay = 1e-2;
  SgdOptions dampened;  // torch's first step differs: the device's fresh flag decides it
  dampened.lr = 0.05, dampened.momentum = 0.9, dampened.dampening = 0.3, dampened.maximize = true;
  SgdOptions ema;
  ema.lr = 0.05, ema.momentum = 0.8, ema.momentum_form = MomentumForm::ema, ema.decoupled_weight_decay = true,
  ema.weight_decay = 0.1;
  AdamOptions adam;
  adam.lr = 1e-2, adam.weight_decay = 0.05;
  AdamOptions adamw = adamw_options();
  adamw.lr = 1e-2;
  AdamOptions amsgrad;
  amsgrad.lr = 1e-2, amsgrad.amsgrad = true, amsgrad.maximize = true, amsgrad.eps_root = 1e-6;
  AdamOptions uncorrected;
  uncorrected.lr = 1e-3, uncorrected.bias_correction = false;
  LionOptions lion;
  lion.lr = 1e-3, lion.weight_decay = 0.1;
  AdagradOptions adagrad;  // lr_decay and the initial accumulator change clr and the state
  adagrad.lr = 0.05, adagrad.lr_decay = 0.01, adagrad.initial_accumulator_value = 0.1, adagrad.weight_decay = 1e-2;
  AdagradOptions adagrad_decoupled;
  adagrad_decoupled.lr = 0.05, adagrad_decoupled.lr_decay = 0.002, adagrad_decoupled.decoupled_weight_decay = true,
  adagrad_decoupled.weight_decay = 0.1;
  RmspropOptions rmsprop;
  rmsprop.lr = 1e-3, rmsprop.weight_decay = 1e-2;
  RmspropOptions centered;
  centered.lr = 1e-3, centered.centered = true, centered.momentum = 0.9, centered.alpha = 0.95,
  centered.maximize = true;
  AdadeltaOptions adadelta;
  adadelta.weight_decay = 1e-2;
  AdadeltaOptions adadelta_decoupled;
  adadelta_decoupled.lr = 0.5, adadelta_decoupled.rho = 0.8, adadelta_decoupled.decoupled_weight_decay = true,
  adadelta_decoupled.weight_decay = 0.1;
  AdamaxOptions adamax;
  adamax.weight_decay = 1e-2;
  AdamaxOptions adamax_decoupled;
  adamax_decoupled.lr = 1e-2, adamax_decoupled.beta1 = 0.8, adamax_decoupled.decoupled_weight_decay = true,
  adamax_decoupled.weight_decay = 0.1;
  NadamOptions nadam;
  nadam.weight_decay = 1e-2;
  NadamOptions nadam_decoupled;  // a faster momentum schedule: mu_t moves over the replayed steps
  nadam_decoupled.lr = 1e-2, nadam_decoupled.momentum_decay = 0.02, nadam_decoupled.decoupled_weight_decay = true,
  nadam_decoupled.weight_decay = 0.1;
  RadamOptions radam;  // beta2 = 0.999: unrectified for t <= 5, rectified after
  radam.lr = 1e-2, radam.weight_decay = 1e-2;
  RadamOptions radam_decoupled;  // beta2 = 0.99: rectified from t = 6 on too, r moves faster
  radam_decoupled.lr = 1e-2, radam_decoupled.beta2 = 0.99, radam_decoupled.decoupled_weight_decay = true,
  radam_decoupled.weight_decay = 0.1;
  AsgdOptions asgd;  // averaging starts after t0 = 50; eta decays visibly
  asgd.lr = 0.05, asgd.lambd = 1e-2, asgd.t0 = 50, asgd.weight_decay = 1e-2;
  AsgdOptions asgd_whole_alpha;
  asgd_whole_alpha.lr = 0.05, asgd_whole_alpha.lambd = 1e-2, asgd_whole_alpha.alpha = 1, asgd_whole_alpha.t0 = 120.5,
  asgd_whole_alpha.maximize = true;
  RpropOptions rprop;
  RpropOptions rprop_bounded;
  rprop_bounded.lr = 0.05, rprop_bounded.etaminus = 0.3, rprop_bounded.etaplus = 1.5,
  rprop_bounded.step_size_min = 1e-3, rprop_bounded.step_size_max = 0.2, rprop_bounded.maximize = true;
  ScheduleFreeAdamwOptions schedule_free;
  schedule_free.lr = 1e-2, schedule_free.weight_decay = 1e-2;
  ScheduleFreeAdamwOptions schedule_free_warmup;  // a real weight_lr_power and r: 2^(p·log2 x)
  schedule_free_warmup.lr = 1e-2, schedule_free_warmup.warmup_steps = 20, schedule_free_warmup.r = 0.5,
  schedule_free_warmup.weight_lr_power = 1.5, schedule_free_warmup.weight_decay = 0.05,
  schedule_free_warmup.decay_at_z = true;
  AdafactorOptions adafactor;
  AdafactorOptions adafactor_momentum;  // beta1 keeps exp_avg; decay with the scheduled lr
  adafactor_momentum.lr = 5e-3, adafactor_momentum.beta1 = 0.9, adafactor_momentum.weight_decay = 0.1,
  adafactor_momentum.beta2_decay = -0.5;
  LambOptions lamb;
  lamb.lr = 1e-2;
  LambOptions lamb_trust;
  lamb_trust.lr = 1e-2, lamb_trust.min_trust_ratio = 0.5, lamb_trust.max_trust_ratio = 2,
  lamb_trust.bias_correction = false, lamb_trust.maximize = true;
  MuonOptions muon_adamw;
  muon_adamw.use_muon = false;
  muon_adamw.lr = 3e-3;
  AdemamixOptions ademamix_warmups;  // beta3's warmup starts from the cycled beta1
  ademamix_warmups.beta3_warmup = 3 * kSteps / 4, ademamix_warmups.alpha_warmup = kSteps / 2,
  ademamix_warmups.weight_decay = 0.1;
  AdoptOptions adopt_decoupled;
  adopt_decoupled.lr = 1e-2, adopt_decoupled.weight_decay = 0.1, adopt_decoupled.decoupled_weight_decay = true,
  adopt_decoupled.clip_exponent = 0.5;
  FtrlOptions ftrl;
  ftrl.lr = 0.05, ftrl.l1 = 0.01, ftrl.l2 = 0.1, ftrl.beta = 0.5, ftrl.l2_shrinkage = 0.1;
  FtrlOptions ftrl_power;
  ftrl_power.lr = 0.05, ftrl_power.learning_rate_power = -0.7;
  AdamOptions cautious_adamw = adamw;
  cautious_adamw.cautious = true, cautious_adamw.weight_decay = 0.1;
  SgdOptions cautious_sgd = nesterov;  // L2 decay, nesterov
  cautious_sgd.cautious = true;
  return {
      {"adamw_cautious_warmup_cosine", cautious_adamw,
       make_schedule(CosineWithWarmup{.num_warmup_steps = 20, .num_training_steps = kSteps})},
      {"sgd_cautious_nesterov_step", cautious_sgd, make_schedule(StepLR{.step_size = 30, .gamma = 0.7})},
      {"sgd_nesterov", nesterov, {}},
      {"sgd_dampened_maximize", dampened, {}},
      {"sgd_ema_cosine", ema, make_schedule(CosineAnnealingLR{.t_max = 70, .eta_min = 1e-3})},
      {"adam", adam, {}},
      {"adamw_warmup_cosine", adamw,
       make_schedule(CosineWithWarmup{.num_warmup_steps = 20, .num_training_steps = kSteps})},
      {"adam_amsgrad_maximize_eps_root", amsgrad, {}},
      {"adam_no_bias_correction", uncorrected, {}},
      {"adam_one_cycle_beta1", adam, make_schedule(OneCycleLR{.max_lr = 0.02, .total_steps = kSteps})},
      {"lion", lion, {}},
      {"adagrad_lr_decay_initial_accumulator", adagrad, {}},
      {"adagrad_decoupled_step", adagrad_decoupled, make_schedule(StepLR{.step_size = 30, .gamma = 0.7})},
      {"rmsprop", rmsprop, {}},
      {"rmsprop_centered_momentum_maximize_cosine", centered,
       make_schedule(CosineAnnealingLR{.t_max = 70, .eta_min = 1e-4})},
      {"adadelta", adadelta, {}},
      {"adadelta_decoupled_exponential", adadelta_decoupled, make_schedule(ExponentialLR{.gamma = 0.99})},
      {"adamax", adamax, {}},
      {"adamax_decoupled_warmup_cosine", adamax_decoupled,
       make_schedule(CosineWithWarmup{.num_warmup_steps = 20, .num_training_steps = kSteps})},
      {"nadam", nadam, {}},
      {"nadam_momentum_decay_decoupled_cosine", nadam_decoupled,
       make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-4})},
      {"radam", radam, {}},
      {"radam_decoupled_beta2_cosine", radam_decoupled,
       make_schedule(CosineWithWarmup{.num_warmup_steps = 20, .num_training_steps = kSteps})},
      {"asgd_t0", asgd, {}},
      {"asgd_whole_alpha_maximize_step", asgd_whole_alpha, make_schedule(StepLR{.step_size = 40, .gamma = 0.5})},
      {"rprop", rprop, {}},
      {"rprop_bounded_maximize", rprop_bounded, {}},
      {"schedule_free_adamw", schedule_free, {}},
      {"schedule_free_adamw_warmup_r_power_decay_at_z_cosine", schedule_free_warmup,
       make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-4})},
      {"adafactor", adafactor, {}},
      {"adafactor_beta1_decay_cosine", adafactor_momentum,
       make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-4})},
      {"lamb", lamb, {}},
      {"lamb_trust_clamp_uncorrected_maximize", lamb_trust, {}},
      {"adopt", AdoptOptions{}, {}},
      {"stable_adamw", StableAdamwOptions{}, {}},
      {"stable_adamw_onecycle", StableAdamwOptions{}, make_schedule(OneCycleLR{.max_lr = 1e-2, .total_steps = kSteps})},
      {"ftrl_l1_l2_beta_shrinkage", ftrl, {}},
      {"ftrl_power_cosine", ftrl_power, make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-3})},
      // lr 0 for the last quarter of the steps (a step at lr 0 changes nothing: the update divides by lr)
      {"ftrl_linear_to_zero", ftrl,
       make_schedule(LinearLR{.start_factor = 1, .end_factor = 0, .total_iters = 3 * kSteps / 4})},
      {"adopt_decoupled_clip_half_cosine", adopt_decoupled,
       make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-4})},
      {"ademamix", AdemamixOptions{}, {}},
      // Muon's AdamW groups (its matrices replay in test_muon.cpp).
      {"muon_adamw_groups_cosine", muon_adamw, make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-4})},
      {"ademamix_warmups_decay_onecycle", ademamix_warmups,
       make_schedule(OneCycleLR{.max_lr = 1e-2, .total_steps = kSteps})},
  };
}

const std::vector<size_t> kSizes = {1, 3, 255, 257, 4099};

class ReplayTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<ReplayCase, bool>> {
 protected:
  // Two groups (the second at half the lr) over kSizes, on `params` and the shared `grads`.
  Optimizer make(Context& ctx, std::vector<Tensor>& params, std::vector<Tensor>& grads,
                 const std::vector<std::vector<double>>& p0) {
    const ReplayCase& c = std::get<0>(GetParam());
    std::vector<ParamGroup> groups(2);
    for (size_t i = 0; i < kSizes.size(); ++i) {
      params.push_back(ctx.create_tensor(vkt::to_float(p0[i])));
      groups[i % 2].tensors.push_back({params.back().range(), grads[i].range(), ""});
    }
    for (size_t g = 0; g < 2; ++g) {
      groups[g].options = c.options;
      if (g == 1) std::visit([](auto& o) { o.lr *= 0.5; }, groups[g].options);
      groups[g].schedule = c.schedule;
    }
    return Optimizer(ctx, groups);
  }
};

TEST_P(ReplayTest, RecordedOnceEqualsRecordedEachStepAndTheReference) {
  const auto& [c, bda] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  std::uniform_real_distribution<double> dist(-1, 1);
  std::vector<std::vector<double>> p0;
  std::vector<Tensor> grads;
  for (size_t n : kSizes) {
    p0.emplace_back(n);
    for (auto& v : p0.back()) v = dist(rng_);
    grads.push_back(ctx.create_tensor(n));
  }
  std::vector<Tensor> once_params, each_params;
  Optimizer once = make(ctx, once_params, grads, p0);
  Optimizer each = make(ctx, each_params, grads, p0);
  once.initialize();
  each.initialize();
  vkt::Engine engine(ctx);
  VkCommandBuffer recorded = engine.replayable(once);

  // The reference, fed the same gradients and each step's scheduled lr (and beta1).
  std::vector<std::vector<double>> p_ref = p0, sum_dp(kSizes.size()), max_p(kSizes.size());
  std::vector<std::function<void(std::vector<double>&, const std::vector<double>&, double, std::optional<double>)>>
      refs;
  // Sign-based rules (Lion): the 2*lr a sign flip within rounding of 0 can cost, per element.
  std::vector<std::function<std::vector<double>()>> ambiguity;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    sum_dp[i].assign(kSizes[i], 0.0);
    max_p[i].assign(kSizes[i], 0.0);
    std::visit(
        [&](auto o) {
          if (i % 2 == 1) o.lr *= 0.5;  // the group's lr: ASGD's eta and Rprop's step size start from it
          auto ref = std::make_shared<decltype(reference::reference_for(o)(size_t(1)))>(
              reference::reference_for(o)(kSizes[i]));
          refs.push_back(
              [ref](std::vector<double>& p, const std::vector<double>& g, double lr, std::optional<double> beta1) {
                ref->set_lr(lr);
                if constexpr (requires { ref->set_beta1(0.5); })
                  if (beta1) ref->set_beta1(*beta1);
                ref->step(p, g);
              });
          ambiguity.push_back([ref, n = kSizes[i]] {
            if constexpr (requires { ref->ambiguity(); })
              return ref->ambiguity();
            else
              return std::vector<double>(n, 0.0);
          });
        },
        c.options);
  }
  reference::Schedule sched[2] = {{c.schedule, std::visit([](const auto& o) { return o.lr; }, c.options)},
                                  {c.schedule, 0.5 * std::visit([](const auto& o) { return o.lr; }, c.options)}};
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<std::vector<double>> g(kSizes.size());
    for (size_t i = 0; i < kSizes.size(); ++i) {
      g[i].resize(kSizes[i]);
      for (auto& v : g[i]) v = dist(rng_);
      grads[i].upload(vkt::to_float(g[i]));
      g[i] = vkt::to_double(vkt::to_float(g[i]));
    }
    engine.submit(recorded);
    engine.step_recorded_afresh(each);
    for (size_t i = 0; i < kSizes.size(); ++i) {
      const auto before = p_ref[i];
      refs[i](p_ref[i], g[i], sched[i % 2].lr(), sched[i % 2].momentum());
      for (size_t e = 0; e < kSizes[i]; ++e) {
        sum_dp[i][e] += std::abs(p_ref[i][e] - before[e]);
        max_p[i][e] = std::max(max_p[i][e], std::abs(p_ref[i][e]));
      }
    }
    for (auto& s : sched) s.step();
  }
  for (size_t i = 0; i < kSizes.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    EXPECT_EQ(vkt::bits(once_params[i].download()), vkt::bits(each_params[i].download()));
    for (const auto& name : once.state_names(i)) {
      const auto a = once.read_state(i, name), b = each.read_state(i, name);
      EXPECT_EQ(vkt::bits(a), vkt::bits(b)) << name;
    }
    EXPECT_EQ(once.step_count(i), uint64_t(kSteps));
    EXPECT_EQ(each.step_count(i), uint64_t(kSteps));
    // Float32 bound (harness.hpp, Bounds) with Adam's K = 1024 (test_adam.cpp); the device's
    // scalars are within 2 ulps of the reference's double ones, inside K.
    std::vector<double> tol(kSizes[i]);
    const auto flips = ambiguity[i]();
    for (size_t e = 0; e < tol.size(); ++e)
      tol[e] = vkt::kUnitRoundoff * (8.0 * kSteps * max_p[i][e] + 1024.0 * sum_dp[i][e]) + flips[e];
    vkt::expect_close(once_params[i].download(), p_ref[i], tol, "parameter");
  }
  engine.drop(recorded);
}

INSTANTIATE_TEST_SUITE_P(Rules, ReplayTest, ::testing::Combine(::testing::ValuesIn(cases()), ::testing::Bool()),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_bda" : "_desc");
                         });

// The device's scalars against the host's: the same steps replayed (scalars computed on the
// device in double-float, rounded once) and recorded on the host (computed in double, rounded
// once) run the same float operations per element, so they part only by the scalars' rounding
// (within an ulp or two of each): a bound 64 times tighter than the reference's.
class ReplayScalarsTest : public vkt::VulkanTest, public ::testing::WithParamInterface<ReplayCase> {};

TEST_P(ReplayScalarsTest, DeviceScalarsFollowTheHostOnes) {
  const ReplayCase& c = GetParam();
  constexpr int kShortSteps = 40;
  auto ctx = make_context();
  std::uniform_real_distribution<double> dist(-1, 1);
  std::vector<Tensor> grads, device_params, host_params;
  std::vector<ParamGroup> device_groups(2), host_groups(2);
  for (size_t i = 0; i < kSizes.size(); ++i) {
    std::vector<float> p0(kSizes[i]);
    for (auto& v : p0) v = float(dist(rng_));
    grads.push_back(ctx.create_tensor(kSizes[i]));
    device_params.push_back(ctx.create_tensor(p0));
    host_params.push_back(ctx.create_tensor(p0));
    device_groups[i % 2].tensors.push_back({device_params.back().range(), grads.back().range(), ""});
    host_groups[i % 2].tensors.push_back({host_params.back().range(), grads.back().range(), ""});
  }
  for (auto* groups : {&device_groups, &host_groups})
    for (size_t g = 0; g < 2; ++g) {
      (*groups)[g].options = c.options;
      if (g == 1) std::visit([](auto& o) { o.lr *= 0.5; }, (*groups)[g].options);
      (*groups)[g].schedule = c.schedule;
    }
  Optimizer device(ctx, device_groups), host(ctx, host_groups);
  device.initialize();
  host.initialize();
  RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  vkt::Engine engine(ctx);
  VkCommandBuffer recorded = engine.begin();
  device.record(recorded, replay);
  engine.end(recorded);
  std::vector<std::vector<double>> sum_dp(kSizes.size()), max_p(kSizes.size());
  for (size_t i = 0; i < kSizes.size(); ++i) sum_dp[i].assign(kSizes[i], 0.0), max_p[i].assign(kSizes[i], 0.0);
  for (int step = 1; step <= kShortSteps; ++step) {
    for (size_t i = 0; i < kSizes.size(); ++i) {
      std::vector<float> g(kSizes[i]);
      for (auto& v : g) v = float(dist(rng_));
      grads[i].upload(g);
    }
    std::vector<std::vector<float>> before;
    for (auto& p : host_params) before.push_back(p.download());
    engine.submit(recorded);
    VkCommandBuffer fresh = engine.begin();
    host.record(fresh, vkt::host_reads());
    engine.end(fresh);
    engine.submit(fresh);
    engine.drop(fresh);
    for (size_t i = 0; i < kSizes.size(); ++i) {
      const auto after = host_params[i].download();
      for (size_t e = 0; e < kSizes[i]; ++e) {
        sum_dp[i][e] += std::abs(double(after[e]) - double(before[i][e]));
        max_p[i][e] = std::max(max_p[i][e], std::abs(double(after[e])));
      }
    }
  }
  for (size_t i = 0; i < kSizes.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    std::vector<double> tol(kSizes[i]);
    for (size_t e = 0; e < tol.size(); ++e)
      tol[e] = vkt::kUnitRoundoff * (2.0 * kShortSteps * max_p[i][e] + 16.0 * sum_dp[i][e]);
    vkt::expect_close(device_params[i].download(), vkt::to_double(host_params[i].download()), tol, "parameter");
    EXPECT_EQ(device.step_count(i), uint64_t(kShortSteps));
    for (const auto& name : host.state_names(i)) {
      // Carried scalars read back from the device as the host keeps them, within float rounding.
      if (name != "mu_product" && name != "eta" && name != "mu" && name != "lr_max" && name != "weight_sum") continue;
      const double d = device.read_state(i, name)[0], h = host.read_state(i, name)[0];
      EXPECT_NEAR(d, h, 4 * vkt::kUnitRoundoff * std::abs(h)) << name;
    }
  }
  engine.drop(recorded);
}

INSTANTIATE_TEST_SUITE_P(Rules, ReplayScalarsTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// set_lr between submissions reaches the recorded command buffer: plain SGD moves p by -lr*g
// with each submission's lr.
TEST_F(ReplayTest, OptionsChangedBetweenSubmissionsReachTheRecording) {
  auto ctx = make_context();
  auto p = ctx.create_tensor(std::vector<float>(100, 1.0f));
  auto g = ctx.create_tensor(std::vector<float>(100, 0.5f));
  SgdOptions sgd;
  sgd.lr = 0.25;
  Optimizer opt(ctx, {ParamGroup{sgd, {{p.range(), g.range(), "w"}}}});
  opt.initialize();
  RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  vkt::Engine engine(ctx);
  VkCommandBuffer cmd = engine.begin();
  opt.record(cmd, replay);
  engine.end(cmd);
  engine.submit(cmd);  // 1 - 0.25 * 0.5
  EXPECT_EQ(p.download()[7], 0.875f);
  opt.set_lr(0, 0.5);
  engine.submit(cmd);  // - 0.5 * 0.5
  EXPECT_EQ(p.download()[7], 0.625f);
  opt.set_schedule(0, make_schedule(StepLR{.step_size = 1, .gamma = 0.5}));
  engine.submit(cmd);  // step 3: lr = 0.5 * 0.5^2
  EXPECT_EQ(p.download()[7], 0.5625f);
  EXPECT_EQ(opt.step_count(0), 3u);
  opt.step();  // step() replays too once the device counts
  EXPECT_EQ(opt.step_count(0), 4u);
  EXPECT_EQ(p.download()[7], 0.5625f - 0.0625f * 0.5f);
  // The host path is refused from now on: the step counter lives on the device.
  VkCommandBuffer plain = engine.begin();
  vkt::expect_error([&] { opt.record(plain, vkt::host_reads()); }, Status::invalid_state, {"replay = true"});
  engine.end(plain);
  engine.drop(plain);
  engine.drop(cmd);
}

// Adafactor's factored statistics (2-D tensors, address path) in replayable steps, with the loss
// scaler and clipping on: recorded once equals recorded each step bit for bit, and follows the
// host path within the device scalars' rounding.
TEST_F(ReplayTest, AdafactorFactoredStatisticsReplay) {
  auto options = validated_options();
  options.addressing = Addressing::device_address;
  auto ctx = make_context(options);
  const std::vector<std::pair<size_t, size_t>> shapes = {{16, 32}, {7, 13}, {1, 300}};
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<Tensor> grads;
  std::vector<std::vector<float>> p0;
  for (auto [rows, cols] : shapes) {
    grads.push_back(ctx.create_tensor(rows * cols));
    p0.emplace_back(rows * cols);
    for (auto& v : p0.back()) v = dist(rng_);
  }
  AdafactorOptions o;
  o.beta1 = 0.9, o.weight_decay = 0.01;
  struct Run {
    std::vector<Tensor> params;
    std::unique_ptr<Optimizer> opt;
  };
  auto make = [&] {
    Run r;
    ParamGroup group{o, {}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      r.params.push_back(ctx.create_tensor(p0[i]));
      group.tensors.push_back({r.params.back().range(), grads[i].range(), "", shapes[i].first});
    }
    r.opt = std::make_unique<Optimizer>(ctx, std::vector<ParamGroup>{group});
    r.opt->set_grad_clip({.max_norm = 5});
    r.opt->set_grad_scaler({.enabled = true, .init_scale = 8});
    r.opt->initialize();
    return r;
  };
  Run once = make(), each = make(), host = make();
  RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  vkt::Engine engine(ctx);
  VkCommandBuffer recorded = engine.begin();
  once.opt->record(recorded, replay);
  engine.end(recorded);
  constexpr int kSteps = 30;
  for (int step = 1; step <= kSteps; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<float> g(p0[i].size());
      for (auto& v : g) v = dist(rng_) * 8;  // scaled by the loss scale, which stays 8 (no inf)
      grads[i].upload(g);
    }
    engine.submit(recorded);
    VkCommandBuffer fresh = engine.begin();
    each.opt->record(fresh, replay);
    engine.end(fresh);
    engine.submit(fresh);
    engine.drop(fresh);
    host.opt->step();  // (gradient control makes step() replayable too: its own recording)
  }
  engine.drop(recorded);
  for (size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    EXPECT_EQ(vkt::bits(once.params[i].download()), vkt::bits(each.params[i].download()));
    EXPECT_EQ(vkt::bits(once.params[i].download()), vkt::bits(host.params[i].download()));
    for (const auto& name : once.opt->state_names(i))
      EXPECT_EQ(vkt::bits(once.opt->read_state(i, name)), vkt::bits(each.opt->read_state(i, name))) << name;
    EXPECT_EQ(once.opt->step_count(i), uint64_t(kSteps));
  }
  EXPECT_EQ(once.opt->step_reports().back().step, uint32_t(kSteps));
}

// Lookahead, SAM and stochastic rounding (of bf16 values and of 4-bit codes) in replayable steps,
// on both paths: command buffers
// recorded once (SAM: a perturbation and a step) and submitted 60 times equal 60 steps recorded
// one by one (replayable) bit for bit, and the same steps on the host path (step t's Lookahead
// synchronisation, SAM's restore and the rounding key decided on the host): bit for bit for SGD
// at a constant lr, whose device scalars are the host's; within the device scalars' rounding for
// Adam.
class ReplayWrappersTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ReplayWrappersTest, LookaheadSamAndStochasticRoundingFollowTheHostPath) {
  auto options = validated_options();
  options.addressing = GetParam() ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  constexpr int kSteps = 60;
  std::uniform_real_distribution<float> dist(-1, 1);
  SgdOptions sgd;
  sgd.lr = 0.05, sgd.momentum = 0.9;
  AdamOptions adam;
  adam.lr = 1e-2;
  struct Config {
    std::string name;
    RuleOptions options;
    bool lookahead, stochastic, sam;
    bool ema = false;       // the EMA's decay on the device (power warmup in one group, ratio in the other)
    bool four_bit = false;  // stochastic: 4-bit state (codes rounded stochastically), f32 parameters
    bool rank1 = false;     // four_bit: the last tensor 64 x 65, its second moment normalised rank-1
  };
  for (const Config& c :
       {Config{"sgd lookahead", sgd, true, false, false}, Config{"sgd stochastic bf16", sgd, false, true, false},
        Config{"sgd sam lookahead", sgd, true, false, true},
        Config{"adam lookahead stochastic bf16 sam", adam, true, true, true},
        Config{"sgd ema sam", sgd, false, false, true, true},
        Config{"adam ema stochastic bf16", adam, false, true, false, true},
        Config{"sgd stochastic q4 lookahead", sgd, true, true, false, false, true},
        Config{"adam stochastic q4 rank-1", adam, false, true, false, false, true, true}}) {
    SCOPED_TRACE(c.name);
    const std::vector<size_t> sizes = {3, 257, c.rank1 ? size_t(64 * 65) : size_t(4099)};
    const DType io = c.stochastic && !c.four_bit ? DType::bf16 : DType::f32;
    std::vector<std::vector<float>> p0;
    for (size_t n : sizes) {
      p0.emplace_back(n);
      for (auto& v : p0.back()) v = dist(rng_);
    }
    std::vector<Tensor> grads;
    for (size_t n : sizes) grads.push_back(ctx.create_tensor(n, io));
    struct Run {
      std::vector<Tensor> params;
      std::unique_ptr<Optimizer> opt;
    };
    auto make = [&] {
      Run r;
      std::vector<ParamGroup> groups(2);
      for (size_t i = 0; i < sizes.size(); ++i) {
        r.params.push_back(ctx.create_tensor(sizes[i], io));
        r.params.back().upload(p0[i]);  // (rounded to bf16 where io is)
        groups[i % 2].tensors.push_back({r.params.back().range(), grads[i].range(), ""});
        if (c.rank1 && i == 2) groups[0].tensors.back().rows = 64;
      }
      for (size_t g = 0; g < 2; ++g) {
        groups[g].options = c.options;
        groups[g].precision.rank1_second_moment = c.rank1;
        if (c.lookahead) groups[g].lookahead = {g == 0 ? 3u : 5u, g == 0 ? 0.5 : 0.8};
        if (c.sam && g == 1) groups[g].sam.rho = 0.05;
        if (c.ema)
          groups[g].ema = g == 0 ? EmaOptions{.decay = 0.999, .warmup = EmaWarmup::power, .update_after_step = 2}
                                 : EmaOptions{.decay = 0.9, .warmup = EmaWarmup::ratio, .min_decay = 0.5};
        if (c.stochastic) {
          groups[g].precision.state = c.four_bit ? StateDType::q4 : StateDType::bf16;
          groups[g].precision.min_8bit_elements = 0;
          groups[g].precision.rounding = Rounding::stochastic;
          groups[g].precision.seed = 1234 + g;
        }
      }
      r.opt = std::make_unique<Optimizer>(ctx, groups);
      r.opt->initialize();
      return r;
    };
    Run once = make(), each = make(), host = make();
    RecordOptions replay = vkt::host_reads();
    replay.replay = true;
    vkt::Engine engine(ctx);
    VkCommandBuffer recorded = engine.begin();
    once.opt->record(recorded, replay);
    engine.end(recorded);
    VkCommandBuffer perturb = VK_NULL_HANDLE;
    if (c.sam) {
      perturb = engine.begin();
      once.opt->record_sam_perturb(perturb, replay);
      engine.end(perturb);
    }
    auto new_gradients = [&] {
      for (size_t i = 0; i < sizes.size(); ++i) {
        std::vector<float> g(sizes[i]);
        for (auto& v : g) v = dist(rng_);
        grads[i].upload(g);
      }
    };
    for (int step = 1; step <= kSteps; ++step) {
      if (c.sam) {  // the gradient at p, the perturbation, then the gradient at p + e
        new_gradients();
        engine.submit(perturb);
        VkCommandBuffer fresh = engine.begin();
        each.opt->record_sam_perturb(fresh, replay);
        engine.end(fresh);
        engine.submit(fresh);
        engine.drop(fresh);
        host.opt->sam_perturb();
      }
      new_gradients();
      engine.submit(recorded);
      VkCommandBuffer fresh = engine.begin();
      each.opt->record(fresh, replay);
      engine.end(fresh);
      engine.submit(fresh);
      engine.drop(fresh);
      host.opt->step();
    }
    engine.drop(recorded);
    if (perturb) engine.drop(perturb);
    const bool exact = std::holds_alternative<SgdOptions>(c.options);
    for (size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE("tensor " + std::to_string(i));
      const auto a = once.params[i].download(), b = each.params[i].download(), h = host.params[i].download();
      EXPECT_EQ(vkt::bits(a), vkt::bits(b));
      for (const auto& name : once.opt->state_names(i))
        EXPECT_EQ(vkt::bits(once.opt->read_state(i, name)), vkt::bits(each.opt->read_state(i, name))) << name;
      EXPECT_EQ(once.opt->step_count(i), uint64_t(kSteps));
      if (exact) {
        EXPECT_EQ(vkt::bits(a), vkt::bits(h));
      } else {
        // Adam's device scalars are within an ulp or two of the host's; bf16 storage rounds the
        // difference away in most elements, or to a neighbouring bf16 value.
        std::vector<double> tol(sizes[i]);
        for (size_t e = 0; e < tol.size(); ++e) tol[e] = std::abs(h[e]) / 64 + 1e-6;
        vkt::expect_close(a, vkt::to_double(h), tol, "parameter");
      }
      if (c.ema) {  // the device's decay within an ulp or two of the host's
        // (state index i: the optimizer numbers tensors in group order)
        const auto ema = once.opt->read_state(i, "ema"), host_ema = host.opt->read_state(i, "ema");
        std::vector<double> tol(ema.size());
        for (size_t e = 0; e < tol.size(); ++e) tol[e] = std::abs(host_ema[e]) / (exact ? 1e5 : 64) + 1e-6;
        vkt::expect_close(ema, vkt::to_double(host_ema), tol, "ema");
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, ReplayWrappersTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "bda" : "desc"; });

}  // namespace

namespace {

alignas(4) const unsigned char kLsqGradSpirv[] = {
#include "lsq_grad.inc"
};

#define VK_OK(call) ASSERT_EQ((call), VK_SUCCESS) << #call

// A host engine's step in one command buffer: its own backward pass (lsq_grad.comp: g = p -
// target) and the optimizer's replayable step, recorded once and submitted 100 times back to
// back without waiting in between; the result follows the double reference run the same way.
class ReplayEngineTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ReplayEngineTest, BackwardAndStepInOneCommandBufferSubmittedBackToBack) {
  auto options = validated_options();
  options.addressing = GetParam() ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  const VkDevice device = ctx.device();
  constexpr uint32_t n = 1000;
  constexpr int kSteps = 100;
  std::uniform_real_distribution<double> dist(-1, 1);
  std::vector<float> p0(n), target(n);
  for (uint32_t i = 0; i < n; ++i) p0[i] = float(dist(rng_)), target[i] = float(dist(rng_));
  auto p = ctx.create_tensor(p0), g = ctx.create_tensor(n), t = ctx.create_tensor(target);
  AdamOptions adam = adamw_options();
  adam.lr = 0.02;
  ParamGroup group{adam, {{p.range(), g.range(), "w"}}};
  group.schedule = make_schedule(CosineAnnealingLR{.t_max = kSteps, .eta_min = 1e-3});
  Optimizer opt(ctx, {group});
  opt.initialize();

  // The engine's pipeline: three storage buffers and the element count.
  VkDescriptorSetLayoutBinding bindings[3] = {};
  for (uint32_t i = 0; i < 3; ++i) bindings[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo dslci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dslci.bindingCount = 3;
  dslci.pBindings = bindings;
  VkDescriptorSetLayout set_layout;
  VK_OK(vkCreateDescriptorSetLayout(device, &dslci, nullptr, &set_layout));
  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, 4};
  VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  plci.setLayoutCount = 1;
  plci.pSetLayouts = &set_layout;
  plci.pushConstantRangeCount = 1;
  plci.pPushConstantRanges = &range;
  VkPipelineLayout layout;
  VK_OK(vkCreatePipelineLayout(device, &plci, nullptr, &layout));
  VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smci.codeSize = sizeof kLsqGradSpirv;
  smci.pCode = reinterpret_cast<const uint32_t*>(kLsqGradSpirv);
  VkShaderModule module;
  VK_OK(vkCreateShaderModule(device, &smci, nullptr, &module));
  VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpci.stage.module = module;
  cpci.stage.pName = "main";
  cpci.layout = layout;
  VkPipeline pipeline;
  VK_OK(vkCreateComputePipelines(device, VK_NULL_HANDLE, 1, &cpci, nullptr, &pipeline));
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 3};
  VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpci.maxSets = 1;
  dpci.poolSizeCount = 1;
  dpci.pPoolSizes = &size;
  VkDescriptorPool pool;
  VK_OK(vkCreateDescriptorPool(device, &dpci, nullptr, &pool));
  VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  dsai.descriptorPool = pool;
  dsai.descriptorSetCount = 1;
  dsai.pSetLayouts = &set_layout;
  VkDescriptorSet set;
  VK_OK(vkAllocateDescriptorSets(device, &dsai, &set));
  const BufferRange ranges[3] = {p.range(), g.range(), t.range()};
  VkDescriptorBufferInfo infos[3];
  VkWriteDescriptorSet writes[3];
  for (uint32_t i = 0; i < 3; ++i) {
    infos[i] = {ranges[i].buffer, ranges[i].offset, VkDeviceSize(n) * 4};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  vkUpdateDescriptorSets(device, 3, writes, 0, nullptr);

  // backward, then the step (its entry barrier orders it after the backward pass, its exit
  // barrier the next submission's backward pass after it).
  vkt::Engine engine(ctx);
  VkCommandBuffer cmd = engine.begin(VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT);  // queued again while pending
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
  vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, nullptr);
  vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, &n);
  vkCmdDispatch(cmd, (n + 63) / 64, 1, 1);
  RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  opt.record(cmd, replay);
  engine.end(cmd);
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  for (int k = 0; k < kSteps; ++k) VK_OK(vkQueueSubmit(ctx.queue(), 1, &si, VK_NULL_HANDLE));
  VK_OK(vkQueueWaitIdle(ctx.queue()));

  std::vector<double> p_ref = vkt::to_double(p0), sum_dp(n, 0.0), max_p(n, 0.0);
  auto ref = reference::reference_for(adam)(n);
  reference::Schedule sched(group.schedule, adam.lr);
  for (int k = 0; k < kSteps; ++k) {
    std::vector<double> grad(n);
    for (uint32_t i = 0; i < n; ++i) grad[i] = double(float(p_ref[i]) - target[i]);  // as the shader computes it
    ref.set_lr(sched.lr());
    const auto before = p_ref;
    ref.step(p_ref, grad);
    for (uint32_t i = 0; i < n; ++i) {
      sum_dp[i] += std::abs(p_ref[i] - before[i]);
      max_p[i] = std::max(max_p[i], std::abs(p_ref[i]));
    }
    sched.step();
  }
  // Adam's bound (K = 1024), plus the gradient's dependence on p (|dg/dp| = 1: the error of p
  // feeds the next gradient; over the run it at most doubles the bound).
  std::vector<double> tol(n);
  for (uint32_t i = 0; i < n; ++i) tol[i] = 2 * vkt::kUnitRoundoff * (8.0 * kSteps * max_p[i] + 1024.0 * sum_dp[i]);
  vkt::expect_close(p.download(), p_ref, tol, "parameter");
  EXPECT_EQ(opt.step_count(0), uint64_t(kSteps));

  engine.drop(cmd);
  vkDestroyDescriptorPool(device, pool, nullptr);
  vkDestroyPipeline(device, pipeline, nullptr);
  vkDestroyShaderModule(device, module, nullptr);
  vkDestroyPipelineLayout(device, layout, nullptr);
  vkDestroyDescriptorSetLayout(device, set_layout, nullptr);
}

INSTANTIATE_TEST_SUITE_P(Paths, ReplayEngineTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "bda" : "desc"); });

}  // namespace
