#pragma once
// Each rule's reference, made from the library's options for that rule: one overload per
// RuleOptions alternative, so a rule added to the registry without a reference does not compile
// in test_registry.cpp. Returns a factory: number of elements -> reference state.
#include "reference/adadelta.hpp"
#include "reference/adafactor.hpp"
#include "reference/adagrad.hpp"
#include "reference/adam.hpp"
#include "reference/adamax.hpp"
#include "reference/ademamix.hpp"
#include "reference/adopt.hpp"
#include "reference/asgd.hpp"
#include "reference/ftrl.hpp"
#include "reference/lamb.hpp"
#include "reference/lion.hpp"
#include "reference/muon.hpp"
#include "reference/nadam.hpp"
#include "reference/radam.hpp"
#include "reference/rmsprop.hpp"
#include "reference/rprop.hpp"
#include "reference/schedule_free_adamw.hpp"
#include "reference/sgd.hpp"
#include "reference/stable_adamw.hpp"
#include "vkoptim/rules.hpp"

namespace reference {

inline auto reference_for(const vkoptim::SgdOptions& o) {
  SgdHyper h{o.lr,
             o.momentum,
             o.dampening,
             o.weight_decay,
             o.nesterov,
             o.maximize,
             o.momentum_form == vkoptim::MomentumForm::ema};
  h.dampen_first_step = o.dampen_first_step;
  h.decoupled = o.decoupled_weight_decay;
  h.cautious = o.cautious;
  return [h](size_t n) { return Sgd(h, n); };
}

inline auto reference_for(const vkoptim::AdamOptions& o) {
  AdamHyper h{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize, o.decoupled_weight_decay};
  h.bias_correction = o.bias_correction;
  h.eps_root = o.eps_root;
  h.amsgrad_bias_corrected = o.amsgrad_max == vkoptim::AmsgradMax::bias_corrected;
  h.decay_after = o.decay_order == vkoptim::DecayOrder::after;
  h.cautious = o.cautious;
  return [h](size_t n) { return Adam(h, n); };
}

inline auto reference_for(const vkoptim::AdagradOptions& o) {
  const AdagradHyper h{o.lr,  o.lr_decay, o.weight_decay,          o.initial_accumulator_value,
                       o.eps, o.maximize, o.decoupled_weight_decay};
  return [h](size_t n) { return Adagrad(h, n); };
}

inline auto reference_for(const vkoptim::RmspropOptions& o) {
  RmspropHyper h{o.lr, o.alpha, o.eps, o.weight_decay, o.momentum, o.centered, o.maximize, o.eps_in_sqrt};
  h.decoupled = o.decoupled_weight_decay;
  return [h](size_t n) { return Rmsprop(h, n); };
}

inline auto reference_for(const vkoptim::AdadeltaOptions& o) {
  const AdadeltaHyper h{o.lr, o.rho, o.eps, o.weight_decay, o.maximize, o.decoupled_weight_decay};
  return [h](size_t n) { return Adadelta(h, n); };
}

inline auto reference_for(const vkoptim::AdamaxOptions& o) {
  const AdamaxHyper h{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.maximize, o.decoupled_weight_decay};
  return [h](size_t n) { return Adamax(h, n); };
}

inline auto reference_for(const vkoptim::NadamOptions& o) {
  const NadamHyper h{o.lr,      o.beta1, o.beta2, o.eps, o.weight_decay, o.momentum_decay, o.decoupled_weight_decay,
                     o.maximize};
  return [h](size_t n) { return Nadam(h, n); };
}

inline auto reference_for(const vkoptim::RadamOptions& o) {
  const RadamHyper h{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.decoupled_weight_decay, o.maximize};
  return [h](size_t n) { return Radam(h, n); };
}

inline auto reference_for(const vkoptim::AsgdOptions& o) {
  const AsgdHyper h{o.lr, o.lambd, o.alpha, o.t0, o.weight_decay, o.maximize};
  return [h](size_t n) { return Asgd(h, n); };
}

inline auto reference_for(const vkoptim::RpropOptions& o) {
  const RpropHyper h{o.lr, o.etaminus, o.etaplus, o.step_size_min, o.step_size_max, o.maximize};
  return [h](size_t n) { return Rprop(h, n); };
}

inline auto reference_for(const vkoptim::LionOptions& o) {
  const LionHyper h{o.lr, o.beta1, o.beta2, o.weight_decay, o.maximize, o.cautious};
  return [h](size_t n) { return Lion(h, n); };
}

inline auto reference_for(const vkoptim::ScheduleFreeAdamwOptions& o) {
  const ScheduleFreeHyper h{o.lr, o.beta1,           o.beta2,     o.eps, o.weight_decay, long(o.warmup_steps),
                            o.r,  o.weight_lr_power, o.decay_at_z};
  return [h](size_t n) { return ScheduleFreeAdamw(h, n); };
}

inline auto reference_for(const vkoptim::LambOptions& o) {
  const LambHyper h{o.lr,           o.beta1,           o.beta2,           o.eps,
                    o.weight_decay, o.bias_correction, o.min_trust_ratio, o.max_trust_ratio,
                    o.maximize,     o.use_nvlamb};
  return [h](size_t n) { return Lamb(h, n); };
}

// 1-D tensors (the factored 2-D case has its own test).
inline auto reference_for(const vkoptim::AdafactorOptions& o) {
  const AdafactorHyper h{o.lr, o.beta2_decay, o.eps1, o.eps2, o.d, o.weight_decay, o.maximize, o.beta1};
  return [h](size_t n) { return Adafactor(h, n); };
}

inline auto reference_for(const vkoptim::AdoptOptions& o) {
  const AdoptHyper h{o.lr,           o.beta1,         o.beta2,   o.eps, o.weight_decay, o.decoupled_weight_decay,
                     o.use_clipping, o.clip_exponent, o.maximize};
  return [h](size_t n) { return Adopt(h, n); };
}

inline auto reference_for(const vkoptim::FtrlOptions& o) {
  const FtrlHyper h{o.lr,      o.learning_rate_power, o.initial_accumulator_value, o.l1, o.l2, o.l2_shrinkage, o.beta,
                    o.maximize};
  return [h](size_t n) { return Ftrl(h, n); };
}

inline auto reference_for(const vkoptim::StableAdamwOptions& o) {
  const StableAdamwHyper h{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.maximize};
  return [h](size_t n) { return StableAdamw(h, n); };
}

inline auto reference_for(const vkoptim::AdemamixOptions& o) {
  const AdemamixHyper h{o.lr,           o.beta1,        o.beta2, o.beta3,        o.alpha,
                        o.beta3_warmup, o.alpha_warmup, o.eps,   o.weight_decay, o.maximize};
  return [h](size_t n) { return Ademamix(h, n); };
}

inline MuonHyper muon_hyper(const vkoptim::MuonOptions& o) {
  MuonHyper h;
  h.lr = o.lr, h.weight_decay = o.weight_decay, h.momentum = o.momentum, h.nesterov = o.nesterov;
  h.a = o.ns_a, h.b = o.ns_b, h.c = o.ns_c, h.eps = o.eps, h.ns_steps = o.ns_steps;
  h.adjust_lr = unsigned(o.adjust_lr), h.bf16 = o.ns_bf16, h.use_muon = o.use_muon;
  h.beta1 = o.beta1, h.beta2 = o.beta2, h.adam_eps = o.adam_eps;
  return h;
}
// (Elementwise harnesses step 1-D tensors: AdamW groups. Muon's matrices: test_muon.cpp.)
inline auto reference_for(const vkoptim::MuonOptions& o) {
  const MuonHyper h = muon_hyper(o);
  return [h](size_t n) { return Muon(h, n); };
}

}  // namespace reference
