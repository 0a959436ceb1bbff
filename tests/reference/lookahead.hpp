#pragma once
// Double-precision reference for Lookahead (Zhang et al. 2019; optax lookahead) around any
// reference rule: slow starts at the initial p; after every k-th step of the inner rule
// slow <- slow + alpha*(p - slow) and p <- slow. k = 0: the inner rule alone.
#include <map>
#include <string>
#include <vector>

namespace reference {

template <class Inner>
class Lookahead {
 public:
  Lookahead(Inner inner, unsigned k, double alpha) : inner_(std::move(inner)), k_(k), alpha_(alpha) {}
  void set_lr(double lr) { inner_.set_lr(lr); }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (t_ == 0) slow_ = p;
    inner_.step(p, grad);
    ++t_;
    if (k_ != 0 && t_ % k_ == 0)
      for (size_t i = 0; i < p.size(); ++i) p[i] = slow_[i] = slow_[i] + alpha_ * (p[i] - slow_[i]);
  }
  std::map<std::string, std::vector<double>> state() const {
    auto s = inner_.state();
    if (k_ != 0) s["slow_param"] = slow_;
    return s;
  }

 private:
  Inner inner_;
  unsigned k_;
  double alpha_;
  std::vector<double> slow_;
  unsigned long t_ = 0;
};

}  // namespace reference
