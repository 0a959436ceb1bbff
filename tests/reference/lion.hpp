#pragma once
// Double-precision reference for Lion, from google/automl lion_pytorch.py:
//   g <- maximize ? -g : g ; p <- p*(1 - lr*wd)
//   c = b1*m + (1-b1)*g ; p <- p - lr*sign(c) (sign(0) = 0) ; m <- b2*m + (1-b2)*g
// sign(c) of a float computation can differ where c is within rounding of 0: ambiguity()
// accumulates, per element, the 2*lr such a flip could cost, for the test tolerance. Cautious
// steps (reference/cautious.hpp) mask sign(c).
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "cautious.hpp"

namespace reference {

struct LionHyper {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0;
  bool maximize = false;
  bool cautious = false;
};

class Lion {
 public:
  Lion(const LionHyper& h, size_t n) : h_(h), m_(n, 0.0), ambiguity_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    const size_t n = p.size();
    std::vector<double> g(n), d(n), slack(n, 0.0);
    std::vector<bool> tie(n);
    for (size_t i = 0; i < n; ++i) {
      g[i] = h_.maximize ? -grad[i] : grad[i];
      const double a = h_.beta1 * m_[i], b = (1 - h_.beta1) * g[i], c = a + b;
      tie[i] = c != 0 && std::abs(c) <= 1e-5 * (std::abs(a) + std::abs(b));
      if (tie[i]) ambiguity_[i] += 2 * h_.lr;
      d[i] = c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0;
    }
    if (h_.cautious) d = cautious(d, g, tie, slack);
    for (size_t i = 0; i < n; ++i) {
      p[i] *= 1 - h_.lr * h_.weight_decay;
      p[i] -= h_.lr * d[i];
      ambiguity_[i] += h_.lr * slack[i];
      m_[i] = h_.beta2 * m_[i] + (1 - h_.beta2) * g[i];
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}}; }
  const std::vector<double>& ambiguity() const { return ambiguity_; }

 private:
  LionHyper h_;
  std::vector<double> m_, ambiguity_;
};

}  // namespace reference
