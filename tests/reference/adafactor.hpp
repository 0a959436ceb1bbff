#pragma once
// Double-precision reference for Adafactor, from torch.optim.Adafactor (_single_tensor_adafactor):
//   w = t^beta2_decay ; rho = min(lr, 1/sqrt(t)) ; alpha = max(eps2, |p|/sqrt(n)) * rho
//   p <- p*(1 - lr*wd)
//   2-D (rows x cols): R <- lerp(R, sum_j g^2/cols, w) ; C <- lerp(C, sum_i g^2/rows, w)
//                      V = R_i C_j / max(mean(R), eps1)
//   1-D:               V <- lerp(V, g^2, w)
//   U = g / sqrt(max(V, eps1^2)) ; u = alpha / max(1, |U|/(sqrt(n) d)) * U
//   beta1 > 0 (Hugging Face's first moment): m <- b1*m + (1-b1)*u ; u = m
//   p <- p - u
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace reference {

struct AdafactorHyper {
  double lr = 1e-2, beta2_decay = -0.8, eps1 = 1.1920928955078125e-07, eps2 = 1e-3, d = 1, weight_decay = 0;
  bool maximize = false;
  double beta1 = 0;
};

class Adafactor {
 public:
  // rows = 0: a 1-D tensor of n elements; else rows x n/rows.
  Adafactor(const AdafactorHyper& h, size_t n, size_t rows = 0)
      : h_(h),
        rows_(rows),
        cols_(rows ? n / rows : 0),
        r_(rows, 0.0),
        c_(cols_, 0.0),
        v_(rows ? 0 : n, 0.0),
        m_(h.beta1 > 0 ? n : 0, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t_;
    const double n = double(p.size()), t = double(t_);
    const double w = std::pow(t, h_.beta2_decay);
    const double rho = std::min(h_.lr, 1 / std::sqrt(t));
    double p_sq = 0;
    for (double x : p) p_sq += x * x;
    const double alpha = std::max(h_.eps2, std::sqrt(p_sq) / std::sqrt(n)) * rho;
    for (double& x : p) x *= 1 - h_.lr * h_.weight_decay;
    std::vector<double> g(grad);
    if (h_.maximize)
      for (double& x : g) x = -x;
    std::vector<double> estimate(p.size());
    if (rows_) {
      for (size_t i = 0; i < rows_; ++i) {
        double s = 0;
        for (size_t j = 0; j < cols_; ++j) s += g[i * cols_ + j] * g[i * cols_ + j];
        r_[i] += w * (s / double(cols_) - r_[i]);
      }
      for (size_t j = 0; j < cols_; ++j) {
        double s = 0;
        for (size_t i = 0; i < rows_; ++i) s += g[i * cols_ + j] * g[i * cols_ + j];
        c_[j] += w * (s / double(rows_) - c_[j]);
      }
      double mean = 0;
      for (double x : r_) mean += x;
      mean = std::max(mean / double(rows_), h_.eps1);
      for (size_t e = 0; e < p.size(); ++e) estimate[e] = r_[e / cols_] * c_[e % cols_] / mean;
    } else {
      for (size_t e = 0; e < p.size(); ++e) {
        v_[e] += w * (g[e] * g[e] - v_[e]);
        estimate[e] = v_[e];
      }
    }
    std::vector<double> u(p.size());
    double u_sq = 0;
    for (size_t e = 0; e < p.size(); ++e) {
      u[e] = g[e] / std::sqrt(std::max(estimate[e], h_.eps1 * h_.eps1));
      u_sq += u[e] * u[e];
    }
    const double denom = std::max(1.0, std::sqrt(u_sq) / (std::sqrt(n) * h_.d));
    for (size_t e = 0; e < p.size(); ++e) {
      double step = alpha / denom * u[e];
      if (h_.beta1 > 0) step = m_[e] = h_.beta1 * m_[e] + (1 - h_.beta1) * step;
      p[e] -= step;
    }
  }
  std::map<std::string, std::vector<double>> state() const {
    std::map<std::string, std::vector<double>> s;
    if (rows_)
      s = {{"row_var", r_}, {"col_var", c_}};
    else
      s = {{"variance", v_}};
    if (h_.beta1 > 0) s["exp_avg"] = m_;
    return s;
  }

 private:
  AdafactorHyper h_;
  size_t rows_, cols_;
  std::vector<double> r_, c_, v_, m_;
  long t_ = 0;
};

}  // namespace reference
