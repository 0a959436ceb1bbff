#pragma once
// Double-precision reference for NAdam, from torch.optim.NAdam:
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   mu_t = b1*(1 - 0.5*0.96^(t*psi)) ; mu_{t+1} likewise ; P <- P*mu_t
//   m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2 ; d = sqrt(v/(1-b2^t)) + eps
//   p <- p - lr*(1-mu_t)/(1-P) * g/d - lr*mu_{t+1}/(1-P*mu_{t+1}) * m/d
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct NadamHyper {
  double lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0, momentum_decay = 4e-3;
  bool decoupled = false, maximize = false;
};

class Nadam {
 public:
  Nadam(const NadamHyper& h, size_t n) : h_(h), m_(n, 0.0), v_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double t = double(t_);
    const double mu = h_.beta1 * (1 - 0.5 * std::pow(0.96, t * h_.momentum_decay));
    const double mu_next = h_.beta1 * (1 - 0.5 * std::pow(0.96, (t + 1) * h_.momentum_decay));
    mu_product_ *= mu;
    const double bc2 = 1 - std::pow(h_.beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      m_[i] = h_.beta1 * m_[i] + (1 - h_.beta1) * g;
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
      const double d = std::sqrt(v_[i] / bc2) + h_.eps;
      p[i] -= h_.lr * (1 - mu) / (1 - mu_product_) * g / d;
      p[i] -= h_.lr * mu_next / (1 - mu_product_ * mu_next) * m_[i] / d;
    }
  }
  std::map<std::string, std::vector<double>> state() const {
    return {{"exp_avg", m_}, {"exp_avg_sq", v_}, {"mu_product", {mu_product_}}};
  }

 private:
  NadamHyper h_;
  std::vector<double> m_, v_;
  double mu_product_ = 1;
  long t_ = 0;
};

}  // namespace reference
