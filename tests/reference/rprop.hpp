#pragma once
// Double-precision reference for Rprop, from torch.optim.Rprop:
//   g <- maximize ? -g : g ; s = sign(g*prev): > 0 -> etaplus, < 0 -> etaminus, 0 -> 1
//   step_size <- clamp(step_size*s, min, max) ; where s < 0: g <- 0
//   p <- p - sign(g)*step_size ; prev <- g            (step_size starts at lr, prev at 0)
#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct RpropHyper {
  double lr = 1e-2, etaminus = 0.5, etaplus = 1.2, step_min = 1e-6, step_max = 50;
  bool maximize = false;
};

class Rprop {
 public:
  Rprop(const RpropHyper& h, size_t n) : h_(h), prev_(n, 0.0), step_(n, h.lr) {}
  void set_lr(double) {}  // lr only sets the initial step size
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      const double prod = g * prev_[i];
      const double factor = prod > 0 ? h_.etaplus : prod < 0 ? h_.etaminus : 1.0;
      step_[i] = std::clamp(step_[i] * factor, h_.step_min, h_.step_max);
      if (prod < 0) g = 0;
      p[i] -= (g > 0 ? 1.0 : g < 0 ? -1.0 : 0.0) * step_[i];
      prev_[i] = g;
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"prev", prev_}, {"step_size", step_}}; }

 private:
  RpropHyper h_;
  std::vector<double> prev_, step_;
};

}  // namespace reference
