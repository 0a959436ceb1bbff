// The batched GEMM of the matrix rules (runtime/gemm.hpp, shaders/gemm.comp) against a double
// reference: odd shapes, transposed operands by strides, alpha/beta with D (also D = C), several
// jobs in one dispatch, bf16 inputs, unwritten elements left alone, and the same bits for every
// tile shape.
#include <cmath>
#include <limits>

#include "context_state.hpp"
#include "gemm.hpp"
#include "harness.hpp"

namespace {

using vkoptim::detail::GemmJob;
using vkoptim::detail::GemmTiles;

class GemmTest : public vkt::VulkanTest {
 protected:
  VkDeviceAddress address(const vkoptim::Tensor& t) {
    VkBufferDeviceAddressInfo info{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    info.buffer = t.range().buffer;
    return vkGetBufferDeviceAddress(ctx_->device(), &info);
  }
  std::unique_ptr<vkoptim::Context> ctx_;
};

// A job of the test: where its operands sit in the A/B arena (floats) and C arena, and how.
struct Product {
  uint32_t m, n, k;
  bool a_transposed, b_transposed;
  bool d_term, d_is_c;
  float alpha, beta;
  size_t a_at = 0, b_at = 0, c_at = 0, d_at = 0;
};

TEST_F(GemmTest, BatchedProductsMatchTheDoubleReference) {
  ctx_ = std::make_unique<vkoptim::Context>(make_context());
  std::vector<Product> products = {
      {1, 1, 1, false, false, false, false, 1, 0},         {37, 53, 29, false, false, false, false, 1, 0},
      {37, 53, 29, true, false, false, false, 1, 0},       {64, 64, 64, false, true, true, false, -4.775f, 3.4445f},
      {130, 70, 90, true, true, true, false, 2.0315f, -1}, {65, 65, 200, false, true, false, false, 1, 0},
      {33, 17, 5, false, false, true, true, 0.5f, 0.25f},
  };
  // Operands back to back with NaN gaps; C entries with NaN gaps too (poisoned).
  size_t inputs = 0, outputs = 0;
  // (Operands start at even elements: bf16 inputs are read by 4-byte words.)
  auto even = [](size_t n) { return (n + 1) / 2 * 2; };
  for (auto& p : products) {
    p.a_at = inputs, inputs += even(size_t(p.m) * p.k) + 4;
    p.b_at = inputs, inputs += even(size_t(p.k) * p.n) + 6;
    p.c_at = outputs, outputs += size_t(p.m) * p.n + 7;
    p.d_at = inputs, inputs += even(size_t(p.m) * p.n) + 2;
  }
  std::uniform_real_distribution<double> dist(-1, 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> in(inputs, nan), out0(outputs, nan);
  for (const auto& p : products) {
    for (size_t i = 0; i < size_t(p.m) * p.k; ++i) in[p.a_at + i] = float(dist(rng_));
    for (size_t i = 0; i < size_t(p.k) * p.n; ++i) in[p.b_at + i] = float(dist(rng_));
    for (size_t i = 0; i < size_t(p.m) * p.n; ++i) in[p.d_at + i] = float(dist(rng_));
    if (p.d_is_c)
      for (size_t i = 0; i < size_t(p.m) * p.n; ++i) out0[p.c_at + i] = float(dist(rng_));
  }
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 inputs" : "f32 inputs");
    auto a_arena = ctx_->create_tensor(inputs, bf16 ? vkoptim::DType::bf16 : vkoptim::DType::f32);
    auto d_arena = ctx_->create_tensor(in);
    a_arena.upload(in);
    const std::vector<float> a_values = a_arena.download();  // (bf16: as rounded)
    std::vector<std::vector<float>> results;
    for (const GemmTiles& tiles :
         {GemmTiles{}, GemmTiles{8, 8, 8}, GemmTiles{4, 16, 4}, GemmTiles{16, 16, 1, true}, GemmTiles{4, 8, 1, true}}) {
      auto c_arena = ctx_->create_tensor(out0);
      const size_t unit = bf16 ? 2 : 4;
      std::vector<GemmJob> jobs;
      for (const auto& p : products) {
        GemmJob j;
        j.m = p.m, j.n = p.n, j.k = p.k;
        j.a = address(a_arena) + p.a_at * unit;
        j.b = address(a_arena) + p.b_at * unit;
        // Stored A is m x k row-major, or k x m when op(A) is its transpose; B likewise.
        j.a_row = p.a_transposed ? 1 : p.k, j.a_col = p.a_transposed ? p.m : 1;
        j.b_row = p.b_transposed ? 1 : p.n, j.b_col = p.b_transposed ? p.k : 1;
        j.c = address(c_arena) + p.c_at * 4, j.c_row = p.n;
        if (p.d_term) j.d = p.d_is_c ? j.c : address(d_arena) + p.d_at * 4, j.d_row = p.n;
        j.alpha = p.alpha, j.beta = p.beta;
        jobs.push_back(j);
      }
      std::vector<vkoptim::detail::GemmJobRecord> records;
      for (const auto& j : jobs) records.push_back(vkoptim::detail::gemm_job_record(j));
      std::vector<float> words(records.size() * sizeof(records[0]) / 4);
      std::memcpy(words.data(), records.data(), words.size() * 4);
      auto table = ctx_->create_tensor(words);
      vkt::Engine engine(*ctx_);
      VkCommandBuffer cmd = engine.begin();
      vkoptim::detail::record_gemm(*vkoptim::detail::context_state(*ctx_), cmd, jobs, address(table), tiles, bf16,
                                   vkt::host_reads());
      engine.end(cmd);
      engine.submit(cmd);
      results.push_back(c_arena.download());
    }
    const auto& got = results[0];
    std::vector<bool> written(outputs, false);
    for (const auto& p : products) {
      SCOPED_TRACE(std::to_string(p.m) + " x " + std::to_string(p.n) + " x " + std::to_string(p.k));
      size_t bad = 0;
      for (uint32_t i = 0; i < p.m; ++i)
        for (uint32_t j = 0; j < p.n; ++j) {
          double sum = 0, size = 0;
          for (uint32_t q = 0; q < p.k; ++q) {
            const double a = a_values[p.a_at + (p.a_transposed ? size_t(q) * p.m + i : size_t(i) * p.k + q)];
            const double b = a_values[p.b_at + (p.b_transposed ? size_t(j) * p.k + q : size_t(q) * p.n + j)];
            sum += a * b, size += std::abs(a * b);
          }
          double expected = double(p.alpha) * sum, bound = std::abs(p.alpha) * size * (p.k + 2) * vkt::kUnitRoundoff;
          if (p.d_term) {
            const double d = p.d_is_c ? out0[p.c_at + size_t(i) * p.n + j] : in[p.d_at + size_t(i) * p.n + j];
            expected += double(p.beta) * d;
            bound += 2 * std::abs(p.beta * d) * vkt::kUnitRoundoff + 2 * std::abs(expected) * vkt::kUnitRoundoff;
          }
          const size_t at = p.c_at + size_t(i) * p.n + j;
          written[at] = true;
          if (!(std::abs(got[at] - expected) <= bound + 1e-30)) {
            if (bad++ < 3) ADD_FAILURE() << "C[" << i << "][" << j << "] = " << got[at] << ", expected " << expected;
          }
        }
      EXPECT_EQ(bad, 0u);
    }
    size_t clobbered = 0;
    for (size_t e = 0; e < outputs; ++e) clobbered += !written[e] && !std::isnan(got[e]);
    EXPECT_EQ(clobbered, 0u) << "elements outside every C were written";
    // The sum runs over k in order whatever the tiles: the same bits.
    for (size_t t = 1; t < results.size(); ++t)
      EXPECT_EQ(vkt::bits(results[t]), vkt::bits(results[0])) << "tiles " << t;
  }
}

// Muon's jobs: a normalisation (k = 0: C = D / max(sqrt(scratch sum), eps)) read through
// transposed strides, and a product written transposed, both rounded to bf16 and then scaled.
TEST_F(GemmTest, NormalisedTransposedAndRoundedOutputs) {
  ctx_ = std::make_unique<vkoptim::Context>(make_context());
  const uint32_t m = 23, n = 41, k = 19;
  std::uniform_real_distribution<double> dist(-1, 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> d(size_t(n) * m), a(size_t(m) * k), b(size_t(k) * n);
  for (auto* v : {&d, &a, &b})
    for (float& x : *v) x = float(dist(rng_));
  double sum = 0;
  for (float x : d) sum += double(x) * x;
  for (const float eps : {1e-7f, 1e3f}) {  // the norm, then eps, wins the max
    SCOPED_TRACE("eps " + std::to_string(eps));
    const std::vector<float> scratch{0, 0, float(sum), 0};  // entry 1
    auto d_t = ctx_->create_tensor(d), a_t = ctx_->create_tensor(a), b_t = ctx_->create_tensor(b);
    auto s_t = ctx_->create_tensor(scratch);
    auto c1 = ctx_->create_tensor(std::vector<float>(size_t(m) * n + 3, nan));
    auto c2 = ctx_->create_tensor(std::vector<float>(size_t(m) * n + 3, nan));
    std::vector<GemmJob> jobs(2);
    // D is stored n x m: op is its transpose.
    jobs[0].m = m, jobs[0].n = n, jobs[0].k = 0, jobs[0].alpha = 0, jobs[0].beta = 1;
    jobs[0].d = address(d_t), jobs[0].d_row = 1, jobs[0].d_col = m;
    jobs[0].c = address(c1), jobs[0].c_row = n;
    jobs[0].norm_entry = 1, jobs[0].eps = eps, jobs[0].round_bf16 = true, jobs[0].out_scale = 0.75f;
    // C written transposed (n x m storage).
    jobs[1].m = m, jobs[1].n = n, jobs[1].k = k, jobs[1].alpha = 2.0315f;
    jobs[1].a = address(a_t), jobs[1].a_row = k, jobs[1].b = address(b_t), jobs[1].b_row = n;
    jobs[1].c = address(c2), jobs[1].c_row = 1, jobs[1].c_col = m;
    jobs[1].round_bf16 = true, jobs[1].out_scale = 3;
    std::vector<vkoptim::detail::GemmJobRecord> records;
    for (const auto& j : jobs) records.push_back(vkoptim::detail::gemm_job_record(j));
    std::vector<float> words(records.size() * sizeof(records[0]) / 4);
    std::memcpy(words.data(), records.data(), words.size() * 4);
    auto table = ctx_->create_tensor(words);
    for (const GemmTiles& tiles : {GemmTiles{}, GemmTiles{16, 16, 1, true}}) {
      vkt::Engine engine(*ctx_);
      VkCommandBuffer cmd = engine.begin();
      vkoptim::detail::record_gemm(*vkoptim::detail::context_state(*ctx_), cmd, jobs, address(table), tiles, false,
                                   vkt::host_reads(), address(s_t));
      engine.end(cmd);
      engine.submit(cmd);
      const auto got1 = c1.download(), got2 = c2.download();
      // Rounded to bf16: within one bf16 unit of the exact value (2^-8 relative), then scaled.
      auto check = [](double got, double exact, double scale) {
        const double tol = std::abs(exact) * std::ldexp(1.0, -8) + 1e-30;
        return std::abs(got / scale - exact) <= tol;
      };
      // The divisor is rounded to bf16 like the outputs (nearest even).
      const float exact_divisor = std::max(std::sqrt(float(sum)), eps);
      uint32_t u;
      std::memcpy(&u, &exact_divisor, 4);
      u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
      float divisor;
      std::memcpy(&divisor, &u, 4);
      size_t bad = 0;
      for (uint32_t i = 0; i < m; ++i)
        for (uint32_t j = 0; j < n; ++j) {
          if (!check(got1[size_t(i) * n + j], d[size_t(j) * m + i] / divisor, 0.75)) ++bad;
          double p = 0;
          for (uint32_t q = 0; q < k; ++q) p += double(a[size_t(i) * k + q]) * b[size_t(q) * n + j];
          if (!check(got2[size_t(j) * m + i], 2.0315f * p, 3)) ++bad;
        }
      EXPECT_EQ(bad, 0u);
      for (const auto* got : {&got1, &got2}) {
        for (size_t e = 0; e < size_t(m) * n; ++e) {  // every value a bf16 times the scale
          const float unscaled = (*got)[e] / (got == &got1 ? 0.75f : 3.0f);
          ASSERT_EQ(vkt::bits(std::vector<float>{unscaled})[0] & 0xFFFFu, 0u) << e;
        }
        for (size_t e = size_t(m) * n; e < got->size(); ++e) EXPECT_TRUE(std::isnan((*got)[e])) << "written past C";
      }
    }
  }
}

}  // namespace
