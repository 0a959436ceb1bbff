// Rules with reductions (LAMB): against the double reference, bitwise determinism, and any
// workgroup/subgroup size (forced through the capability override).
#include <cstring>

#include "harness.hpp"
#include "reference/lamb.hpp"

namespace {

using namespace vkoptim;

vkt::GroupSpec<reference::Lamb> lamb_group(const LambOptions& o, std::vector<size_t> sizes) {
  const reference::LambHyper h{o.lr,           o.beta1,           o.beta2,           o.eps,
                               o.weight_decay, o.bias_correction, o.min_trust_ratio, o.max_trust_ratio,
                               o.maximize};
  return {o, [h](size_t n) { return reference::Lamb(h, n); }, std::move(sizes)};
}

// The trust ratio multiplies the whole update: its relative error (sums of ~n terms, each with
// a few u) adds to the update's; K = 1024 covers 4099-element tensors over 55 steps.
constexpr double kLambUpdateError = 1024;

class LambTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<bool, uint32_t>> {};

TEST_P(LambTest, MatchesReferenceOver55Steps) {
  const auto [bda, subgroup] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
  options.override_caps = [subgroup = subgroup](DeviceCaps& c) {
    c.subgroup_size = subgroup;
    c.workgroup_size = subgroup * 4;  // 32 .. 256 invocations: other tree shapes
  };
  auto ctx = make_context(options);
  LambOptions plain;
  plain.lr = 1e-2;
  LambOptions clamped = plain;
  clamped.weight_decay = 0.1;
  clamped.min_trust_ratio = 0.01;
  clamped.max_trust_ratio = 0.5;
  clamped.maximize = true;
  LambOptions no_bc = plain;
  no_bc.bias_correction = false;
  no_bc.weight_decay = 0;
  vkt::TrajectoryConfig cfg;
  cfg.update_error_factor = kLambUpdateError;
  vkt::run_trajectory<reference::Lamb>(
      ctx, {lamb_group(plain, {1, 3, 255, 257, 4099}), lamb_group(clamped, {300, 5000}), lamb_group(no_bc, {17, 2048})},
      cfg, rng_);
}

INSTANTIATE_TEST_SUITE_P(Paths, LambTest, ::testing::Combine(::testing::Bool(), ::testing::Values(8u, 32u, 64u)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "bda" : "desc") + "_subgroup" +
                                  std::to_string(std::get<1>(info.param));
                         });

std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * 4);
  return out;
}

// The same steps from the same start give bitwise the same parameters and state.
TEST_F(LambTest, ReductionsAreBitwiseDeterministic) {
  auto ctx = make_context();
  std::normal_distribution<float> normal;
  std::vector<float> p0(100003), g(100003);
  for (auto& x : p0) x = normal(rng_);
  for (auto& x : g) x = normal(rng_);
  std::vector<std::vector<uint32_t>> results[2];
  for (int run = 0; run < 2; ++run) {
    auto p = ctx.create_tensor(p0), grad = ctx.create_tensor(g);
    vkoptim::Optimizer opt(ctx, {{LambOptions{}, {{p.range(), grad.range(), ""}}}});
    for (int s = 0; s < 5; ++s) opt.step();
    results[run] = {bits(p.download()), bits(opt.read_state(0, "exp_avg")), bits(opt.read_state(0, "exp_avg_sq"))};
  }
  EXPECT_TRUE(results[0] == results[1]) << "two identical LAMB runs differ";
}

}  // namespace
