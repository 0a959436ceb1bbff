// Bad input: a clear error (status, argument name and value) before any GPU work, and the
// parameters, gradients and optimizer state bit-identical afterwards.
#include <cmath>
#include <cstring>
#include <limits>

#include "harness.hpp"

namespace {

using vkoptim::AdamOptions;
using vkoptim::Error;
using vkoptim::SgdOptions;
using vkoptim::Status;

using vkt::bits;
using vkt::expect_error;

class BadInputTest : public vkt::VulkanTest {
 protected:
  void SetUp() override {
    VulkanTest::SetUp();
    ctx_ = std::make_unique<vkoptim::Context>(make_context());
    std::normal_distribution<float> normal;
    for (int i = 0; i < 2; ++i) {
      std::vector<float> p(257), g(257);
      for (auto& x : p) x = normal(rng_);
      for (auto& x : g) x = normal(rng_);
      params_.push_back(ctx_->create_tensor(p));
      grads_.push_back(ctx_->create_tensor(g));
    }
  }
  void TearDown() override {
    params_.clear();
    grads_.clear();
    ctx_.reset();
    VulkanTest::TearDown();
  }

  vkoptim::ParamTensor pair(size_t i) { return {params_[i].range(), grads_[i].range(), "t" + std::to_string(i)}; }

  // Every byte a failed call could have touched: parameters, gradients, all state.
  std::vector<std::vector<uint32_t>> snapshot(vkoptim::Optimizer* opt) {
    std::vector<std::vector<uint32_t>> s;
    for (auto& t : params_) s.push_back(bits(t.download()));
    for (auto& t : grads_) s.push_back(bits(t.download()));
    if (opt)
      for (size_t i = 0; i < opt->tensor_count(); ++i)
        for (const auto& name : opt->state_names(i)) s.push_back(bits(opt->read_state(i, name)));
    return s;
  }

  // An Adam optimizer with amsgrad that has taken two steps.
  vkoptim::Optimizer stepped_adam() {
    AdamOptions o;
    o.amsgrad = true;
    vkoptim::Optimizer opt(*ctx_, {{o, {pair(0), pair(1)}}});
    opt.step();
    opt.step();
    return opt;
  }

  std::unique_ptr<vkoptim::Context> ctx_;
  std::vector<vkoptim::Tensor> params_, grads_;
};

TEST_F(BadInputTest, ConstructionErrorsNameTheArgumentAndTouchNothing) {
  const auto before = snapshot(nullptr);
  const float nan = std::nanf("");
  auto make = [&](vkoptim::RuleOptions o, std::vector<vkoptim::ParamTensor> ts) {
    return [this, o, ts] { vkoptim::Optimizer opt(*ctx_, {{o, ts}}); };
  };
  auto sgd = [](auto edit) {
    SgdOptions o;
    edit(o);
    return vkoptim::RuleOptions(o);
  };
  auto adam = [](auto edit) {
    AdamOptions o;
    edit(o);
    return vkoptim::RuleOptions(o);
  };

  expect_error(make(sgd([](auto& o) { o.lr = -0.1; }), {pair(0)}), Status::invalid_argument, {"lr", "-0.1"});
  expect_error(make(sgd([&](auto& o) { o.lr = nan; }), {pair(0)}), Status::invalid_argument, {"lr", "nan"});
  expect_error(make(adam([&](auto& o) { o.lr = nan; }), {pair(0)}), Status::invalid_argument, {"lr", "nan"});
  expect_error(make(sgd([](auto& o) { o.nesterov = true; }), {pair(0)}), Status::invalid_argument,
               {"momentum", "nesterov requires momentum > 0"});
  expect_error(make(sgd([](auto& o) {
                      o.nesterov = true;
                      o.momentum = 0.9;
                      o.dampening = 0.1;
                    }),
                    {pair(0)}),
               Status::invalid_argument, {"dampening", "0.1"});
  expect_error(make(sgd([](auto& o) { o.momentum = -1; }), {pair(0)}), Status::invalid_argument, {"momentum", "-1"});
  expect_error(make(sgd([](auto& o) { o.weight_decay = -1e-3; }), {pair(0)}), Status::invalid_argument,
               {"weight_decay"});
  expect_error(make(adam([](auto& o) { o.beta1 = 1.0; }), {pair(0)}), Status::invalid_argument,
               {"beta1", "1", "[0, 1)"});
  expect_error(make(adam([](auto& o) { o.beta2 = -0.5; }), {pair(0)}), Status::invalid_argument, {"beta2", "-0.5"});
  expect_error(make(adam([](auto& o) { o.eps = -1e-8; }), {pair(0)}), Status::invalid_argument, {"eps", "-1e-08"});
  expect_error(make(adam([&](auto& o) { o.weight_decay = nan; }), {pair(0)}), Status::invalid_argument,
               {"weight_decay"});

  auto size_mismatch = pair(0);
  size_mismatch.grad.count = 256;
  expect_error(make(AdamOptions{}, {size_mismatch}), Status::invalid_argument,
               {"param.count = 257", "grad.count = 256"});
  auto not_a_dtype = pair(0);
  not_a_dtype.grad.dtype = vkoptim::DType(7);
  expect_error(make(AdamOptions{}, {not_a_dtype}), Status::invalid_argument, {"grad.dtype = 7", "not a DType"});
  auto odd_offset = pair(0);
  odd_offset.param.dtype = vkoptim::DType::f16;
  odd_offset.param.offset = 3;
  expect_error(make(AdamOptions{}, {odd_offset}), Status::invalid_argument, {"param.offset = 3", "2 bytes"});
  auto f16_too_long = pair(0);  // 1028 bytes hold 514 halves
  f16_too_long.param.dtype = vkoptim::DType::f16;
  f16_too_long.param.count = f16_too_long.grad.count = 515;
  expect_error(make(AdamOptions{}, {f16_too_long}), Status::invalid_argument, {"param range", "buffer_size = 1028"});
  auto last_half = pair(0);  // 513 halves end at byte 1026 of a (declared) 1026-byte buffer
  last_half.param.dtype = last_half.grad.dtype = vkoptim::DType::bf16;
  last_half.param.buffer_size = 1026;
  last_half.param.count = last_half.grad.count = 513;
  expect_error(make(AdamOptions{}, {last_half}), Status::invalid_argument, {"param", "32-bit words"});

  // Storage policies that cannot apply.
  auto make_precise = [&](vkoptim::RuleOptions o, vkoptim::PrecisionOptions p) {
    return [&, o, p] {
      vkoptim::ParamGroup g{o, {pair(0)}};
      g.precision = p;
      vkoptim::Optimizer opt(*ctx_, {g});
    };
  };
  vkoptim::PrecisionOptions q8;
  q8.state = vkoptim::StateDType::q8;
  expect_error(make_precise(vkoptim::AdagradOptions{}, q8), Status::invalid_argument,
               {"sum as q8", "cannot be quantized"});
  vkoptim::PrecisionOptions q4;
  q4.state = vkoptim::StateDType::q4;
  expect_error(make_precise(vkoptim::AdagradOptions{}, q4), Status::invalid_argument,
               {"sum as q4", "cannot be quantized"});
  vkoptim::PrecisionOptions mixed = q4;  // one block size per group
  mixed.slots.push_back({"exp_avg", vkoptim::StateDType::q8});
  expect_error(make_precise(AdamOptions{}, mixed), Status::invalid_argument, {"mixes 8-bit and 4-bit"});
  vkoptim::PrecisionOptions rank1 = q8;  // rank-1 maxima: for 4-bit second moments only
  rank1.rank1_second_moment = true;
  expect_error(make_precise(AdamOptions{}, rank1), Status::invalid_argument,
               {"rank1_second_moment", "4-bit second moment"});
  rank1.state = vkoptim::StateDType::q4;
  expect_error(make_precise(vkoptim::LionOptions{}, rank1), Status::invalid_argument,
               {"rank1_second_moment", "4-bit second moment"});
  expect_error(make_precise(adam([](auto& o) { o.cautious = true; }), rank1), Status::invalid_argument,
               {"rank1_second_moment", "cautious"});
  auto piece = pair(0);  // a shard's piece of a larger matrix, given rows instead of whole_rows
  piece.whole_count = 1024;
  piece.rows = 257;  // (its 257 elements as one row)
  expect_error(
      [&] {
        vkoptim::ParamGroup g{AdamOptions{}, {piece}};
        g.precision = rank1;
        vkoptim::Optimizer opt(*ctx_, {g});
      },
      Status::invalid_argument, {"part of a sharded tensor", "rank1_second_moment", "whole_rows"});
  vkoptim::PrecisionOptions no_such_dtype;
  no_such_dtype.state = vkoptim::StateDType(5);
  expect_error(make_precise(AdamOptions{}, no_such_dtype), Status::invalid_argument,
               {"precision.state = 5", "not a StateDType"});
  expect_error(make_precise(adam([](auto& o) { o.amsgrad = true; }), q8), Status::invalid_argument,
               {"max_exp_avg_sq as q8", "precision.slots"});
  vkoptim::PrecisionOptions unknown_slot;
  unknown_slot.slots.push_back({"exp_avg_squared", vkoptim::StateDType::bf16});
  expect_error(make_precise(AdamOptions{}, unknown_slot), Status::invalid_argument, {"exp_avg_squared", "not a state"});
  vkoptim::PrecisionOptions bad_rounding;
  bad_rounding.rounding = vkoptim::Rounding(9);
  expect_error(make_precise(AdamOptions{}, bad_rounding), Status::invalid_argument, {"rounding = 9"});
  auto null_param = pair(0);
  null_param.param.buffer = VK_NULL_HANDLE;
  expect_error(make(AdamOptions{}, {null_param}), Status::invalid_argument, {"param.buffer is VK_NULL_HANDLE"});
  auto too_small = pair(0);
  too_small.param.offset = 8;
  expect_error(make(AdamOptions{}, {too_small}), Status::invalid_argument,
               {"param range", "exceeds buffer_size = 1028"});
  auto unaligned = pair(0);
  unaligned.grad.offset = 2;
  unaligned.grad.count = 200;
  unaligned.param.count = 200;
  expect_error(make(AdamOptions{}, {unaligned}), Status::invalid_argument, {"grad.offset = 2"});
  auto alias = pair(1);
  alias.param = params_[0].range();
  alias.param.offset = 400;
  alias.param.count = 100;
  alias.grad.count = 100;
  expect_error(make(AdamOptions{}, {pair(0), alias}), Status::invalid_argument, {"overlaps"});
  auto bad_rows = pair(0);
  bad_rows.rows = 10;  // 257 elements
  expect_error(make(vkoptim::AdafactorOptions{}, {bad_rows}), Status::invalid_argument, {"rows = 10", "257"});
  auto no_size = pair(0);
  no_size.param.buffer_size = 0;
  expect_error(make(AdamOptions{}, {no_size}), Status::invalid_argument, {"buffer_size is 0"});
  expect_error(
      [&] {
        vkoptim::Optimizer opt(*ctx_, {{SgdOptions{}, {pair(0)}, {3, -0.5}}});
      },
      Status::invalid_argument, {"lookahead.alpha"});
  // The EMA: each bad option named; not with Lookahead.
  const vkoptim::EmaOptions bad_emas[] = {{.decay = 1},
                                          {.decay = -0.1},
                                          {.decay = std::nan("")},
                                          {.decay = 0.9, .warmup = vkoptim::EmaWarmup(7)},
                                          {.decay = 0.9, .inv_gamma = 0},
                                          {.decay = 0.9, .power = -1},
                                          {.decay = 0.9, .min_decay = 1}};
  const char* bad_ema_fields[] = {"ema.decay",     "ema.decay", "ema.decay",    "ema.warmup",
                                  "ema.inv_gamma", "ema.power", "ema.min_decay"};
  for (size_t i = 0; i < std::size(bad_emas); ++i) {
    vkoptim::ParamGroup g{SgdOptions{}, {pair(0)}};
    g.ema = bad_emas[i];
    expect_error([&] { vkoptim::Optimizer opt(*ctx_, {g}); }, Status::invalid_argument, {bad_ema_fields[i]});
  }
  {
    vkoptim::ParamGroup g{SgdOptions{}, {pair(0)}, {3, 0.5}};
    g.ema.decay = 0.9;
    expect_error([&] { vkoptim::Optimizer opt(*ctx_, {g}); }, Status::invalid_argument, {"ema.decay", "Lookahead"});
  }
  expect_error(
      [&] {
        vkoptim::Optimizer opt(*ctx_, {{AdamOptions{}, {pair(0)}}, {SgdOptions{}, {pair(1)}}});
      },
      Status::invalid_argument, {"group 1 uses SGD", "Adam"});

  EXPECT_EQ(snapshot(nullptr), before);
}

// Every rule rejects each invalid hyperparameter, naming it, before anything is allocated.
TEST_F(BadInputTest, EveryRuleRejectsInvalidHyperparameters) {
  const auto before = snapshot(nullptr);
  const double nan = std::nan("");
  struct Bad {
    vkoptim::RuleOptions options;
    const char* option;
  };
  std::vector<Bad> cases;
  auto add = [&](auto o, auto edit, const char* option) {
    edit(o);
    cases.push_back({o, option});
  };
  using namespace vkoptim;
  add(
      AdagradOptions{}, [](auto& o) { o.lr_decay = -1; }, "lr_decay");
  add(
      AdagradOptions{}, [](auto& o) { o.initial_accumulator_value = -0.1; }, "initial_accumulator_value");
  add(
      AdagradOptions{}, [&](auto& o) { o.eps = nan; }, "eps");
  add(
      RmspropOptions{}, [](auto& o) { o.alpha = -0.5; }, "alpha");
  add(
      RmspropOptions{}, [](auto& o) { o.momentum = -0.9; }, "momentum");
  add(
      RmspropOptions{}, [](auto& o) { o.lr = -1; }, "lr");
  add(
      AdadeltaOptions{}, [](auto& o) { o.rho = 1.5; }, "rho");
  add(
      AdadeltaOptions{}, [](auto& o) { o.eps = -1; }, "eps");
  add(
      AdamaxOptions{}, [](auto& o) { o.beta2 = 1.0; }, "beta2");
  add(
      NadamOptions{}, [](auto& o) { o.momentum_decay = -1; }, "momentum_decay");
  add(
      NadamOptions{}, [](auto& o) { o.beta1 = -0.1; }, "beta1");
  add(
      RadamOptions{}, [](auto& o) { o.beta1 = 1.0; }, "beta1");
  add(
      RadamOptions{}, [](auto& o) { o.weight_decay = -1; }, "weight_decay");
  add(
      AsgdOptions{}, [&](auto& o) { o.lambd = nan; }, "lambd");
  add(
      AsgdOptions{}, [&](auto& o) { o.t0 = std::numeric_limits<double>::infinity(); }, "t0");
  add(
      RpropOptions{}, [](auto& o) { o.etaminus = 1.5; }, "etaminus");
  add(
      RpropOptions{}, [](auto& o) { o.etaplus = 0.9; }, "etaplus");
  add(
      RpropOptions{}, [](auto& o) { o.step_size_max = 1e-9; }, "step_size_max");
  add(
      LionOptions{}, [](auto& o) { o.beta1 = 1.1; }, "beta1");
  add(
      LionOptions{}, [](auto& o) { o.weight_decay = -1; }, "weight_decay");
  add(
      AdamOptions{}, [](auto& o) { o.eps_root = -1; }, "eps_root");
  add(
      AdamOptions{}, [](auto& o) { o.amsgrad_max = AmsgradMax(7); }, "amsgrad_max");
  add(
      SgdOptions{},
      [](auto& o) {
        o.momentum_form = MomentumForm::ema;
        o.momentum = 0.9;
        o.dampening = 0.1;
      },
      "dampening");
  add(
      SgdOptions{}, [](auto& o) { o.cautious = true; }, "momentum");
  add(
      AdafactorOptions{}, [](auto& o) { o.beta2_decay = 0.5; }, "beta2_decay");
  add(
      AdafactorOptions{}, [](auto& o) { o.d = 0; }, "d");
  add(
      AdafactorOptions{}, [](auto& o) { o.eps2 = -1; }, "eps2");
  add(
      AdafactorOptions{}, [](auto& o) { o.beta1 = 1; }, "beta1");
  add(
      LambOptions{}, [](auto& o) { o.max_trust_ratio = -1; }, "max_trust_ratio");
  add(
      ScheduleFreeAdamwOptions{}, [](auto& o) { o.beta1 = 1; }, "beta1");
  add(
      AdoptOptions{}, [](auto& o) { o.clip_exponent = -0.25; }, "clip_exponent");
  add(
      AdoptOptions{}, [&](auto& o) { o.clip_exponent = nan; }, "clip_exponent");
  add(
      AdoptOptions{}, [](auto& o) { o.beta2 = 1; }, "beta2");
  add(
      FtrlOptions{}, [](auto& o) { o.lr = 0; }, "lr");
  add(
      FtrlOptions{}, [](auto& o) { o.learning_rate_power = 0.5; }, "learning_rate_power");
  add(
      FtrlOptions{}, [](auto& o) { o.initial_accumulator_value = -1; }, "initial_accumulator_value");
  add(
      FtrlOptions{}, [](auto& o) { o.l1 = -1; }, "l1");
  add(
      FtrlOptions{}, [&](auto& o) { o.l2 = nan; }, "l2");
  add(
      FtrlOptions{}, [](auto& o) { o.l2_shrinkage = -1; }, "l2_shrinkage");
  add(
      FtrlOptions{}, [](auto& o) { o.beta = -1; }, "beta");
  add(
      StableAdamwOptions{}, [](auto& o) { o.beta2 = 1; }, "beta2");
  add(
      StableAdamwOptions{}, [](auto& o) { o.eps = -1; }, "eps");
  add(
      AdemamixOptions{}, [](auto& o) { o.beta3 = 1; }, "beta3");
  add(
      AdemamixOptions{}, [&](auto& o) { o.alpha = nan; }, "alpha");
  add(
      AdemamixOptions{}, [](auto& o) { o.alpha = -1; }, "alpha");
  for (const auto& c : cases)
    expect_error(
        [&] {
          vkoptim::Optimizer opt(*ctx_, {{c.options, {pair(0)}}});
        },
        Status::invalid_argument, {std::string(c.option) + " = "});
  EXPECT_EQ(snapshot(nullptr), before);
}

// A step's passes are the same in every group: groups that differ in cautious are refused.
TEST_F(BadInputTest, GroupsThatNeedOtherPassesAreRefused) {
  const auto before = snapshot(nullptr);
  AdamOptions plain, cautious;
  cautious.cautious = true;
  expect_error(
      [&] {
        vkoptim::Optimizer opt(*ctx_, {{plain, {pair(0)}}, {cautious, {pair(1)}}});
      },
      Status::invalid_argument, {"group 1", "cautious", "adam_cautious"});
  vkoptim::Optimizer opt(*ctx_, {{cautious, {pair(0)}}});
  expect_error([&] { opt.add_param_group({plain, {pair(1)}}); }, Status::invalid_argument, {"group 1", "cautious"});
  EXPECT_EQ(snapshot(nullptr), before);
}

TEST_F(BadInputTest, FailedCallsLeaveParametersAndStateBitIdentical) {
  auto opt = stepped_adam();
  const auto before = snapshot(&opt);
  const uint64_t steps = opt.step_count(0);

  expect_error([&] { opt.set_lr(0, -1); }, Status::invalid_argument, {"lr", "-1"});
  expect_error([&] { opt.set_lr(0, std::nan("")); }, Status::invalid_argument, {"lr", "nan"});
  expect_error([&] { opt.set_lr(3, 1e-3); }, Status::not_found, {"group 3"});
  AdamOptions bad_beta;
  bad_beta.amsgrad = true;
  bad_beta.beta2 = 1.5;
  expect_error([&] { opt.set_options(0, bad_beta); }, Status::invalid_argument, {"beta2", "1.5"});
  expect_error([&] { opt.set_options(0, AdamOptions{}); }, Status::invalid_state, {"which state exists"});
  expect_error([&] { opt.set_options(0, SgdOptions{}); }, Status::invalid_argument, {"SGD"});
  expect_error([&] { opt.record(VK_NULL_HANDLE); }, Status::invalid_argument, {"cmd is VK_NULL_HANDLE"});
  expect_error([&] { opt.read_state(0, "momentum_buffer"); }, Status::not_found, {"momentum_buffer", "exp_avg"});
  expect_error([&] { opt.read_state(5, "exp_avg"); }, Status::not_found, {"tensor index 5"});
  expect_error([&] { opt.write_state(0, "exp_avg", std::vector<float>(256, 1.0f)); }, Status::invalid_argument,
               {"256", "257"});
  expect_error([&] { opt.write_state(0, "step", std::vector<float>{-1}); }, Status::invalid_argument, {"step"});
  expect_error([&] { opt.write_state(0, "step", std::vector<float>{1.5f}); }, Status::invalid_argument, {"step"});
  expect_error([&] { opt.add_param_group({AdamOptions{}, {}}); }, Status::invalid_state, {"first step"});
  expect_error([&] { opt.set_lookahead(0, {5, 1.5}); }, Status::invalid_argument, {"lookahead.alpha", "1.5"});
  expect_error([&] { opt.sam_perturb(); }, Status::invalid_state, {"no group has SAM"});
  expect_error([&] { opt.set_sam(0, {-1}); }, Status::invalid_argument, {"sam.rho"});
  expect_error([&] { opt.set_lookahead(0, {5, 0.5}); }, Status::invalid_state, {"changes which state exists"});
  expect_error([&] { opt.set_ema(0, {.decay = 0.99}); }, Status::invalid_state, {"changes which state exists"});
  expect_error([&] { opt.set_ema(0, {.decay = 2}); }, Status::invalid_argument, {"ema.decay"});
  AdamOptions cautious;
  cautious.amsgrad = cautious.cautious = true;
  expect_error([&] { opt.set_options(0, cautious); }, Status::invalid_argument, {"passes", "adam_cautious"});

  EXPECT_EQ(snapshot(&opt), before);
  EXPECT_EQ(opt.step_count(0), steps);
  // The optimizer still works after the failures, with its original options.
  opt.step();
  EXPECT_EQ(opt.step_count(0), steps + 1);
}

TEST_F(BadInputTest, ContextErrors) {
  vkoptim::DeviceBinding b;
  expect_error([&] { vkoptim::Context::adopt(b); }, Status::invalid_argument, {"DeviceBinding.instance"});
  auto options = validated_options();
  options.device_index = 99;
  expect_error([&] { vkoptim::Context::create(options); }, Status::invalid_argument, {"device index 99"});
  options.device_index = -2;
  expect_error([&] { vkoptim::Context::create(options); }, Status::invalid_argument, {"device_index = -2"});
  options.device_index = -1;
  options.addressing = vkoptim::Addressing(7);
  expect_error([&] { vkoptim::Context::create(options); }, Status::invalid_argument, {"addressing = 7"});
  options.addressing = vkoptim::Addressing::automatic;
  options.pipeline_cache_data = std::vector<uint8_t>(40, 0xAB);  // no version-one header
  expect_error([&] { vkoptim::Context::create(options); }, Status::invalid_argument,
               {"pipeline_cache_data (40 bytes)"});
  expect_error([&] { ctx_->create_tensor(0); }, Status::invalid_argument, {"count is 0"});
  expect_error([&] { params_[0].upload(std::vector<float>(3)); }, Status::invalid_argument, {"3", "257"});
}

}  // namespace

// Rank-1 maxima rotate with the device's step counter: a step recorded without replay (whose
// set would follow the host's recordings, not the steps the device took) is refused, touching
// nothing; step() and replayable recordings run.
TEST_F(BadInputTest, RankOneStepsAreRecordedReplayableOnly) {
  std::normal_distribution<float> normal;
  std::vector<float> p0(16 * 24), g0(16 * 24);
  for (auto& x : p0) x = normal(rng_);
  for (auto& x : g0) x = normal(rng_);
  params_.push_back(ctx_->create_tensor(p0));
  grads_.push_back(ctx_->create_tensor(g0));
  vkoptim::ParamGroup group{AdamOptions{}, {pair(2)}};
  group.tensors[0].rows = 16;
  group.precision.state = vkoptim::StateDType::q4;
  group.precision.rank1_second_moment = true;
  group.precision.min_8bit_elements = 0;  // (quantized however small)
  vkoptim::Optimizer opt(*ctx_, {group});
  ASSERT_GT(opt.memory().quantization_bytes, 0u);
  vkt::Engine engine(*ctx_);
  VkCommandBuffer cmd = engine.begin();
  // Before the first step (the optimizer not yet laid out) as after it.
  expect_error([&] { opt.record(cmd); }, Status::invalid_state,
               {"rank1_second_moment", "RecordOptions::replay = true"});
  opt.step();
  const auto before = snapshot(&opt);
  expect_error([&] { opt.record(cmd); }, Status::invalid_state,
               {"rank1_second_moment", "RecordOptions::replay = true"});
  EXPECT_EQ(snapshot(&opt), before);
  EXPECT_EQ(opt.step_count(0), 1u);
  vkoptim::RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  opt.record(cmd, replay);
  engine.end(cmd);
  engine.submit(cmd);
  engine.drop(cmd);
  EXPECT_EQ(opt.step_count(0), 2u);
}
