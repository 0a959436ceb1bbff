#pragma once
// Float32 emulation of one torch.optim step on the CPU, element by element: the op sequence of
// each rule's `_single_tensor_<rule>` in torch 2.x (the reference implementation's PyTorch code
// for rules torch does not have), each ATen op rounded to float as torch's CPU kernels round it.
// Written from torch's sources, independent of the runtime and its shaders.
//
// How a torch op rounds (aten/src/ATen/native/cpu, x86-64 builds, which compile the kernels with
// AVX2/AVX-512 and FMA; GCC contracts `a + b*c`, and the vectorized kernels call fmadd):
//   - A Python float argument of an op on a float32 tensor is converted to float first (the
//     scalar is a wrapped 0-d double that does not promote), e.g. value=1-beta2 is
//     float(1 - beta2) with 1 - beta2 computed in double.
//   - t.add(o, alpha=a)           fma(a, o, t)
//   - t.addcmul(t1, t2, value=c)  fma(c*t1, t2, t)
//   - t.addcdiv(t1, t2, value=c)  t + (c*t1)/t2
//   - t.lerp(end, w)              |w| < 0.5 ? fma(w, end-t, t) : fma(-(end-t), 1-w, end),
//                                 1-w computed in float (aten/src/ATen/native/Lerp.h)
//   - mul_, div, sqrt, abs, maximum, clamp: one correctly rounded operation each.
//   - 1/t (Python float / tensor) is t.reciprocal() * float.
// Checked bit for bit against torch 1.13.1 (Debian python3-torch, CPU capability AVX2) where its
// code equals 2.x's; see tests/test_torch_rounding.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vkoptim/rules.hpp"

namespace reference::torch32 {

// torch's x86-64 kernels fuse a*b + c (true, the default). A device whose compiler splits GLSL's
// fma() into a product and a sum (lavapipe on Mesa 22.3) runs the same sequence with the product
// rounded: set false to emulate that; the tests say which one they compared against.
inline bool fused_multiply_add = true;
inline float madd(float a, float b, float c) {
  return fused_multiply_add ? std::fma(a, b, c) : a * b + c;
}

inline float f32(double x) {
  return float(x);
}
inline float add_alpha(float t, float o, double alpha) {
  return madd(f32(alpha), o, t);
}
inline float addcmul(float t, float t1, float t2, double value) {
  return madd(f32(value) * t1, t2, t);
}
inline float addcdiv(float t, float t1, float t2, double value) {
  return t + f32(value) * t1 / t2;
}
inline float lerp(float t, float end, double weight) {
  const float w = f32(weight), d = end - t;
  return std::abs(w) < 0.5f ? madd(w, d, t) : madd(-d, 1.0f - w, end);
}
inline float sign(float x) {
  return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f;
}

// ---- SGD (torch/optim/sgd.py) ----------------------------------------------------------------
// first: the momentum buffer does not exist yet.
inline void sgd(const vkoptim::SgdOptions& o, bool first, float& p, float g, float& buf) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);  // grad.add(param, alpha=wd)
  if (o.momentum != 0) {
    if (first)
      buf = g;  // torch.clone(grad)
    else
      buf = add_alpha(buf * f32(o.momentum), g, 1 - o.dampening);  // buf.mul_(mu).add_(g, alpha=1-d)
    g = o.nesterov ? add_alpha(g, buf, o.momentum) : buf;
  }
  p = add_alpha(p, g, -o.lr);  // param.add_(grad, alpha=-lr)
}

// ---- Adam / AdamW / AMSGrad (torch/optim/adam.py, non-capturable) ------------------------------
// t: the step number after the increment.
inline void adam(const vkoptim::AdamOptions& o, uint64_t t, float& p, float g, float& m, float& v, float& vmax) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) {
    if (o.decoupled_weight_decay)
      p *= f32(1 - o.lr * o.weight_decay);  // param.mul_(1 - lr*wd)
    else
      g = add_alpha(g, p, o.weight_decay);
  }
  m = lerp(m, g, 1 - o.beta1);                       // exp_avg.lerp_(grad, 1-beta1)
  v = addcmul(v * f32(o.beta2), g, g, 1 - o.beta2);  // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1-beta2)
  const double step = double(t);
  const double bc1 = 1 - std::pow(o.beta1, step), bc2 = 1 - std::pow(o.beta2, step);
  const double step_size = o.lr / bc1, bc2_sqrt = std::sqrt(bc2);
  float denom;
  if (o.amsgrad) {
    vmax = std::max(vmax, v);  // torch.maximum(max_exp_avg_sq, exp_avg_sq, out=...)
    denom = std::sqrt(vmax) / f32(bc2_sqrt) + f32(o.eps);
  } else {
    denom = std::sqrt(v) / f32(bc2_sqrt) + f32(o.eps);  // (sqrt(v) / bc2_sqrt).add_(eps)
  }
  p = addcdiv(p, m, denom, -step_size);  // param.addcdiv_(exp_avg, denom, value=-step_size)
}

// ---- Adagrad (torch/optim/adagrad.py) ----------------------------------------------------------
inline void adagrad(const vkoptim::AdagradOptions& o, uint64_t t, float& p, float g, float& sum) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);
  const double clr = o.lr / (1 + double(t - 1) * o.lr_decay);
  sum = addcmul(sum, g, g, 1.0);                   // state_sum.addcmul_(grad, grad, value=1)
  const float std_ = std::sqrt(sum) + f32(o.eps);  // state_sum.sqrt().add_(eps)
  p = addcdiv(p, g, std_, -clr);                   // param.addcdiv_(grad, std, value=-clr)
}

// ---- RMSprop (torch/optim/rmsprop.py) ----------------------------------------------------------
inline void rmsprop(const vkoptim::RmspropOptions& o, float& p, float g, float& square_avg, float& buf,
                    float& grad_avg) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);
  square_avg = addcmul(square_avg * f32(o.alpha), g, g, 1 - o.alpha);
  float avg;
  if (o.centered) {
    grad_avg = lerp(grad_avg, g, 1 - o.alpha);                     // grad_avg.lerp_(grad, 1-alpha)
    avg = std::sqrt(addcmul(square_avg, grad_avg, grad_avg, -1));  // square_avg.addcmul(ga, ga, -1).sqrt_()
  } else {
    avg = std::sqrt(square_avg);
  }
  avg = avg + f32(o.eps);
  if (o.momentum > 0) {
    buf = addcdiv(buf * f32(o.momentum), g, avg, 1.0);  // buf.mul_(momentum).addcdiv_(grad, avg)
    p = add_alpha(p, buf, -o.lr);
  } else {
    p = addcdiv(p, g, avg, -o.lr);
  }
}

// ---- Adadelta (torch/optim/adadelta.py) --------------------------------------------------------
inline void adadelta(const vkoptim::AdadeltaOptions& o, float& p, float g, float& square_avg, float& acc_delta) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);
  square_avg = addcmul(square_avg * f32(o.rho), g, g, 1 - o.rho);
  const float std_ = std::sqrt(square_avg + f32(o.eps));  // square_avg.add(eps).sqrt_()
  float delta = std::sqrt(acc_delta + f32(o.eps));        // acc_delta.add(eps).sqrt_()
  delta = delta / std_ * g;                               // delta.div_(std).mul_(grad)
  acc_delta = addcmul(acc_delta * f32(o.rho), delta, delta, 1 - o.rho);
  p = add_alpha(p, delta, -o.lr);
}

// ---- Adamax (torch/optim/adamax.py) ------------------------------------------------------------
inline void adamax(const vkoptim::AdamaxOptions& o, uint64_t t, float& p, float g, float& m, float& u) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);
  m = lerp(m, g, 1 - o.beta1);
  u = std::max(u * f32(o.beta2), std::abs(g) + f32(o.eps));  // maximum(exp_inf.mul_(b2), g.abs().add_(eps))
  const double clr = o.lr / (1 - std::pow(o.beta1, double(t)));
  p = addcdiv(p, m, u, -clr);
}

// ---- NAdam (torch/optim/nadam.py) --------------------------------------------------------------
// mu_product: the tensor's float32 state (starts at 1), updated here.
inline void nadam(const vkoptim::NadamOptions& o, uint64_t t, float& mu_product, float& p, float g, float& m,
                  float& v) {
  if (o.maximize) g = -g;
  const double step = double(t);
  const double bc2 = 1 - std::pow(o.beta2, step);
  if (o.weight_decay != 0) {
    if (o.decoupled_weight_decay)
      p *= f32(1 - o.lr * o.weight_decay);
    else
      g = add_alpha(g, p, o.weight_decay);
  }
  const double mu = o.beta1 * (1.0 - 0.5 * std::pow(0.96, step * o.momentum_decay));
  const double mu_next = o.beta1 * (1.0 - 0.5 * std::pow(0.96, (step + 1) * o.momentum_decay));
  mu_product *= f32(mu);  // a float32 0-d tensor
  m = lerp(m, g, 1 - o.beta1);
  v = addcmul(v * f32(o.beta2), g, g, 1 - o.beta2);
  float denom = std::sqrt(v / f32(bc2));  // exp_avg_sq.div(bias_correction2).sqrt()
  const double mu_product_next = double(mu_product) * mu_next;
  denom = denom + f32(o.eps);
  p = addcdiv(p, g, denom, -o.lr * (1.0 - mu) / (1.0 - double(mu_product)));
  p = addcdiv(p, m, denom, (-o.lr * mu_next) / (1.0 - mu_product_next));
}

// ---- RAdam (torch/optim/radam.py) --------------------------------------------------------------
inline void radam(const vkoptim::RadamOptions& o, uint64_t t, float& p, float g, float& m, float& v) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) {
    if (o.decoupled_weight_decay)
      p *= f32(1 - o.lr * o.weight_decay);
    else
      g = add_alpha(g, p, o.weight_decay);
  }
  m = lerp(m, g, 1 - o.beta1);
  v = addcmul(v * f32(o.beta2), g, g, 1 - o.beta2);
  const double step = double(t);
  const double bc1 = 1 - std::pow(o.beta1, step), bc2 = 1 - std::pow(o.beta2, step);
  const float corrected = m / f32(bc1);  // exp_avg / bias_correction1
  const double rho_inf = 2 / (1 - o.beta2) - 1;
  const double rho_t = rho_inf - 2 * step * std::pow(o.beta2, step) / bc2;
  if (rho_t > 5.0) {
    const double rect = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
    // bc2**0.5 / (sqrt(v) + eps) is Tensor.__rtruediv__: reciprocal() * float
    const float adaptive = (1.0f / (std::sqrt(v) + f32(o.eps))) * f32(std::sqrt(bc2));
    p = add_alpha(p, corrected * f32(o.lr) * adaptive * f32(rect), -1.0);
  } else {
    p = add_alpha(p, corrected * f32(o.lr), -1.0);
  }
}

// ---- ASGD (torch/optim/asgd.py, non-capturable) ------------------------------------------------
// eta, mu: the tensor's float32 state (start: float(lr), 1), updated here.
inline void asgd(const vkoptim::AsgdOptions& o, uint64_t t, float& eta, float& mu, float& p, float g, float& ax) {
  if (o.maximize) g = -g;
  if (o.weight_decay != 0) g = add_alpha(g, p, o.weight_decay);
  const double eta_value = eta;
  p *= f32(1 - o.lambd * eta_value);  // param.mul_(1 - lambd*eta)
  p = add_alpha(p, g, -eta_value);    // param.add_(grad, alpha=-eta)
  if (mu != 1)
    ax = ax + (p - ax) * mu;  // ax.add_(param.sub(ax).mul_(mu))
  else
    ax = p;
  const double step = double(t);
  eta = f32(o.lr / std::pow(1 + o.lambd * o.lr * step, o.alpha));
  mu = f32(1 / std::max(1.0, step - o.t0));
}

// ---- Rprop (torch/optim/rprop.py) --------------------------------------------------------------
inline void rprop(const vkoptim::RpropOptions& o, float& p, float g, float& prev, float& step_size) {
  if (o.maximize) g = -g;
  float s = sign(g * prev);  // grad.mul(prev).sign()
  s = s > 0 ? f32(o.etaplus) : s < 0 ? f32(o.etaminus) : 1.0f;
  step_size = std::min(std::max(step_size * s, f32(o.step_size_min)), f32(o.step_size_max));
  if (s == f32(o.etaminus)) g = 0;          // grad[sign.eq(etaminus)] = 0
  p = madd(-1.0f * sign(g), step_size, p);  // param.addcmul_(grad.sign(), step_size, value=-1)
  prev = g;
}

// ---- Lion (google/automl lion_pytorch.py) ------------------------------------------------------
inline void lion(const vkoptim::LionOptions& o, float& p, float g, float& m) {
  if (o.maximize) g = -g;
  p *= f32(1 - o.lr * o.weight_decay);                           // p.data.mul_(1 - lr*wd)
  const float update = m * f32(o.beta1) + g * f32(1 - o.beta1);  // exp_avg*beta1 + grad*(1-beta1)
  p = add_alpha(p, sign(update), -o.lr);                         // p.add_(sign(update), alpha=-lr)
  m = add_alpha(m * f32(o.beta2), g, 1 - o.beta2);               // exp_avg.mul_(beta2).add_(grad, alpha=1-beta2)
}

// ---- Lookahead (Zhang et al. 2019): slow.add_(fast - slow, alpha=alpha) ; fast <- slow ----------
inline void lookahead_sync(double alpha, float& p, float& slow) {
  slow = add_alpha(slow, p - slow, alpha);
  p = slow;
}

}  // namespace reference::torch32
