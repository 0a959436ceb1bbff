#pragma once
// Double-precision reference for Adagrad, from torch.optim.Adagrad:
//   g <- maximize ? -g : g ; g <- g + wd*p ; clr = lr / (1 + (t-1)*lr_decay)
//   sum <- sum + g^2 ; p <- p - clr * g / (sqrt(sum) + eps)      (sum starts at initial_accumulator_value)
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdagradHyper {
  double lr = 1e-2, lr_decay = 0, weight_decay = 0, initial_accumulator_value = 0, eps = 1e-10;
  bool maximize = false;
  bool decoupled = false;  // p <- p*(1 - lr*wd) instead of L2
};

class Adagrad {
 public:
  Adagrad(const AdagradHyper& h, size_t n) : h_(h), sum_(n, h.initial_accumulator_value) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double clr = h_.lr / (1 + double(t_ - 1) * h_.lr_decay);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g += h_.weight_decay * p[i];
      sum_[i] += g * g;
      p[i] -= clr * g / (std::sqrt(sum_[i]) + h_.eps);
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"sum", sum_}}; }

 private:
  AdagradHyper h_;
  std::vector<double> sum_;
  long t_ = 0;
};

}  // namespace reference
