// vkoptim-bench: device time of optimizer steps (Vulkan timestamp queries, after warm-up, median
// of many runs with min and max), next to vkCmdCopyBuffer of the same byte count measured in the
// same run, plus the host CPU time to record a step. Precision rows (bf16, 8-bit) also give
// their time over the fp32 rule's, each run paired with an fp32 run. Prints a table; --json FILE
// writes the figures machine-readably.
//
// By default a short table of the headline rules (about 15 s on a 2-core CPU driver), with
// progress on a terminal; --quick every rule at 2^22 elements; --full every rule at 2^24 with 25
// runs (the README's figures).
//
//   vkoptim-bench [--full | --quick] [--runs N] [--warmup N] [--json FILE]
//                 [--descriptors | --addresses] [--workgroup N] [--items N]   (explore variants)
//                 [--no-subgroups]   (quantized blocks' absmax through shared memory, as without subgroup arithmetic)
#include <fcntl.h>
#include <unistd.h>
#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "stats.hpp"
#include "vkoptim/vkoptim.hpp"

namespace {

void check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) {
    std::fprintf(stderr, "%s failed: %d\n", what, int(r));
    std::exit(1);
  }
}

// Times recorded work on the context's queue with timestamp queries.
class Timer {
 public:
  explicit Timer(vkoptim::Context& ctx) : ctx_(ctx) {
    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pci.queueFamilyIndex = ctx.queue_family_index();
    check(vkCreateCommandPool(ctx.device(), &pci, nullptr, &pool_), "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool_;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    check(vkAllocateCommandBuffers(ctx.device(), &cai, &cmd_), "vkAllocateCommandBuffers");
    VkQueryPoolCreateInfo qci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qci.queryCount = 2;
    check(vkCreateQueryPool(ctx.device(), &qci, nullptr, &queries_), "vkCreateQueryPool");
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    check(vkCreateFence(ctx.device(), &fci, nullptr, &fence_), "vkCreateFence");
  }
  ~Timer() {
    vkDeviceWaitIdle(ctx_.device());
    vkDestroyFence(ctx_.device(), fence_, nullptr);
    vkDestroyQueryPool(ctx_.device(), queries_, nullptr);
    vkDestroyCommandPool(ctx_.device(), pool_, nullptr);
  }

  VkCommandBuffer cmd() const { return cmd_; }

  // Device milliseconds of `work` per run.
  std::vector<double> device_ms(const std::function<void(VkCommandBuffer)>& work, int warmup, int runs) {
    std::vector<double> out;
    for (int i = 0; i < warmup + runs; ++i) {
      begin();
      vkCmdResetQueryPool(cmd_, queries_, 0, 2);
      vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries_, 0);
      work(cmd_);
      vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_, 1);
      submit();
      uint64_t ts[2];
      check(vkGetQueryPoolResults(ctx_.device(), queries_, 0, 2, sizeof ts, ts, 8,
                                  VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
            "vkGetQueryPoolResults");
      if (i >= warmup) out.push_back(double(ts[1] - ts[0]) * ctx_.caps().timestamp_period_ns * 1e-6);
    }
    return out;
  }

  // Host microseconds spent inside `record` (the command buffer is begun, ended, not submitted).
  std::vector<double> host_us(const std::function<void(VkCommandBuffer)>& record, int runs) {
    std::vector<double> out;
    for (int i = 0; i < runs; ++i) {
      begin();
      const auto t0 = std::chrono::steady_clock::now();
      record(cmd_);
      const auto t1 = std::chrono::steady_clock::now();
      check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
      out.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    return out;
  }

 private:
  void begin() {
    check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  }
  void submit() {
    check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    check(vkQueueSubmit(ctx_.queue(), 1, &si, fence_), "vkQueueSubmit");
    check(vkWaitForFences(ctx_.device(), 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    check(vkResetFences(ctx_.device(), 1, &fence_), "vkResetFences");
  }

  vkoptim::Context& ctx_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
};

// Storage policies the precision rows compare (fp32 everything is the default).
enum class Precision { fp32, bf16_master, bf16_kahan, bf16_state, q8_state, q4_state, q4_rank1 };
const char* precision_label(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "";
    case Precision::bf16_master:
      return "+bf16pm";  // bf16 parameters and gradients, fp32 masters
    case Precision::bf16_kahan:
      return "+bf16kh";  // bf16 parameters and gradients, Kahan compensation
    case Precision::bf16_state:
      return "+bf16st";  // fp32 parameters, bf16 state
    case Precision::q8_state:
      return "+q8st";  // fp32 parameters, 8-bit blockwise state
    case Precision::q4_state:
      return "+q4st";  // fp32 parameters, 4-bit blockwise state
    case Precision::q4_rank1:
      return "+q4r1";  // 4-bit state, the second moment of a square matrix normalised rank-1
  }
  return "";
}

struct Case {
  std::string rule;  // sgd_momentum, adam, adamw
  size_t tensors = 1;
  size_t elements = 0;  // per tensor
  double bytes_per_element = 0;
  Precision precision = Precision::fp32;
  double state_bytes_per_element = 0;
  std::string label() const { return rule + precision_label(precision); }
};

struct Result {
  Case c;
  double reduction_share = -1;  // median fraction of device time in reduce passes (rules with them)
  Stats rule_ms, copy_ms, record_us;
  // Time over the baseline's, run by run: precision rows against the fp32 rule, the full table's
  // other rules against fp32 Adam (with the baseline's bytes per element, for the bytes rate).
  Stats ratio_to_fp32;
  double baseline_bytes_per_element = 0;
  int runs = 0;
  uint32_t dispatches = 0;
  bool device_address = false;
};

using NamedRules = std::vector<std::pair<std::string, vkoptim::RuleOptions>>;
vkoptim::RuleOptions options_of(const NamedRules& rules, const std::string& rule) {
  for (const auto& [name, options] : rules)
    if (name == rule) return options;
  std::fprintf(stderr, "unknown rule %s\n", rule.c_str());
  std::exit(2);
}

// Every registered rule (vkoptim::registered_rules) but Muon with its defaults, by the name the
// table prints; SGD and RMSprop run with momentum 0.9 (their torch default is none). Then the cautious
// variants of AdamW, Lion and SGD with momentum, and AdamW with an EMA of its parameters.
const NamedRules& all_rules() {
  static const NamedRules rules = [] {
    NamedRules out;
    for (const auto& info : vkoptim::registered_rules()) {
      std::string name = info.name;
      vkoptim::RuleOptions options = info.defaults;
      // Muon's step is its matrix products, not bytes: vkoptim-gemm-bench times it.
      if (std::holds_alternative<vkoptim::MuonOptions>(options)) continue;
      if (auto* sgd = std::get_if<vkoptim::SgdOptions>(&options)) {
        sgd->momentum = 0.9;
        name = "sgd_momentum";
      } else if (auto* rmsprop = std::get_if<vkoptim::RmspropOptions>(&options)) {
        rmsprop->momentum = 0.9;
        name = "rmsprop_mom";
      } else if (name == "schedule_free_adamw") {
        name = "schedule_free";
      }
      out.emplace_back(name, options);
    }
    // Cautious steps (three passes) of the rules that take them.
    for (const char* rule : {"adamw", "lion", "sgd_momentum"}) {
      vkoptim::RuleOptions options = options_of(out, rule);
      std::visit(
          [](auto& o) {
            if constexpr (requires { o.cautious; }) o.cautious = true;
          },
          options);
      out.emplace_back(std::string(rule) + "_cautious", options);
    }
    // AdamW with an EMA of its parameters (ParamGroup::ema, set by build for the "_ema" names).
    out.emplace_back("adamw_ema", options_of(out, "adamw"));
    return out;
  }();
  return rules;
}

vkoptim::RuleOptions options_for(const std::string& rule) {
  return options_of(all_rules(), rule);
}

// Device milliseconds of each pass of `runs` steps recorded with `options` (per-pass
// timestamps): the passes' names in step order, and per pass its time in each run.
struct PassTimes {
  std::vector<std::string> names;
  std::vector<std::vector<double>> ms;  // [pass][run]
};
PassTimes pass_times(vkoptim::Context& ctx, vkoptim::Optimizer& opt, int runs, vkoptim::RecordOptions options = {}) {
  Timer timer(ctx);
  timer.device_ms([&](VkCommandBuffer cmd) { opt.record(cmd, options); }, 0, 1);  // names this step's passes
  PassTimes out{opt.pass_names(), {}};
  const uint32_t queries = uint32_t(out.names.size() + 1);
  VkQueryPoolCreateInfo qci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qci.queryCount = queries;
  VkQueryPool pool;
  check(vkCreateQueryPool(ctx.device(), &qci, nullptr, &pool), "vkCreateQueryPool");
  options.timestamp_pool = pool;
  options.first_query = 0;
  out.ms.resize(out.names.size());
  for (int i = 0; i < runs; ++i) {
    timer.device_ms(
        [&](VkCommandBuffer cmd) {
          vkCmdResetQueryPool(cmd, pool, 0, queries);
          opt.record(cmd, options);
        },
        0, 1);
    std::vector<uint64_t> ts(queries);
    check(vkGetQueryPoolResults(ctx.device(), pool, 0, queries, ts.size() * 8, ts.data(), 8,
                                VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
          "vkGetQueryPoolResults");
    for (size_t p = 0; p < out.names.size(); ++p)
      out.ms[p].push_back(double(ts[p + 1] - ts[p]) * ctx.caps().timestamp_period_ns * 1e-6);
  }
  vkDestroyQueryPool(ctx.device(), pool, nullptr);
  return out;
}

// Median over runs of the fraction of a step's device time spent in its reduction passes:
// reduce.comp and Adafactor's row/column statistics. -1 when the rule has none.
double reduction_share(vkoptim::Context& ctx, vkoptim::Optimizer& opt, int runs) {
  auto is_reduction = [](const std::string& pass) { return pass == "reduce" || pass == "adafactor_factors"; };
  const auto names = opt.pass_names();  // (the case's last recording: rules without reductions record nothing more)
  if (std::none_of(names.begin(), names.end(), is_reduction)) return -1;
  const PassTimes t = pass_times(ctx, opt, runs);
  std::vector<double> shares;
  for (int i = 0; i < runs; ++i) {
    double reduce = 0, total = 0;
    for (size_t p = 0; p < t.names.size(); ++p) {
      total += t.ms[p][size_t(i)];
      if (is_reduction(t.names[p])) reduce += t.ms[p][size_t(i)];
    }
    shares.push_back(reduce / total);
  }
  return summarise(shares).median;
}

// The buffers and optimizer of one case, ready to record steps.
struct Instance {
  std::string rule;
  vkoptim::Tensor params, grads;
  vkoptim::Optimizer opt;
};

std::unique_ptr<Instance> build(vkoptim::Context& ctx, const Case& c) {
  const size_t total = c.tensors * c.elements;
  // Parameters and gradients each in one buffer, tensors back to back.
  const bool bf16_params = c.precision == Precision::bf16_master || c.precision == Precision::bf16_kahan;
  const vkoptim::DType io = bf16_params ? vkoptim::DType::bf16 : vkoptim::DType::f32;
  auto params = ctx.create_tensor(total, io);
  auto grads = ctx.create_tensor(total, io);
  grads.upload(std::vector<float>(total, 0.01f));
  vkoptim::ParamGroup group{options_for(c.rule), {}};
  group.precision.master_weights = c.precision == Precision::bf16_master;
  group.precision.kahan_summation = c.precision == Precision::bf16_kahan;
  if (c.precision == Precision::bf16_state) group.precision.state = vkoptim::StateDType::bf16;
  if (c.precision == Precision::q8_state) group.precision.state = vkoptim::StateDType::q8;
  if (c.precision == Precision::q4_state || c.precision == Precision::q4_rank1)
    group.precision.state = vkoptim::StateDType::q4;
  group.precision.rank1_second_moment = c.precision == Precision::q4_rank1;
  if (c.rule.ends_with("_ema")) group.ema.decay = 0.999;
  for (size_t i = 0; i < c.tensors; ++i) {
    vkoptim::ParamTensor t{params.range(), grads.range(), ""};
    t.param.offset = t.grad.offset = i * c.elements * vkoptim::dtype_size(io);
    t.param.count = t.grad.count = c.elements;
    // Adafactor factors square matrices (2^24 = 4096 x 4096), as rank-1 second moments are
    // normalised; the other rules ignore rows.
    if (c.rule == "adafactor" || c.precision == Precision::q4_rank1)
      t.rows = size_t(std::lround(std::sqrt(double(c.elements))));
    group.tensors.push_back(t);
  }
  vkoptim::Optimizer opt(ctx, {group});
  opt.step();  // state allocation and pipeline creation happen here, outside the timing
  return std::unique_ptr<Instance>(new Instance{c.rule, std::move(params), std::move(grads), std::move(opt)});
}

// Times a case. `baseline` (precision rows: fp32 Adam of the same size) is timed right after each
// run of the case, so that every ratio compares two runs under the same machine load.
Result run_case(vkoptim::Context& ctx, Timer& timer, const Case& c, int warmup, int runs,
                Instance* baseline = nullptr) {
  const size_t total = c.tensors * c.elements;
  auto instance = build(ctx, c);
  vkoptim::Optimizer& opt = instance->opt;
  Case measured = c;
  measured.bytes_per_element = opt.bytes_per_element(0);
  measured.state_bytes_per_element = opt.memory().state_bytes_per_element();

  // The copy moves the bytes the rule must move, in one vkCmdCopyBuffer.
  const VkDeviceSize copy_bytes = VkDeviceSize(double(total) * measured.bytes_per_element) / 2 / 4 * 4;
  auto src = ctx.create_tensor(copy_bytes / 4);
  auto dst = ctx.create_tensor(copy_bytes / 4);
  const VkBuffer s = src.range().buffer, d = dst.range().buffer;

  Result r;
  r.c = measured;
  r.runs = runs;
  vkoptim::RecordOptions ro;
  ro.replay = c.precision == Precision::q4_rank1;  // (rank-1 steps are replayable only)
  // Interleave rule and copy measurements so both see the same machine load.
  std::vector<double> rule_ms, copy_ms, ratios;
  for (int i = 0; i < runs; ++i) {
    const int w = i == 0 ? warmup : 0;
    auto a = timer.device_ms([&](VkCommandBuffer cmd) { opt.record(cmd, ro); }, w, 1);
    auto b = timer.device_ms(
        [&](VkCommandBuffer cmd) {
          // read + write of copy_bytes = the rule's bytes moved
          VkBufferCopy region{0, 0, copy_bytes};
          vkCmdCopyBuffer(cmd, s, d, 1, &region);
        },
        w, 1);
    rule_ms.push_back(a[0]);
    copy_ms.push_back(b[0]);
    if (baseline) {
      auto f = timer.device_ms([&](VkCommandBuffer cmd) { baseline->opt.record(cmd); }, w, 1);
      ratios.push_back(a[0] / f[0]);
    }
  }
  r.dispatches = opt.last_dispatch_count();
  r.device_address = opt.uses_device_addresses();
  r.rule_ms = summarise(rule_ms);
  r.copy_ms = summarise(copy_ms);
  if (baseline) {
    r.ratio_to_fp32 = summarise(ratios);
    r.baseline_bytes_per_element = baseline->opt.bytes_per_element(0);
  }
  r.record_us = summarise(timer.host_us([&](VkCommandBuffer cmd) { opt.record(cmd, ro); }, std::max(runs, 50)));
  r.reduction_share = reduction_share(ctx, opt, runs);
  return r;
}

}  // namespace

// A replayable step against a recorded one, on optimizers of the same case, run after run: host
// time to record a step (record) or to submit the replayable buffer (vkQueueSubmit), and device
// time of each; and a replayable step with gradient control (loss scaler and global norm
// clipping: unscale, found-inf, clip) against the plain replayable one.
struct ReplayResult {
  Stats record_us, submit_us, recorded_ms, replayed_ms, ratio, grads_ms, grads_ratio, grads_to_recorded;
  PassTimes grads_passes;  // the controlled step's passes
};
ReplayResult run_replay(vkoptim::Context& ctx, Timer& timer, const Case& c, int warmup, int runs) {
  auto recorded = build(ctx, c);
  auto replayed = build(ctx, c);
  auto controlled = build(ctx, c);
  controlled->opt.set_grad_scaler({.enabled = true});
  controlled->opt.set_grad_clip({.max_norm = 1.0});
  const VkDevice device = ctx.device();
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.queueFamilyIndex = ctx.queue_family_index();
  VkCommandPool pool;
  check(vkCreateCommandPool(device, &pci, nullptr, &pool), "vkCreateCommandPool");
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  check(vkCreateFence(device, &fci, nullptr, &fence), "vkCreateFence");
  // A replayable step recorded once between two timestamps.
  struct Replayable {
    VkCommandBuffer cmd;
    VkQueryPool queries;
  };
  auto record_replayable = [&](vkoptim::Optimizer& opt) {
    Replayable r;
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    check(vkAllocateCommandBuffers(device, &cai, &r.cmd), "vkAllocateCommandBuffers");
    VkQueryPoolCreateInfo qci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qci.queryCount = 2;
    check(vkCreateQueryPool(device, &qci, nullptr, &r.queries), "vkCreateQueryPool");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    check(vkBeginCommandBuffer(r.cmd, &bi), "vkBeginCommandBuffer");
    vkCmdResetQueryPool(r.cmd, r.queries, 0, 2);
    vkCmdWriteTimestamp(r.cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, r.queries, 0);
    vkoptim::RecordOptions replay;
    replay.replay = true;
    opt.record(r.cmd, replay);
    vkCmdWriteTimestamp(r.cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, r.queries, 1);
    check(vkEndCommandBuffer(r.cmd), "vkEndCommandBuffer");
    return r;
  };
  // Submits one, waits: host microseconds of vkQueueSubmit, device milliseconds.
  auto submit = [&](const Replayable& r) {
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &r.cmd;
    const auto t0 = std::chrono::steady_clock::now();
    check(vkQueueSubmit(ctx.queue(), 1, &si, fence), "vkQueueSubmit");
    const auto t1 = std::chrono::steady_clock::now();
    check(vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    check(vkResetFences(device, 1, &fence), "vkResetFences");
    uint64_t ts[2];
    check(vkGetQueryPoolResults(device, r.queries, 0, 2, sizeof ts, ts, 8, VK_QUERY_RESULT_64_BIT),
          "vkGetQueryPoolResults");
    return std::pair{std::chrono::duration<double, std::micro>(t1 - t0).count(),
                     double(ts[1] - ts[0]) * ctx.caps().timestamp_period_ns * 1e-6};
  };
  const Replayable plain = record_replayable(replayed->opt), with_grads = record_replayable(controlled->opt);

  ReplayResult r;
  std::vector<double> record_us, submit_us, recorded_ms, replayed_ms, ratio, grads_ms, grads_ratio, grads_to_recorded;
  for (int i = 0; i < warmup + runs; ++i) {
    const auto rec = timer.host_us([&](VkCommandBuffer b) { recorded->opt.record(b); }, 1);
    const auto dev = timer.device_ms([&](VkCommandBuffer b) { recorded->opt.record(b); }, 0, 1);
    const auto [host_us, plain_ms] = submit(plain);
    const double controlled_ms = submit(with_grads).second;
    if (i < warmup) continue;
    record_us.push_back(rec[0]);
    submit_us.push_back(host_us);
    recorded_ms.push_back(dev[0]);
    replayed_ms.push_back(plain_ms);
    ratio.push_back(plain_ms / dev[0]);
    grads_ms.push_back(controlled_ms);
    grads_ratio.push_back(controlled_ms / plain_ms);
    grads_to_recorded.push_back(controlled_ms / dev[0]);
  }
  for (const Replayable& b : {plain, with_grads}) vkDestroyQueryPool(device, b.queries, nullptr);
  vkDestroyFence(device, fence, nullptr);
  vkDestroyCommandPool(device, pool, nullptr);
  r.record_us = summarise(record_us);
  r.submit_us = summarise(submit_us);
  r.recorded_ms = summarise(recorded_ms);
  r.replayed_ms = summarise(replayed_ms);
  r.ratio = summarise(ratio);
  r.grads_ms = summarise(grads_ms);
  r.grads_ratio = summarise(grads_ratio);
  r.grads_to_recorded = summarise(grads_to_recorded);
  vkoptim::RecordOptions replay;
  replay.replay = true;
  r.grads_passes = pass_times(ctx, controlled->opt, runs, replay);
  return r;
}

// Saving and loading a checkpoint of `c` against a plain copy of the same file (read it, write
// it to a new file, fsync), each run all three in turn, in a temporary folder.
struct CheckpointResult {
  uint64_t bytes = 0;
  Stats save_ms, load_ms, copy_ms, save_ratio, load_ratio;
};
CheckpointResult run_checkpoint(vkoptim::Context& ctx, const Case& c, int runs) {
  auto inst = build(ctx, c);
  inst->opt.step();
  const auto dir = std::filesystem::temp_directory_path() / ("vkoptim_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "opt.safetensors").string(), copy = (dir / "copy.safetensors").string();
  auto ms_of = [](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  auto plain_copy = [&] {
    std::vector<char> bytes(std::filesystem::file_size(path));
    const int in = ::open(path.c_str(), O_RDONLY);
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t n = ::read(in, bytes.data() + at, bytes.size() - at);
      if (n <= 0) throw std::runtime_error("reading " + path);
      at += size_t(n);
    }
    ::close(in);
    const int fd = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t w = ::write(fd, bytes.data() + at, bytes.size() - at);
      if (w <= 0) throw std::runtime_error("writing " + copy);
      at += size_t(w);
    }
    ::fsync(fd);
    ::close(fd);
  };
  CheckpointResult r;
  std::vector<double> save_ms, load_ms, copy_ms, save_ratio, load_ratio;
  inst->opt.save(path);  // warm-up
  r.bytes = std::filesystem::file_size(path);
  for (int i = 0; i < runs; ++i) {
    save_ms.push_back(ms_of([&] { inst->opt.save(path); }));
    load_ms.push_back(ms_of([&] { inst->opt.load(path); }));
    copy_ms.push_back(ms_of(plain_copy));
    save_ratio.push_back(copy_ms.back() / save_ms.back());
    load_ratio.push_back(copy_ms.back() / load_ms.back());
  }
  std::filesystem::remove_all(dir);
  r.save_ms = summarise(save_ms);
  r.load_ms = summarise(load_ms);
  r.copy_ms = summarise(copy_ms);
  r.save_ratio = summarise(save_ratio);
  r.load_ratio = summarise(load_ratio);
  return r;
}

nlohmann::json to_json(const Stats& s) {
  return {{"min", s.min}, {"median", s.median}, {"max", s.max}};
}

int main(int argc, char** argv) {
  int runs = -1, warmup = 3;  // runs: 9 for the headline table, 25 for --quick and --full
  enum class Table { headline, quick, full } table = Table::headline;
  vkoptim::Addressing addressing = vkoptim::Addressing::automatic;
  uint32_t workgroup = 0, items = 0;
  bool subgroups = true;
  std::string json_path;
  std::vector<std::string> only;  // --rule: run only these rules' rows
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc)
      runs = std::max(3, std::atoi(argv[++i]));
    else if (a == "--warmup" && i + 1 < argc)
      warmup = std::atoi(argv[++i]);
    else if (a == "--quick")
      table = Table::quick;
    else if (a == "--full")
      table = Table::full;
    else if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else if (a == "--descriptors")
      addressing = vkoptim::Addressing::descriptors;
    else if (a == "--addresses")
      addressing = vkoptim::Addressing::device_address;
    else if (a == "--workgroup" && i + 1 < argc)
      workgroup = uint32_t(std::atoi(argv[++i]));
    else if (a == "--items" && i + 1 < argc)
      items = uint32_t(std::atoi(argv[++i]));
    else if (a == "--no-subgroups")
      subgroups = false;
    else if (a == "--rule" && i + 1 < argc)
      only.push_back(argv[++i]);
    else {
      std::fprintf(
          stderr,
          "usage: vkoptim-bench [--full | --quick] [--runs N] [--warmup N] [--json FILE]\n"
          "                     [--descriptors | --addresses] [--workgroup N] [--items N]\n"
          "                     [--no-subgroups] [--rule NAME]...  (only these rules' rows, e.g. --rule adam)\n");
      return 2;
    }
  }
  try {
    vkoptim::ContextOptions options;
    options.addressing = addressing;
    options.override_caps = [&](vkoptim::DeviceCaps& c) {
      if (workgroup) c.workgroup_size = workgroup;
      if (items) c.items_per_invocation = items;
      if (!subgroups) c.subgroup_arithmetic = false;
    };
    auto ctx = vkoptim::Context::create(options);
    const auto& caps = ctx.caps();
    if (!caps.timestamps) {
      std::fprintf(stderr, "the device has no timestamp queries on compute queues\n");
      return 1;
    }
    Timer timer(ctx);
    std::vector<Case> cases;
    const size_t big = table == Table::full ? (size_t(1) << 24) : (size_t(1) << 22);
    if (runs < 0) runs = table == Table::headline ? 9 : 25;
    if (table == Table::headline) {
      for (const char* rule : {"sgd_momentum", "adamw", "lion"}) cases.push_back({rule, 1, big, 0});
      cases.push_back({"adam", 1, big, 0, Precision::q8_state});
      cases.push_back({"adam", 1, big, 0, Precision::q4_state});
      cases.push_back({"adamw", 1000, 4096, 0});
    } else {
      for (const char* rule : {"sgd_momentum", "adam", "adamw"}) cases.push_back({rule, 1, size_t(1) << 20, 0});
      for (const auto& [rule, options] : all_rules()) cases.push_back({rule, 1, big, 0});
      for (Precision p : {Precision::bf16_master, Precision::bf16_kahan, Precision::bf16_state, Precision::q8_state,
                          Precision::q4_state, Precision::q4_rank1})
        cases.push_back({"adam", 1, big, 0, p});
      cases.push_back({"lion", 1, big, 0, Precision::q8_state});
      cases.push_back({"lion", 1, big, 0, Precision::q4_state});
      cases.push_back({"adamw", 1, 4096000, 0});
      cases.push_back({"adamw", 1000, 4096, 0});
    }
    if (!only.empty())
      std::erase_if(cases, [&](const Case& c) { return std::find(only.begin(), only.end(), c.rule) == only.end(); });

    std::printf("vkoptim-bench on %s (workgroup %u x %u items of %u floats, subgroup %u%s); %d runs after %d warm-up\n",
                caps.device_name.c_str(), caps.workgroup_size, caps.items_per_invocation, caps.shader_int64 ? 8 : 4,
                caps.subgroup_size, caps.subgroup_arithmetic && caps.full_subgroups ? " with arithmetic, full" : "",
                runs, warmup);
    std::printf("%-13s %8s %9s %5s %10s %10s %10s %8s %9s %8s %8s\n", "rule", "tensors", "elements", "path", "med ms",
                "min ms", "max ms", "Gel/s", "GB/s", "vs copy", "rec us");
    std::vector<Result> results;
    std::unique_ptr<Instance> baseline;  // fp32 of the rule a precision row compares with
    // Progress on a terminal (stderr), erased before each row is printed.
    const bool terminal = ::isatty(STDERR_FILENO) != 0;
    auto progress = [&](size_t i, size_t n, const std::string& what) {
      if (terminal) std::fprintf(stderr, "\r  [%zu/%zu] %-40s\r", i + 1, n, what.c_str());
    };
    auto progress_done = [&] {
      if (terminal) std::fprintf(stderr, "\r%60s\r", "");
    };
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Case& c = cases[ci];
      progress(ci, cases.size(), c.label() + " ...");
      // Precision rows run next to the rule in fp32; the full table's other rules at the large size
      // next to fp32 Adam, for their speed against Adam's bytes rate.
      const bool against_adam = table == Table::full && c.precision == Precision::fp32 && c.tensors == 1 &&
                                c.elements == big && c.rule != "adam";
      const std::string base = c.precision != Precision::fp32 ? c.rule : against_adam ? "adam" : "";
      if (!base.empty() && (!baseline || baseline->rule != base)) {
        baseline.reset();  // (one at a time: memory)
        baseline = build(ctx, {base, c.tensors, c.elements});
      }
      const Result r = run_case(ctx, timer, c, warmup, runs, base.empty() ? nullptr : baseline.get());
      progress_done();
      const double elements = double(c.tensors * c.elements);
      const double gels = elements / (r.rule_ms.median * 1e-3) * 1e-9;
      const double gbs = elements * r.c.bytes_per_element / (r.rule_ms.median * 1e-3) * 1e-9;
      std::printf("%-13s %8zu %9zu %5s %10.3f %10.3f %10.3f %8.3f %9.2f %7.0f%% %8.1f\n", c.label().c_str(), c.tensors,
                  c.elements, r.device_address ? "addr" : "desc", r.rule_ms.median, r.rule_ms.min, r.rule_ms.max, gels,
                  gbs, 100.0 * r.copy_ms.median / r.rule_ms.median, r.record_us.median);
      std::fflush(stdout);
      results.push_back(r);
    }
    baseline.reset();
    std::printf(
        "precision (%zu elements): state bytes per element, bytes moved per element, time over the fp32 rule's\n"
        "time (each run next to an fp32 run; median, min, max of the %d ratios)\n",
        big, runs);
    for (const auto& r : results)
      if (r.c.elements == big && r.c.precision != Precision::fp32)
        std::printf("  %-13s state %5.2f B/el  moves %5.1f B/el  %5.2fx fp32 %s (min %.2f, max %.2f)\n",
                    r.c.label().c_str(), r.c.state_bytes_per_element, r.c.bytes_per_element, r.ratio_to_fp32.median,
                    r.c.rule.c_str(), r.ratio_to_fp32.min, r.ratio_to_fp32.max);
    if (table == Table::full) {
      std::printf(
          "rules against fp32 Adam's bytes rate (%zu elements): (time / Adam's time) / (bytes / Adam's bytes),\n"
          "each run next to an Adam run (median, min, max of the %d ratios)\n",
          big, runs);
      for (const auto& r : results)
        if (r.c.precision == Precision::fp32 && r.baseline_bytes_per_element > 0) {
          const double bytes = r.c.bytes_per_element / r.baseline_bytes_per_element;
          std::printf("  %-13s moves %5.1f B/el  %5.2fx (min %.2f, max %.2f)\n", r.c.rule.c_str(),
                      r.c.bytes_per_element, r.ratio_to_fp32.median / bytes, r.ratio_to_fp32.min / bytes,
                      r.ratio_to_fp32.max / bytes);
        }
    }
    for (const auto& r : results)
      if (r.reduction_share >= 0)
        std::printf("%s at %zu elements: %.1f%% of the step in reduction passes (median of %d)\n", r.c.rule.c_str(),
                    r.c.elements, 100 * r.reduction_share, runs);
    // Replayable steps: host work per step and the device's cost of computing the scalars.
    std::vector<Case> replay_cases;
    for (const Case& c : {Case{"adamw", 1, big, 0}, Case{"adamw", 1000, 4096, 0}})
      if ((only.empty() || std::find(only.begin(), only.end(), c.rule) != only.end()) &&
          (table != Table::headline || c.tensors == 1))
        replay_cases.push_back(c);
    if (!replay_cases.empty())
      std::printf("replayable steps (%d runs, each a recorded and a replayed step; median, min, max):\n", runs);
    for (const Case& c : replay_cases) {
      progress(0, 1, "replayable " + c.rule + " ...");
      const ReplayResult r = run_replay(ctx, timer, c, warmup, runs);
      progress_done();
      std::printf(
          "  %-6s %4zu x %-8zu host: record %.1f us, submit %.1f us (min %.1f, max %.1f); device: replayed / "
          "recorded %.3f (min %.3f, max %.3f), %.3f ms vs %.3f ms\n",
          c.rule.c_str(), c.tensors, c.elements, r.record_us.median, r.submit_us.median, r.submit_us.min,
          r.submit_us.max, r.ratio.median, r.ratio.min, r.ratio.max, r.replayed_ms.median, r.recorded_ms.median);
      std::printf(
          "  %-6s %4zu x %-8zu with loss scaler + norm clipping: %.3f ms, over replayed %.3f (min %.3f, max %.3f), "
          "over recorded %.3f (min %.3f, max %.3f)\n",
          c.rule.c_str(), c.tensors, c.elements, r.grads_ms.median, r.grads_ratio.median, r.grads_ratio.min,
          r.grads_ratio.max, r.grads_to_recorded.median, r.grads_to_recorded.min, r.grads_to_recorded.max);
      std::printf("  %-6s %4zu x %-8zu its passes (median ms):", c.rule.c_str(), c.tensors, c.elements);
      for (size_t p = 0; p < r.grads_passes.names.size(); ++p)
        std::printf(" %s %.3f", r.grads_passes.names[p].c_str(), summarise(r.grads_passes.ms[p]).median);
      std::printf("\n");
    }
    // Checkpoints of AdamW's state at the large size.
    std::vector<std::pair<Case, CheckpointResult>> checkpoints;
    if (only.empty() || std::find(only.begin(), only.end(), "adamw") != only.end()) {
      const Case c{"adamw", 1, big, 0};
      progress(0, 1, "checkpoint of adamw ...");
      const CheckpointResult r = run_checkpoint(ctx, c, runs);
      progress_done();
      std::printf(
          "checkpoint of adamw at %zu elements (%.1f MB; %d runs, each a save, a load and a plain copy of the file "
          "with fsync):\n  save %.1f ms (%.2f GB/s), %.2f of the copy's speed (min %.2f, max %.2f); load %.1f ms "
          "(%.2f GB/s), %.2f of the copy's speed (min %.2f, max %.2f); copy %.1f ms\n",
          c.elements, r.bytes * 1e-6, runs, r.save_ms.median, r.bytes / (r.save_ms.median * 1e-3) * 1e-9,
          r.save_ratio.median, r.save_ratio.min, r.save_ratio.max, r.load_ms.median,
          r.bytes / (r.load_ms.median * 1e-3) * 1e-9, r.load_ratio.median, r.load_ratio.min, r.load_ratio.max,
          r.copy_ms.median);
      checkpoints.push_back({c, r});
    }
    std::printf(
        "path: addr = buffer device addresses, desc = descriptors; vs copy = time of vkCmdCopyBuffer\n"
        "moving the rule's bytes / time of the rule (medians, same run); rec us = host time to record one\n"
        "step (median).\n");
    if (table == Table::headline)
      std::printf(
          "This is the short table (headline rules at %zu elements, %d runs). Every rule, mixed precision and\n"
          "replay: scripts/run --full (2^24 elements, 25 runs; several minutes on a CPU driver), or --quick\n"
          "(every rule at 2^22).\n",
          big, runs);

    if (!json_path.empty()) {
      nlohmann::json out = {{"device", caps.device_name},
                            {"workgroup_size", caps.workgroup_size},
                            {"items_per_invocation", caps.items_per_invocation},
                            {"floats_per_access", caps.access_width()},
                            {"runs", runs},
                            {"warmup", warmup},
                            {"results", nlohmann::json::array()},
                            {"checkpoints", nlohmann::json::array()}};
      for (const auto& r : results) {
        const double elements = double(r.c.tensors * r.c.elements);
        out["results"].push_back(
            {{"rule", r.c.label()},
             {"tensors", r.c.tensors},
             {"elements_per_tensor", r.c.elements},
             {"bytes_per_element", r.c.bytes_per_element},
             {"state_bytes_per_element", r.c.state_bytes_per_element},
             {"device_address", r.device_address},
             {"dispatches", r.dispatches},
             {"ms", to_json(r.rule_ms)},
             {"copy_ms", to_json(r.copy_ms)},
             {"elements_per_s", elements / (r.rule_ms.median * 1e-3)},
             {"gb_per_s", elements * r.c.bytes_per_element / (r.rule_ms.median * 1e-3) * 1e-9},
             {"ratio_to_copy", r.copy_ms.median / r.rule_ms.median},
             {"record_us", to_json(r.record_us)},
             {"reduction_share", r.reduction_share},
             {"ratio_to_fp32", r.c.precision != Precision::fp32 ? to_json(r.ratio_to_fp32) : nlohmann::json()},
             {"ratio_to_adam", r.c.precision == Precision::fp32 && r.baseline_bytes_per_element > 0
                                   ? to_json(r.ratio_to_fp32)
                                   : nlohmann::json()},
             {"adam_bytes_per_element",
              r.baseline_bytes_per_element > 0 ? nlohmann::json(r.baseline_bytes_per_element) : nlohmann::json()}});
      }
      for (const auto& [c, r] : checkpoints)
        out["checkpoints"].push_back({{"rule", c.rule},
                                      {"elements", c.elements},
                                      {"bytes", r.bytes},
                                      {"save_ms", to_json(r.save_ms)},
                                      {"load_ms", to_json(r.load_ms)},
                                      {"file_copy_ms", to_json(r.copy_ms)},
                                      {"save_speed_to_copy", to_json(r.save_ratio)},
                                      {"load_speed_to_copy", to_json(r.load_ratio)}});
      std::ofstream f(json_path);
      f << out.dump(2) << "\n";
      if (!f) {
        std::perror(json_path.c_str());
        return 1;
      }
    }
  } catch (const vkoptim::Error& e) {
    std::fprintf(stderr, "vkoptim-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
