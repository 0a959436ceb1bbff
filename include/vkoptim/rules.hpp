#pragma once
// Options of every update rule. Names and defaults follow torch.optim where torch has the rule;
// parity switches reproduce other libraries (each documented with its formula). All options
// are plain data: any of them may change between steps (Optimizer::set_options), except those
// that change which state exists once state was allocated.
//
// Notation: t = step number (1 on the first step), g = gradient (negated when maximize),
// p = parameter, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. "L2" decay: g <- g + wd*p.
// "Decoupled" decay: p <- p*(1 - lr*wd) before the update.
#include <cstdint>
#include <span>
#include <variant>

namespace vkoptim {

// Cautious updates (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085; timm's
// caution=True) for Adam/AdamW, Lion and SGD with momentum: the update direction d (Adam: m;
// Lion: sign(b1*m + (1-b1)*g); SGD: b, or g + mu*b with nesterov) is kept where it agrees in sign
// with the gradient g (after maximize and L2 decay) and rescaled by the share kept in the tensor:
//   mask = (d*g > 0) ; d <- d * mask / max(mean(mask), 1e-3)
// The mean needs the whole tensor, so a cautious step takes three passes (the direction and the
// per-block counts, their per-tensor sums, the update). Every group of an optimizer takes the same
// passes: cautious is the same in all its groups, set when the optimizer is created (set_options
// and loads refuse changing it).

// How SGD's momentum buffer b evolves.
enum class MomentumForm : uint32_t {
  // torch.optim.SGD: b <- g on the first step, then b <- mu*b + (1-dampening)*g;
  // nesterov uses g + mu*b.
  torch = 0,
  // Textbook exponential moving average starting from zero: b <- mu*b + (1-mu)*g from the first
  // step on (dampening must be 0); nesterov uses (1-mu)*g + mu*b.
  ema = 1,
};

// torch.optim.SGD. State: momentum_buffer (when momentum != 0).
struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;              // L2 unless decoupled_weight_decay
  bool nesterov = false;                // needs momentum > 0 and dampening == 0
  bool decoupled_weight_decay = false;  // SGDW: p <- p*(1 - lr*wd) before the update
  bool maximize = false;
  MomentumForm momentum_form = MomentumForm::torch;
  // Parity (MLX): the first step sets b <- (1-dampening)*g instead of b <- g.
  bool dampen_first_step = false;
  bool cautious = false;  // see above; needs momentum > 0
};

// Where decoupled weight decay is applied.
enum class DecayOrder : uint32_t {
  before = 0,  // p <- p*(1-lr*wd), then the update (torch, MLX, Lion reference)
  after = 1,   // the update, then p <- p*(1-lr*wd) (bitsandbytes)
};

// What AMSGrad keeps the maximum of.
enum class AmsgradMax : uint32_t {
  raw = 0,             // vmax <- max(vmax, v); denominator sqrt(vmax)/sqrt(bc2) (torch)
  bias_corrected = 1,  // vmax <- max(vmax, v/bc2); denominator sqrt(vmax) (optax)
};

// torch.optim.Adam / AdamW. State: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad).
//   m <- b1*m + (1-b1)*g ;  v <- b2*v + (1-b2)*g^2
//   p <- p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;
  // false: L2 (torch.optim.Adam). true: decoupled (torch.optim.AdamW).
  bool decoupled_weight_decay = false;
  // Parity switches.
  bool bias_correction = true;  // false: bc1 = bc2 = 1 (MLX default, DeepSpeed 1-bit Adam)
  double eps_root = 0;          // optax: denominator sqrt(v/bc2 + eps_root) + eps
  AmsgradMax amsgrad_max = AmsgradMax::raw;
  DecayOrder decay_order = DecayOrder::before;  // decoupled decay only
  bool cautious = false;                        // see above (timm's caution=True: C-AdamW)
};

// torch.optim.AdamW defaults: decoupled decay with weight_decay = 1e-2.
inline AdamOptions adamw_options() {
  AdamOptions o;
  o.weight_decay = 1e-2;
  o.decoupled_weight_decay = true;
  return o;
}

// torch.optim.Adagrad. State: sum (starts at initial_accumulator_value).
//   sum <- sum + g^2 ;  p <- p - lr/(1 + (t-1)*lr_decay) * g / (sqrt(sum) + eps)
struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0;
  double weight_decay = 0;  // L2
  double initial_accumulator_value = 0;
  double eps = 1e-10;
  bool maximize = false;
  bool decoupled_weight_decay = false;  // p <- p*(1 - lr*wd) instead of L2 (Apex adagrad_w_mode)
};

// torch.optim.RMSprop. State: square_avg, momentum_buffer (momentum > 0), grad_avg (centered).
//   v <- alpha*v + (1-alpha)*g^2 ; centered: gbar <- alpha*gbar + (1-alpha)*g
//   d <- sqrt(v - gbar^2) + eps  (eps_in_sqrt: sqrt(v - gbar^2 + eps), optax's default)
//   momentum: b <- mu*b + g/d ; p <- p - lr*b   else p <- p - lr*g/d
struct RmspropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0;  // L2
  double momentum = 0;
  bool centered = false;
  bool maximize = false;
  bool decoupled_weight_decay = false;  // p <- p*(1 - lr*wd) instead of L2
  bool eps_in_sqrt = false;             // parity (optax, TensorFlow)
};

// torch.optim.Adadelta. State: square_avg, acc_delta.
//   v <- rho*v + (1-rho)*g^2 ; d <- sqrt(u + eps)/sqrt(v + eps)*g ; u <- rho*u + (1-rho)*d^2
//   p <- p - lr*d
struct AdadeltaOptions {
  double lr = 1.0;
  double rho = 0.9;
  double eps = 1e-6;
  double weight_decay = 0;  // L2
  bool maximize = false;
  bool decoupled_weight_decay = false;  // p <- p*(1 - lr*wd) instead of L2
};

// torch.optim.Adamax. State: exp_avg, exp_inf.
//   m <- b1*m + (1-b1)*g ; u <- max(b2*u, |g| + eps) ; p <- p - lr/bc1 * m/u
struct AdamaxOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // L2
  bool maximize = false;
  bool decoupled_weight_decay = false;  // p <- p*(1 - lr*wd) instead of L2 (optax adamaxw)
};

// torch.optim.NAdam (Dozat's momentum schedule). State: exp_avg, exp_avg_sq, mu_product (scalar).
//   mu_t = b1*(1 - 0.5*0.96^(t*psi)), mu_{t+1} likewise ; P <- P*mu_t   (psi = momentum_decay)
//   m, v as Adam ; d = sqrt(v/bc2) + eps
//   p <- p - lr*(1-mu_t)/(1-P) * g/d - lr*mu_{t+1}/(1-P*mu_{t+1}) * m/d
struct NadamOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  double momentum_decay = 4e-3;
  bool decoupled_weight_decay = false;
  bool maximize = false;
};

// torch.optim.RAdam. State: exp_avg, exp_avg_sq.
//   rho_inf = 2/(1-b2) - 1 ; rho_t = rho_inf - 2t*b2^t/bc2
//   rho_t > 5: r = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))
//              p <- p - lr * m/bc1 * r * sqrt(bc2)/(sqrt(v) + eps)
//   else:      p <- p - lr * m/bc1
struct RadamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;
  bool maximize = false;
};

// torch.optim.ASGD. State: ax (average), eta and mu (scalars).
//   p <- p*(1 - lambd*eta) - eta*g ; ax <- (mu == 1) ? p : ax + mu*(p - ax)
//   then eta <- lr/(1 + lambd*lr*t)^alpha ; mu <- 1/max(1, t - t0)
struct AsgdOptions {
  double lr = 1e-2;
  double lambd = 1e-4;
  double alpha = 0.75;
  double t0 = 1e6;
  double weight_decay = 0;  // L2
  bool maximize = false;
};

// torch.optim.Rprop. State: prev, step_size (starts at lr).
//   s = sign(g*prev): > 0 -> etaplus, < 0 -> etaminus, 0 -> 1
//   step_size <- clamp(step_size*s, step_size_min, step_size_max) ; s < 0: g <- 0
//   p <- p - sign(g)*step_size ; prev <- g
struct RpropOptions {
  double lr = 1e-2;
  double etaminus = 0.5;
  double etaplus = 1.2;
  double step_size_min = 1e-6;
  double step_size_max = 50;
  bool maximize = false;
};

// Lion (Chen et al. 2023, google/automl lion_pytorch.py). State: exp_avg.
//   p <- p*(1 - lr*wd) ; p <- p - lr*sign(b1*m + (1-b1)*g) (sign(0) = 0) ; m <- b2*m + (1-b2)*g
struct LionOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weight_decay = 0;  // decoupled
  bool maximize = false;
  bool cautious = false;  // see above (timm's Lion with caution=True)
};

// Schedule-Free AdamW (Defazio et al. 2024, facebookresearch/schedule_free reference). The
// parameter holds y (where gradients are taken); state: z, exp_avg_sq, x (the evaluation
// point: read_state(i, "x")), and scalars lr_max, weight_sum. z and x start at p on the first step.
//   lr_k = lr * min(1, k/warmup_steps) * sqrt(1 - b2^k) ; lr_max = max(lr_max, lr_k)
//   w = k^r * lr_max^weight_lr_power ; weight_sum += w ; c = w / weight_sum        (k = t)
//   z <- z - lr_k*wd*(decay_at_z ? z : y) ; v <- b2*v + (1-b2)*g^2 ; z <- z - lr_k*g/(sqrt(v)+eps)
//   x <- (1-c)*x + c*z ; p = y <- b1*x + (1-b1)*z
struct ScheduleFreeAdamwOptions {
  double lr = 0.0025;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  uint32_t warmup_steps = 0;
  double r = 0;
  double weight_lr_power = 2;
  bool decay_at_z = false;
};

// LAMB (You et al. 2019; Apex FusedLAMB / DeepSpeed / optax form). State: exp_avg, exp_avg_sq.
//   m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g^2 ; r = (m/bc1)/(sqrt(v/bc2) + eps) + wd*p
//   trust = (|p| > 0 and |r| > 0) ? |p|/|r| : 1   (per tensor, L2 norms, deterministic sums)
//   max_trust_ratio > 0: trust <- clamp(trust, min_trust_ratio, max_trust_ratio) (DeepSpeed: 0.01, 10)
//   use_nvlamb false and weight_decay == 0: trust <- 1
//   p <- p - lr*trust*r
// use_nvlamb = true (the default) applies the trust ratio whatever the weight decay: optax's lamb,
// Apex's use_nvlamb=True, DeepSpeed. false is Apex FusedLAMB's default (use_nvlamb=False): a
// group without weight decay takes plain Adam-like steps of lr.
struct LambOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-6;
  double weight_decay = 0.01;
  bool bias_correction = true;
  double min_trust_ratio = 0;
  double max_trust_ratio = 0;  // 0: no clamp
  bool maximize = false;
  bool use_nvlamb = true;
};

// Adafactor, torch.optim.Adafactor (Shazeer & Stern 2018 with torch's eps1 and lr handling).
// Tensors given as 2-D (ParamTensor::rows) keep factored row and column second moments, others a
// full one. Factored tensors need the buffer device address path.
//   w = t^beta2_decay ; rho = min(lr, 1/sqrt(t)) ; alpha = max(eps2, RMS(p)) * rho   (p before decay)
//   p <- p*(1 - lr*wd)
//   2-D: R <- lerp(R, mean_cols(g^2), w) ; C <- lerp(C, mean_rows(g^2), w)
//        V = R C^T / max(mean(R), eps1)
//   1-D: V <- lerp(V, g^2, w)
//   U = g / sqrt(max(V, eps1^2)) ; u = alpha / max(1, RMS(U)/d) * U
//   beta1 > 0 (optional first moment, as Hugging Face's Adafactor): m <- b1*m + (1-b1)*u ; u = m
//   p <- p - u
// State: row_var, col_var (2-D) or variance (1-D); exp_avg when beta1 > 0.
struct AdafactorOptions {
  double lr = 1e-2;
  double beta2_decay = -0.8;
  double eps1 = 1.1920928955078125e-07;  // torch's None: float32 machine epsilon
  double eps2 = 1e-3;
  double d = 1.0;
  double weight_decay = 0;
  double beta1 = 0;  // 0: no first moment (torch)
  bool maximize = false;
};

// ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
// Optimal Rate"; the authors' iShohei220/adopt, clipped version). State: exp_avg, exp_avg_sq.
//   g <- maximize ? -g : g ; not decoupled: g <- g + wd*p
//   step 1: v <- g^2 (nothing else; the parameter does not move)
//   step t > 1: decoupled: p <- p*(1 - lr*wd)
//               n = g / max(sqrt(v), eps) ; use_clipping: n <- clamp(n, -c, c), c = (t-1)^clip_exponent
//               m <- lerp(m, n, 1-b1) ; p <- p - lr*m ; v <- b2*v + (1-b2)*g^2
// (the reference's clip_lambda(step) = step**0.25 with its step counted from 0 is (t-1)^0.25.)
struct AdoptOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.9999;
  double eps = 1e-6;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // the reference's `decouple`
  bool use_clipping = true;             // false: the first, unclipped ADOPT (clip_lambda=None)
  double clip_exponent = 0.25;
  bool maximize = false;
};

// FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches"), as
// TensorFlow's ApplyFtrlV2 and Keras' Ftrl compute it. State: accumulator (starts at
// initial_accumulator_value), linear. With p = -learning_rate_power (0.5 by default):
//   g <- maximize ? -g : g ; n' = n + g^2
//   linear <- linear + (g + 2*l2_shrinkage*w) - (n'^p - n^p)/lr * w
//   w <- |linear| > l1 ? (l1*sign(linear) - linear) / (n'^p/lr + 2*l2 + beta/lr) : 0 ; n <- n'
// (p = 0.5 uses square roots, as TensorFlow does.) The weight is recomputed from `linear` every
// step: the parameter's value before the first step only enters through w in the linear update.
struct FtrlOptions {
  double lr = 1e-3;  // > 0 (the update divides by it); a step where a schedule gives 0 changes nothing
  double learning_rate_power = -0.5;
  double initial_accumulator_value = 0.1;
  double l1 = 0;
  double l2 = 0;
  double l2_shrinkage = 0;
  double beta = 0;
  bool maximize = false;
};

// StableAdamW (Wortsman et al. 2023; optimi's StableAdamW): AdamW with debiased betas and a
// per-tensor update clip. State: exp_avg, exp_avg_sq.
//   g <- maximize ? -g : g ; b^ = b(1 - b^(t-1))/(1 - b^t)   (0 on the first step)
//   m <- lerp(m, g, 1-b1^) ; v <- b2^*v + (1-b2^)*g^2
//   rms = sqrt(mean over the tensor of g^2 / max(v, eps^2)) ; lr' = lr / max(1, rms)
//   p <- p*(1 - lr'*wd) ; p <- p - lr' * m / (sqrt(v) + eps)
struct StableAdamwOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double eps = 1e-6;
  double weight_decay = 1e-2;  // decoupled
  bool maximize = false;
};

// AdEMAMix (Pagliardini, Ablin and Grangier 2024, "The AdEMAMix Optimizer: Better, Faster,
// Older"; the authors' apple/ml-ademamix PyTorch AdEMAMix). Adam with a second, slow EMA of the
// gradient mixed into the numerator. State: exp_avg_fast, exp_avg_slow, exp_avg_sq.
//   g <- maximize ? -g : g
//   alpha_t = alpha * min(1, t/alpha_warmup)                     (alpha_warmup 0: alpha)
//   b3_t = 0.5^(1/(h+1)), h = (1-a)*f(b1) + a*f(b3), a = t/beta3_warmup, f(b) = ln 0.5/ln(b+1e-8) - 1
//          while t < beta3_warmup, else b3         (a warmup of the slow EMA's half-life from b1's)
//   m1 <- b1*m1 + (1-b1)*g ; m2 <- b3_t*m2 + (1-b3_t)*g ; v <- b2*v + (1-b2)*g^2
//   p <- p - lr*((m1/(1-b1^t) + alpha_t*m2) / (sqrt(v)/sqrt(1-b2^t) + eps) + wd*p)
// The slow EMA is not bias-corrected; weight decay is decoupled (inside the lr-scaled update).
// With beta1 = 0 m1 is g (exp_avg_fast is still kept).
struct AdemamixOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double beta3 = 0.9999;
  double alpha = 2.0;
  uint32_t beta3_warmup = 0;  // steps of the half-life warmup of beta3 (0: none)
  uint32_t alpha_warmup = 0;  // steps of the linear warmup of alpha (0: none)
  double eps = 1e-8;
  double weight_decay = 0;
  bool maximize = false;
};

// How Muon scales lr for a rows x cols matrix (torch.optim.Muon's adjust_lr_fn).
enum class MuonLrAdjust : uint32_t {
  original = 0,            // lr * sqrt(max(1, rows/cols)) (Keller Jordan's; torch's default)
  match_rms_adamw = 1,     // 0.2 * lr * sqrt(max(rows, cols)) (Moonlight)
  spectral_unclamped = 2,  // lr * sqrt(rows/cols)
};

// Muon (torch.optim.Muon; Keller Jordan 2024). Parameters of a Muon group must be 2-D
// (ParamTensor::rows). State: momentum_buffer.
//   B <- lerp(B, g, 1-momentum) ; U = nesterov ? lerp(g, B, momentum) : B
//   X = U, transposed when rows > cols ; X <- X / max(|X|_F, eps)
//   ns_steps times: A = X X^T ; Bm = ns_b*A + ns_c*A*A ; X <- ns_a*X + Bm*X
//   p <- p*(1 - lr*wd) ; p <- p - lr'*X (transposed back)        (lr' from adjust_lr)
// With ns_bf16 (torch's only form) X, A and Bm hold bf16 values: U and |X|_F are rounded to
// bf16, each product is accumulated in float32 and rounded to bf16, as torch's bf16 matmuls are.
// Off: float32 throughout. The products run as batched GEMMs (every matrix of the step in one
// dispatch per product), which need buffer device addresses (Addressing::device_address).
//
// A group with use_muon = false runs AdamW instead, on tensors of any shape, as Keller Jordan's
// MuonWithAuxAdam does (torch.optim.AdamW's math, with lr, weight_decay, beta1, beta2 and adam_eps;
// state exp_avg, exp_avg_sq): one optimizer for the usual recipe of Muon on the hidden matrices
// and AdamW on embeddings, heads, biases and norms.
//
// ns_steps, the ns coefficients and ns_bf16 are fixed once state is allocated (the products'
// job tables are built then); use_muon is part of which state a group keeps.
struct MuonOptions {
  double lr = 1e-3;
  double weight_decay = 0.1;  // decoupled, with the unadjusted lr
  double momentum = 0.95;
  bool nesterov = true;
  double ns_a = 3.4445, ns_b = -4.775, ns_c = 2.0315;  // torch's ns_coefficients
  double eps = 1e-7;
  uint32_t ns_steps = 5;  // 0 .. 99
  MuonLrAdjust adjust_lr = MuonLrAdjust::original;
  bool ns_bf16 = true;
  bool use_muon = true;
  // AdamW's, in groups with use_muon = false (MuonWithAuxAdam's defaults).
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-10;
};

using RuleOptions =
    std::variant<SgdOptions, AdamOptions, AdagradOptions, RmspropOptions, AdadeltaOptions, AdamaxOptions, NadamOptions,
                 RadamOptions, AsgdOptions, RpropOptions, LionOptions, ScheduleFreeAdamwOptions, LambOptions,
                 AdafactorOptions, AdoptOptions, FtrlOptions, StableAdamwOptions, AdemamixOptions, MuonOptions>;

// A rule vkoptim has: its name, its default options (torch's, where torch has the rule) and
// its vko_rule value in the C API (vkoptim.h).
struct RuleInfo {
  const char* name;  // e.g. "adam"
  RuleOptions defaults;
  int32_t c_rule;
};
// Every rule, in RuleOptions' alternative order, then other names for one of them with other
// defaults ("adamw": Adam with decoupled weight decay). One list (runtime/rules/registry.def).
std::span<const RuleInfo> registered_rules();

}  // namespace vkoptim
