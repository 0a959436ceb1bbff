#pragma once
// Double-precision reference for SGD, written from torch.optim.SGD's definition:
//   g <- maximize ? -g : g ;  g <- g + wd*p
//   momentum != 0:  b <- (first step) ? g : mu*b + (1-dampening)*g
//                   g <- nesterov ? g + mu*b : b
//   p <- p - lr*g
// and the textbook EMA form: b starts at 0, b <- mu*b + (1-mu)*g every step,
// nesterov uses (1-mu)*g + mu*b.
#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct SgdHyper {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false, ema = false;
  bool dampen_first_step = false;  // MLX: the first step sets b <- (1-dampening)*g
  bool decoupled = false;          // SGDW: p <- p*(1 - lr*wd) instead of L2
};

class Sgd {
 public:
  Sgd(const SgdHyper& h, size_t n) : h_(h), buf_(n, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }

  void step(std::vector<double>& p, const std::vector<double>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h_.maximize ? -grad[i] : grad[i];
      if (h_.decoupled)
        p[i] *= 1 - h_.lr * h_.weight_decay;
      else
        g = g + h_.weight_decay * p[i];
      if (h_.momentum != 0) {
        if (h_.ema) {
          buf_[i] = h_.momentum * buf_[i] + (1 - h_.momentum) * g;
          g = h_.nesterov ? (1 - h_.momentum) * g + h_.momentum * buf_[i] : buf_[i];
        } else {
          buf_[i] = first_ ? (h_.dampen_first_step ? (1 - h_.dampening) * g : g)
                           : h_.momentum * buf_[i] + (1 - h_.dampening) * g;
          g = h_.nesterov ? g + h_.momentum * buf_[i] : buf_[i];
        }
      }
      p[i] = p[i] - h_.lr * g;
    }
    first_ = false;
  }

  // Loading a buffer makes the next step a regular one (torch: the buffer exists).
  void set_state(const std::string& name, const std::vector<double>& values) {
    if (name == "momentum_buffer") {
      buf_ = values;
      first_ = false;
    }
  }

  std::map<std::string, std::vector<double>> state() const {
    if (h_.momentum == 0) return {};
    return {{"momentum_buffer", buf_}};
  }

 private:
  SgdHyper h_;
  std::vector<double> buf_;
  bool first_ = true;
};

}  // namespace reference
