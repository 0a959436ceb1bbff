#pragma once
// Double-precision references for row-sparse steps of embedding tables (vkoptim::SparseOptimizer):
// the gradient (indices, one row of values per index) is coalesced as torch's coalesce does
// (duplicates summed), then on each distinct row:
//   SparseAdam (torch.optim.SparseAdam), t the optimizer's step:
//     m <- m + (1-b1)(g - m) ; v <- v + (1-b2)(g^2 - v) ; p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)
//   Adagrad (torch.optim.Adagrad, sparse gradient): sum <- sum + g^2 ; p <- p - clr*g/(sqrt(sum)+eps),
//     clr = lr/(1 + (t-1)*lr_decay)
//   FTRL (TensorFlow's SparseApplyFtrlV2): the dense FTRL-Proximal element update (reference/ftrl.hpp).
// maximize negates g first. Rows the gradient does not name keep every value.
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace reference {

inline constexpr uint32_t kSkipRow = 0xFFFFFFFFu;

// Row -> the sum of its rows of values; kSkipRow positions dropped. The sums are float32, in
// position order, as torch's coalesce of a float32 gradient adds duplicates: that is the
// gradient the rule then sees (in double here).
inline std::map<uint32_t, std::vector<double>> coalesce(const std::vector<uint32_t>& indices,
                                                        const std::vector<float>& values, size_t dim) {
  std::map<uint32_t, std::vector<float>> sums;
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] == kSkipRow) continue;
    auto& row = sums[indices[i]];
    row.resize(dim, 0.0f);
    for (size_t j = 0; j < dim; ++j) row[j] += values[i * dim + j];
  }
  std::map<uint32_t, std::vector<double>> rows;
  for (const auto& [row, v] : sums) rows[row].assign(v.begin(), v.end());
  return rows;
}

struct SparseHyper {
  enum class Rule { sparse_adam, adagrad, ftrl } rule = Rule::sparse_adam;
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;       // SparseAdam (eps also Adagrad's)
  double lr_decay = 0, initial_accumulator_value = 0;  // Adagrad (the accumulator also FTRL's)
  double learning_rate_power = -0.5, l1 = 0, l2 = 0, l2_shrinkage = 0, beta = 0;  // FTRL
  bool maximize = false;
};

// One table of rows x dim and its state.
class SparseRows {
 public:
  SparseRows(const SparseHyper& h, size_t rows, size_t dim)
      : h_(h),
        dim_(dim),
        s0_(rows * dim, h.rule == SparseHyper::Rule::sparse_adam ? 0.0 : h.initial_accumulator_value),
        s1_(rows * dim, 0.0),
        terms_(rows * dim, 0.0) {}
  void set_lr(double lr) { h_.lr = lr; }

  void step(std::vector<double>& p, const std::vector<uint32_t>& indices, const std::vector<float>& values) {
    ++t_;
    for (const auto& [row, grad] : coalesce(indices, values, dim_))
      for (size_t j = 0; j < dim_; ++j) {
        const size_t at = row * dim_ + j;
        update(p[at], s0_[at], s1_[at], terms_[at], grad[j]);
      }
  }
  // State by torch's (TensorFlow's) names.
  std::map<std::string, std::vector<double>> state() const {
    switch (h_.rule) {
      case SparseHyper::Rule::sparse_adam:
        return {{"exp_avg", s0_}, {"exp_avg_sq", s1_}};
      case SparseHyper::Rule::adagrad:
        return {{"sum", s0_}};
      default:
        return {{"accumulator", s0_}, {"linear", s1_}};
    }
  }
  long step_count() const { return t_; }
  // FTRL's linear adds terms that cancel (g + 2*l2_shrinkage*w - sigma*w): the sum of their
  // magnitudes over the steps bounds its float32 error, which its own size does not.
  std::vector<double> linear_terms() const { return terms_; }

 private:
  void update(double& p, double& s0, double& s1, double& terms, double g) const {
    if (h_.maximize) g = -g;
    if (h_.rule == SparseHyper::Rule::sparse_adam) {
      s0 += (1 - h_.beta1) * (g - s0);
      s1 += (1 - h_.beta2) * (g * g - s1);
      const double step_size = h_.lr * std::sqrt(1 - std::pow(h_.beta2, t_)) / (1 - std::pow(h_.beta1, t_));
      p -= step_size * s0 / (std::sqrt(s1) + h_.eps);
    } else if (h_.rule == SparseHyper::Rule::adagrad) {
      const double clr = h_.lr / (1 + double(t_ - 1) * h_.lr_decay);
      s0 += g * g;
      p -= clr * g / (std::sqrt(s0) + h_.eps);
    } else {
      const double power = -h_.learning_rate_power;
      const double n_new = s0 + g * g;
      s1 += g + 2 * h_.l2_shrinkage * p - (std::pow(n_new, power) - std::pow(s0, power)) / h_.lr * p;
      terms += std::abs(g) + std::abs(2 * h_.l2_shrinkage * p) +
               (std::pow(n_new, power) + std::pow(s0, power)) / h_.lr * std::abs(p);
      const double quadratic = std::pow(n_new, power) / h_.lr + 2 * h_.l2 + h_.beta / h_.lr;
      p = std::abs(s1) > h_.l1 ? (h_.l1 * (s1 > 0 ? 1 : -1) - s1) / quadratic : 0.0;
      s0 = n_new;
    }
  }

  SparseHyper h_;
  size_t dim_;
  std::vector<double> s0_, s1_, terms_;
  long t_ = 0;
};

}  // namespace reference
