#pragma once
// Double-precision reference for StableAdamW (Wortsman et al. 2023; optimi's StableAdamW), per
// tensor:
//   g <- maximize ? -g : g ; b^ = b(1 - b^(t-1))/(1 - b^t)
//   m <- m + (1-b1^)(g - m) ; v <- b2^*v + (1-b2^)*g^2
//   rms = sqrt(mean(g^2 / max(v, eps^2))) ; lr' = lr / max(1, rms)
//   p <- p*(1 - lr'*wd) ; p <- p - lr' * m / (sqrt(v) + eps)
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct StableAdamwHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.99, eps = 1e-6, weight_decay = 1e-2;
  bool maximize = false;
};

class StableAdamw {
 public:
  StableAdamw(const StableAdamwHyper& h, size_t n) : h_(h), m_(n, 0.0), v_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void set_beta1(double beta1) { h_.beta1 = beta1; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    auto debiased = [this](double b) { return b * (1 - std::pow(b, double(t_ - 1))) / (1 - std::pow(b, double(t_))); };
    const double b1 = debiased(h_.beta1), b2 = debiased(h_.beta2);
    double sum = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = h_.maximize ? -grad[i] : grad[i];
      m_[i] += (1 - b1) * (g - m_[i]);
      v_[i] = b2 * v_[i] + (1 - b2) * g * g;
      sum += g * g / std::max(v_[i], h_.eps * h_.eps);
    }
    const double lr = h_.lr / std::max(1.0, std::sqrt(sum / double(p.size())));
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * h_.weight_decay;
      p[i] -= lr * m_[i] / (std::sqrt(v_[i]) + h_.eps);
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}, {"exp_avg_sq", v_}}; }

 private:
  StableAdamwHyper h_;
  std::vector<double> m_, v_;
  long t_ = 0;
};

}  // namespace reference
