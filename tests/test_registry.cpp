// Every rule of the registry (vkoptim::registered_rules()), instantiated from the registry: its
// defaults against its double reference over 55 steps, odd sizes, several buffers with
// NaN-poisoned gaps, both addressing paths; and its C API name. A rule added to the registry is
// tested here without further edits (reference/from_options.hpp must know its options).
#include <set>

#include "harness.hpp"
#include "reference/from_options.hpp"
#include "vkoptim/vkoptim.h"

namespace {

using namespace vkoptim;

// K = 1024: the largest of the per-rule bounds (Adam's and LAMB's, see test_adam.cpp and
// test_reductions.cpp); the other rules' bounds are smaller.
constexpr double kUpdateError = 1024;

class RegistryTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<size_t, bool>> {};

TEST_P(RegistryTest, DefaultsMatchReferenceOver55Steps) {
  const auto& [index, bda] = GetParam();
  const RuleInfo& info = registered_rules()[index];
  auto options = validated_options();
  options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  vkt::TrajectoryConfig cfg;
  cfg.update_error_factor = kUpdateError;
  RuleOptions defaults = info.defaults;
  // The harness steps 1-D tensors: Muon's AdamW groups (its matrices: test_muon.cpp).
  if (auto* muon = std::get_if<MuonOptions>(&defaults)) muon->use_muon = false;
  std::visit(
      [&](const auto& o) {
        auto factory = reference::reference_for(o);
        using Ref = decltype(factory(size_t(1)));
        vkt::run_trajectory<Ref>(ctx, {{o, factory, {1, 3, 255, 257, 4099}}}, cfg, rng_);
      },
      defaults);
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<size_t, bool>>& p) {
  return std::string(registered_rules()[std::get<0>(p.param)].name) + (std::get<1>(p.param) ? "_bda" : "_desc");
}

INSTANTIATE_TEST_SUITE_P(Rules, RegistryTest,
                         ::testing::Combine(::testing::Range(size_t(0), registered_rules().size()), ::testing::Bool()),
                         case_name);

TEST(Registry, NamesAndCValuesAreUnique) {
  std::set<std::string> names;
  std::set<int32_t> values;
  for (const auto& info : registered_rules()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_TRUE(values.insert(info.c_rule).second) << info.name;
  }
  EXPECT_EQ(registered_rules().size(), std::variant_size_v<RuleOptions> + 1);  // + adamw
}

// The C API's defaults of each vko_rule are the registry's.
TEST(Registry, CApiDefaultsAreTheRegistrys) {
  for (const auto& info : registered_rules()) {
    const vko_hyperparams h = vko_hyperparams_defaults(vko_rule(info.c_rule));
    EXPECT_EQ(h.struct_size, sizeof(vko_hyperparams)) << info.name;
    std::visit([&](const auto& o) { EXPECT_EQ(h.lr, o.lr) << info.name; }, info.defaults);
    if (const auto* adam = std::get_if<AdamOptions>(&info.defaults)) {
      EXPECT_EQ(h.weight_decay, adam->weight_decay) << info.name;
    }
  }
}

}  // namespace
