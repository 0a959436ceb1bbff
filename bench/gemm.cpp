// vkoptim-gemm-bench: the batched GEMM of the matrix rules (runtime/gemm.hpp, shaders/gemm.comp)
// next to OpenBLAS's cblas_sgemm (Debian's libopenblas, for this bench only) on the same shapes in
// the same run. The shapes are the three products of a Newton-Schulz iteration of Muon on an
// m x n update (m <= n after the transpose): A = X X^T (m x m x n), A A with the b*A term
// (m x m x m), B X with the a*X term (m x n x m), for 1024 x 1024, 1024 x 4096 (a 4096 x 1024
// parameter, transposed) and 64 matrices of 256 x 256 (one dispatch; 64 sgemm calls).
// Wall time of a submitted dispatch (with its fence wait) against the sgemm calls' wall time;
// median, min and max of --runs runs (default 7), alternating the two.
//
//   vkoptim-gemm-bench [--runs N] [--threads-m N --threads-n N --tile-k N] [--direct 0|1]
#include <cblas.h>
#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "context_state.hpp"
#include "gemm.hpp"
#include "stats.hpp"
#include "vkoptim/vkoptim.hpp"

namespace {

using Clock = std::chrono::steady_clock;

VkDeviceAddress address_of(const vkoptim::Context& ctx, const vkoptim::Tensor& t) {
  VkBufferDeviceAddressInfo info{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
  info.buffer = t.range().buffer;
  return vkGetBufferDeviceAddress(ctx.device(), &info);
}

struct Product {
  const char* name;
  uint32_t m, n, k;
  bool b_transposed, d_term;
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  vkoptim::Context ctx = vkoptim::Context::create({});
  vkoptim::detail::GemmTiles tiles = vkoptim::detail::gemm_tiles_for(ctx.caps());
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const uint32_t v = uint32_t(std::strtoul(argv[i + 1], nullptr, 10));
    if (a == "--runs")
      runs = int(v);
    else if (a == "--threads-m")
      tiles.threads_m = v;
    else if (a == "--threads-n")
      tiles.threads_n = v;
    else if (a == "--tile-k")
      tiles.tile_k = v;
    else if (a == "--direct")
      tiles.direct = v != 0;
    else {
      std::fprintf(stderr,
                   "usage: vkoptim-gemm-bench [--runs N] [--threads-m N --threads-n N --tile-k N] [--direct 0|1]\n");
      return 2;
    }
  }
  auto state = vkoptim::detail::context_state(ctx);
  VkCommandPool pool;
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx.queue_family_index();
  vkCreateCommandPool(ctx.device(), &pci, nullptr, &pool);
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = pool;
  cai.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vkAllocateCommandBuffers(ctx.device(), &cai, &cmd);
  VkFence fence;
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vkCreateFence(ctx.device(), &fci, nullptr, &fence);

  const uint32_t per_thread = tiles.direct ? 8 : 4;
  std::printf("vkoptim-gemm-bench on %s: workgroup tile %u x %u, %s; OpenBLAS %s, %d threads; %d runs\n",
              ctx.caps().device_name.c_str(), tiles.threads_m * per_thread, tiles.threads_n * per_thread,
              tiles.direct ? "direct" : ("shared memory, k step " + std::to_string(tiles.tile_k)).c_str(),
              openblas_get_config(), openblas_get_num_threads(), runs);
  std::printf("%-10s %-9s %5s %5s %5s %4s  %22s  %22s  %s\n", "update", "product", "m", "n", "k", "mats",
              "vkoptim GFLOP/s (min-max)", "OpenBLAS GFLOP/s (min-max)", "vkoptim/OpenBLAS");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  struct Shape {
    const char* name;
    uint32_t m, n, count;
  };
  for (const Shape& s :
       {Shape{"1024x1024", 1024, 1024, 1}, Shape{"4096x1024", 1024, 4096, 1}, Shape{"64x256x256", 256, 256, 64}}) {
    const uint32_t m = s.m, n = s.n;
    const Product products[] = {
        {"X X^T", m, m, n, true, false}, {"A A + bA", m, m, m, false, true}, {"B X + aX", m, n, m, false, true}};
    for (const Product& p : products) {
      // Per matrix: A operand (m x k), B operand (k x n; for X X^T the same X read transposed), C, D.
      const size_t a_size = size_t(p.m) * p.k, b_size = size_t(p.k) * p.n, c_size = size_t(p.m) * p.n;
      std::vector<float> a(a_size * s.count), b(b_size * s.count), d(c_size * s.count);
      for (auto* v : {&a, &b, &d})
        for (float& x : *v) x = dist(rng);
      auto ta = ctx.create_tensor(a), tb = ctx.create_tensor(b), tc = ctx.create_tensor(c_size * s.count),
           td = ctx.create_tensor(d);
      std::vector<vkoptim::detail::GemmJob> jobs;
      for (uint32_t i = 0; i < s.count; ++i) {
        vkoptim::detail::GemmJob j;
        j.m = p.m, j.n = p.n, j.k = p.k;
        j.a = address_of(ctx, ta) + 4 * a_size * i, j.a_row = p.k, j.a_col = 1;
        if (p.b_transposed)  // X^T: the A operand read by columns
          j.b = j.a, j.b_row = 1, j.b_col = p.k;
        else
          j.b = address_of(ctx, tb) + 4 * b_size * i, j.b_row = p.n, j.b_col = 1;
        j.c = address_of(ctx, tc) + 4 * c_size * i, j.c_row = p.n;
        if (p.d_term) j.d = address_of(ctx, td) + 4 * c_size * i, j.d_row = p.n, j.alpha = 2.0315f, j.beta = -4.775f;
        jobs.push_back(j);
      }
      std::vector<float> words(jobs.size() * sizeof(vkoptim::detail::GemmJobRecord) / 4);
      for (size_t i = 0; i < jobs.size(); ++i) {
        const auto r = vkoptim::detail::gemm_job_record(jobs[i]);
        std::memcpy(words.data() + i * sizeof(r) / 4, &r, sizeof r);
      }
      auto table = ctx.create_tensor(words);
      vkResetCommandBuffer(cmd, 0);
      VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
      vkBeginCommandBuffer(cmd, &bi);
      vkoptim::detail::record_gemm(*state, cmd, jobs, address_of(ctx, table), tiles, false, {});
      vkEndCommandBuffer(cmd);
      std::vector<float> c(c_size * s.count);
      const double flops = 2.0 * p.m * p.n * p.k * s.count;
      std::vector<double> gpu, blas;
      for (int r = -1; r < runs; ++r) {  // (run -1: warm-up, pipeline creation)
        VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
        si.commandBufferCount = 1;
        si.pCommandBuffers = &cmd;
        auto t0 = Clock::now();
        vkQueueSubmit(ctx.queue(), 1, &si, fence);
        vkWaitForFences(ctx.device(), 1, &fence, VK_TRUE, UINT64_MAX);
        auto t1 = Clock::now();
        vkResetFences(ctx.device(), 1, &fence);
        for (uint32_t i = 0; i < s.count; ++i) {
          float* ci = c.data() + c_size * i;
          if (p.d_term) std::memcpy(ci, d.data() + c_size * i, c_size * 4);
          const float* ai = a.data() + a_size * i;
          const float* bi_ = p.b_transposed ? ai : b.data() + b_size * i;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, p.b_transposed ? CblasTrans : CblasNoTrans, int(p.m), int(p.n),
                      int(p.k), p.d_term ? 2.0315f : 1.0f, ai, int(p.k), bi_, p.b_transposed ? int(p.k) : int(p.n),
                      p.d_term ? -4.775f : 0.0f, ci, int(p.n));
        }
        auto t2 = Clock::now();
        if (r < 0) continue;
        gpu.push_back(flops / std::chrono::duration<double>(t1 - t0).count() * 1e-9);
        blas.push_back(flops / std::chrono::duration<double>(t2 - t1).count() * 1e-9);
      }
      // The largest difference from sgemm (both float32; summation orders differ).
      const auto got = tc.download();
      double worst = 0;
      for (size_t i = 0; i < c.size(); ++i) worst = std::max(worst, double(std::abs(got[i] - c[i])));
      std::vector<double> ratio(gpu.size());
      for (size_t i = 0; i < gpu.size(); ++i) ratio[i] = gpu[i] / blas[i];
      const Stats g = summarise(gpu), o = summarise(blas), q = summarise(ratio);
      std::printf(
          "%-10s %-9s %5u %5u %5u %4u  %8.2f (%6.2f-%6.2f)  %8.2f (%6.2f-%6.2f)  %.2f (%.2f-%.2f)  max|diff| %.1e\n",
          s.name, p.name, p.m, p.n, p.k, s.count, g.median, g.min, g.max, o.median, o.min, o.max, q.median, q.min,
          q.max, worst);
    }
  }
  // A whole Muon step (momentum, norms, 1 + 3*5 product dispatches, the update) through the
  // public API, next to the sgemm calls of the same 5 Newton-Schulz iterations on one core set.
  std::printf(
      "\nMuon step (Optimizer::step: record, submit, wait) vs OpenBLAS's 15 sgemm calls of its Newton-Schulz\n");
  std::printf("%-10s %-5s  %26s  %26s  %s\n", "matrices", "ns", "vkoptim step ms (min-max)",
              "OpenBLAS NS-5 ms (min-max)", "vkoptim/OpenBLAS time");
  for (const Shape& s :
       {Shape{"1024x1024", 1024, 1024, 1}, Shape{"4096x1024", 4096, 1024, 1}, Shape{"64x256x256", 256, 256, 64}}) {
    const uint32_t rows = s.m, cols = s.n, m = std::min(rows, cols), n = std::max(rows, cols);
    const size_t count = size_t(rows) * cols;
    std::vector<float> init(count * s.count), grad(count * s.count);
    for (auto* v : {&init, &grad})
      for (float& x : *v) x = dist(rng);
    for (bool bf16 : {true, false}) {
      auto p = ctx.create_tensor(init), g = ctx.create_tensor(grad);
      vkoptim::ParamGroup group;
      vkoptim::MuonOptions o;
      o.ns_bf16 = bf16;
      group.options = o;
      for (uint32_t i = 0; i < s.count; ++i) {
        vkoptim::BufferRange pr = p.range(), gr = g.range();
        pr.offset += 4 * count * i, pr.count = count;
        gr.offset += 4 * count * i, gr.count = count;
        vkoptim::ParamTensor t{pr, gr};
        t.rows = rows;
        group.tensors.push_back(t);
      }
      vkoptim::Optimizer opt(ctx, {group});
      std::vector<float> x(size_t(m) * n), a(size_t(m) * m), b(size_t(m) * m), next(size_t(m) * n);
      std::vector<double> step_ms, blas_ms, ratio;
      for (int r = -1; r < runs; ++r) {
        auto t0 = Clock::now();
        opt.step();
        auto t1 = Clock::now();
        for (uint32_t i = 0; i < s.count; ++i) {
          std::memcpy(x.data(), grad.data() + count * i, std::min(x.size(), count) * 4);
          for (int it = 0; it < 5; ++it) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(m), int(n), 1.0f, x.data(), int(n),
                        x.data(), int(n), 0.0f, a.data(), int(m));
            std::memcpy(b.data(), a.data(), a.size() * 4);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(m), int(m), 2.0315f, a.data(), int(m),
                        a.data(), int(m), -4.775f, b.data(), int(m));
            std::memcpy(next.data(), x.data(), x.size() * 4);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(m), 1.0f, b.data(), int(m),
                        x.data(), int(n), 3.4445f, next.data(), int(n));
            x.swap(next);
          }
        }
        auto t2 = Clock::now();
        if (r < 0) continue;
        step_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        blas_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
        ratio.push_back(step_ms.back() / blas_ms.back());
      }
      const Stats st = summarise(step_ms), bl = summarise(blas_ms), q = summarise(ratio);
      std::printf("%-10s %-5s  %9.1f (%7.1f-%7.1f)  %9.1f (%7.1f-%7.1f)  %.2f (%.2f-%.2f)\n", s.name,
                  bf16 ? "bf16" : "f32", st.median, st.min, st.max, bl.median, bl.min, bl.max, q.median, q.min, q.max);
    }
  }
  vkDestroyFence(ctx.device(), fence, nullptr);
  vkDestroyCommandPool(ctx.device(), pool, nullptr);
  return 0;
}
