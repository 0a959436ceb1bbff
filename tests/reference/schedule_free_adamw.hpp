#pragma once
// Double-precision reference for Schedule-Free AdamW, from facebookresearch/schedule_free
// adamw_schedulefree_reference.py (k counts steps from 0; p holds y):
//   sched = k < warmup ? (k+1)/warmup : 1 ; lr_k = lr*sched*sqrt(1 - b2^(k+1))
//   lr_max = max(lr_max, lr_k) ; w = (k+1)^r * lr_max^weight_lr_power ; W += w ; c = w/W
//   first step: z = x = p
//   z <- z - lr_k*wd*(decay_at_z ? z : y) ; v <- b2*v + (1-b2)*g^2 ; z <- z - lr_k*g/(sqrt(v)+eps)
//   x <- (1-c)*x + c*z ; y <- b1*x + (1-b1)*z ; p <- y
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct ScheduleFreeHyper {
  double lr = 0.0025, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  long warmup_steps = 0;
  double r = 0, weight_lr_power = 2;
  bool decay_at_z = false;
};

class ScheduleFreeAdamw {
 public:
  ScheduleFreeAdamw(const ScheduleFreeHyper& h, size_t n) : h_(h), z_(n), v_(n, 0.0), x_(n) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    const double k = double(k_);
    const double sched = k_ < h_.warmup_steps ? (k + 1) / double(h_.warmup_steps) : 1.0;
    const double lr = h_.lr * sched * std::sqrt(1 - std::pow(h_.beta2, k + 1));
    lr_max_ = std::max(lr, lr_max_);
    const double weight = std::pow(k + 1, h_.r) * std::pow(lr_max_, h_.weight_lr_power);
    weight_sum_ += weight;
    const double c = weight_sum_ > 0 ? weight / weight_sum_ : 0;
    if (k_ == 0) z_ = x_ = p;
    for (size_t i = 0; i < p.size(); ++i) {
      const double y = p[i], g = grad[i];
      if (h_.weight_decay != 0) z_[i] -= lr * h_.weight_decay * (h_.decay_at_z ? z_[i] : y);
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
      z_[i] -= lr * g / (std::sqrt(v_[i]) + h_.eps);
      x_[i] = (1 - c) * x_[i] + c * z_[i];
      p[i] = h_.beta1 * x_[i] + (1 - h_.beta1) * z_[i];
    }
    ++k_;
  }
  std::map<std::string, std::vector<double>> state() const {
    return {{"z", z_}, {"exp_avg_sq", v_}, {"x", x_}, {"lr_max", {lr_max_}}, {"weight_sum", {weight_sum_}}};
  }

 private:
  ScheduleFreeHyper h_;
  std::vector<double> z_, v_, x_;
  double lr_max_ = -1, weight_sum_ = 0;
  long k_ = 0;
};

}  // namespace reference
