#pragma once
// Double-precision reference for ADOPT, from the authors' iShohei220/adopt (clipped version),
// with its step counted from 1 (their step 0 is t = 1):
//   g <- maximize ? -g : g ; not decoupled: g <- g + wd*p
//   t = 1: v <- g^2
//   t > 1: decoupled: p <- p*(1 - lr*wd) ; n = g / max(sqrt(v), eps)
//          use_clipping: n <- clamp(n, -(t-1)^e, (t-1)^e)
//          m <- m + (1-b1)(n - m) ; p <- p - lr*m ; v <- b2*v + (1-b2)*g^2
//
// condition(): how much an error already in p can grow through the rule's own dependence on p.
// With L2 decay, g carries wd*p and the step carries g/sqrt(v), so an error e in p moves n by
// wd e / max(sqrt(v), eps), m (an average of n) by at most as much, and the next step by lr times
// that: each step multiplies e by at most 1 + lr wd / max(sqrt(v), eps). Where the gradient is
// zero and p started near zero, v is (wd p0)^2 and the factor is about lr/|p0|: the element
// follows p's last bits (float32 cannot determine it). Elsewhere the product stays below 2.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdoptHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.9999, eps = 1e-6, weight_decay = 0;
  bool decoupled = false, use_clipping = true;
  double clip_exponent = 0.25;
  bool maximize = false;
};

class Adopt {
 public:
  Adopt(const AdoptHyper& h, size_t n) : h_(h), m_(n, 0.0), v_(n, 0.0), condition_(n, 1.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void set_beta1(double beta1) { h_.beta1 = beta1; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double clip = h_.use_clipping ? std::pow(double(t_ - 1), h_.clip_exponent) : INFINITY;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (!h_.decoupled) g += h_.weight_decay * p[i];
      if (t_ == 1) {
        v_[i] = g * g;
        continue;
      }
      if (h_.decoupled) p[i] *= 1 - h_.lr * h_.weight_decay;
      if (!h_.decoupled) condition_[i] *= 1 + h_.lr * h_.weight_decay / std::max(std::sqrt(v_[i]), h_.eps);
      const double n = std::clamp(g / std::max(std::sqrt(v_[i]), h_.eps), -clip, clip);
      m_[i] += (1 - h_.beta1) * (n - m_[i]);
      p[i] -= h_.lr * m_[i];
      v_[i] = h_.beta2 * v_[i] + (1 - h_.beta2) * g * g;
    }
  }
  std::map<std::string, std::vector<double>> state() const { return {{"exp_avg", m_}, {"exp_avg_sq", v_}}; }
  const std::vector<double>& condition() const { return condition_; }

 private:
  AdoptHyper h_;
  std::vector<double> m_, v_, condition_;
  long t_ = 0;
};

}  // namespace reference
