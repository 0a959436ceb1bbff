#pragma once
// Double-precision reference for RMSprop, from torch.optim.RMSprop:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   v <- alpha*v + (1-alpha)*g^2 ; centered: gbar <- alpha*gbar + (1-alpha)*g, w = v - gbar^2
//   d <- sqrt(w) + eps  (eps_in_sqrt, optax: sqrt(w + eps))
//   momentum > 0: b <- mu*b + g/d ; p <- p - lr*b     else p <- p - lr*g/d
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct RmspropHyper {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
  bool centered = false, maximize = false, eps_in_sqrt = false;
  bool decoupled = false;  // p <- p*(1 - lr*wd) instead of L2
};

class Rmsprop {
 public:
  Rmsprop(const RmspropHyper& h, size_t n) : h_(h), v_(n, 0.0), b_(n, 0.0), gbar_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      v_[i] = h_.alpha * v_[i] + (1 - h_.alpha) * g * g;
      double w = v_[i];
      if (h_.centered) {
        gbar_[i] = h_.alpha * gbar_[i] + (1 - h_.alpha) * g;
        w -= gbar_[i] * gbar_[i];
      }
      const double d = h_.eps_in_sqrt ? std::sqrt(w + h_.eps) : std::sqrt(w) + h_.eps;
      if (h_.momentum > 0) {
        b_[i] = h_.momentum * b_[i] + g / d;
        p[i] -= h_.lr * b_[i];
      } else {
        p[i] -= h_.lr * g / d;
      }
    }
  }
  std::map<std::string, std::vector<double>> state() const {
    std::map<std::string, std::vector<double>> s{{"square_avg", v_}};
    if (h_.momentum > 0) s["momentum_buffer"] = b_;
    if (h_.centered) s["grad_avg"] = gbar_;
    return s;
  }

 private:
  RmspropHyper h_;
  std::vector<double> v_, b_, gbar_;
};

}  // namespace reference
