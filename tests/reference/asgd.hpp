#pragma once
// Double-precision reference for ASGD, from torch.optim.ASGD:
//   g <- maximize ? -g : g ; g <- g + wd*p
//   p <- p*(1 - lambd*eta) ; p <- p - eta*g ; ax <- (mu == 1) ? p : ax + mu*(p - ax)
//   then eta <- lr/(1 + lambd*lr*t)^alpha ; mu <- 1/max(1, t - t0)     (eta starts at lr, mu at 1)
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AsgdHyper {
  double lr = 1e-2, lambd = 1e-4, alpha = 0.75, t0 = 1e6, weight_decay = 0;
  bool maximize = false;
};

class Asgd {
 public:
  Asgd(const AsgdHyper& h, size_t n) : h_(h), ax_(n, 0.0), eta_(h.lr) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      g += h_.weight_decay * p[i];
      p[i] *= 1 - h_.lambd * eta_;
      p[i] -= eta_ * g;
      ax_[i] = mu_ == 1 ? p[i] : ax_[i] + mu_ * (p[i] - ax_[i]);
    }
    eta_ = h_.lr / std::pow(1 + h_.lambd * h_.lr * double(t_), h_.alpha);
    mu_ = 1 / std::max(1.0, double(t_) - h_.t0);
  }
  std::map<std::string, std::vector<double>> state() const { return {{"ax", ax_}, {"eta", {eta_}}, {"mu", {mu_}}}; }

 private:
  AsgdHyper h_;
  std::vector<double> ax_;
  double eta_, mu_ = 1;
  long t_ = 0;
};

}  // namespace reference
