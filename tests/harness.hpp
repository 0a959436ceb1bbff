#pragma once
// Test fixture and trajectory runner shared by the suites.
//
// Every Context made through VulkanTest has VK_LAYER_KHRONOS_validation with synchronization
// validation on; any message it reports fails the test. Random data comes from a seed that is
// logged (set VKOPTIM_TEST_SEED to replay one).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "vkoptim/vkoptim.hpp"

namespace vkt {

// The seed for this test: VKOPTIM_TEST_SEED if set, else fresh; recorded in the test log.
uint64_t test_seed();

struct Messages {
  std::mutex mutex;
  std::vector<std::string> list;
  void add(std::string_view m) {
    std::lock_guard lock(mutex);
    list.emplace_back(m);
  }
};

class VulkanTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Options with validation on and messages captured; the caller may change the rest.
  vkoptim::ContextOptions validated_options() const;
  vkoptim::Context make_context(vkoptim::ContextOptions options);
  vkoptim::Context make_context() { return make_context(validated_options()); }
  std::shared_ptr<Messages> messages_ = std::make_shared<Messages>();
  std::mt19937_64 rng_;
};

// Results read on the host: the exit barrier names the host.
inline vkoptim::RecordOptions host_reads() {
  vkoptim::RecordOptions ro;
  ro.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
  ro.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
  return ro;
}

// A command pool and buffer of the test's own on the context's device and queue: the test
// records and submits as an engine would.
struct Engine {
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;

  explicit Engine(const vkoptim::Context& ctx) : device(ctx.device()), queue(ctx.queue()) {
    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.queueFamilyIndex = ctx.queue_family_index();
    vkCreateCommandPool(device, &pci, nullptr, &pool);
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vkCreateFence(device, &fci, nullptr, &fence);
  }
  ~Engine() {
    vkDeviceWaitIdle(device);
    vkDestroyFence(device, fence, nullptr);
    vkDestroyCommandPool(device, pool, nullptr);
  }
  // flags: e.g. VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT to submit it again while pending.
  VkCommandBuffer begin(VkCommandBufferUsageFlags flags = 0) {
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    vkAllocateCommandBuffers(device, &cai, &cmd);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = flags;  // never ONE_TIME_SUBMIT: the tests submit some twice
    vkBeginCommandBuffer(cmd, &bi);
    return cmd;
  }
  void end(VkCommandBuffer cmd) { vkEndCommandBuffer(cmd); }
  // A command buffer holding one step of each optimizer, results read on the host.
  template <class... Optimizers>
  VkCommandBuffer recorded(Optimizers&... optimizers) {
    VkCommandBuffer cmd = begin();
    (optimizers.record(cmd, host_reads()), ...);
    end(cmd);
    return cmd;
  }
  // Submits and waits.
  void submit(VkCommandBuffer cmd) {
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    vkQueueSubmit(queue, 1, &si, fence);
    vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX);
    vkResetFences(device, 1, &fence);
  }
  void drop(VkCommandBuffer cmd) { vkFreeCommandBuffers(device, pool, 1, &cmd); }
  // A replayable step of `opt` (RecordOptions::replay), results read on the host: each
  // submission performs the next step.
  VkCommandBuffer replayable(vkoptim::Optimizer& opt) {
    vkoptim::RecordOptions options = host_reads();
    options.replay = true;
    VkCommandBuffer cmd = begin();
    opt.record(cmd, options);
    end(cmd);
    return cmd;
  }
  // One replayable step of `opt`, recorded afresh, submitted and waited for.
  void step_recorded_afresh(vkoptim::Optimizer& opt) {
    VkCommandBuffer cmd = replayable(opt);
    submit(cmd);
    drop(cmd);
  }
};

constexpr double kUnitRoundoff = 5.9604644775390625e-8;  // 2^-24, float32

// Runs `bad`, expects a vkoptim::Error with `status` whose message contains every string in
// `needles`.
template <class F>
void expect_error(F&& bad, vkoptim::Status status, const std::vector<std::string>& needles) {
  try {
    bad();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << needles.front();
  } catch (const vkoptim::Error& e) {
    EXPECT_EQ(int(e.status()), int(status)) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message: " << e.what();
  }
}

// The bit patterns of `v`, for comparisons that must be exact (NaN included).
inline std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * 4);
  return out;
}

// One group of a trajectory: GPU options, the reference built from the same hyperparameters,
// and the tensors' sizes.
template <class Ref>
struct GroupSpec {
  vkoptim::RuleOptions options;
  std::function<Ref(size_t n)> make_reference;
  std::vector<size_t> sizes;
  vkoptim::LookaheadOptions lookahead = {};
  vkoptim::EmaOptions ema = {};
};

struct TrajectoryConfig {
  int steps = 55;
  size_t param_buffers = 2;  // tensors are spread over this many parameter buffers...
  size_t grad_buffers = 2;   // ...and gradient buffers, with NaN-poisoned gaps between them
  // Error bound on the parameter per step, in units of u times |update| (see tolerance()).
  double update_error_factor = 64;
  // lr of group g at step s (0-based); empty: keep the options' lr.
  std::function<double(size_t group, int step)> lr_schedule;
  // Called before each step with the optimizer (e.g. to check dispatch counts).
  std::function<void(vkoptim::Optimizer&, int step)> before_step;
  // Require both the fast (whole aligned blocks) and the careful (tails, unaligned) kernels.
  bool expect_both_paths = true;
};

// Float32 error bound for one element after T steps, from forward error analysis: each step
// rounds p once (<= u|p|) and computes the update with relative error <= K u (K grows with the
// number of operations and the memory of the moving averages), so
//   |p_gpu - p_ref| <= 8 u T max_t |p_t| + K u sum_t |dp_t|.
// State s (moving averages) rounds with relative error <= a few u per step: 8 u T max_t |s_t|,
// plus twice the parameter's relative error bound where state depends on p.
struct Bounds {
  std::vector<double> max_abs_p, sum_abs_dp;
  std::map<std::string, std::vector<double>> max_abs_state;
};

// Compares `gpu` with `ref` elementwise; reports the first few failures.
void expect_close(const std::vector<float>& gpu, const std::vector<double>& ref, const std::vector<double>& tol,
                  const std::string& what);

std::vector<float> to_float(const std::vector<double>& v);
std::vector<double> to_double(const std::vector<float>& v);

struct Placement {
  size_t buffer = 0;
  size_t offset = 0;  // elements
};

// Packs `sizes` into `buffers` buffers round-robin with gaps of at least one element: even
// tensors 32-byte aligned, odd ones not. Returns each placement and each buffer's total size.
std::vector<Placement> pack(const std::vector<size_t>& sizes, size_t buffers, size_t first_buffer,
                            std::vector<size_t>& totals);

// The weight decay a rule adds to g (L2: g + wd*p) under `options`; 0 when decoupled or absent.
inline double coupled_weight_decay(const vkoptim::RuleOptions& options) {
  return std::visit(
      [](const auto& o) -> double {
        using O = std::decay_t<decltype(o)>;
        if constexpr (requires { o.decoupled_weight_decay; })
          return o.decoupled_weight_decay ? 0.0 : o.weight_decay;
        else if constexpr (std::is_same_v<O, vkoptim::AsgdOptions>)
          return o.weight_decay;
        else
          return 0.0;
      },
      options);
}

template <class Ref>
void run_trajectory(vkoptim::Context& ctx, std::vector<GroupSpec<Ref>> groups, const TrajectoryConfig& cfg,
                    std::mt19937_64& rng) {
  const float nan = std::nanf("");
  std::vector<size_t> sizes;
  for (const auto& g : groups) sizes.insert(sizes.end(), g.sizes.begin(), g.sizes.end());
  const size_t nt = sizes.size();

  std::vector<size_t> p_totals(cfg.param_buffers, 0), g_totals(cfg.grad_buffers, 0);
  const auto p_place = pack(sizes, cfg.param_buffers, 0, p_totals);
  const auto g_place = pack(sizes, cfg.grad_buffers, 1, g_totals);

  std::vector<std::vector<float>> p_host(cfg.param_buffers), g_host(cfg.grad_buffers);
  for (size_t b = 0; b < cfg.param_buffers; ++b) p_host[b].assign(p_totals[b], nan);
  for (size_t b = 0; b < cfg.grad_buffers; ++b) g_host[b].assign(g_totals[b], nan);

  std::uniform_real_distribution<double> uniform(-1, 1);
  std::normal_distribution<double> normal(0, 1);
  std::vector<std::vector<double>> p_ref(nt);
  for (size_t i = 0; i < nt; ++i) {
    p_ref[i].resize(sizes[i]);
    for (size_t e = 0; e < sizes[i]; ++e) {
      const float v = float(uniform(rng));
      p_ref[i][e] = v;
      p_host[p_place[i].buffer][p_place[i].offset + e] = v;
    }
  }
  std::vector<vkoptim::Tensor> p_buf, g_buf;
  for (auto& h : p_host) p_buf.push_back(ctx.create_tensor(h));
  for (auto& h : g_host) g_buf.push_back(ctx.create_tensor(h));

  std::vector<vkoptim::ParamGroup> param_groups;
  std::vector<Ref> refs;
  std::vector<size_t> tensor_group;
  size_t ti = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    vkoptim::ParamGroup pg;
    pg.options = groups[gi].options;
    pg.lookahead = groups[gi].lookahead;
    pg.ema = groups[gi].ema;
    for (size_t k = 0; k < groups[gi].sizes.size(); ++k, ++ti) {
      vkoptim::ParamTensor t;
      t.param = p_buf[p_place[ti].buffer].range();
      t.param.offset = p_place[ti].offset * 4;
      t.param.count = sizes[ti];
      t.grad = g_buf[g_place[ti].buffer].range();
      t.grad.offset = g_place[ti].offset * 4;
      t.grad.count = sizes[ti];
      t.name = "t" + std::to_string(ti);
      pg.tensors.push_back(t);
      refs.push_back(groups[gi].make_reference(sizes[ti]));
      tensor_group.push_back(gi);
    }
    param_groups.push_back(std::move(pg));
  }
  vkoptim::Optimizer opt(ctx, param_groups);

  // Conditioning: where float32 cannot determine the result, no kernel can match the exact one.
  // Where g nearly cancels L2 decay's wd*p, rounding g + wd*p moves it by a large relative amount,
  // which a normalised update (g/sqrt(v)) then carries in full. So does the error the parameter
  // already carries (its bound below, so far), fed back through wd*p: where p is near zero, as
  // when a zero gradient leaves L2 decay alone to drive p across it, a normalised rule's step no
  // longer shrinks with p and the crossings follow p's last bits. Two shadow references take
  // every step with the gradient moved by what both can move it, 2u(|g| + |wd p|) + wd*err(p), up
  // and down; how far they end from the reference is added to the bound. Elsewhere this is a
  // fraction of the K u |dp| term, and an exact zero gradient without L2 decay stays exactly zero.
  std::vector<double> l2_decay(groups.size());
  for (size_t gi = 0; gi < groups.size(); ++gi) l2_decay[gi] = coupled_weight_decay(groups[gi].options);
  std::vector<Ref> shadow_refs[2] = {refs, refs};
  std::vector<std::vector<double>> shadow_p[2] = {p_ref, p_ref};

  Bounds bounds;
  bounds.max_abs_p.resize(nt);
  bounds.sum_abs_dp.resize(nt);
  std::vector<std::vector<double>> max_p(nt), sum_dp(nt);
  std::vector<std::map<std::string, std::vector<double>>> max_s(nt);
  for (size_t i = 0; i < nt; ++i) {
    max_p[i].assign(sizes[i], 0);
    sum_dp[i].assign(sizes[i], 0);
    for (size_t e = 0; e < sizes[i]; ++e) max_p[i][e] = std::abs(p_ref[i][e]);
  }

  // The forward error bound of element e of tensor i after `steps` steps (see Bounds).
  auto rounding_bound = [&](size_t i, size_t e, double steps) {
    return kUnitRoundoff * (8 * steps * max_p[i][e] + cfg.update_error_factor * sum_dp[i][e]);
  };

  std::vector<double> grad;
  for (int step = 0; step < cfg.steps; ++step) {
    if (cfg.lr_schedule)
      for (size_t gi = 0; gi < groups.size(); ++gi) opt.set_lr(gi, cfg.lr_schedule(gi, step));
    for (size_t i = 0; i < nt; ++i) {
      // Per-tensor scale, and an exact zero now and then.
      const double scale = 0.25 + double(i % 4);
      for (size_t e = 0; e < sizes[i]; ++e) {
        const float v = (e % 97 == 5) ? 0.0f : float(normal(rng) * scale);
        g_host[g_place[i].buffer][g_place[i].offset + e] = v;
      }
    }
    for (size_t b = 0; b < cfg.grad_buffers; ++b) g_buf[b].upload(g_host[b]);
    if (cfg.before_step) cfg.before_step(opt, step);
    opt.step();
    for (size_t i = 0; i < nt; ++i) {
      grad.assign(sizes[i], 0);
      for (size_t e = 0; e < sizes[i]; ++e) grad[e] = g_host[g_place[i].buffer][g_place[i].offset + e];
      if (cfg.lr_schedule) refs[i].set_lr(cfg.lr_schedule(tensor_group[i], step));
      const double wd = l2_decay[tensor_group[i]];
      for (int side = 0; side < 2; ++side) {
        std::vector<double> moved = grad;
        for (size_t e = 0; e < sizes[i]; ++e) {
          moved[e] += (side ? -1 : 1) * (2 * kUnitRoundoff * (std::abs(grad[e]) + wd * std::abs(shadow_p[side][i][e])) +
                                         wd * rounding_bound(i, e, step));
        }
        if (cfg.lr_schedule) shadow_refs[side][i].set_lr(cfg.lr_schedule(tensor_group[i], step));
        shadow_refs[side][i].step(shadow_p[side][i], moved);
      }
      const std::vector<double> before = p_ref[i];
      refs[i].step(p_ref[i], grad);
      for (size_t e = 0; e < sizes[i]; ++e) {
        max_p[i][e] = std::max(max_p[i][e], std::abs(p_ref[i][e]));
        sum_dp[i][e] += std::abs(p_ref[i][e] - before[e]);
      }
      for (const auto& [name, values] : refs[i].state()) {
        auto& m = max_s[i][name];
        m.resize(values.size(), 0);
        for (size_t e = 0; e < values.size(); ++e) m[e] = std::max(m[e], std::abs(values[e]));
      }
    }
  }

  // Parameters, and the poisoned gaps around them.
  std::vector<std::vector<float>> p_out;
  for (auto& b : p_buf) p_out.push_back(b.download());
  std::vector<bool> covered;
  for (size_t b = 0; b < cfg.param_buffers; ++b) {
    covered.assign(p_totals[b], false);
    for (size_t i = 0; i < nt; ++i)
      if (p_place[i].buffer == b)
        for (size_t e = 0; e < sizes[i]; ++e) covered[p_place[i].offset + e] = true;
    size_t clobbered = 0;
    for (size_t e = 0; e < p_totals[b]; ++e)
      if (!covered[e] && !std::isnan(p_out[b][e])) ++clobbered;
    EXPECT_EQ(clobbered, 0u) << "elements outside every tensor were written in parameter buffer " << b;
  }
  const auto shape = opt.shape();
  if (cfg.expect_both_paths) {
    EXPECT_GT(shape.fast_elements, 0u) << "no tensor reached the fast path";
    EXPECT_GT(shape.careful_elements, 0u) << "no tensor reached the careful path";
  }
  EXPECT_EQ(shape.fast_elements + shape.careful_elements, std::accumulate(sizes.begin(), sizes.end(), uint64_t(0)));
  const double T = cfg.steps, u = kUnitRoundoff;
  for (size_t i = 0; i < nt; ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i) + " (" + std::to_string(sizes[i]) + " elements, group " +
                 std::to_string(tensor_group[i]) + ")");
    std::vector<float> gpu(p_out[p_place[i].buffer].begin() + long(p_place[i].offset),
                           p_out[p_place[i].buffer].begin() + long(p_place[i].offset + sizes[i]));
    std::vector<double> tol(sizes[i]);
    for (size_t e = 0; e < sizes[i]; ++e)
      tol[e] = rounding_bound(i, e, T) +
               std::max(std::abs(shadow_p[0][i][e] - p_ref[i][e]), std::abs(shadow_p[1][i][e] - p_ref[i][e])) + 1e-30;
    // Rules whose step depends on p (L2 decay): how much p's error can have grown through it.
    if constexpr (requires { refs[i].condition(); })
      for (size_t e = 0; e < sizes[i]; ++e) tol[e] *= refs[i].condition()[e];
    // Sign-based rules: what a near-tie decided differently in float could cost.
    if constexpr (requires { refs[i].ambiguity(); })
      for (size_t e = 0; e < sizes[i]; ++e) tol[e] += refs[i].ambiguity()[e];
    expect_close(gpu, p_ref[i], tol, "param");

    const auto ref_state = refs[i].state();
    const auto shadow_state = std::array{shadow_refs[0][i].state(), shadow_refs[1][i].state()};
    auto names = opt.state_names(i);
    std::vector<std::string> expected_names;
    for (const auto& [name, values] : ref_state) expected_names.push_back(name);
    expected_names.push_back("step");
    std::sort(names.begin(), names.end());
    std::sort(expected_names.begin(), expected_names.end());
    EXPECT_EQ(names, expected_names);
    for (const auto& [name, values] : ref_state) {
      const auto gpu_state = opt.read_state(i, name);
      std::vector<double> stol(values.size());
      // Own rounding, plus the parameter's relative error where state depends on p (L2 decay
      // feeds wd*p into g; a square doubles the relative error).
      for (size_t e = 0; e < values.size(); ++e) {
        const double p_rel = values.size() == sizes[i] ? tol[e] / std::max(max_p[i][e], 1e-30) : 0.0;
        stol[e] = (8 * u * T + 2 * p_rel) * max_s[i][name][e] + 1e-30;
        stol[e] += std::max(std::abs(shadow_state[0].at(name)[e] - values[e]),
                            std::abs(shadow_state[1].at(name)[e] - values[e]));
      }
      expect_close(gpu_state, values, stol, name);
    }
    EXPECT_EQ(opt.step_count(i), uint64_t(cfg.steps));
  }
}

}  // namespace vkt
