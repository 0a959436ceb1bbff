// Gradient clipping and the loss scaler (GradClip, GradScalerOptions) in replayable steps:
// clip_grad_norm_ (norms 2, 1, inf and p) over chosen groups against a double reference, the
// norm's bits independent of the workgroup size, the no-clip path bit-identical to no clipping,
// clip_grad_value_, GradScaler's unscale / found-inf / skip / scale update with a non-finite
// value planted at a random step, error_if_nonfinite, a command buffer recorded once, and every
// bad option refused before any GPU work.
#include <cmath>
#include <limits>

#include "harness.hpp"
#include "reference/from_options.hpp"

namespace {

using namespace vkoptim;

const std::vector<size_t> kSizes = {1, 3, 255, 257, 4099, 70001};
constexpr size_t kGroups = 3;  // tensor i is in group i % 3

// Parameters and gradients of kSizes over kGroups groups of one rule.
struct Model {
  std::vector<Tensor> params, grads;
  std::vector<ParamGroup> groups;
  Model(Context& ctx, const RuleOptions& options, const std::vector<std::vector<double>>& p0) : groups(kGroups) {
    for (size_t i = 0; i < kSizes.size(); ++i) {
      params.push_back(ctx.create_tensor(vkt::to_float(p0[i])));
      grads.push_back(ctx.create_tensor(kSizes[i]));
      groups[i % kGroups].tensors.push_back({params.back().range(), grads.back().range(), ""});
    }
    for (auto& g : groups) g.options = options;
  }
  void upload(const std::vector<std::vector<float>>& g) {
    for (size_t i = 0; i < g.size(); ++i) grads[i].upload(g[i]);
  }
  std::vector<std::vector<float>> download() {
    std::vector<std::vector<float>> out;
    for (auto& p : params) out.push_back(p.download());
    return out;
  }
};

std::vector<std::vector<double>> random_values(std::mt19937_64& rng, double scale = 1.0) {
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<std::vector<double>> out;
  for (size_t n : kSizes) {
    out.emplace_back(n);
    for (auto& v : out.back()) v = dist(rng);
  }
  return out;
}

// float32 values as the device sees them, and back in double.
std::vector<std::vector<float>> to_float(const std::vector<std::vector<double>>& v) {
  std::vector<std::vector<float>> out;
  for (const auto& x : v) out.push_back(vkt::to_float(x));
  return out;
}

bool clipped(const GradClip& clip, size_t tensor) {
  const size_t g = tensor % kGroups;
  return clip.groups.empty() || std::find(clip.groups.begin(), clip.groups.end(), g) != clip.groups.end();
}

// torch.nn.utils.clip_grad_value_ then clip_grad_norm_ in double over the clipped tensors: the
// gradients to step with and the total norm.
double reference_clip(const GradClip& clip, std::vector<std::vector<double>>& g) {
  const double p = clip.norm_type;
  double acc = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!clipped(clip, i)) continue;
    for (auto& v : g[i]) {
      if (clip.clip_value > 0) v = std::clamp(v, -clip.clip_value, clip.clip_value);
      const double a = std::abs(v);
      acc = std::isinf(p) ? std::max(acc, a) : acc + std::pow(a, p);
    }
  }
  const double norm = std::isinf(p) ? acc : std::pow(acc, 1.0 / p);
  if (clip.max_norm > 0) {
    const double coef = std::min(clip.max_norm / (norm + 1e-6), 1.0);
    for (size_t i = 0; i < g.size(); ++i)
      if (clipped(clip, i))
        for (auto& v : g[i]) v *= coef;
  }
  return norm;
}

// max_norm: between the norms of the steps' two gradient scales, so that both clip and not.
struct ClipCase {
  // A failing case prints as its name rather than as bytes.
  friend void PrintTo(const ClipCase& c, std::ostream* os) { *os << c.name; }
  std::string name;
  double norm_type;
  double max_norm;
  std::vector<size_t> groups;
  double clip_value = 0;
};

class GradClipTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<ClipCase, bool>> {};

// 40 steps of Adam with the norm (and value) clipped; the gradients' scale alternates so that
// some steps clip (coefficient < 1) and some do not.
TEST_P(GradClipTest, FollowsTheDoubleReference) {
  const auto& [c, bda] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  AdamOptions adam;
  adam.lr = 1e-2;
  const auto p0 = random_values(rng_);
  Model m(ctx, adam, p0);
  Optimizer opt(ctx, m.groups);
  GradClip clip;
  clip.max_norm = c.max_norm;
  clip.norm_type = c.norm_type;
  clip.groups = c.groups;
  clip.clip_value = c.clip_value;
  opt.set_grad_clip(clip);
  std::vector<reference::Adam> refs;
  for (size_t n : kSizes) refs.push_back(reference::reference_for(adam)(n));
  auto p_ref = p0;
  std::vector<std::vector<double>> sum_dp, max_p;
  for (size_t n : kSizes) sum_dp.emplace_back(n, 0.0), max_p.emplace_back(n, 0.0);
  constexpr int kSteps = 40;
  int clipping_steps = 0;
  for (int step = 1; step <= kSteps; ++step) {
    auto g = random_values(rng_, step % 3 == 0 ? 0.01 : 1.0);
    const auto gf = to_float(g);
    m.upload(gf);
    for (size_t i = 0; i < g.size(); ++i) g[i] = vkt::to_double(gf[i]);
    opt.step();
    const double norm = reference_clip(clip, g);
    const StepReport r = opt.step_reports().back();
    EXPECT_EQ(r.step, uint32_t(step));
    EXPECT_NEAR(r.total_norm, norm, norm * (c.norm_type == 2 || std::isinf(c.norm_type) ? 1e-5 : 1e-4))
        << "step " << step;
    const double coef = std::min(clip.max_norm / (norm + 1e-6), 1.0);
    EXPECT_NEAR(r.clip_coef, coef, coef * 1e-4) << "step " << step;
    clipping_steps += coef < 1 ? 1 : 0;
    EXPECT_FALSE(r.found_inf || r.skipped || r.nonfinite_norm);
    for (size_t i = 0; i < kSizes.size(); ++i) {
      const auto before = p_ref[i];
      refs[i].step(p_ref[i], g[i]);
      for (size_t e = 0; e < kSizes[i]; ++e) {
        sum_dp[i][e] += std::abs(p_ref[i][e] - before[e]);
        max_p[i][e] = std::max(max_p[i][e], std::abs(p_ref[i][e]));
      }
    }
  }
  EXPECT_GT(clipping_steps, 5);
  EXPECT_LT(clipping_steps, kSteps);
  const auto p = m.download();
  for (size_t i = 0; i < kSizes.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    // Adam's float32 bound (test_replay.cpp), with room for the coefficient's few ulps.
    std::vector<double> tol(kSizes[i]);
    for (size_t e = 0; e < tol.size(); ++e)
      tol[e] = vkt::kUnitRoundoff * (8.0 * kSteps * max_p[i][e] + 1024.0 * sum_dp[i][e]);
    vkt::expect_close(p[i], p_ref[i], tol, "parameter");
    EXPECT_EQ(opt.step_count(i), uint64_t(kSteps));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Norms, GradClipTest,
    ::testing::Combine(::testing::Values(ClipCase{"norm2_all", 2, 20, {}}, ClipCase{"norm1_groups02", 1, 2000, {0, 2}},
                                         ClipCase{"inf_group1", std::numeric_limits<double>::infinity(), 0.5, {1}},
                                         ClipCase{"p3_groups12_value", 3, 5, {1, 2}, 0.7}),
                       ::testing::Bool()),
    [](const auto& info) { return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_bda" : "_desc"); });

class GradControlTest : public vkt::VulkanTest {
 protected:
  // Runs `steps` steps of SGD with momentum on the same gradients for each configuration and
  // returns the parameters and the total norms reported.
  struct Run {
    std::vector<std::vector<float>> params;
    std::vector<float> norms;
  };
  Run run(ContextOptions options, const GradClip& clip, const std::vector<std::vector<std::vector<double>>>& grads,
          const std::vector<std::vector<double>>& p0) {
    SgdOptions sgd;
    sgd.lr = 0.05, sgd.momentum = 0.9;
    return run(options, sgd, clip, grads, p0);
  }
  Run run(ContextOptions options, const RuleOptions& rule, const GradClip& clip,
          const std::vector<std::vector<std::vector<double>>>& grads, const std::vector<std::vector<double>>& p0) {
    auto ctx = make_context(options);
    Model m(ctx, rule, p0);
    Optimizer opt(ctx, m.groups);
    opt.set_grad_clip(clip);
    Run out;
    for (const auto& g : grads) {
      m.upload(to_float(g));
      opt.step();
      if (clip.max_norm > 0) out.norms.push_back(opt.step_reports().back().total_norm);
    }
    out.params = m.download();
    return out;
  }
  // Three workgroup sizes and items per invocation: blocks of 512 to 4096 elements, fast and
  // careful segments cut in other places, with grad_norm's invocations summing runs of chunks
  // (its CPU form, whatever the device); and, with `gpu_form`, the first again with an
  // invocation per chunk (its GPU form).
  std::vector<ContextOptions> workgroup_configurations(bool bda, bool gpu_form = false) const {
    std::vector<ContextOptions> out;
    struct Configuration {
      uint32_t workgroup, items;
      VkPhysicalDeviceType type;
    };
    std::vector<Configuration> configurations{{256, 2, VK_PHYSICAL_DEVICE_TYPE_CPU},
                                              {64, 1, VK_PHYSICAL_DEVICE_TYPE_CPU},
                                              {128, 4, VK_PHYSICAL_DEVICE_TYPE_CPU}};
    if (gpu_form) configurations.push_back({256, 2, VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU});
    for (auto [wg, items, type] : configurations) {
      auto options = validated_options();
      options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
      options.override_caps = [wg, items, type](DeviceCaps& c) {
        c.workgroup_size = wg;
        c.items_per_invocation = items;
        c.device_type = type;
      };
      out.push_back(options);
    }
    return out;
  }
};

// The norm is the same bits for any workgroup size and items per invocation (fixed chunks,
// fixed order), in grad_norm's CPU and GPU forms, on both addressing paths.
TEST_F(GradControlTest, NormBitsDoNotDependOnTheWorkgroupSize) {
  const auto p0 = random_values(rng_);
  std::vector<std::vector<std::vector<double>>> grads;
  for (int s = 0; s < 5; ++s) grads.push_back(random_values(rng_));
  GradClip clip;
  clip.max_norm = 10;
  for (bool bda : {true, false}) {
    SCOPED_TRACE(bda ? "address path" : "descriptor path");
    std::vector<Run> runs;
    for (const auto& options : workgroup_configurations(bda, true)) runs.push_back(run(options, clip, grads, p0));
    for (size_t r = 1; r < runs.size(); ++r) {
      EXPECT_EQ(vkt::bits(runs[r].norms), vkt::bits(runs[0].norms)) << "configuration " << r;
      for (size_t i = 0; i < kSizes.size(); ++i)
        EXPECT_EQ(vkt::bits(runs[r].params[i]), vkt::bits(runs[0].params[i])) << "configuration " << r;
    }
  }
}

// Per-tensor sums (LAMB's norms) are taken per 256-element chunk and reduced in a fixed order,
// so LAMB's steps are the same bits for any workgroup size and items per invocation (blocks of
// 512 to 4096 elements, fast and careful segments cut elsewhere), on both addressing paths.
TEST_F(GradControlTest, PerTensorSumBitsDoNotDependOnTheWorkgroupSize) {
  const auto p0 = random_values(rng_);
  std::vector<std::vector<std::vector<double>>> grads;
  for (int s = 0; s < 5; ++s) grads.push_back(random_values(rng_));
  LambOptions lamb;
  lamb.lr = 1e-2, lamb.weight_decay = 0.01;
  for (bool bda : {true, false}) {
    SCOPED_TRACE(bda ? "address path" : "descriptor path");
    std::vector<Run> runs;
    for (const auto& options : workgroup_configurations(bda)) runs.push_back(run(options, lamb, {}, grads, p0));
    for (size_t r = 1; r < runs.size(); ++r)
      for (size_t i = 0; i < kSizes.size(); ++i)
        EXPECT_EQ(vkt::bits(runs[r].params[i]), vkt::bits(runs[0].params[i]))
            << "configuration " << r << ", tensor " << i;
  }
}

// Configurations whose blocks cannot hold whole 256-element chunks (or whose item sums do not
// fit the workgroup's shared memory) are refused for passes that sum per tensor: when the
// optimizer is made, and when SAM is turned on later, at the first step, leaving the
// parameters as they were.
TEST_F(GradControlTest, PerTensorSumsRefuseBlocksWithoutWholeChunks) {
  const auto p0 = random_values(rng_);
  auto narrow_options = validated_options();
  narrow_options.override_caps = [](DeviceCaps& c) { c.workgroup_size = 16; };
  auto narrow = make_context(narrow_options);
  LambOptions lamb;
  Model l(narrow, lamb, p0);
  vkt::expect_error([&] { Optimizer opt(narrow, l.groups); }, Status::unsupported, {"workgroup size 16", "256"});
  AdamOptions adam;
  Model a(narrow, adam, p0);
  Optimizer opt(narrow, a.groups);  // no per-tensor sums: accepted
  opt.set_sam(0, SamOptions{0.05});
  vkt::expect_error([&] { opt.step(); }, Status::unsupported, {"workgroup size 16", "256"});
  const auto after = a.download();
  for (size_t i = 0; i < kSizes.size(); ++i) EXPECT_EQ(vkt::bits(after[i]), vkt::bits(vkt::to_float(p0[i])));

  auto many_options = validated_options();
  many_options.override_caps = [](DeviceCaps& c) { c.items_per_invocation = 64; };
  auto many = make_context(many_options);
  Model m(many, lamb, p0);
  vkt::expect_error([&] { Optimizer o(many, m.groups); }, Status::unsupported, {"items per invocation", "64"});

  auto small_options = validated_options();
  small_options.override_caps = [](DeviceCaps& c) {
    c.items_per_invocation = 4;
    c.max_compute_shared_memory = 4096;
  };
  auto small = make_context(small_options);
  Model s(small, lamb, p0);
  vkt::expect_error([&] { Optimizer o(small, s.groups); }, Status::unsupported, {"bytes of shared memory", "4096"});
  EXPECT_TRUE(messages_->list.empty());
}

// A max_norm (and clip_value) no gradient reaches: coefficient 1, and the same bits as a step
// without clipping.
TEST_F(GradControlTest, NoClipPathIsBitIdenticalToNoClipping) {
  const auto p0 = random_values(rng_);
  std::vector<std::vector<std::vector<double>>> grads;
  for (int s = 0; s < 6; ++s) grads.push_back(random_values(rng_));
  GradClip loose;
  loose.max_norm = 1e30;
  loose.clip_value = 1e30;
  const Run clipped = run(validated_options(), loose, grads, p0);
  // Without clipping, as replayable steps (one command buffer submitted per step).
  auto ctx = make_context();
  SgdOptions sgd;
  sgd.lr = 0.05, sgd.momentum = 0.9;
  Model m(ctx, sgd, p0);
  Optimizer opt(ctx, m.groups);
  opt.initialize();
  vkt::Engine engine(ctx);
  RecordOptions replay = vkt::host_reads();
  replay.replay = true;
  VkCommandBuffer cmd = engine.begin();
  opt.record(cmd, replay);
  engine.end(cmd);
  for (const auto& g : grads) {
    m.upload(to_float(g));
    engine.submit(cmd);
  }
  engine.drop(cmd);
  const auto plain = m.download();
  for (size_t i = 0; i < kSizes.size(); ++i) EXPECT_EQ(vkt::bits(clipped.params[i]), vkt::bits(plain[i]));
}

// GradScaler: gradients scaled by the device's scale (a power of two, so unscaling is exact); a
// NaN or ±Inf planted in one random element of one random tensor at a random step skips that
// step (parameters, state and step counters bit-identical), the scale backs off, and the steps
// after it go on; the scale grows after growth_interval clean steps. Recorded once and
// submitted per step, with clipping on too.
TEST_F(GradControlTest, ScalerSkipsNonFiniteStepsAndUpdatesTheScale) {
  for (bool bda : {true, false}) {
    SCOPED_TRACE(bda ? "address path" : "descriptor path");
    auto options = validated_options();
    options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
    auto ctx = make_context(options);
    AdamOptions adam;
    adam.lr = 1e-2;
    const auto p0 = random_values(rng_);
    Model m(ctx, adam, p0);
    Optimizer opt(ctx, m.groups);
    GradScalerOptions scaler;
    scaler.enabled = true;
    scaler.init_scale = 1024;
    scaler.growth_interval = 4;
    opt.set_grad_scaler(scaler);
    GradClip clip;
    clip.max_norm = 20;
    opt.set_grad_clip(clip);
    opt.initialize();
    const BufferRange scale_range = opt.loss_scale_buffer();
    EXPECT_EQ(scale_range.count, 1u);
    vkt::Engine engine(ctx);
    RecordOptions replay = vkt::host_reads();
    replay.replay = true;
    VkCommandBuffer cmd = engine.begin();
    opt.record(cmd, replay);
    engine.end(cmd);

    std::vector<reference::Adam> refs;
    for (size_t n : kSizes) refs.push_back(reference::reference_for(adam)(n));
    auto p_ref = p0;
    constexpr int kSteps = 24;
    std::uniform_int_distribution<int> pick_step(3, kSteps - 6);
    const int bad_step = pick_step(rng_);
    const size_t bad_tensor = std::uniform_int_distribution<size_t>(0, kSizes.size() - 1)(rng_);
    const size_t bad_element = std::uniform_int_distribution<size_t>(0, kSizes[bad_tensor] - 1)(rng_);
    const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity()};
    const float bad = bad_values[std::uniform_int_distribution<int>(0, 2)(rng_)];
    double scale = 1024;  // GradScaler in double: every factor is a power of two
    uint32_t tracker = 0;
    uint64_t taken = 0;
    for (int step = 1; step <= kSteps; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      EXPECT_EQ(opt.loss_scale(), float(scale));
      auto g = random_values(rng_);
      auto gf = to_float(g);
      for (size_t i = 0; i < g.size(); ++i) {
        g[i] = vkt::to_double(gf[i]);
        for (auto& v : gf[i]) v *= float(scale);  // the engine's scaled backward
      }
      if (step == bad_step) gf[bad_tensor][bad_element] = bad;
      m.upload(gf);
      const auto before = m.download();
      std::vector<std::vector<float>> state_before;
      for (size_t i = 0; i < kSizes.size(); ++i)
        for (const auto& name : opt.state_names(i)) state_before.push_back(opt.read_state(i, name));
      engine.submit(cmd);
      const StepReport r = opt.step_reports().back();
      EXPECT_EQ(r.step, uint32_t(step));
      EXPECT_EQ(r.scale, float(scale));
      if (step == bad_step) {
        EXPECT_TRUE(r.found_inf);
        EXPECT_TRUE(r.skipped);
        const auto after = m.download();
        for (size_t i = 0; i < kSizes.size(); ++i) EXPECT_EQ(vkt::bits(after[i]), vkt::bits(before[i]));
        size_t k = 0;
        for (size_t i = 0; i < kSizes.size(); ++i) {
          EXPECT_EQ(opt.step_count(i), taken);
          for (const auto& name : opt.state_names(i))
            EXPECT_EQ(vkt::bits(opt.read_state(i, name)), vkt::bits(state_before[k++]));
        }
        scale *= 0.5;
        tracker = 0;
        continue;
      }
      EXPECT_FALSE(r.found_inf);
      EXPECT_FALSE(r.skipped);
      ++taken;
      reference_clip(clip, g);
      for (size_t i = 0; i < kSizes.size(); ++i) refs[i].step(p_ref[i], g[i]);
      if (++tracker == scaler.growth_interval) scale *= 2, tracker = 0;
      EXPECT_EQ(r.growth_tracker, tracker);
    }
    engine.drop(cmd);
    EXPECT_EQ(opt.loss_scale(), float(scale));
    const auto p = m.download();
    for (size_t i = 0; i < kSizes.size(); ++i) {
      EXPECT_EQ(opt.step_count(i), taken);
      std::vector<double> tol(kSizes[i]);
      for (size_t e = 0; e < tol.size(); ++e) tol[e] = 1e-5 * (1 + std::abs(p_ref[i][e]));
      vkt::expect_close(p[i], p_ref[i], tol, "parameter");
    }
  }
}

// The found-inf flag looks at the elements: a NaN or an infinity in a group the norm does not
// cover (scaler only) or does cover (2-norm clipping) is found, wherever it sits in its chunk;
// a finite gradient whose square overflows is not (the norm is then inf, as torch's).
TEST_F(GradControlTest, NonFiniteElementsAreFoundAndOverflowingSquaresAreNot) {
  auto ctx = make_context();
  SgdOptions sgd;
  sgd.lr = 0.05;
  GradScalerOptions scaler;
  scaler.enabled = true;
  GradClip clip;
  clip.max_norm = 1;
  clip.groups = {1};  // groups 0 and 2: the flag only
  Model m(ctx, sgd, random_values(rng_));
  Optimizer opt(ctx, m.groups);
  opt.set_grad_scaler(scaler);
  opt.set_grad_clip(clip);
  struct Plant {
    size_t tensor, element;
    float value;
    bool found;
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Plant> plants = {{5, 70000, nan, true},
                                     {3, 0, -inf, true},
                                     {4, 4098, inf, true},
                                     {4, 1234, nan, true},
                                     {5, 256 * 7 + 200, 3e30f, false},
                                     {4, 17, 3e30f, false}};
  for (const Plant& plant : plants) {
    SCOPED_TRACE("tensor " + std::to_string(plant.tensor) + " element " + std::to_string(plant.element) + " value " +
                 std::to_string(plant.value));
    auto g = to_float(random_values(rng_));
    g[plant.tensor][plant.element] = plant.value * opt.loss_scale();
    m.upload(g);
    opt.step();
    const StepReport r = opt.step_reports().back();
    EXPECT_EQ(r.found_inf, plant.found);
    EXPECT_EQ(r.skipped, plant.found);
    if (!plant.found) {
      EXPECT_EQ(std::isinf(r.total_norm), clipped(clip, plant.tensor)) << r.total_norm;
    }
  }
}

// error_if_nonfinite: step() throws after a skipped step, which changed nothing; the next step
// goes on.
TEST_F(GradControlTest, ErrorIfNonfiniteSkipsAndThrows) {
  auto ctx = make_context();
  SgdOptions sgd;
  sgd.lr = 0.05, sgd.momentum = 0.9;
  Model m(ctx, sgd, random_values(rng_));
  Optimizer opt(ctx, m.groups);
  GradClip clip;
  clip.max_norm = 1;
  clip.error_if_nonfinite = true;
  opt.set_grad_clip(clip);
  m.upload(to_float(random_values(rng_)));
  opt.step();
  auto g = to_float(random_values(rng_));
  g[4][17] = std::numeric_limits<float>::infinity();
  m.upload(g);
  const auto before = m.download();
  const auto buf = opt.read_state(4, "momentum_buffer");
  vkt::expect_error([&] { opt.step(); }, Status::invalid_argument, {"non-finite", "error_if_nonfinite"});
  const auto after = m.download();
  for (size_t i = 0; i < kSizes.size(); ++i) EXPECT_EQ(vkt::bits(after[i]), vkt::bits(before[i]));
  EXPECT_EQ(vkt::bits(opt.read_state(4, "momentum_buffer")), vkt::bits(buf));
  EXPECT_EQ(opt.step_count(0), 1u);
  const StepReport r = opt.step_reports().back();
  EXPECT_TRUE(r.nonfinite_norm && r.skipped);
  EXPECT_TRUE(std::isinf(r.total_norm));
  m.upload(to_float(random_values(rng_)));
  opt.step();
  EXPECT_EQ(opt.step_count(0), 2u);
}

// SAM's perturbation recorded on the host before the first step with gradient control (which
// moves the optimizer to device steps) is still restored: the same bits as without clipping.
TEST_F(GradControlTest, HostPerturbationIsRestoredByTheFirstDeviceStep) {
  auto ctx = make_context();
  SgdOptions sgd;
  sgd.lr = 0.05, sgd.momentum = 0.9;
  const auto p0 = random_values(rng_);
  Model a(ctx, sgd, p0), b(ctx, sgd, p0);
  for (Model* m : {&a, &b}) m->groups[1].sam.rho = 0.05;
  Optimizer clipped(ctx, a.groups), plain(ctx, b.groups);
  clipped.set_grad_clip({.max_norm = 1e30});  // never clips: coefficient 1
  for (int step = 0; step < 4; ++step) {
    const auto g1 = to_float(random_values(rng_)), g2 = to_float(random_values(rng_));
    a.upload(g1), b.upload(g1);
    clipped.sam_perturb();
    plain.sam_perturb();
    a.upload(g2), b.upload(g2);
    clipped.step();
    plain.step();
  }
  const auto pa = a.download(), pb = b.download();
  for (size_t i = 0; i < kSizes.size(); ++i) EXPECT_EQ(vkt::bits(pa[i]), vkt::bits(pb[i])) << "tensor " << i;
}

// 16-bit gradients: the norm reads them through the same loads as the rules; the reported norm
// follows the double norm of the bf16 values.
TEST_F(GradControlTest, SixteenBitGradientsAreNormedAsStored) {
  auto ctx = make_context();
  std::vector<Tensor> params, grads;
  ParamGroup group{SgdOptions{}, {}};
  std::vector<std::vector<float>> stored;
  for (size_t n : kSizes) {
    params.push_back(ctx.create_tensor(n, DType::bf16));
    grads.push_back(ctx.create_tensor(n, DType::bf16));
    std::vector<float> g(n);
    std::uniform_real_distribution<float> dist(-1, 1);
    for (auto& v : g) v = dist(rng_);
    grads.back().upload(g);
    stored.push_back(grads.back().download());  // as rounded to bf16
    group.tensors.push_back({params.back().range(), grads.back().range(), ""});
  }
  Optimizer opt(ctx, {group});
  opt.set_grad_clip({.max_norm = 1});
  opt.step();
  double sum = 0;
  for (const auto& g : stored)
    for (float v : g) sum += double(v) * v;
  const StepReport r = opt.step_reports().back();
  EXPECT_NEAR(r.total_norm, std::sqrt(sum), std::sqrt(sum) * 1e-5);
  EXPECT_NEAR(r.clip_coef, 1 / (std::sqrt(sum) + 1e-6), 1e-5 / std::sqrt(sum));
}

// Every bad option is refused naming it, before any GPU work, and leaves the settings as they
// were; what cannot replay is refused; plain record() refuses to run with either set.
TEST_F(GradControlTest, BadOptionsAreRefused) {
  auto ctx = make_context();
  SgdOptions sgd;
  Model m(ctx, sgd, random_values(rng_));
  Optimizer opt(ctx, m.groups);
  auto bad_clip = [&](auto change, const std::string& field) {
    GradClip c;
    c.max_norm = 1;
    change(c);
    vkt::expect_error([&] { opt.set_grad_clip(c); }, Status::invalid_argument, {field});
    EXPECT_EQ(opt.grad_clip().max_norm, 0.0);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  bad_clip([](GradClip& c) { c.max_norm = -1; }, "GradClip.max_norm");
  bad_clip([&](GradClip& c) { c.max_norm = nan; }, "GradClip.max_norm");
  bad_clip([](GradClip& c) { c.norm_type = 0; }, "GradClip.norm_type");
  bad_clip([](GradClip& c) { c.norm_type = -2; }, "GradClip.norm_type");
  bad_clip([&](GradClip& c) { c.norm_type = nan; }, "GradClip.norm_type");
  bad_clip([](GradClip& c) { c.clip_value = -0.5; }, "GradClip.clip_value");
  bad_clip([](GradClip& c) { c.groups = {3}; }, "GradClip.groups[0]");
  bad_clip([](GradClip& c) { c.groups = {1, 1}; }, "GradClip.groups[1]");
  auto bad_scaler = [&](auto change, const std::string& field) {
    GradScalerOptions s;
    s.enabled = true;
    change(s);
    vkt::expect_error([&] { opt.set_grad_scaler(s); }, Status::invalid_argument, {field});
    EXPECT_FALSE(opt.grad_scaler().enabled);
  };
  bad_scaler([](GradScalerOptions& s) { s.init_scale = 0; }, "GradScalerOptions.init_scale");
  bad_scaler([](GradScalerOptions& s) { s.init_scale = 1e300; }, "GradScalerOptions.init_scale");
  bad_scaler([](GradScalerOptions& s) { s.growth_factor = 1; }, "GradScalerOptions.growth_factor");
  bad_scaler([](GradScalerOptions& s) { s.backoff_factor = 1; }, "GradScalerOptions.backoff_factor");
  bad_scaler([](GradScalerOptions& s) { s.backoff_factor = 0; }, "GradScalerOptions.backoff_factor");
  bad_scaler([](GradScalerOptions& s) { s.growth_interval = 0; }, "GradScalerOptions.growth_interval");

  // Plain record() with clipping set: refused, nothing recorded.
  GradClip clip;
  clip.max_norm = 1;
  opt.set_grad_clip(clip);
  vkt::Engine engine(ctx);
  VkCommandBuffer cmd = engine.begin();
  vkt::expect_error([&] { opt.record(cmd, vkt::host_reads()); }, Status::invalid_state, {"replay"});
  engine.end(cmd);
  engine.drop(cmd);

  // A workgroup of 16: the norm's 256-element chunks would straddle blocks (16 x 8 or 4 floats).
  auto options = validated_options();
  options.override_caps = [](DeviceCaps& c) { c.workgroup_size = 16; };
  auto small = make_context(options);
  Model s(small, sgd, random_values(rng_));
  Optimizer narrow(small, s.groups);
  vkt::expect_error([&] { narrow.set_grad_clip(clip); }, Status::unsupported, {"workgroup_size 16", "256"});
  EXPECT_EQ(narrow.grad_clip().max_norm, 0.0);
  EXPECT_TRUE(messages_->list.empty());
}

}  // namespace
