#pragma once
// Double-precision reference for AdEMAMix, from the authors' apple/ml-ademamix PyTorch AdEMAMix
// (its linear_warmup_scheduler for alpha, linear_hl_warmup_scheduler from beta1 for beta3):
//   g <- maximize ? -g : g
//   m1 <- b1*m1 + (1-b1)*g ; m2 <- b3_t*m2 + (1-b3_t)*g ; v <- b2*v + (1-b2)*g^2
//   p <- p - lr*((m1/(1-b1^t) + alpha_t*m2) / (sqrt(v)/sqrt(1-b2^t) + eps) + wd*p)
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdemamixHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, beta3 = 0.9999, alpha = 2.0;
  unsigned beta3_warmup = 0, alpha_warmup = 0;  // 0: the reference's None
  double eps = 1e-8, weight_decay = 0;
  bool maximize = false;
};

class Ademamix {
 public:
  Ademamix(const AdemamixHyper& h, size_t n) : h_(h), m1_(n, 0.0), m2_(n, 0.0), v_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void set_beta1(double beta1) { h_.beta1 = beta1; }

  static double linear_warmup(long step, double end, double start, unsigned warmup) {
    if (step < long(warmup)) {
      const double a = double(step) / warmup;
      return (1 - a) * start + a * end;
    }
    return end;
  }
  static double half_life_warmup(long step, double end, double start, unsigned warmup) {
    const auto f = [](double beta) { return std::log(0.5) / std::log(beta + 1e-8) - 1; };
    const auto f_inv = [](double t) { return std::pow(0.5, 1 / (t + 1)); };
    if (step < long(warmup)) {
      const double a = double(step) / warmup;
      return f_inv((1 - a) * f(start) + a * f(end));
    }
    return end;
  }

  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double bc1 = 1 - std::pow(h_.beta1, double(t_)), bc2 = 1 - std::pow(h_.beta2, double(t_));
    const double alpha = h_.alpha_warmup ? linear_warmup(t_, h_.alpha, 0, h_.alpha_warmup) : h_.alpha;
    const double beta3 = h_.beta3_warmup ? half_life_warmup(t_, h_.beta3, h_.beta1, h_.beta3_warmup) : h_.beta3;
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = h_.maximize ? -grad[i] : grad[i];
      m1_[i] = h_.beta1 * m1_[i] + (1 - h_.beta1) * g;
      m2_[i] = beta3 * m2_[i] + (1 - beta3) * g;
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
      const double denom = std::sqrt(v_[i]) / std::sqrt(bc2) + h_.eps;
      const double update = (m1_[i] / bc1 + alpha * m2_[i]) / denom + h_.weight_decay * p[i];
      p[i] -= h_.lr * update;
    }
  }
  std::map<std::string, std::vector<double>> state() const {
    return {{"exp_avg_fast", m1_}, {"exp_avg_slow", m2_}, {"exp_avg_sq", v_}};
  }

 private:
  AdemamixHyper h_;
  std::vector<double> m1_, m2_, v_;
  long t_ = 0;
};

}  // namespace reference
