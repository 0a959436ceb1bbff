#include "harness.hpp"

#include <cstdlib>
#include <sstream>

namespace vkt {

uint64_t test_seed() {
  if (const char* s = std::getenv("VKOPTIM_TEST_SEED"); s && *s) return std::strtoull(s, nullptr, 10);
  return std::random_device{}() * 0x9E3779B97F4A7C15ull + std::random_device{}();
}

void VulkanTest::SetUp() {
  const uint64_t seed = test_seed();
  rng_.seed(seed);
  RecordProperty("seed", std::to_string(seed));
  std::printf("[   SEED   ] VKOPTIM_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
}

void VulkanTest::TearDown() {
  std::lock_guard lock(messages_->mutex);
  std::ostringstream all;
  for (const auto& m : messages_->list) all << "\n  " << m;
  EXPECT_TRUE(messages_->list.empty()) << "validation layer reported " << messages_->list.size()
                                       << " message(s):" << all.str();
}

vkoptim::ContextOptions VulkanTest::validated_options() const {
  vkoptim::ContextOptions o;
  o.enable_validation = true;
  auto sink = messages_;
  o.validation_callback = [sink](std::string_view m) { sink->add(m); };
  return o;
}

vkoptim::Context VulkanTest::make_context(vkoptim::ContextOptions options) {
  return vkoptim::Context::create(options);
}

void expect_close(const std::vector<float>& gpu, const std::vector<double>& ref, const std::vector<double>& tol,
                  const std::string& what) {
  ASSERT_EQ(gpu.size(), ref.size()) << what;
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double d = std::abs(double(gpu[i]) - ref[i]);
    if (!(d <= tol[i])) {
      if (bad < 5)
        first << "\n  " << what << "[" << i << "]: gpu " << gpu[i] << " reference " << ref[i] << " |diff| " << d
              << " > tol " << tol[i];
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << bad << " of " << gpu.size() << " elements of " << what << " out of tolerance:" << first.str();
}

std::vector<float> to_float(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}
std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

std::vector<Placement> pack(const std::vector<size_t>& sizes, size_t buffers, size_t first_buffer,
                            std::vector<size_t>& totals) {
  std::vector<Placement> out(sizes.size());
  totals.assign(buffers, 0);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const size_t b = (i + first_buffer) % buffers;
    // Even tensors start 32-byte aligned (wide fast path), odd ones 1-3 elements past it.
    size_t offset = (totals[b] + 1 + 7) / 8 * 8;
    if (i % 2) offset += 1 + (i / 2) % 3;
    out[i] = {b, offset};
    totals[b] = offset;
    totals[b] += sizes[i];
  }
  for (auto& t : totals) t += 3;  // a poisoned tail after the last tensor
  return out;
}

}  // namespace vkt
