#pragma once
// Muon (torch.optim.Muon, torch/optim/_muon.py) in double, and AdamW (torch.optim.AdamW) for
// groups with use_muon = false (Keller Jordan's MuonWithAuxAdam).
//   B <- lerp(B, g, 1-mu) ; U = nesterov ? lerp(g, B, mu) : B
//   X = U (transposed when rows > cols) ; X <- X / max(|X|_F, eps)
//   ns_steps times: A = X X^T ; Bm = b*A + c*A*A ; X <- a*X + Bm*X
//   p <- p*(1 - lr*wd) ; p <- p - lr*f*X^(T)          f: the adjust_lr factor
// With bf16, the values torch's bf16 Newton-Schulz rounds are rounded here at the same points:
// U, the norm, X, and every product's result (the sums themselves stay double).
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "reference/adam.hpp"
#include "reference/precision.hpp"

namespace reference {

struct MuonHyper {
  double lr = 1e-3, weight_decay = 0.1, momentum = 0.95;
  bool nesterov = true;
  double a = 3.4445, b = -4.775, c = 2.0315, eps = 1e-7;
  unsigned ns_steps = 5;
  unsigned adjust_lr = 0;  // 0 original, 1 match_rms_adamw, 2 spectral_unclamped
  bool bf16 = true;
  bool use_muon = true;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-10;
};

// The orthogonalised update of a rows x cols matrix U (row-major), in U's layout.
inline std::vector<double> newton_schulz(const MuonHyper& h, const std::vector<double>& u, size_t rows, size_t cols) {
  auto round = [&](double v) { return h.bf16 ? double(round_bf16(float(v))) : v; };
  const bool transposed = rows > cols;
  const size_t m = std::min(rows, cols), n = std::max(rows, cols);
  std::vector<double> x(m * n);
  double sum = 0;
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double v = round(transposed ? u[j * cols + i] : u[i * cols + j]);
      x[i * n + j] = v;
      sum += v * v;
    }
  const double divisor = round(std::max(round(std::sqrt(sum)), h.eps));
  for (double& v : x) v = round(v / divisor);
  std::vector<double> a(m * m), bm(m * m), next(m * n);
  for (unsigned it = 0; it < h.ns_steps; ++it) {
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < m; ++j) {
        double s = 0;
        for (size_t q = 0; q < n; ++q) s += x[i * n + q] * x[j * n + q];
        a[i * m + j] = round(s);
      }
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < m; ++j) {
        double s = 0;
        for (size_t q = 0; q < m; ++q) s += a[i * m + q] * a[q * m + j];
        bm[i * m + j] = round(h.c * s + h.b * a[i * m + j]);
      }
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < n; ++j) {
        double s = 0;
        for (size_t q = 0; q < m; ++q) s += bm[i * m + q] * x[q * n + j];
        next[i * n + j] = round(s + h.a * x[i * n + j]);
      }
    x.swap(next);
  }
  std::vector<double> out(rows * cols);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) (transposed ? out[j * cols + i] : out[i * cols + j]) = x[i * n + j];
  return out;
}

inline double muon_lr_factor(const MuonHyper& h, double rows, double cols) {
  if (h.adjust_lr == 1) return 0.2 * std::sqrt(std::max(rows, cols));
  if (h.adjust_lr == 2) return std::sqrt(rows / cols);
  return std::sqrt(std::max(1.0, rows / cols));
}

class Muon {
 public:
  // A Muon matrix of rows x (n / rows), or (use_muon = false) AdamW over n elements.
  Muon(const MuonHyper& h, size_t n, size_t rows = 0) : h_(h), rows_(rows), buf_(n, 0.0), adam_(adam_hyper(h), n) {}
  void set_lr(double lr) { h_.lr = lr, adam_.set_lr(lr); }

  void step(std::vector<double>& p, const std::vector<double>& g) {
    if (!h_.use_muon) return adam_.step(p, g);
    const size_t n = p.size(), cols = n / rows_;
    std::vector<double> u(n);
    for (size_t i = 0; i < n; ++i) {
      buf_[i] = buf_[i] + (1 - h_.momentum) * (g[i] - buf_[i]);
      u[i] = h_.nesterov ? g[i] + h_.momentum * (buf_[i] - g[i]) : buf_[i];
    }
    last_update_ = newton_schulz(h_, u, rows_, cols);
    const double lr_adjusted = h_.lr * muon_lr_factor(h_, double(rows_), double(cols));
    for (size_t i = 0; i < n; ++i) p[i] = p[i] * (1 - h_.lr * h_.weight_decay) - lr_adjusted * last_update_[i];
  }

  void set_step(long t) { adam_.set_step(t); }
  void set_state(const std::string& name, const std::vector<double>& values) {
    if (name == "momentum_buffer") buf_ = values;
    adam_.set_state(name, values);
  }
  std::map<std::string, std::vector<double>> state() const {
    if (!h_.use_muon) return adam_.state();
    return {{"momentum_buffer", buf_}};
  }
  // The last step's orthogonalised update (Muon matrices).
  const std::vector<double>& last_update() const { return last_update_; }

 private:
  static AdamHyper adam_hyper(const MuonHyper& h) {
    AdamHyper a;
    a.lr = h.lr, a.beta1 = h.beta1, a.beta2 = h.beta2, a.eps = h.adam_eps, a.weight_decay = h.weight_decay;
    a.decoupled = true;
    return a;
  }
  MuonHyper h_;
  size_t rows_;
  std::vector<double> buf_, last_update_;
  Adam adam_;
};

}  // namespace reference
