#pragma once
// Double-precision reference for SGD, written from torch.optim.SGD's definition:
//   g <- maximize ? -g : g ;  g <- g + wd*p
//   momentum != 0:  b <- (first step) ? g : mu*b + (1-dampening)*g
//                   g <- nesterov ? g + mu*b : b
//   p <- p - lr*g
// and the textbook EMA form: b starts at 0, b <- mu*b + (1-mu)*g every step,
// nesterov uses (1-mu)*g + mu*b. Cautious steps (reference/cautious.hpp) mask the direction b
// (nesterov: g + mu*b) against g.
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "cautious.hpp"

namespace reference {

struct SgdHyper {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false, ema = false;
  bool dampen_first_step = false;  // MLX: the first step sets b <- (1-dampening)*g
  bool decoupled = false;          // SGDW: p <- p*(1 - lr*wd) instead of L2
  bool cautious = false;
};

class Sgd {
 public:
  Sgd(const SgdHyper& h, size_t n) : h_(h), buf_(n, 0.0), ambiguity_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }

  void step(std::vector<double>& p, const std::vector<double>& grad) {
    const size_t n = p.size();
    std::vector<double> g(n), d(n), slack(n, 0.0);
    std::vector<bool> tie(n, false);
    for (size_t i = 0; i < n; ++i) {
      g[i] = h_.maximize ? -grad[i] : grad[i];
      const double decay = h_.weight_decay * p[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g[i] = g[i] + decay;
      d[i] = g[i];
      if (h_.momentum == 0) continue;
      const double g_scale = h_.ema   ? 1 - h_.momentum
                             : first_ ? (h_.dampen_first_step ? 1 - h_.dampening : 1.0)
                                      : 1 - h_.dampening;
      const double a = first_ && !h_.ema ? 0.0 : h_.momentum * buf_[i], b = g_scale * g[i];
      buf_[i] = a + b;
      double size = std::abs(a) + std::abs(b);
      if (h_.nesterov) {
        const double ga = (h_.ema ? 1 - h_.momentum : 1.0) * g[i], gb = h_.momentum * buf_[i];
        d[i] = ga + gb;
        size = std::abs(ga) + std::abs(gb) + h_.momentum * size;
      } else {
        d[i] = buf_[i];
      }
      // L2: a kernel's p is off by up to the test's bound (< 1e-4), which moves g by wd times that.
      const double g_size = h_.decoupled ? 0 : std::abs(grad[i]) + std::abs(decay);
      const double p_slack = h_.decoupled ? 0 : h_.weight_decay * 1e-4;
      tie[i] = std::abs(d[i]) <= 1e-5 * size + p_slack || std::abs(g[i]) <= 1e-5 * g_size + p_slack;
    }
    if (h_.cautious) d = cautious(d, g, tie, slack);
    for (size_t i = 0; i < n; ++i) {
      p[i] = p[i] - h_.lr * d[i];
      ambiguity_[i] += h_.lr * slack[i];
    }
    first_ = false;
  }

  // Loading a buffer makes the next step a regular one (torch: the buffer exists).
  void set_state(const std::string& name, const std::vector<double>& values) {
    if (name == "momentum_buffer") {
      buf_ = values;
      first_ = false;
    }
  }

  std::map<std::string, std::vector<double>> state() const {
    if (h_.momentum == 0) return {};
    return {{"momentum_buffer", buf_}};
  }
  // Cautious steps: what near-ties of the mask could change (reference/cautious.hpp).
  const std::vector<double>& ambiguity() const { return ambiguity_; }

 private:
  SgdHyper h_;
  std::vector<double> buf_, ambiguity_;
  bool first_ = true;
};

}  // namespace reference
