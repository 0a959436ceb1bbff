// Every field of vko_hyperparams for every vko_rule, set away from vko_hyperparams_defaults(rule):
// either the optimizer honours it (its group, as a checkpoint's param_groups records options,
// storage policy, Lookahead and SAM, differs from the default optimizer's) or creation is refused
// with VKO_INVALID_ARGUMENT naming the field. Never silently ignored.
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <variant>

#include "harness.hpp"
#include "vkoptim/vkoptim.h"

namespace {

using nlohmann::json;

// The fields, listed here from the public header (independently of the library's own table).
using Field = std::variant<double vko_hyperparams::*, uint32_t vko_hyperparams::*, uint64_t vko_hyperparams::*>;
#define F(name) std::pair<const char*, Field>(#name, &vko_hyperparams::name)
const std::pair<const char*, Field> kFields[] = {F(lr),
                                                 F(momentum),
                                                 F(dampening),
                                                 F(weight_decay),
                                                 F(beta1),
                                                 F(beta2),
                                                 F(eps),
                                                 F(nesterov),
                                                 F(maximize),
                                                 F(amsgrad),
                                                 F(momentum_form),
                                                 F(alpha),
                                                 F(rho),
                                                 F(lr_decay),
                                                 F(initial_accumulator_value),
                                                 F(momentum_decay),
                                                 F(lambd),
                                                 F(t0),
                                                 F(etaminus),
                                                 F(etaplus),
                                                 F(step_size_min),
                                                 F(step_size_max),
                                                 F(r),
                                                 F(weight_lr_power),
                                                 F(min_trust_ratio),
                                                 F(max_trust_ratio),
                                                 F(warmup_steps),
                                                 F(decay_at_z),
                                                 F(centered),
                                                 F(eps_in_sqrt),
                                                 F(decoupled_weight_decay),
                                                 F(bias_correction),
                                                 F(beta2_decay),
                                                 F(eps2),
                                                 F(d),
                                                 F(state_dtype),
                                                 F(master_weights),
                                                 F(rounding),
                                                 F(seed),
                                                 F(min_8bit_elements),
                                                 F(eps_root),
                                                 F(amsgrad_max),
                                                 F(decay_order),
                                                 F(dampen_first_step),
                                                 F(lookahead_k),
                                                 F(lookahead_alpha),
                                                 F(sam_rho),
                                                 F(use_nvlamb),
                                                 F(use_clipping),
                                                 F(clip_exponent),
                                                 F(learning_rate_power),
                                                 F(l1),
                                                 F(l2),
                                                 F(l2_shrinkage),
                                                 F(beta),
                                                 F(beta3),
                                                 F(beta3_warmup),
                                                 F(alpha_warmup),
                                                 F(kahan_summation),
                                                 F(ema_decay),
                                                 F(ema_warmup),
                                                 F(ema_update_after_step),
                                                 F(ema_inv_gamma),
                                                 F(ema_power),
                                                 F(ema_min_decay),
                                                 F(cautious),
                                                 F(ns_a),
                                                 F(ns_b),
                                                 F(ns_c),
                                                 F(ns_steps),
                                                 F(adjust_lr),
                                                 F(ns_bf16),
                                                 F(use_muon),
                                                 F(adam_eps),
                                                 F(rank1_second_moment)};
#undef F

// The checkpoint's record of group 0 (options, schedule, storage, Lookahead, SAM), or the refusal.
struct Outcome {
  vko_status status;
  std::string error;
  json group;
};

class CApiFieldsTest : public vkt::VulkanTest {
 protected:
  Outcome create(vko_context* ctx, vko_rule rule, const vko_hyperparams& h) {
    vko_tensor *p = nullptr, *g = nullptr;
    EXPECT_EQ(vko_tensor_create(ctx, nullptr, 8, &p), VKO_OK);
    EXPECT_EQ(vko_tensor_create(ctx, nullptr, 8, &g), VKO_OK);
    if (rule == VKO_RULE_MUON) {  // Muon steps matrices
      EXPECT_EQ(vko_tensor_set_rows(p, 2), VKO_OK);
    }
    const vko_param_group group{h, &p, &g, 1};
    vko_optimizer* opt = nullptr;
    Outcome out{vko_optimizer_create(ctx, rule, &group, 1, &opt), "", {}};
    if (out.status != VKO_OK) {
      out.error = vko_last_error();
    } else {
      size_t size = 0;
      EXPECT_EQ(vko_optimizer_save_to_memory(opt, nullptr, 0, &size), VKO_OK);
      std::vector<uint8_t> bytes(size);
      EXPECT_EQ(vko_optimizer_save_to_memory(opt, bytes.data(), size, &size), VKO_OK);
      uint64_t n;
      std::memcpy(&n, bytes.data(), 8);
      const json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + long(n));
      out.group = json::parse(header["__metadata__"]["param_groups"].get<std::string>())[0];
      out.group.erase("params");
    }
    vko_optimizer_destroy(opt);
    vko_tensor_destroy(p);
    vko_tensor_destroy(g);
    return out;
  }
};

TEST_F(CApiFieldsTest, EveryFieldIsHonouredOrRefusedForEveryRule) {
  vko_context_desc desc = vko_context_desc_defaults();
  desc.enable_validation = 1;
  vko_context* ctx = nullptr;
  ASSERT_EQ(vko_context_create(&desc, &ctx), VKO_OK) << vko_last_error();
  const vko_slot_dtype bf16_exp_avg{"exp_avg", VKO_STATE_BF16};
  size_t honoured = 0, refused = 0;
  for (const auto& info : vkoptim::registered_rules()) {
    const vko_rule rule = vko_rule(info.c_rule);
    const vko_hyperparams defaults = vko_hyperparams_defaults(rule);
    const Outcome base = create(ctx, rule, defaults);
    ASSERT_EQ(base.status, VKO_OK) << info.name << ": " << base.error;
    for (const auto& [name, field] : kFields) {
      vko_hyperparams h = defaults;
      // Away from the default: doubles by a factor and an offset, flags and enums to the other
      // value, counts up.
      std::visit(
          [&](auto member) {
            using T = std::remove_reference_t<decltype(h.*member)>;
            if constexpr (std::is_same_v<T, double>)
              h.*member = h.*member + 0.25 + 0.5 * std::abs(h.*member);  // never the value itself
            else if constexpr (std::is_same_v<T, uint32_t>)
              h.*member = h.*member <= 1 ? 1 - h.*member : h.*member + 5;
            else
              h.*member = h.*member + 100;
          },
          field);
      if (std::string(name) == "state_dtype") h.state_dtype = VKO_STATE_BF16;
      const Outcome o = create(ctx, rule, h);
      const std::string what = std::string(info.name) + ": vko_hyperparams." + name;
      if (o.status == VKO_OK) {
        EXPECT_NE(o.group, base.group) << what << " was accepted and changed nothing";
        ++honoured;
      } else {
        EXPECT_EQ(o.status, VKO_INVALID_ARGUMENT) << what << ": " << o.error;
        // The message names the field (Adafactor's eps is its eps1).
        const bool named = o.error.find(name) != std::string::npos ||
                           (std::string(name) == "eps" && o.error.find("eps1") != std::string::npos);
        EXPECT_TRUE(named) << what << " refused without naming it: " << o.error;
        ++refused;
      }
    }
    // A slot storage exception is honoured where the slot exists, else refused naming the slot.
    vko_hyperparams h = defaults;
    h.slot_dtypes = &bf16_exp_avg;
    h.slot_dtype_count = 1;
    const Outcome o = create(ctx, rule, h);
    if (o.status == VKO_OK)
      EXPECT_NE(o.group, base.group) << info.name << ": slot_dtypes accepted and changed nothing";
    else
      EXPECT_NE(o.error.find("exp_avg"), std::string::npos) << info.name << ": " << o.error;
  }
  RecordProperty("honoured", int(honoured));
  RecordProperty("refused", int(refused));
  EXPECT_GT(honoured, 100u);
  EXPECT_GT(refused, 100u);
  EXPECT_EQ(vko_context_validation_message_count(ctx), 0u);
  vko_context_destroy(ctx);
}

// VKO_RULE_ADAM honours decoupled_weight_decay (it was silently L2 before); VKO_RULE_ADAMW
// refuses turning it off.
TEST_F(CApiFieldsTest, AdamDecouplesWhenAskedAndAdamwRefusesNotTo) {
  vko_context_desc desc = vko_context_desc_defaults();
  desc.enable_validation = 1;
  vko_context* ctx = nullptr;
  ASSERT_EQ(vko_context_create(&desc, &ctx), VKO_OK);
  vko_hyperparams adam = vko_hyperparams_defaults(VKO_RULE_ADAM);
  adam.weight_decay = 0.1;
  adam.decoupled_weight_decay = 1;
  const Outcome a = create(ctx, VKO_RULE_ADAM, adam);
  ASSERT_EQ(a.status, VKO_OK) << a.error;
  EXPECT_EQ(a.group["options"]["decoupled_weight_decay"], true);
  vko_hyperparams adamw = vko_hyperparams_defaults(VKO_RULE_ADAMW);
  EXPECT_EQ(adamw.decoupled_weight_decay, 1u);
  adamw.decoupled_weight_decay = 0;
  const Outcome w = create(ctx, VKO_RULE_ADAMW, adamw);
  EXPECT_EQ(w.status, VKO_INVALID_ARGUMENT);
  EXPECT_NE(w.error.find("decoupled_weight_decay"), std::string::npos) << w.error;
  vko_context_destroy(ctx);
}

}  // namespace
