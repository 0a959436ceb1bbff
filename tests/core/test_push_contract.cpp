// The push-constant contract from one source: every scalar a rule's host side writes
// (PushWriter, with its name) is the member of the same name, offset and type in the shader's
// push block, and every member of the block is written — for every pass of every registered
// rule, the shared passes (reduce, Lookahead, SAM), on both addressing builds. The shader side
// comes from glslang's reflection of each build (cmake/push_reflection.cmake).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "gemm.hpp"
#include "rules/rule.hpp"
#include "sparse_rows.hpp"

namespace {

using namespace vkoptim;
using namespace vkoptim::detail;

struct ReflectedMember {
  const char* module;
  const char* name;
  uint32_t offset;
  uint32_t type;
};
const ReflectedMember kReflected[] = {
#include "push_reflection.inc"
};

// The rule-area members of a build (offset >= the header), by offset.
std::map<uint32_t, ReflectedMember> block_of(const std::string& module) {
  std::map<uint32_t, ReflectedMember> out;
  for (const auto& m : kReflected)
    if (module == m.module && m.offset >= sizeof(PushHeader)) out[m.offset] = m;
  return out;
}

// Expects `write` to fill exactly the rule area of shader `shader`'s push block.
template <class Write>
void expect_contract(const std::string& shader, const std::string& what, Write&& write,
                     std::vector<const char*> builds = {"_bda_w8", "_desc_w4"}) {
  std::vector<PushField> fields;
  PushBlock block;
  block.trace = &fields;
  write(block);
  for (const char* build : builds) {
    const auto members = block_of(shader + build);
    SCOPED_TRACE(what + " -> " + shader + build);
    EXPECT_FALSE(members.empty() && !fields.empty()) << "no reflected push block";
    uint32_t written = 0;
    for (const PushField& f : fields) {
      const auto it = members.find(uint32_t(sizeof(PushHeader)) + f.offset);
      if (it == members.end()) {
        ADD_FAILURE() << f.name << " at rule offset " << f.offset << ": the shader has no member there";
        continue;
      }
      EXPECT_EQ(std::string(it->second.name), f.name) << "at rule offset " << f.offset;
      EXPECT_EQ(it->second.type, f.type) << f.name;
      ++written;
    }
    EXPECT_EQ(written, members.size()) << "members the host does not write";
    EXPECT_EQ(block.rule_bytes, fields.empty() ? 0u : fields.back().offset + (fields.back().type == 0x8dc6 ? 8 : 4));
  }
}

// A rule's option sets with their own passes: the defaults and, where the rule has it, cautious.
std::vector<std::pair<std::string, RuleOptions>> pass_variants(const RuleInfo& info) {
  std::vector<std::pair<std::string, RuleOptions>> out{{info.name, info.defaults}};
  RuleOptions cautious = info.defaults;
  std::visit(
      [&](auto& o) {
        if constexpr (requires { o.cautious; }) {
          o.cautious = true;
          if constexpr (requires { o.momentum; }) o.momentum = 0.9;
          out.push_back({std::string(info.name) + " cautious", cautious});
        }
      },
      cautious);
  return out;
}

TEST(PushContract, EveryRulePassMatchesItsShader) {
  size_t cautious_variants = 0;
  for (const RuleInfo& info : registered_rules()) {
    const Rule& rule = rule_for(info.defaults);
    for (const auto& [variant, options] : pass_variants(info)) {
      cautious_variants += variant.ends_with("cautious");
      const auto passes = rule.passes(options);
      for (size_t p = 0; p < passes.size(); ++p) {
        const RulePass& pass = passes[p];
        const std::string what = variant + " pass " + std::to_string(p);
        if (pass.kind == RulePass::Kind::elementwise) {
          expect_contract(pass.shader, what, [&](PushBlock& b) {
            rule.pass_push_constants(options, StepInfo{7, false, rule.initial_scalars(options)}, b, p);
          });
        } else if (pass.kind == RulePass::Kind::factor_stats) {
          // (Factored statistics run on the address path only.)
          expect_contract(pass.shader, what,
                          [&](PushBlock& b) { rule.factor_push_constants(options, 7, FactorStats{}, b); }, {"_bda_w8"});
        }
      }
    }
  }
  EXPECT_EQ(cautious_variants, 4u);  // SGD, Adam, AdamW, Lion
}

TEST(PushContract, SharedPassesMatchTheirShaders) {
  expect_contract("reduce", "reduce", [](PushBlock& b) { reduce_push_constants(0, 1, 2, 3, 4, b); });
  expect_contract("lookahead", "lookahead", [](PushBlock& b) { lookahead_push_constants(0.5, true, b); });
  expect_contract("sam_norm", "sam_norm", [](PushBlock& b) { sam_norm_push_constants(b); });
  expect_contract("sam_update", "sam_update", [](PushBlock& b) { sam_update_push_constants(0.05, false, b); });
  expect_contract("master_init", "master_init", [](PushBlock& b) { PushWriter w(b); });
  expect_contract("grad_norm", "grad_norm", [](PushBlock& b) { grad_norm_push_constants(0, b); });
  expect_contract("grad_reduce", "grad_reduce", [](PushBlock& b) { grad_reduce_push_constants(0, 1, 2, 3, b); });
  expect_contract("gemm", "gemm", [](PushBlock& b) { gemm_push_constants(0, 1, 0, b); }, {"_bda_w8"});
  expect_contract("sparse_rows", "sparse_rows", [](PushBlock& b) { sparse_push_constants(0, 1, 2, 3, 4, 5, b); });
}

}  // namespace
