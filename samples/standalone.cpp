// Standalone use: vkoptim creates its own device, holds the parameters, and AdamW fits a small
// least-squares problem y = X w. The gradient is computed on the host here only to keep the
// sample short; an engine computes it on the device and hands vkoptim its buffers (see
// Context::adopt and Optimizer::record).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "vkoptim/vkoptim.hpp"

int main() {
  constexpr size_t rows = 256, cols = 33;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(rows * cols), w_true(cols), y(rows);
  for (auto& v : x) v = normal(rng);
  for (auto& v : w_true) v = normal(rng);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) y[r] += x[r * cols + c] * w_true[c];

  try {
    auto ctx = vkoptim::Context::create();
    std::printf("device: %s\n", ctx.caps().device_name.c_str());
    auto w = ctx.create_tensor(cols);  // parameters, zero-initialised
    auto g = ctx.create_tensor(cols);  // gradients
    vkoptim::AdamOptions adamw = vkoptim::adamw_options();
    adamw.lr = 0.05;
    vkoptim::Optimizer opt(ctx, {{adamw, {{w.range(), g.range(), "w"}}}});

    std::vector<float> grad(cols);
    for (int step = 0; step <= 300; ++step) {
      const auto wv = w.download();
      double loss = 0;
      std::fill(grad.begin(), grad.end(), 0.0f);
      for (size_t r = 0; r < rows; ++r) {
        float err = -y[r];
        for (size_t c = 0; c < cols; ++c) err += x[r * cols + c] * wv[c];
        loss += 0.5 * err * err / rows;
        for (size_t c = 0; c < cols; ++c) grad[c] += err * x[r * cols + c] / rows;
      }
      if (step % 50 == 0) std::printf("step %3d  loss %.6f  lr %.4f\n", step, loss, adamw.lr);
      if (step == 200) opt.set_lr(0, adamw.lr = 0.01);  // a schedule: nothing is rebuilt
      g.upload(grad);
      opt.step();
    }
    const auto m = opt.read_state(0, "exp_avg");
    std::printf("exp_avg[0] = %g after %llu steps\n", m[0], static_cast<unsigned long long>(opt.step_count(0)));
  } catch (const vkoptim::Error& e) {
    std::fprintf(stderr, "vkoptim: %s\n", e.what());
    return 1;
  }
  return 0;
}
