#pragma once
// Double-precision reference for an EMA of the parameters around another rule's reference:
// torch.optim.swa_utils' AveragedModel with get_ema_multi_avg_fn (the first update copies), and
// diffusers EMAModel's decay schedule (update_after_step; (1+s)/(10+s), or with use_ema_warmup
// 1 - (1 + s/inv_gamma)^-power; capped by decay, floored by min_decay), s counted as there:
// s = optimization_step - update_after_step - 1, the decay 0 while s <= 0.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <vkoptim/optimizer.hpp>

namespace reference {

template <class Inner>
class Ema {
 public:
  Ema(Inner inner, const vkoptim::EmaOptions& o) : inner_(std::move(inner)), o_(o) {}
  void set_lr(double lr) { inner_.set_lr(lr); }

  double decay() const {
    const long s = long(t_) - long(o_.update_after_step) - 1;
    if (s <= 0) return 0;
    if (o_.warmup == vkoptim::EmaWarmup::none) return o_.decay;
    double d = o_.warmup == vkoptim::EmaWarmup::ratio ? (1.0 + double(s)) / (10.0 + double(s))
                                                      : 1 - std::pow(1 + double(s) / o_.inv_gamma, -o_.power);
    d = std::min(d, o_.decay);
    return std::max(d, o_.min_decay);
  }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    inner_.step(p, grad);
    ++t_;
    if (ema_.empty()) ema_.assign(p.size(), 0.0);
    const double d = decay();
    for (size_t i = 0; i < p.size(); ++i) ema_[i] += (1 - d) * (p[i] - ema_[i]);  // lerp(ema, p, 1 - d)
  }
  std::map<std::string, std::vector<double>> state() const {
    auto s = inner_.state();
    if (o_.decay > 0) s["ema"] = ema_;
    return s;
  }

 private:
  Inner inner_;
  vkoptim::EmaOptions o_;
  std::vector<double> ema_;
  unsigned long t_ = 0;
};

}  // namespace reference
