#pragma once
// Double-precision reference for RAdam, from torch.optim.RAdam:
//   g <- maximize ? -g : g ; decoupled ? p <- p*(1 - lr*wd) : g <- g + wd*p
//   m, v as Adam ; rho_inf = 2/(1-b2) - 1 ; rho_t = rho_inf - 2t*b2^t/(1-b2^t)
//   rho_t > 5: p <- p - lr * m/bc1 * r * sqrt(bc2)/(sqrt(v) + eps),
//              r = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))
//   else:      p <- p - lr * m/bc1
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct RadamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false, maximize = false;
};

class Radam {
 public:
  Radam(const RadamHyper& h, size_t n) : h_(h), m_(n, 0.0), v_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double t = double(t_);
    const double bc1 = 1 - std::pow(h_.beta1, t), bc2 = 1 - std::pow(h_.beta2, t);
    const double rho_inf = 2 / (1 - h_.beta2) - 1;
    const double rho_t = rho_inf - 2 * t * std::pow(h_.beta2, t) / bc2;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      m_[i] = h_.beta1 * m_[i] + (1 - h_.beta1) * g;
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
      const double m_hat = m_[i] / bc1;
      if (rho_t > 5) {
        const double r = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
        p[i] -= h_.lr * m_hat * r * std::sqrt(bc2) / (std::sqrt(v_[i]) + h_.eps);
      } else {
        p[i] -= h_.lr * m_hat;
      }
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}, {"exp_avg_sq", v_}}; }

 private:
  RadamHyper h_;
  std::vector<double> m_, v_;
  long t_ = 0;
};

}  // namespace reference
