// vkoptim-sparse-bench: a row-sparse step of an embedding table (SparseOptimizer) next to the
// dense step of the same rule over (a) as many elements as the gradient carries and (b) the whole
// table, in the same run. Default: a 2^20 x 64 f32 table, 4,096 gradient positions of which a
// quarter fall on 64 hot rows (so rows repeat), for SparseAdam vs Adam, sparse Adagrad vs Adagrad
// and sparse FTRL vs FTRL. Wall time of step() (submit and wait) each; the three alternate within
// each run, and the ratios are taken per run: median, min and max of --runs runs (default 5).
//
//   vkoptim-sparse-bench [--runs N] [--rows N] [--dim N] [--positions N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <vulkan/vulkan.h>

#include "stats.hpp"
#include "vkoptim/vkoptim.hpp"

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double seconds(F&& f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Pairing {
  const char* name;
  vkoptim::SparseRuleOptions sparse;
  vkoptim::RuleOptions dense;
};

// The time of each stage of one recorded step (timestamps after each of its passes).
std::vector<double> stage_times(vkoptim::Context& ctx, vkoptim::SparseOptimizer& opt) {
  if (!ctx.caps().timestamps) return {};
  const VkDevice device = ctx.device();
  constexpr uint32_t kQueries = 6;  // before the first stage and after each of the 5
  VkQueryPoolCreateInfo qci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qci.queryCount = kQueries;
  VkQueryPool queries;
  vkCreateQueryPool(device, &qci, nullptr, &queries);
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.queueFamilyIndex = ctx.queue_family_index();
  VkCommandPool pool;
  vkCreateCommandPool(device, &pci, nullptr, &pool);
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = pool;
  cai.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vkAllocateCommandBuffers(device, &cai, &cmd);
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkBeginCommandBuffer(cmd, &bi);
  vkCmdResetQueryPool(cmd, queries, 0, kQueries);
  vkoptim::RecordOptions ro;
  ro.timestamp_pool = queries;
  opt.record(cmd, ro);
  vkEndCommandBuffer(cmd);
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  vkQueueSubmit(ctx.queue(), 1, &si, VK_NULL_HANDLE);
  vkQueueWaitIdle(ctx.queue());
  uint64_t ticks[kQueries];
  vkGetQueryPoolResults(device, queries, 0, kQueries, sizeof(ticks), ticks, 8,
                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
  std::vector<double> out;
  for (uint32_t i = 1; i < kQueries; ++i)
    out.push_back(double(ticks[i] - ticks[i - 1]) * ctx.caps().timestamp_period_ns * 1e-6);
  vkDestroyCommandPool(device, pool, nullptr);
  vkDestroyQueryPool(device, queries, nullptr);
  return out;
}

// The host's floor: SparseAdam's element update on as many distinct rows as the gradient names
// (coalesced beforehand, not timed), scattered over tables of the same size in host memory (other
// rows each run, so they come from memory as a training step's do), one thread; and on as many
// contiguous elements. A CPU driver pays the same cache and TLB misses for scattered rows.
void host_floor(uint64_t rows, uint64_t dim, const std::vector<uint32_t>& indices, const std::vector<float>& values,
                int runs) {
  std::vector<uint32_t> distinct(indices);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<float> p(rows * dim, 0.01f), m(rows * dim, 0.0f), v(rows * dim, 0.0f);
  auto update = [&](size_t at, float g) {
    m[at] += 0.1f * (g - m[at]);
    v[at] += 0.001f * (g * g - v[at]);
    p[at] -= 1e-3f * m[at] / (std::sqrt(v[at]) + 1e-8f);
  };
  std::vector<double> scattered, contiguous;
  for (int r = 0; r < runs; ++r) {
    for (auto& row : distinct) row = uint32_t((uint64_t(row) * 2654435761u + 12345u) % rows);
    scattered.push_back(1e3 * seconds([&] {
                          for (size_t i = 0; i < distinct.size(); ++i)
                            for (size_t j = 0; j < dim; ++j) update(size_t(distinct[i]) * dim + j, values[i * dim + j]);
                        }));
    contiguous.push_back(1e3 * seconds([&] {
                           for (size_t e = 0; e < distinct.size() * dim; ++e) update(e, values[e]);
                         }));
  }
  const Stats a = summarise(scattered), b = summarise(contiguous);
  std::printf(
      "host floor (one thread, SparseAdam's update): %zu scattered rows %.3f/%.3f/%.3f ms, "
      "as many contiguous elements %.3f/%.3f/%.3f ms (%.1fx)\n",
      distinct.size(), a.min, a.median, a.max, b.min, b.median, b.max, a.median / b.median);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  uint64_t rows = 1u << 20, dim = 64, positions = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--runs")
      runs = int(std::max<uint64_t>(v, 1));
    else if (a == "--rows")
      rows = v;
    else if (a == "--dim")
      dim = v;
    else if (a == "--positions")
      positions = v;
    else {
      std::fprintf(stderr, "usage: vkoptim-sparse-bench [--runs N] [--rows N] [--dim N] [--positions N]\n");
      return 2;
    }
  }
  vkoptim::Context ctx = vkoptim::Context::create({});
  std::printf("device: %s\ntable %llu x %llu f32, %llu gradient positions, %d runs\n", ctx.caps().device_name.c_str(),
              (unsigned long long)rows, (unsigned long long)dim, (unsigned long long)positions, runs);

  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> init(rows * dim);
  for (auto& x : init) x = u(rng) * 0.01f;
  std::vector<uint32_t> indices(positions);
  std::uniform_int_distribution<uint32_t> any(0, uint32_t(rows - 1)), hot(0, 63);
  for (size_t i = 0; i < positions; ++i) indices[i] = i % 4 == 0 ? hot(rng) : any(rng);
  std::vector<float> values(positions * dim);
  for (auto& x : values) x = u(rng);

  vkoptim::Tensor table = ctx.create_tensor(init);
  vkoptim::Tensor index_tensor = ctx.create_tensor(positions, vkoptim::DType::u32);
  index_tensor.upload_indices(indices);
  vkoptim::Tensor value_tensor = ctx.create_tensor(values);
  // The dense steps: as many elements as the gradient carries, and the whole table.
  vkoptim::Tensor small_p = ctx.create_tensor(values), small_g = ctx.create_tensor(values);
  vkoptim::Tensor whole_g = ctx.create_tensor(rows * dim);
  whole_g.upload(init);

  vkoptim::SparseAdamOptions sparse_adam;
  vkoptim::FtrlOptions ftrl;
  ftrl.lr = 0.05;
  const Pairing pairings[] = {
      {"SparseAdam vs Adam", sparse_adam, vkoptim::AdamOptions{}},
      {"Adagrad (sparse vs dense)", vkoptim::AdagradOptions{}, vkoptim::AdagradOptions{}},
      {"FTRL (sparse vs dense)", ftrl, ftrl},
  };
  std::printf("%-28s %-30s %-30s %-30s %-22s %-22s\n", "rule", "sparse ms (min/med/max)",
              "dense, gradient's elements ms", "dense, whole table ms", "sparse / dense(grad)",
              "dense(table) / sparse");
  for (const Pairing& pairing : pairings) {
    vkoptim::SparseTable st;
    st.param = table.range(), st.indices = index_tensor.range(), st.values = value_tensor.range();
    st.dim = uint32_t(dim);
    vkoptim::SparseOptimizer sparse(ctx, {st}, pairing.sparse);
    vkoptim::ParamGroup small_group{pairing.dense, {{small_p.range(), small_g.range()}}};
    vkoptim::Optimizer dense_small(ctx, {small_group});
    vkoptim::ParamGroup whole_group{pairing.dense, {{table.range(), whole_g.range()}}};
    vkoptim::Optimizer dense_whole(ctx, {whole_group});
    sparse.step(), dense_small.step(), dense_whole.step();  // pipelines, state and first-step work
    std::vector<double> ts, tg, tw, r_grad, r_table;
    for (int r = 0; r < runs; ++r) {
      const double s = seconds([&] { sparse.step(); });
      const double g = seconds([&] { dense_small.step(); });
      const double w = seconds([&] { dense_whole.step(); });
      ts.push_back(s * 1e3), tg.push_back(g * 1e3), tw.push_back(w * 1e3);
      r_grad.push_back(s / g), r_table.push_back(w / s);
    }
    const Stats a = summarise(ts), b = summarise(tg), c = summarise(tw), d = summarise(r_grad), e = summarise(r_table);
    char col[5][64];
    std::snprintf(col[0], 64, "%.3f/%.3f/%.3f", a.min, a.median, a.max);
    std::snprintf(col[1], 64, "%.3f/%.3f/%.3f", b.min, b.median, b.max);
    std::snprintf(col[2], 64, "%.1f/%.1f/%.1f", c.min, c.median, c.max);
    std::snprintf(col[3], 64, "%.2fx (%.2f-%.2f)", d.median, d.min, d.max);
    std::snprintf(col[4], 64, "%.0fx (%.0f-%.0f)", e.median, e.min, e.max);
    std::printf("%-28s %-30s %-30s %-30s %-22s %-22s\n", pairing.name, col[0], col[1], col[2], col[3], col[4]);
    std::printf("  distinct rows per step: %u; stages (ms):", sparse.last_report().rows_updated);
    for (double ms : stage_times(ctx, sparse)) std::printf(" %.3f", ms);
    std::printf("\n");
  }
  host_floor(rows, dim, indices, values, runs);
  return 0;
}
