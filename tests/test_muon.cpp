// Muon (rules/muon.cpp, shaders/muon_*.comp, the Newton-Schulz GEMMs) against the double
// reference (reference/muon.hpp): option sets x odd and transposed shapes x several groups, with
// an AdamW group (use_muon = false) in the same optimizer, poisoned gaps between the tensors; and
// what Muon refuses.
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "harness.hpp"
#include "reference/from_options.hpp"

namespace {

using namespace vkoptim;

struct MuonCase {
  std::string name;
  MuonOptions options;
};
void PrintTo(const MuonCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<MuonCase> muon_cases() {
  std::vector<MuonCase> out;
  MuonOptions torch_defaults;  // bf16 Newton-Schulz, nesterov, original lr adjustment
  torch_defaults.lr = 0.02;
  out.push_back({"torch_bf16", torch_defaults});
  MuonOptions f32 = torch_defaults;
  f32.ns_bf16 = false;
  out.push_back({"f32", f32});
  MuonOptions plain = f32;
  plain.nesterov = false, plain.momentum = 0.9, plain.weight_decay = 0, plain.ns_steps = 3;
  plain.adjust_lr = MuonLrAdjust::match_rms_adamw;
  out.push_back({"f32_plain_momentum_rms_3_steps", plain});
  MuonOptions unclamped = torch_defaults;
  unclamped.adjust_lr = MuonLrAdjust::spectral_unclamped, unclamped.ns_steps = 0;
  out.push_back({"bf16_normalised_only_spectral", unclamped});
  MuonOptions cubic = f32;  // the classic cubic iteration (1.5, -0.5, 0) for 8 steps
  cubic.ns_a = 1.5, cubic.ns_b = -0.5, cubic.ns_c = 0, cubic.ns_steps = 8;
  out.push_back({"f32_cubic_8_steps", cubic});
  return out;
}

class MuonTest : public vkt::VulkanTest, public ::testing::WithParamInterface<MuonCase> {};

// Shapes of the Muon groups (transposed when rows > cols; one row; one column) and of the AdamW
// group (1-D, and a matrix AdamW steps elementwise).
struct Shape {
  uint64_t rows, cols;  // rows = 0: 1-D
  uint64_t count() const { return rows ? rows * cols : cols; }
};

TEST_P(MuonTest, MatchesReferenceOver25Steps) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "Muon needs buffer device addresses";
  const MuonOptions& o = GetParam().options;
  MuonOptions second = o;  // a second Muon group with other scalars
  second.lr = o.lr * 0.5, second.momentum = 0.8, second.weight_decay = 0.05;
  MuonOptions adamw = o;
  adamw.use_muon = false, adamw.lr = 3e-3;
  const std::vector<std::pair<const MuonOptions*, std::vector<Shape>>> layout = {
      {&o, {{33, 65}, {65, 33}, {1, 7}, {7, 1}}},
      {&second, {{64, 64}, {3, 200}}},
      {&adamw, {{0, 257}, {0, 1}, {5, 9}}},
  };
  // All parameters in one buffer, NaN between them; gradients likewise.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  size_t total = 0;
  std::vector<size_t> at;
  for (const auto& [opts, shapes] : layout)
    for (const Shape& s : shapes) at.push_back(total), total += s.count() + 3;
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<float> p_host(total, nan);
  std::vector<std::vector<double>> p_ref;
  for (const auto& [opts, shapes] : layout)
    for (const Shape& s : shapes) {
      std::vector<double> init(s.count());
      for (auto& x : init) x = double(float(uniform(rng_)));
      std::copy(init.begin(), init.end(), p_host.begin() + long(at[p_ref.size()]));
      p_ref.push_back(init);
    }
  auto p_buf = ctx.create_tensor(p_host);
  auto g_buf = ctx.create_tensor(std::vector<float>(total, nan));
  std::vector<ParamGroup> groups;
  std::vector<reference::Muon> refs;
  std::vector<Shape> all;
  std::vector<const MuonOptions*> of;
  for (const auto& [opts, shapes] : layout) {
    ParamGroup& group = groups.emplace_back();
    group.options = *opts;
    for (const Shape& s : shapes) {
      const size_t i = all.size();
      BufferRange p = p_buf.range(), g = g_buf.range();
      p.offset += at[i] * 4, p.count = s.count();
      g.offset += at[i] * 4, g.count = s.count();
      ParamTensor t{p, g, "t" + std::to_string(i)};
      t.rows = s.rows;
      group.tensors.push_back(t);
      refs.emplace_back(reference::muon_hyper(*opts), s.count(), s.rows);
      all.push_back(s);
      of.push_back(opts);
    }
  }
  Optimizer opt(ctx, groups);
  const int steps = 25;
  const double u = vkt::kUnitRoundoff;
  // The Newton-Schulz result of each step, seen through the parameter: X = (p*(1-lr*wd) - p')/lr'.
  // Its error against the reference's: float32 products (k <= 200) through up to 8 iterations
  // that amplify errors (the quintic's slope at 0 is 3.4445), or with bf16 the same rounding
  // points as the reference, where a float32 sum that lands on the other side of a bf16 rounding
  // boundary moves one element by a bf16 unit that the iterations carry on.
  // Elementwise relative to max |X| of the step, and the whole matrix's error relative to |X|_F.
  // (Measured: float32 below 1e-4 of max |X| and 5e-5 of |X|_F; bf16 up to 3e-2 and 1.3e-2,
  // and once 4.3e-2 of |X|_F for the 3 x 200 matrix: a bf16 unit moved in its 3 x 3 Gram matrix
  // weighs more, and the iterations amplify it most where a singular value is small.)
  const double x_tol = o.ns_bf16 ? 8e-2 : 5e-4, frobenius_tol = o.ns_bf16 ? 6e-2 : 2e-4;
  double worst = 0, worst_frobenius = 0;
  // The largest magnitude each reference state took over the run (the scale of its rounding
  // errors; see the state check below).
  std::vector<std::map<std::string, double>> peak(all.size());
  auto note_peak = [&](size_t i) {
    for (const auto& [name, values] : refs[i].state())
      for (double v : values) peak[i][name] = std::max(peak[i][name], std::abs(v));
  };
  std::vector<float> g_host(total, nan);
  for (int step = 0; step < steps; ++step) {
    std::vector<std::vector<double>> grads;
    for (size_t i = 0; i < all.size(); ++i) {
      std::vector<double> grad(all[i].count());
      for (size_t e = 0; e < grad.size(); ++e) grad[e] = (e % 97 == 5) ? 0.0 : double(float(uniform(rng_)));
      for (size_t e = 0; e < grad.size(); ++e) g_host[at[i] + e] = float(grad[e]);
      grads.push_back(grad);
    }
    g_buf.upload(g_host);
    const std::vector<float> before = p_buf.download();
    opt.step();
    const std::vector<float> after = p_buf.download();
    for (size_t i = 0; i < all.size(); ++i) {
      std::vector<double> p_gpu_before(all[i].count());
      for (size_t e = 0; e < p_gpu_before.size(); ++e) p_gpu_before[e] = before[at[i] + e];
      if (!of[i]->use_muon) {
        refs[i].step(p_ref[i], grads[i]);
        note_peak(i);
        continue;
      }
      // The reference steps the GPU's parameters, so the difference is this step's alone.
      std::vector<double> p_step = p_gpu_before;
      refs[i].step(p_step, grads[i]);
      note_peak(i);
      const MuonOptions& mo = *of[i];
      const double lr_adjusted =
          mo.lr * reference::muon_lr_factor(reference::muon_hyper(mo), double(all[i].rows), double(all[i].cols));
      const auto& x_ref = refs[i].last_update();
      double x_max = 0;
      for (double x : x_ref) x_max = std::max(x_max, std::abs(x));
      size_t bad = 0;
      double diff2 = 0, ref2 = 0;
      for (size_t e = 0; e < x_ref.size(); ++e) {
        const double decayed = p_gpu_before[e] * (1 - mo.lr * mo.weight_decay);
        const double x_gpu = (decayed - double(after[at[i] + e])) / lr_adjusted;
        diff2 += (x_gpu - x_ref[e]) * (x_gpu - x_ref[e]), ref2 += x_ref[e] * x_ref[e];
        // (p' is rounded to float: |p|u/lr' of X's unit; the decayed p once more.)
        const double tol = x_tol * x_max + 4 * u * std::abs(decayed) / lr_adjusted;
        worst = std::max(worst, std::abs(x_gpu - x_ref[e]) / x_max);
        if (!(std::abs(x_gpu - x_ref[e]) <= tol) && bad++ < 3)
          ADD_FAILURE() << "step " << step << ", matrix " << all[i].rows << " x " << all[i].cols << ": X[" << e
                        << "] = " << x_gpu << ", reference " << x_ref[e] << " (max |X| " << x_max << ")";
      }
      EXPECT_EQ(bad, 0u) << "step " << step << ", tensor " << i;
      const double frobenius = std::sqrt(diff2 / ref2);
      worst_frobenius = std::max(worst_frobenius, frobenius);
      EXPECT_LE(frobenius, frobenius_tol) << "step " << step << ", tensor " << i << ": |X - X_ref|_F / |X_ref|_F";
      p_ref[i].assign(after.begin() + long(at[i]), after.begin() + long(at[i] + all[i].count()));
    }
  }
  RecordProperty("worst_relative_x_error", std::to_string(worst));
  RecordProperty("worst_frobenius_x_error", std::to_string(worst_frobenius));
  // The gaps stay poisoned; the AdamW tensors and every momentum buffer match their references.
  const std::vector<float> out = p_buf.download();
  std::vector<bool> covered(total, false);
  for (size_t i = 0; i < all.size(); ++i)
    for (size_t e = 0; e < all[i].count(); ++e) covered[at[i] + e] = true;
  size_t clobbered = 0;
  for (size_t e = 0; e < total; ++e) clobbered += !covered[e] && !std::isnan(out[e]);
  EXPECT_EQ(clobbered, 0u) << "elements between tensors were written";
  for (size_t i = 0; i < all.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    std::vector<std::string> expected{"step"};
    for (const auto& [name, values] : refs[i].state()) {
      expected.push_back(name);
      // Moving averages of float32 inputs: a few u per step of the largest value the state took
      // during the run. Not of its final value: one element's average can cancel towards 0
      // while its rounding errors stay those of the steps before.
      std::vector<double> tol(values.size(), 8 * u * steps * peak[i][name] + 1e-30);
      vkt::expect_close(opt.read_state(i, name), values, tol, name);
    }
    auto names = opt.state_names(i);
    std::sort(names.begin(), names.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(names, expected) << "the update slot is not state";
    if (!of[i]->use_muon) {
      std::vector<float> gpu(out.begin() + long(at[i]), out.begin() + long(at[i] + all[i].count()));
      std::vector<double> tol(gpu.size());
      for (size_t e = 0; e < tol.size(); ++e) tol[e] = 1e-5 * std::max(1.0, std::abs(p_ref[i][e]));
      vkt::expect_close(gpu, p_ref[i], tol, "AdamW param");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MuonTest, ::testing::ValuesIn(muon_cases()),
                         [](const auto& info) { return info.param.name; });

// Replayable Muon steps: a command buffer recorded once and submitted 12 times equals 12 steps
// recorded one by one (both replay mode) bit for bit, and follows steps recorded on the host
// (push constants) within the device scalars' rounding; with a cosine schedule and an AdamW group.
class MuonReplayTest : public vkt::VulkanTest {};

TEST_F(MuonReplayTest, RecordedOnceEqualsRecordedEachStepAndTheHostPath) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "Muon needs buffer device addresses";
  const std::vector<Shape> shapes = {{33, 65}, {65, 33}, {16, 16}, {0, 257}};
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<std::vector<float>> p0;
  std::vector<Tensor> grads;
  for (const Shape& s : shapes) {
    p0.emplace_back(s.count());
    for (float& x : p0.back()) x = float(uniform(rng_));
    grads.push_back(ctx.create_tensor(s.count()));
  }
  auto make = [&](std::vector<Tensor>& params) {
    std::vector<ParamGroup> groups(2);
    MuonOptions o;
    o.lr = 0.02;
    groups[0].options = o;
    o.use_muon = false, o.lr = 3e-3;
    groups[1].options = o;
    for (size_t i = 0; i < shapes.size(); ++i) {
      params.push_back(ctx.create_tensor(p0[i]));
      ParamTensor t{params.back().range(), grads[i].range()};
      t.rows = shapes[i].rows;
      groups[shapes[i].rows ? 0 : 1].tensors.push_back(t);
    }
    for (auto& g : groups) g.schedule = make_schedule(CosineAnnealingLR{.t_max = 12, .eta_min = 1e-4});
    return Optimizer(ctx, groups);
  };
  std::vector<Tensor> once_p, each_p, host_p;
  Optimizer once = make(once_p), each = make(each_p), host = make(host_p);
  once.initialize();
  each.initialize();
  vkt::Engine engine(ctx);
  VkCommandBuffer recorded = engine.replayable(once);
  const int steps = 12;
  for (int step = 0; step < steps; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<float> g(shapes[i].count());
      for (float& x : g) x = float(uniform(rng_));
      grads[i].upload(g);
    }
    engine.submit(recorded);
    engine.step_recorded_afresh(each);
    host.step();
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    const auto a = once_p[i].download(), b = each_p[i].download(), h = host_p[i].download();
    EXPECT_EQ(vkt::bits(a), vkt::bits(b));
    EXPECT_NE(vkt::bits(a), vkt::bits(std::vector<float>(p0[i])));  // it moved
    for (const auto& name : once.state_names(i))
      EXPECT_EQ(vkt::bits(once.read_state(i, name)), vkt::bits(each.read_state(i, name))) << name;
    EXPECT_EQ(once.step_count(i), uint64_t(steps));
    // The host's scalars and the device's part by an ulp or two: far below a step's size.
    std::vector<double> tol(h.size());
    for (size_t e = 0; e < tol.size(); ++e) tol[e] = 1e-5 * std::max(1.0, double(std::abs(h[e])));
    vkt::expect_close(a, vkt::to_double(h), tol, "parameter against the host path");
  }
  engine.drop(recorded);
}

// Muon (with an AdamW group) under gradient clipping and the loss scaler: each step equals the same
// optimizer without gradient control stepped with the gradients unscaled and clipped on the host
// by the step's reported scale and coefficient; a step with an Inf skips, leaving parameters and
// state bit for bit.
class MuonGradControlTest : public vkt::VulkanTest {};

TEST_F(MuonGradControlTest, ClipsUnscalesAndSkipsLikeTheHostPath) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "Muon needs buffer device addresses";
  const std::vector<Shape> shapes = {{9, 17}, {17, 9}, {0, 33}};
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<std::vector<float>> p0;
  for (const Shape& s : shapes) {
    p0.emplace_back(s.count());
    for (float& x : p0.back()) x = float(uniform(rng_));
  }
  struct Model {
    std::vector<Tensor> params, grads;
    std::optional<Optimizer> opt;
  };
  auto make = [&](Model& m) {
    std::vector<ParamGroup> groups(2);
    MuonOptions o;
    o.lr = 0.02, o.ns_bf16 = false;
    groups[0].options = o;
    o.use_muon = false, o.lr = 3e-3;
    groups[1].options = o;
    for (size_t i = 0; i < shapes.size(); ++i) {
      m.params.push_back(ctx.create_tensor(p0[i]));
      m.grads.push_back(ctx.create_tensor(shapes[i].count()));
      ParamTensor t{m.params.back().range(), m.grads.back().range()};
      t.rows = shapes[i].rows;
      groups[shapes[i].rows ? 0 : 1].tensors.push_back(t);
    }
    m.opt.emplace(ctx, groups);
  };
  Model controlled, plain;
  make(controlled);
  make(plain);
  GradClip clip;
  clip.max_norm = 4;  // between the norms of the two gradient scales below
  controlled.opt->set_grad_clip(clip);
  GradScalerOptions scaler;
  scaler.enabled = true, scaler.init_scale = 1024, scaler.growth_interval = 3;
  controlled.opt->set_grad_scaler(scaler);
  int clipped = 0, skipped = 0;
  for (int step = 1; step <= 10; ++step) {
    const float scale = controlled.opt->loss_scale();
    std::vector<std::vector<float>> g(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      g[i].resize(shapes[i].count());
      for (float& x : g[i]) x = float(uniform(rng_) * (step % 2 ? 1.0 : 0.05));
      std::vector<float> scaled(g[i]);
      for (float& x : scaled) x *= scale;  // the engine's scaled loss (exact: a power of two)
      if (step == 6 && i == 2) scaled[5] = std::numeric_limits<float>::infinity();
      controlled.grads[i].upload(scaled);
    }
    std::vector<std::vector<float>> before;
    for (size_t i = 0; i < shapes.size(); ++i) before.push_back(controlled.params[i].download());
    controlled.opt->step();
    const StepReport r = controlled.opt->step_reports().back();
    EXPECT_EQ(r.scale, scale);
    if (r.skipped) {
      ++skipped;
      EXPECT_EQ(step, 6);
      for (size_t i = 0; i < shapes.size(); ++i)
        EXPECT_EQ(vkt::bits(controlled.params[i].download()), vkt::bits(before[i])) << "tensor " << i;
      continue;
    }
    clipped += r.clip_coef < 1 ? 1 : 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      for (float& x : g[i]) x *= r.clip_coef;
      plain.grads[i].upload(g[i]);
    }
    plain.opt->step();
    for (size_t i = 0; i < shapes.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + " tensor " + std::to_string(i));
      const auto a = controlled.params[i].download(), b = plain.params[i].download();
      std::vector<double> tol(a.size()), ref(a.size());
      for (size_t e = 0; e < a.size(); ++e) ref[e] = b[e], tol[e] = 2e-5 * (1 + std::abs(b[e]));
      vkt::expect_close(a, ref, tol, "parameter");
    }
  }
  EXPECT_EQ(skipped, 1);
  EXPECT_GT(clipped, 2);
  EXPECT_LT(clipped, 9);
  EXPECT_EQ(controlled.opt->step_count(0), plain.opt->step_count(0));
}

class MuonBadInputTest : public vkt::VulkanTest {};

// Each invalid setup is refused naming why, before any GPU work.
TEST_F(MuonBadInputTest, RefusesWhatCannotRun) {
  auto ctx = make_context();
  if (!ctx.supports_buffer_device_address()) GTEST_SKIP() << "Muon needs buffer device addresses";
  auto p = ctx.create_tensor(std::vector<float>(64, 1.0f)), g = ctx.create_tensor(64);
  auto group = [&](MuonOptions o, uint64_t rows) {
    ParamGroup pg;
    pg.options = o;
    ParamTensor t{p.range(), g.range()};
    t.rows = rows;
    pg.tensors.push_back(t);
    return pg;
  };
  auto refused = [&](const std::vector<ParamGroup>& groups, const std::string& what) {
    vkt::expect_error([&] { Optimizer opt(ctx, groups); }, Status::invalid_argument, {what});
  };
  refused({group(MuonOptions{}, 0)}, "2-D");
  MuonOptions o;
  o.ns_steps = 100;
  refused({group(o, 8)}, "ns_steps");
  o = {};
  o.eps = 0;
  refused({group(o, 8)}, "eps");
  o = {};
  o.momentum = 1.5;
  refused({group(o, 8)}, "momentum");
  o = {};
  o.ns_b = std::numeric_limits<double>::infinity();
  refused({group(o, 8)}, "ns_b");
  o = {};
  o.adjust_lr = MuonLrAdjust(7);
  refused({group(o, 8)}, "adjust_lr");
  {
    ParamGroup pg = group(MuonOptions{}, 8);
    pg.precision.slots.push_back({"update", StateDType::bf16});
    refused({pg}, "update");
    pg.precision.slots.clear();
    pg.precision.state = StateDType::q8;
    refused({pg}, "8-bit");
  }
  // Descriptors cannot reach the products' operands.
  {
    auto options = validated_options();
    options.addressing = Addressing::descriptors;
    auto dctx = make_context(options);
    auto dp = dctx.create_tensor(std::vector<float>(64, 1.0f)), dg = dctx.create_tensor(64);
    ParamGroup pg;
    ParamTensor t{dp.range(), dg.range()};
    t.rows = 8;
    pg.tensors.push_back(t);
    pg.options = MuonOptions{};
    vkt::expect_error([&] { Optimizer opt(dctx, {pg}); }, Status::unsupported, {"Muon", "device addresses"});
  }
  // ns_steps is fixed once state exists; the coefficients are not.
  Optimizer opt(ctx, {group(MuonOptions{}, 8)});
  opt.step();
  MuonOptions changed;
  changed.ns_steps = 3;
  vkt::expect_error([&] { opt.set_options(0, changed); }, Status::invalid_state, {"ns_steps"});
  changed = {};
  changed.ns_a = 3;
  opt.set_options(0, changed);
  opt.step();
}

}  // namespace
