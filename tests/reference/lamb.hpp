#pragma once
// Double-precision reference for LAMB (You et al. 2019, Apex/DeepSpeed/optax form), per tensor:
//   g <- maximize ? -g : g ; m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2
//   r = (m/bc1)/(sqrt(v/bc2) + eps) + wd*p
//   trust = (|p| > 0 and |r| > 0) ? |p|/|r| : 1 ; clamp to [min, max] when max > 0
//   trust = 1 when !use_nvlamb and wd == 0 (Apex FusedLAMB's default)
//   p <- p - lr*trust*r
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct LambHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0.01;
  bool bias_correction = true;
  double min_trust = 0, max_trust = 0;
  bool maximize = false;
  bool use_nvlamb = true;
};

class Lamb {
 public:
  Lamb(const LambHyper& h, size_t n) : h_(h), m_(n, 0.0), v_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double bc1 = h_.bias_correction ? 1 - std::pow(h_.beta1, double(t_)) : 1;
    const double bc2 = h_.bias_correction ? 1 - std::pow(h_.beta2, double(t_)) : 1;
    std::vector<double> r(p.size());
    double p_sq = 0, r_sq = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = h_.maximize ? -grad[i] : grad[i];
      m_[i] = h_.beta1 * m_[i] + (1 - h_.beta1) * g;
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
      r[i] = (m_[i] / bc1) / (std::sqrt(v_[i] / bc2) + h_.eps) + h_.weight_decay * p[i];
      p_sq += p[i] * p[i];
      r_sq += r[i] * r[i];
    }
    const double p_norm = std::sqrt(p_sq), r_norm = std::sqrt(r_sq);
    double trust = p_norm > 0 && r_norm > 0 ? p_norm / r_norm : 1;
    if (h_.max_trust > 0) trust = std::clamp(trust, h_.min_trust, h_.max_trust);
    if (!h_.use_nvlamb && h_.weight_decay == 0) trust = 1;
    for (size_t i = 0; i < p.size(); ++i) p[i] -= h_.lr * trust * r[i];
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}, {"exp_avg_sq", v_}}; }

 private:
  LambHyper h_;
  std::vector<double> m_, v_;
  long t_ = 0;
};

}  // namespace reference
