#pragma once
// Double-precision reference for Adadelta, from torch.optim.Adadelta:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- rho*v + (1-rho)*g^2 ; d <- sqrt(u + eps)/sqrt(v + eps)*g ; u <- rho*u + (1-rho)*d^2
//   p <- p - lr*d
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdadeltaHyper {
  double lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0;
  bool maximize = false;
  bool decoupled = false;  // p <- p*(1 - lr*wd) instead of L2
};

class Adadelta {
 public:
  Adadelta(const AdadeltaHyper& h, size_t n) : h_(h), v_(n, 0.0), u_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      v_[i] = h_.rho * v_[i] + (1 - h_.rho) * g * g;
      const double d = std::sqrt(u_[i] + h_.eps) / std::sqrt(v_[i] + h_.eps) * g;
      u_[i] = h_.rho * u_[i] + (1 - h_.rho) * d * d;
      p[i] -= h_.lr * d;
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"square_avg", v_}, {"acc_delta", u_}}; }

 private:
  AdadeltaHyper h_;
  std::vector<double> v_, u_;
};

}  // namespace reference
