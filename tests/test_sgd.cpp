// SGD against the double reference: every valid option combination, odd sizes, 55 steps,
// several tensors in several buffers, on both the device-address and the descriptor path.
#include "harness.hpp"
#include "reference/sgd.hpp"

namespace {

using vkoptim::MomentumForm;
using vkoptim::SgdOptions;

struct SgdCase {
  double momentum, dampening, weight_decay;
  bool nesterov, maximize, ema;
};

std::string case_name(const SgdCase& c) {
  std::string n = "mom" + std::to_string(int(c.momentum * 100)) + "_damp" + std::to_string(int(c.dampening * 100)) +
                  "_wd" + std::to_string(int(c.weight_decay * 1000));
  if (c.nesterov) n += "_nesterov";
  if (c.maximize) n += "_maximize";
  if (c.ema) n += "_ema";
  return n;
}

// A failing case prints as its name rather than as bytes.
void PrintTo(const SgdCase& c, std::ostream* os) {
  *os << case_name(c);
}

std::vector<SgdCase> all_cases() {
  std::vector<SgdCase> out;
  for (double momentum : {0.0, 0.9})
    for (double dampening : {0.0, 0.25})
      for (double wd : {0.0, 0.02})
        for (bool nesterov : {false, true})
          for (bool maximize : {false, true})
            for (bool ema : {false, true}) {
              if (nesterov && (momentum == 0 || dampening != 0)) continue;
              if (ema && (momentum == 0 || dampening != 0)) continue;
              out.push_back({momentum, dampening, wd, nesterov, maximize, ema});
            }
  return out;
}

vkt::GroupSpec<reference::Sgd> group(const SgdCase& c, double lr, std::vector<size_t> sizes) {
  SgdOptions o;
  o.lr = lr;
  o.momentum = c.momentum;
  o.dampening = c.dampening;
  o.weight_decay = c.weight_decay;
  o.nesterov = c.nesterov;
  o.maximize = c.maximize;
  o.momentum_form = c.ema ? MomentumForm::ema : MomentumForm::torch;
  reference::SgdHyper h{lr, c.momentum, c.dampening, c.weight_decay, c.nesterov, c.maximize, c.ema};
  return {o, [h](size_t n) { return reference::Sgd(h, n); }, std::move(sizes)};
}

// Relative error of the momentum buffer grows like 1/(1-momentum): K = 64 covers momentum 0.9.
constexpr double kSgdUpdateError = 64;

class SgdOptionsTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<SgdCase, bool>> {};

TEST_P(SgdOptionsTest, MatchesReferenceOver55Steps) {
  const auto& [c, bda] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? vkoptim::Addressing::device_address : vkoptim::Addressing::descriptors;
  auto ctx = make_context(options);
  ASSERT_TRUE(!bda || ctx.supports_buffer_device_address()) << "the device has no buffer device address";
  vkt::TrajectoryConfig cfg;
  cfg.update_error_factor = kSgdUpdateError;
  // lr changes every step: nothing heavy is re-created for it.
  cfg.lr_schedule = [](size_t, int step) { return 0.05 * (1.0 + 0.5 * std::sin(step * 0.7)); };
  vkt::run_trajectory<reference::Sgd>(ctx, {group(c, 0.05, {1, 3, 255, 257, 4099})}, cfg, rng_);
}

INSTANTIATE_TEST_SUITE_P(AllOptions, SgdOptionsTest,
                         ::testing::Combine(::testing::ValuesIn(all_cases()), ::testing::Bool()), [](const auto& info) {
                           return case_name(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_bda" : "_desc");
                         });

class SgdTest : public vkt::VulkanTest {};

TEST_F(SgdTest, LargeTensorAndSeveralGroups) {
  auto ctx = make_context();
  vkt::TrajectoryConfig cfg;
  // The size is what this case checks (dispatches over many workgroups, several groups and
  // buffers); the 55-step trajectories over every option are the cases above.
  cfg.steps = 12;
  cfg.update_error_factor = kSgdUpdateError;
  cfg.param_buffers = 3;
  cfg.grad_buffers = 2;
  vkt::run_trajectory<reference::Sgd>(ctx,
                                      {group({0.9, 0, 0.01, true, false, false}, 0.01, {(1u << 20) + 7, 5, 17}),
                                       group({0.5, 0.1, 0, false, true, false}, 0.2, {33, 4099, 1}),
                                       group({0, 0, 0.001, false, false, false}, 0.1, {257, 255})},
                                      cfg, rng_);
}

}  // namespace
