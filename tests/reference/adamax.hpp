#pragma once
// Double-precision reference for Adamax, from torch.optim.Adamax:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   m <- b1*m + (1-b1)*g ; u <- max(b2*u, |g| + eps) ; p <- p - lr/(1-b1^t) * m/u
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdamaxHyper {
  double lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool maximize = false;
  bool decoupled = false;  // p <- p*(1 - lr*wd) instead of L2
};

class Adamax {
 public:
  Adamax(const AdamaxHyper& h, size_t n) : h_(h), m_(n, 0.0), u_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double bc1 = 1 - std::pow(h_.beta1, double(t_));
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      m_[i] = h_.beta1 * m_[i] + (1 - h_.beta1) * g;
      u_[i] = std::max(h_.beta2 * u_[i], std::abs(g) + h_.eps);
      p[i] -= h_.lr / bc1 * m_[i] / u_[i];
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}, {"exp_inf", u_}}; }

 private:
  AdamaxHyper h_;
  std::vector<double> m_, u_;
  long t_ = 0;
};

}  // namespace reference
