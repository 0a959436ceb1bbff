// Rules with reductions (LAMB): against the double reference, bitwise determinism, and any
// workgroup/subgroup size (forced through the capability override).
#include <cstring>

#include "harness.hpp"
#include "reference/adam.hpp"
#include "reference/lamb.hpp"

namespace {

using namespace vkoptim;

vkt::GroupSpec<reference::Lamb> lamb_group(const LambOptions& o, std::vector<size_t> sizes) {
  const reference::LambHyper h{o.lr,           o.beta1,           o.beta2,           o.eps,
                               o.weight_decay, o.bias_correction, o.min_trust_ratio, o.max_trust_ratio,
                               o.maximize,     o.use_nvlamb};
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
  // Apex's default: no trust ratio without weight decay; with decay it applies as usual.
  LambOptions apex = plain;
  apex.use_nvlamb = false;
  apex.weight_decay = 0;
  LambOptions apex_decay = apex;
  apex_decay.weight_decay = 0.05;
  vkt::TrajectoryConfig cfg;
  cfg.update_error_factor = kLambUpdateError;
  vkt::run_trajectory<reference::Lamb>(
      ctx,
      {lamb_group(plain, {1, 3, 255, 257, 4099}), lamb_group(clamped, {300, 5000}), lamb_group(no_bc, {17, 2048}),
       lamb_group(apex, {33, 1030}), lamb_group(apex_decay, {257})},
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

namespace {

// SAM around Adam: perturb with the group's global gradient norm, restore, update; a second
// group without SAM is untouched by the perturbation. Against a double reference.
class SamTest : public vkt::VulkanTest, public ::testing::WithParamInterface<bool> {};

TEST_P(SamTest, PerturbRestoreUpdateMatchesReference) {
  auto options = validated_options();
  options.addressing = GetParam() ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  const std::vector<size_t> sizes{257, 4099, 3, 1000};  // tensors 0-2 in the SAM group
  const size_t sam_tensors = 3;
  const double rho = 0.05;
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<std::vector<double>> p_ref(sizes.size());
  std::vector<vkoptim::Tensor> p, g;
  AdamOptions adam;
  adam.lr = 1e-2;
  const reference::AdamHyper h{adam.lr, adam.beta1, adam.beta2, adam.eps, 0, false, false, false};
  std::vector<reference::Adam> refs;
  ParamGroup with{adam, {}, {}, {rho}}, without{adam, {}};
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (size_t e = 0; e < sizes[i]; ++e) p_ref[i].push_back(double(float(uniform(rng_))));
    p.push_back(ctx.create_tensor(vkt::to_float(p_ref[i])));
    g.push_back(ctx.create_tensor(sizes[i]));
    (i < sam_tensors ? with : without).tensors.push_back({p.back().range(), g.back().range(), ""});
    refs.emplace_back(h, sizes[i]);
  }
  vkoptim::Optimizer opt(ctx, {with, without});
  std::vector<std::vector<double>> e_ref(sam_tensors);
  const int steps = 20;
  for (int s = 0; s < steps; ++s) {
    // Gradient at p: perturb the SAM group.
    double norm_sq = 0;
    std::vector<std::vector<double>> g1(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      for (size_t e = 0; e < sizes[i]; ++e) g1[i].push_back(double(float(uniform(rng_))));
      g[i].upload(vkt::to_float(g1[i]));
      if (i < sam_tensors)
        for (double x : g1[i]) norm_sq += x * x;
    }
    opt.sam_perturb();
    EXPECT_EQ(opt.step_count(0), uint64_t(s)) << "the perturbation is not a step";
    for (size_t i = 0; i < sam_tensors; ++i) {
      e_ref[i].resize(sizes[i]);
      for (size_t e = 0; e < sizes[i]; ++e) {
        e_ref[i][e] = rho * g1[i][e] / (std::sqrt(norm_sq) + 1e-12);
        p_ref[i][e] += e_ref[i][e];
      }
    }
    if (s == steps - 1)
      for (size_t i = 0; i < sizes.size(); ++i)
        vkt::expect_close(p[i].download(), p_ref[i], std::vector<double>(sizes[i], 2e-5), "perturbed param");
    // Gradient at the perturbed point: restore, then Adam.
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<double> g2;
      for (size_t e = 0; e < sizes[i]; ++e) g2.push_back(double(float(uniform(rng_))));
      g[i].upload(vkt::to_float(g2));
      if (i < sam_tensors)
        for (size_t e = 0; e < sizes[i]; ++e) p_ref[i][e] -= e_ref[i][e];
      refs[i].step(p_ref[i], g2);
    }
    opt.step();
  }
  // Float error: each step's update (~lr) carries a relative error of a few hundred u, the
  // perturbation rho*g/|g| a few u: 2e-5 bounds 20 steps with margin.
  for (size_t i = 0; i < sizes.size(); ++i) {
    vkt::expect_close(p[i].download(), p_ref[i], std::vector<double>(sizes[i], 2e-5), "param");
    vkt::expect_close(opt.read_state(i, "exp_avg"), refs[i].state().at("exp_avg"), std::vector<double>(sizes[i], 1e-5),
                      "exp_avg");
    if (i < sam_tensors)
      vkt::expect_close(opt.read_state(i, "sam_e"), e_ref[i], std::vector<double>(sizes[i], 1e-7), "sam_e");
  }
  EXPECT_EQ(opt.state_names(3), (std::vector<std::string>{"exp_avg", "exp_avg_sq", "step"}));
}

INSTANTIATE_TEST_SUITE_P(Paths, SamTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "bda" : "desc"; });

}  // namespace

#include "reference/adafactor.hpp"

namespace {

// Adafactor over 2-D (factored) and 1-D tensors in two groups, 55 steps, against the reference;
// and bitwise determinism of its reductions.
class AdafactorTest : public vkt::VulkanTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(AdafactorTest, MatchesReferenceOver55Steps) {
  auto options = validated_options();
  const uint32_t subgroup = GetParam();
  options.override_caps = [subgroup](DeviceCaps& c) {
    c.subgroup_size = subgroup;
    c.workgroup_size = subgroup * 4;
  };
  auto ctx = make_context(options);
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "factored tensors need buffer device addresses";
  struct Shape {
    size_t rows, cols;  // rows = 0: 1-D of cols elements
  };
  const std::vector<Shape> shapes{{33, 65}, {64, 64}, {1, 7}, {3, 1000}, {0, 257}, {0, 1}, {0, 4099}};
  AdafactorOptions plain;
  AdafactorOptions decayed;
  decayed.lr = 0.05;
  decayed.weight_decay = 0.1;
  decayed.maximize = true;
  decayed.d = 0.5;
  decayed.beta1 = 0.9;  // Hugging Face's optional first moment
  const AdafactorOptions* group_options[2] = {&plain, &decayed};
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<vkoptim::Tensor> p, g;
  std::vector<std::vector<double>> p_ref;
  std::vector<reference::Adafactor> refs;
  std::vector<ParamGroup> groups(2);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const size_t n = shapes[i].rows ? shapes[i].rows * shapes[i].cols : shapes[i].cols;
    const AdafactorOptions& o = *group_options[i % 2];
    std::vector<double> init(n);
    for (auto& x : init) x = double(float(uniform(rng_)));
    p_ref.push_back(init);
    p.push_back(ctx.create_tensor(vkt::to_float(init)));
    g.push_back(ctx.create_tensor(n));
    groups[i % 2].options = o;
    ParamTensor t{p.back().range(), g.back().range(), "t" + std::to_string(i)};
    t.rows = shapes[i].rows;
    groups[i % 2].tensors.push_back(t);
    refs.emplace_back(
        reference::AdafactorHyper{o.lr, o.beta2_decay, o.eps1, o.eps2, o.d, o.weight_decay, o.maximize, o.beta1}, n,
        shapes[i].rows);
  }
  vkoptim::Optimizer opt(ctx, groups);
  // Tensor indices follow group order: group 0 holds shapes 0, 2, 4, 6; group 1 shapes 1, 3, 5.
  std::vector<size_t> order;
  for (size_t i = 0; i < shapes.size(); i += 2) order.push_back(i);
  for (size_t i = 1; i < shapes.size(); i += 2) order.push_back(i);
  const int steps = 55;
  // Per element, the first moment's average of |step| (the parameter's change, which is the update
  // plus the decay): the size of the terms exp_avg sums, which cancellation does not shrink.
  std::vector<std::vector<double>> step_size_avg(shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) step_size_avg[i].assign(p_ref[i].size(), 0.0);
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<double> grad(p_ref[i].size());
      for (size_t e = 0; e < grad.size(); ++e) grad[e] = (e % 97 == 5) ? 0.0 : double(float(uniform(rng_)));
      g[i].upload(vkt::to_float(grad));
      const std::vector<double> before = p_ref[i];
      refs[i].step(p_ref[i], grad);
      const double beta1 = group_options[i % 2]->beta1;
      for (size_t e = 0; e < grad.size(); ++e)
        step_size_avg[i][e] = beta1 * step_size_avg[i][e] + (1 - beta1) * std::abs(p_ref[i][e] - before[e]);
    }
    opt.step();
  }
  // Each step's update has relative error from sums over a tensor (RMS of p and U, factor means,
  // a few u times log of the size) plus its own few u; 55 steps of updates <= lr: 1e-5 relative
  // to max(|p|, 1) bounds it with margin, far below a wrong formula's effect.
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    SCOPED_TRACE("shape " + std::to_string(shapes[i].rows) + " x " + std::to_string(shapes[i].cols));
    std::vector<double> tol(p_ref[i].size());
    for (size_t e = 0; e < tol.size(); ++e) tol[e] = 1e-5 * std::max(1.0, std::abs(p_ref[i][e]));
    vkt::expect_close(p[i].download(), p_ref[i], tol, "param");
    for (const auto& [name, values] : refs[i].state()) {
      // The first moment averages signed steps: its error is relative to the tensor's scale and
      // to the size of the steps it averages, not to a value that cancellation made small.
      double scale = 0;
      for (double v : values) scale = std::max(scale, std::abs(v));
      std::vector<double> stol(values.size());
      for (size_t e = 0; e < values.size(); ++e)
        stol[e] = 1e-5 * std::max(name == "exp_avg" ? std::max(scale, step_size_avg[i][e]) : 1e-6, std::abs(values[e]));
      vkt::expect_close(opt.read_state(k, name), values, stol, name);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Subgroups, AdafactorTest, ::testing::Values(8u, 32u, 64u),
                         [](const auto& info) { return "subgroup" + std::to_string(info.param); });

TEST_F(LambTest, AdafactorIsBitwiseDeterministicAndNeedsAddressesForMatrices) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "factored tensors need buffer device addresses";
  std::normal_distribution<float> normal;
  std::vector<float> p0(300 * 301), g0(300 * 301);
  for (auto& x : p0) x = normal(rng_);
  for (auto& x : g0) x = normal(rng_);
  std::vector<std::vector<uint32_t>> results[2];
  for (int run = 0; run < 2; ++run) {
    auto p = ctx.create_tensor(p0), grad = ctx.create_tensor(g0);
    ParamTensor t{p.range(), grad.range(), ""};
    t.rows = 300;
    vkoptim::Optimizer opt(ctx, {{AdafactorOptions{}, {t}}});
    for (int s = 0; s < 4; ++s) opt.step();
    results[run] = {bits(p.download()), bits(opt.read_state(0, "row_var")), bits(opt.read_state(0, "col_var"))};
  }
  EXPECT_TRUE(results[0] == results[1]) << "two identical Adafactor runs differ";

  auto options = validated_options();
  options.addressing = Addressing::descriptors;
  auto desc = make_context(options);
  auto p = desc.create_tensor(12), grad = desc.create_tensor(12);
  ParamTensor t{p.range(), grad.range(), ""};
  t.rows = 3;
  // Refused when the optimizer is made (or the group added), before any GPU work.
  const auto before = desc.stats().submissions;
  vkt::expect_error(
      [&] {
        vkoptim::Optimizer opt(desc, {{AdafactorOptions{}, {t}}});
      },
      Status::unsupported, {"2-D tensors need buffer device addresses"});
  vkoptim::Optimizer opt(desc, {{AdafactorOptions{}, {}}});
  vkt::expect_error(
      [&] {
        opt.add_param_group({AdafactorOptions{}, {t}});
      },
      Status::unsupported, {"buffer device addresses"});
  EXPECT_EQ(opt.group_count(), 1u);
  EXPECT_EQ(desc.stats().submissions, before);
}

}  // namespace
