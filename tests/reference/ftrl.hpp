#pragma once
// Double-precision reference for FTRL-Proximal, as TensorFlow's ApplyFtrlV2 (and Keras' Ftrl)
// compute it, with p = -learning_rate_power:
//   g <- maximize ? -g : g ; n' = n + g^2
//   linear <- linear + (g + 2*l2_shrinkage*w) - (n'^p - n^p)/lr * w
//   w <- |linear| > l1 ? (l1*sign(linear) - linear) / (n'^p/lr + 2*(l2 + beta/(2 lr))) : 0 ; n <- n'
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct FtrlHyper {
  double lr = 1e-3, learning_rate_power = -0.5, initial_accumulator_value = 0.1;
  double l1 = 0, l2 = 0, l2_shrinkage = 0, beta = 0;
  bool maximize = false;
};

class Ftrl {
 public:
  Ftrl(const FtrlHyper& h, size_t n) : h_(h), n_(n, h.initial_accumulator_value), linear_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& w, const std::vector<double>& grad) {
    if (!(h_.lr > 0)) return;  // vkoptim's definition of a step at lr 0: nothing changes
    const double p = -h_.learning_rate_power;
    for (size_t i = 0; i < w.size(); ++i) {
      const double g = h_.maximize ? -grad[i] : grad[i];
      const double n_new = n_[i] + g * g;
      linear_[i] += g + 2 * h_.l2_shrinkage * w[i] - (std::pow(n_new, p) - std::pow(n_[i], p)) / h_.lr * w[i];
      const double quadratic = std::pow(n_new, p) / h_.lr + 2 * (h_.l2 + h_.beta / (2 * h_.lr));
      w[i] = std::abs(linear_[i]) > h_.l1 ? (h_.l1 * (linear_[i] > 0 ? 1 : -1) - linear_[i]) / quadratic : 0.0;
      n_[i] = n_new;
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"accumulator", n_}, {"linear", linear_}}; }

 private:
  FtrlHyper h_;
  std::vector<double> n_, linear_;
};

}  // namespace reference
