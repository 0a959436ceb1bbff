// Sharded state (include/vkoptim/shard.hpp): 1, 2, 3 and 4 shard optimizers over a flat model of
// odd-sized tensors in two groups take the same steps as one unsharded optimizer, bit for bit
// (fp32, 8-bit and 4-bit state, a rule with host scalars, Lookahead), on both addressing paths;
// checkpoints saved at 4 shards reload at 3, 2 and 1 with the same state and go on identically;
// clipping and the loss scaler across shards in two-part steps; bad layouts and what sharding
// cannot do yet are refused, naming the problem.
#include <cmath>
#include <numeric>

#include "harness.hpp"
#include "vkoptim/shard.hpp"

namespace {

using namespace vkoptim;

// The model: tensors cut by every layout below (sizes not multiples of anything), in two groups.
std::vector<FlatTensor> model() {
  return {{"embed.weight", 70001, 0, 0},     {"layer.0.weight", 64 * 65, 64, 0}, {"layer.0.bias", 65, 0, 1},
          {"layer.1.weight", 20000, 100, 0}, {"layer.1.bias", 3, 0, 1},          {"head", 4099, 0, 0}};
}

// `tensors` cut at `cuts` (ascending, inside (0, total)).
ShardLayout layout_at(const std::vector<FlatTensor>& tensors, const std::vector<uint64_t>& cuts) {
  ShardLayout layout{tensors, {}};
  uint64_t begin = 0;
  for (uint64_t cut : cuts) layout.shards.push_back({std::exchange(begin, cut), cut});
  layout.shards.push_back({begin, layout.total()});
  return layout;
}

struct ShardCase {
  std::string name;
  RuleOptions options;
  StateDType state = StateDType::f32;
  LookaheadOptions lookahead{};
  Rounding rounding = Rounding::nearest_even;
  SamOptions sam{};
  bool rank1 = false;  // group 0's 4-bit second moments rank-1 normalised
};
void PrintTo(const ShardCase& c, std::ostream* os) {
  *os << c.name;
}

// The flat parameters and gradients of one optimizer (a shard's, or the whole model's).
struct Replica {
  Tensor param, grad;
  std::unique_ptr<Optimizer> opt;
  uint64_t begin = 0, end = 0;     // of the flat space
  std::vector<std::string> names;  // its tensors (pieces), in flat order
};

class ShardTest : public vkt::VulkanTest, public ::testing::WithParamInterface<std::tuple<ShardCase, bool>> {
 protected:
  std::vector<ParamGroup> templates() const {
    const ShardCase& c = std::get<0>(GetParam());
    std::vector<ParamGroup> groups(2);
    for (auto& g : groups) {
      g.options = c.options;
      g.precision.state = c.state;
      g.lookahead = c.lookahead;
      g.precision.rounding = c.rounding;
      g.sam = c.sam;
    }
    groups[0].precision.rank1_second_moment = c.rank1;
    groups[1].precision.state = StateDType::f32;  // biases: f32 as every recipe keeps them
    if (auto* muon = std::get_if<MuonOptions>(&groups[1].options)) muon->use_muon = false;  // AdamW
    return groups;
  }
  // The model as the case groups it: Muon takes the matrices (group 0), AdamW the rest.
  std::vector<FlatTensor> tensors() const {
    auto t = model();
    if (std::holds_alternative<MuonOptions>(std::get<0>(GetParam()).options))
      for (auto& x : t) x.group = x.rows != 0 ? 0 : 1;
    return t;
  }
  // One optimizer per shard of `layout`, from the flat parameters `p0`.
  std::vector<Replica> shards(Context& ctx, const ShardLayout& layout, const std::vector<float>& p0) {
    std::vector<Replica> out;
    for (uint32_t r = 0; r < layout.ranks(); ++r) {
      const Shard s = layout.shards[r];
      Replica rep{ctx.create_tensor(
                      std::vector<float>(p0.begin() + std::ptrdiff_t(s.begin), p0.begin() + std::ptrdiff_t(s.end))),
                  ctx.create_tensor(size_t(s.end - s.begin)), nullptr, s.begin, s.end};
      rep.opt =
          std::make_unique<Optimizer>(ctx, shard_groups(layout, r, templates(), rep.param.range(), rep.grad.range()));
      for (const auto& piece : shard_pieces(layout, r)) rep.names.push_back(piece.name);
      out.push_back(std::move(rep));
    }
    return out;
  }
  // The unsharded optimizer: the model's tensors at their flat offsets, keyed for stochastic
  // rounding by their place in the model, as shards key them.
  Replica whole(Context& ctx, const std::vector<float>& p0) {
    const auto tensors = this->tensors();
    Replica rep{ctx.create_tensor(p0), ctx.create_tensor(p0.size()), nullptr, 0, p0.size()};
    auto groups = templates();
    uint64_t at = 0;
    for (const auto& t : tensors) {
      ParamTensor pt{rep.param.range(), rep.grad.range(), t.name, t.rows};
      pt.whole_index = uint32_t(rep.names.size());
      for (auto* r : {&pt.param, &pt.grad}) {
        r->offset = at * 4;
        r->count = t.count;
      }
      groups[t.group].tensors.push_back(pt);
      rep.names.push_back(t.name);
      at += t.count;
    }
    rep.opt = std::make_unique<Optimizer>(ctx, groups);
    return rep;
  }
  static void step(std::vector<Replica>& replicas, const std::vector<float>& g) {
    for (auto& r : replicas) {
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
      r.opt->step();
    }
  }
  static std::vector<float> params(std::vector<Replica>& replicas) {
    std::vector<float> out;
    for (auto& r : replicas) {
      const auto p = r.param.download();
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  }
  // Every state of every tensor, as the unsharded optimizer names it: pieces concatenated.
  static std::map<std::string, std::vector<float>> state(std::vector<Replica>& replicas) {
    std::map<std::string, std::vector<float>> out;
    for (auto& r : replicas)
      for (const auto& piece : r.names) {
        const size_t t = r.opt->tensor_index(piece);
        const std::string name = piece.substr(0, piece.find('['));
        for (const auto& s : r.opt->state_names(t)) {
          auto v = r.opt->read_state(t, s);
          if (s == "step") v.resize(1);
          auto& dst = out[name + "." + s];
          if (v.size() == 1 && !dst.empty()) {  // the step and the rule's scalars: the same in each piece
            EXPECT_EQ(dst[0], v[0]) << name << ": pieces at different steps";
            continue;
          }
          dst.insert(dst.end(), v.begin(), v.end());
        }
      }
    return out;
  }
  // Each shard's checkpoint, in rank order.
  static std::vector<std::vector<uint8_t>> checkpoints(std::vector<Replica>& rs) {
    std::vector<std::vector<uint8_t>> files;
    for (auto& r : rs) files.push_back(r.opt->save_to_memory());
    return files;
  }
  // The shards of `target` from parameters `p`, each loading its checkpoint resharded from the
  // files `saved` wrote; their state must be `want` bit for bit.
  std::vector<Replica> reloaded(Context& ctx, const ShardLayout& saved,
                                const std::vector<std::span<const uint8_t>>& files, const ShardLayout& target,
                                const std::vector<float>& p, const std::map<std::string, std::vector<float>>& want) {
    auto loaded = shards(ctx, target, p);
    for (uint32_t r = 0; r < target.ranks(); ++r)
      loaded[r].opt->load_from_memory(reshard_checkpoint(saved, files, target, r));
    const auto got = state(loaded);
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [name, values] : want)
      EXPECT_EQ(vkt::bits(got.count(name) ? got.at(name) : std::vector<float>{}), vkt::bits(values)) << name;
    return loaded;
  }
  // Clipping and the loss scaler of the two-part tests: clipped on every step, the scale
  // growing every third.
  static GradClip half_norm_clip() {
    GradClip clip;
    clip.max_norm = 0.5;
    return clip;
  }
  static void set_clip_and_scaler(std::vector<Replica>& rs) {
    GradScalerOptions scaler;
    scaler.enabled = true;
    scaler.init_scale = 1024;
    scaler.growth_interval = 3;
    for (auto& r : rs) {
      r.opt->set_grad_clip(half_norm_clip());
      r.opt->set_grad_scaler(scaler);
    }
  }
  // The ranks' gradient sums combined in rank order, and their per-tensor sums added in rank
  // order per layout tensor (what the engine's exchange does).
  static GradSums combined(const GradClip& clip, const std::vector<GradSums>& sums) {
    GradSums total = sums[0];
    for (size_t i = 1; i < sums.size(); ++i) total = combine_grad_sums(clip, total, sums[i]);
    return total;
  }
  static std::vector<float> combined_tensor_sums(const ShardLayout& layout,
                                                 const std::vector<std::vector<float>>& mine) {
    std::vector<float> total(2 * layout.tensors.size(), 0.0f);
    for (uint32_t r = 0; r < mine.size(); ++r) {
      const auto scattered = scatter_tensor_sums(layout, r, mine[r]);
      for (size_t k = 0; k < total.size(); ++k) total[k] += scattered[k];
    }
    return total;
  }
  std::vector<float> random(size_t n, double scale) {
    std::normal_distribution<double> normal(0, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = float(normal(rng_));
    return v;
  }
  Context context() {
    auto o = validated_options();
    o.addressing = std::get<1>(GetParam()) ? Addressing::device_address : Addressing::descriptors;
    return make_context(o);
  }
};

TEST_P(ShardTest, ShardedStepsEqualTheUnshardedStepsBitForBit) {
  auto ctx = context();
  const ShardLayout one = ShardLayout::even(model(), 1);
  const uint64_t n = one.total();
  const auto p0 = random(n, 1.0);
  std::vector<Replica> reference;
  reference.push_back(whole(ctx, p0));
  std::vector<std::vector<Replica>> sharded;
  for (uint32_t ranks : {1u, 2u, 3u, 4u}) sharded.push_back(shards(ctx, ShardLayout::even(model(), ranks), p0));
  EXPECT_GT(sharded.back()[1].opt->tensor_count(), 0u);
  for (int t = 1; t <= 12; ++t) {
    const auto g = random(n, 0.1);
    step(reference, g);
    for (auto& s : sharded) step(s, g);
  }
  const auto want_p = params(reference);
  const auto want_state = state(reference);
  for (size_t i = 0; i < sharded.size(); ++i) {
    SCOPED_TRACE(std::to_string(sharded[i].size()) + " shards");
    EXPECT_EQ(vkt::bits(params(sharded[i])), vkt::bits(want_p));
    const auto got = state(sharded[i]);
    ASSERT_EQ(got.size(), want_state.size());
    for (const auto& [name, values] : want_state) EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
  }
  // The state kept is the unsharded optimizer's, split: 1/N of it per rank (plus padding).
  VkDeviceSize sum = 0;
  for (auto& r : sharded.back()) sum += r.opt->memory().state_bytes;
  const VkDeviceSize single = reference[0].opt->memory().state_bytes;
  EXPECT_GE(sum, single);
  EXPECT_LE(sum, single + 4 * 8 * 32 * 2);  // each piece's regions padded to 32 bytes
}

TEST_P(ShardTest, CheckpointsSavedAtFourShardsReloadAtThreeTwoAndOne) {
  auto ctx = context();
  const ShardLayout four = ShardLayout::even(model(), 4);
  const uint64_t n = four.total();
  const auto p0 = random(n, 1.0);
  auto saved = shards(ctx, four, p0);
  for (int t = 1; t <= 6; ++t) step(saved, random(n, 0.1));
  const auto files = checkpoints(saved);
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  // The index round-trips.
  const ShardLayout index = shard_layout_from_json(shard_index_json(four));
  ASSERT_EQ(index.ranks(), 4u);
  const auto want = state(saved);
  const auto p_saved = params(saved);
  std::vector<std::vector<float>> later_grads;
  for (int t = 0; t < 4; ++t) later_grads.push_back(random(n, 0.1));
  for (const auto& g : later_grads) step(saved, g);
  const auto p_later = params(saved);
  for (uint32_t ranks : {3u, 2u, 1u, 4u}) {
    SCOPED_TRACE(std::to_string(ranks) + " shards");
    const ShardLayout target = ShardLayout::even(model(), ranks);
    auto loaded = reloaded(ctx, index, spans, target, p_saved, want);
    for (const auto& g : later_grads) step(loaded, g);
    EXPECT_EQ(vkt::bits(params(loaded)), vkt::bits(p_later)) << "the run did not go on as the saved one";
  }
  // Files that do not fit the layout.
  const ShardLayout two = ShardLayout::even(model(), 2);
  auto expect_refused = [&](const std::function<void()>& f, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected a refusal mentioning " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_refused([&] { reshard_checkpoint(index, {spans[0], spans[1]}, two, 0); }, "2 files for 4 saved shards");
  expect_refused(
      [&] {
        reshard_checkpoint(index, {spans[1], spans[0], spans[2], spans[3]}, two, 0);
      },
      "does not hold the pieces of saved shard 0");
  auto other_model = model();
  other_model[2].count += 1;
  expect_refused([&] { reshard_checkpoint(index, spans, ShardLayout::even(other_model, 2), 0); },
                 "\"layer.0.bias\" of 65 elements in the saved layout");
  expect_refused([&] { reshard_checkpoint(index, spans, two, 2); }, "rank 2, but the layout has 2 shards");
}

// Global clipping and the loss scaler across shards: each rank's first part writes its total,
// the ranks' totals are combined in rank order (combine_grad_sums), the second part takes the
// outcome from it. Unsharded, the two parts equal one whole step bit for bit. The shards sum the
// total in another order than one optimizer does, so the coefficient's last bits may differ,
// which quantized state can turn into a different code; each sharded run is therefore compared
// bit for bit with an unsharded optimizer that finishes its steps with the same combined totals,
// and (f32 state) within float rounding of the unsharded run that sums its own. Every rank finds
// the same norm, and a NaN in one rank's gradients makes every rank skip the step and back the
// scale off.
class ShardClipTest : public ShardTest {};

TEST_P(ShardClipTest, ClippingAndTheScalerAcrossShardsInTwoParts) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const GradClip clip = half_norm_clip();
  std::vector<Replica> whole_step, two_parts, follows_two, follows_four;
  for (auto* rs : {&whole_step, &two_parts, &follows_two, &follows_four}) rs->push_back(whole(ctx, p0));
  auto two = shards(ctx, ShardLayout::even(model(), 2), p0), four = shards(ctx, ShardLayout::even(model(), 4), p0);
  for (auto* rs : {&whole_step, &two_parts, &follows_two, &follows_four, &two, &four}) set_clip_and_scaler(*rs);
  // Steps `rs` in two parts with its ranks' combined total, and `follower` with the same total.
  auto step_in_parts = [&](std::vector<Replica>& rs, std::vector<Replica>* follower, const std::vector<float>& g) {
    std::vector<GradSums> sums;
    for (auto& r : rs) {
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
      sums.push_back(r.opt->step_grad_sums());
    }
    const GradSums total = combined(clip, sums);
    for (auto& r : rs) r.opt->step_finish(total);
    if (!follower) return;
    Replica& f = (*follower)[0];
    f.grad.upload(g);
    f.opt->step_grad_sums();  // (its own sums are not used)
    f.opt->step_finish(total);
  };
  const int nan_step = 5;
  for (int t = 1; t <= 10; ++t) {
    auto g = random(n, 1000.0);  // scaled gradients: the scaler unscales them
    if (t == nan_step) g[n / 2 + 7] = std::numeric_limits<float>::quiet_NaN();  // rank 1 of 2, rank 2 of 4
    step(whole_step, g);
    step_in_parts(two_parts, nullptr, g);
    step_in_parts(two, &follows_two, g);
    step_in_parts(four, &follows_four, g);
  }
  EXPECT_EQ(vkt::bits(params(two_parts)), vkt::bits(params(whole_step))) << "two parts differ from one whole step";
  const auto want = params(whole_step);
  const auto want_reports = whole_step[0].opt->step_reports();
  ASSERT_EQ(want_reports.size(), 10u);
  EXPECT_TRUE(want_reports[nan_step - 1].skipped);
  for (auto [rs, follower] : {std::pair{&two, &follows_two}, std::pair{&four, &follows_four}}) {
    SCOPED_TRACE(std::to_string(rs->size()) + " shards");
    const auto got = params(*rs);
    EXPECT_EQ(vkt::bits(got), vkt::bits(params(*follower)))
        << "the shards differ from one optimizer finishing its steps with the same totals";
    if (std::get<0>(GetParam()).state == StateDType::f32) {
      for (size_t i = 0; i < n; ++i)
        ASSERT_LE(std::fabs(got[i] - want[i]), 1e-6 * std::fabs(want[i]) + 1e-7)
            << "element " << i << " beyond float rounding of the unsharded run's";
    }
    const auto first = (*rs)[0].opt->step_reports();
    for (auto& r : *rs) {
      const auto reports = r.opt->step_reports();
      ASSERT_EQ(reports.size(), first.size());
      for (size_t k = 0; k < reports.size(); ++k) {
        EXPECT_EQ(vkt::bits({reports[k].total_norm}), vkt::bits({first[k].total_norm})) << "step " << k + 1;
        EXPECT_EQ(reports[k].skipped, want_reports[k].skipped) << "step " << k + 1;
        EXPECT_EQ(reports[k].scale, want_reports[k].scale) << "step " << k + 1;
        if (std::isnan(want_reports[k].total_norm))  // (the NaN step's)
          EXPECT_TRUE(std::isnan(reports[k].total_norm)) << "step " << k + 1;
        else
          EXPECT_NEAR(reports[k].total_norm, want_reports[k].total_norm, 1e-5 * want_reports[k].total_norm);
      }
      EXPECT_EQ(r.opt->step_count(0), 9u) << "the skipped step counted";
    }
  }
}

// The ranks' gradient chunk sums exchanged whole (step_grad_chunks, scatter_grad_chunks, added
// over the ranks as MPI_Allreduce would, reduce_grad_chunks): 2, 3 and 4 shards take the
// unsharded optimizer's one-part steps bit for bit, norms and a NaN step included, because every
// chunk's sums are the same bits on any shard and the host reduces them in the device's order.
TEST_P(ShardClipTest, ChunkSumsExchangedWholeGiveTheUnshardedStepsBitForBit) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const GradClip clip = half_norm_clip();
  std::vector<Replica> whole_step;
  whole_step.push_back(whole(ctx, p0));
  set_clip_and_scaler(whole_step);
  std::vector<std::pair<ShardLayout, std::vector<Replica>>> runs;
  for (uint32_t ranks : {2u, 3u, 4u}) {
    const ShardLayout layout = ShardLayout::even(model(), ranks);
    auto rs = shards(ctx, layout, p0);
    set_clip_and_scaler(rs);
    runs.emplace_back(layout, std::move(rs));
  }
  const int nan_step = 4;
  for (int t = 1; t <= 8; ++t) {
    auto g = random(n, 1000.0);  // scaled gradients: the scaler unscales them
    if (t == nan_step) g[n / 3 + 5] = std::numeric_limits<float>::quiet_NaN();
    step(whole_step, g);
    for (auto& [layout, rs] : runs) {
      std::vector<GradSums> chunks;
      for (uint32_t r = 0; r < rs.size(); ++r) {
        rs[r].grad.upload(
            std::vector<float>(g.begin() + std::ptrdiff_t(rs[r].begin), g.begin() + std::ptrdiff_t(rs[r].end)));
        const auto mine = scatter_grad_chunks(layout, r, rs[r].opt->step_grad_chunks());
        if (chunks.empty()) chunks.resize(mine.size());
        ASSERT_EQ(mine.size(), chunks.size());
        for (size_t k = 0; k < mine.size(); ++k) {
          chunks[k].norm_sum += mine[k].norm_sum;
          chunks[k].nonfinite += mine[k].nonfinite;
        }
      }
      const GradSums total = reduce_grad_chunks(clip, chunks);
      for (auto& r : rs) r.opt->step_finish(total);
    }
  }
  const auto want = params(whole_step);
  const auto want_reports = whole_step[0].opt->step_reports();
  ASSERT_EQ(want_reports.size(), 8u);
  EXPECT_TRUE(want_reports[nan_step - 1].skipped);
  EXPECT_LT(want_reports[0].clip_coef, 1.0f) << "no clipping to compare";
  for (auto& [layout, rs] : runs) {
    SCOPED_TRACE(std::to_string(rs.size()) + " shards");
    EXPECT_EQ(vkt::bits(params(rs)), vkt::bits(want));
    for (auto& r : rs) {
      const auto reports = r.opt->step_reports();
      ASSERT_EQ(reports.size(), want_reports.size());
      for (size_t k = 0; k < reports.size(); ++k) {
        EXPECT_EQ(vkt::bits({reports[k].total_norm}), vkt::bits({want_reports[k].total_norm})) << "step " << k + 1;
        EXPECT_EQ(reports[k].skipped, want_reports[k].skipped) << "step " << k + 1;
      }
    }
  }
  // The vectors' sizes are checked.
  EXPECT_THROW(scatter_grad_chunks(runs[0].first, 0, std::vector<GradSums>(3)), Error);
}

std::vector<ShardCase> shard_cases() {
  AdamOptions adamw;
  adamw.lr = 1e-2, adamw.weight_decay = 0.01, adamw.decoupled_weight_decay = true;
  NadamOptions nadam;
  nadam.lr = 1e-2;
  SgdOptions sgd;
  sgd.lr = 0.05, sgd.momentum = 0.9;
  return {{"adamw", adamw},
          {"adamw_q8", adamw, StateDType::q8},
          {"adamw_q4", adamw, StateDType::q4},
          {"adamw_q4_stochastic", adamw, StateDType::q4, {}, Rounding::stochastic},
          {"nadam_lookahead", nadam, StateDType::f32, {3, 0.5}},
          {"sgd_momentum_q4", sgd, StateDType::q4}};
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<ShardCase, bool>>& info) {
  return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_bda" : "_desc");
}
INSTANTIATE_TEST_SUITE_P(Shards, ShardTest, ::testing::Combine(::testing::ValuesIn(shard_cases()), ::testing::Bool()),
                         case_name);
// (Clipping: the cases without Lookahead.)
std::vector<ShardCase> clip_cases() {
  auto cases = shard_cases();
  std::erase_if(cases, [](const ShardCase& c) { return c.lookahead.k != 0; });
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Shards, ShardClipTest,
                         ::testing::Combine(::testing::ValuesIn(clip_cases()), ::testing::Bool()), case_name);

// Rules that sum over whole tensors (LAMB's norms, StableAdamW's RMS, Cautious's mask count)
// across shards: each rank's tensor_sums part returns its pieces' sums, the ranks' sums are added
// per whole tensor in rank order (scatter_tensor_sums / gather_tensor_sums), the finish takes
// them. One shard in parts equals the unsharded optimizer bit for bit (the exchange round trip
// is exact); at 2, 3 and 4 shards the parameters stay within float rounding of the unsharded
// run's (a split tensor's sum is its pieces' sums added, not one tree). With clipping the step
// runs in three parts.
class ShardSumsTest : public ShardTest {
 protected:
  // Adafactor's part before the per-tensor sums (StepPart::factor_sums): the ranks' row and
  // column sums of split matrices added in rank order, as MPI_Allreduce would.
  static void exchange_factor_sums(std::vector<Replica>& rs, const ShardLayout& layout) {
    if (!std::holds_alternative<AdafactorOptions>(rs[0].opt->options(0))) return;
    std::vector<float> total;
    for (uint32_t r = 0; r < rs.size(); ++r) {
      const auto mine = scatter_factor_sums(layout, r, rs[r].opt->step_factor_sums());
      total.resize(mine.size(), 0.0f);
      for (size_t k = 0; k < mine.size(); ++k) total[k] += mine[k];
    }
    for (uint32_t r = 0; r < rs.size(); ++r) rs[r].opt->set_factor_sums(gather_factor_sums(layout, r, total));
  }
  static void step_in_parts(std::vector<Replica>& rs, const ShardLayout& layout, const std::vector<float>& g,
                            const GradClip* clip = nullptr) {
    for (auto& r : rs)
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
    if (clip) {
      std::vector<GradSums> sums;
      for (auto& r : rs) sums.push_back(r.opt->step_grad_sums());
      const GradSums total = combined(*clip, sums);
      for (auto& r : rs) r.opt->set_grad_sums(total);
    }
    exchange_factor_sums(rs, layout);
    std::vector<std::vector<float>> mine;
    for (auto& r : rs) mine.push_back(r.opt->step_tensor_sums());
    const auto total = combined_tensor_sums(layout, mine);
    for (uint32_t r = 0; r < rs.size(); ++r) rs[r].opt->step_finish(gather_tensor_sums(layout, r, total));
  }
  // The first part of a clipped step with the ranks' gradient chunks exchanged whole (the
  // unsharded total's bits), the total set for the next part.
  static void set_total_from_grad_chunks(std::vector<Replica>& rs, const ShardLayout& layout, const GradClip& clip) {
    std::vector<GradSums> chunks;
    for (uint32_t r = 0; r < rs.size(); ++r) {
      const auto mine = scatter_grad_chunks(layout, r, rs[r].opt->step_grad_chunks());
      chunks.resize(mine.size());
      for (size_t k = 0; k < mine.size(); ++k) chunks[k] = combine_grad_sums(clip, chunks[k], mine[k]);
    }
    const GradSums total = reduce_grad_chunks(clip, chunks);
    for (auto& r : rs) r.opt->set_grad_sums(total);
  }
  // The same with the sums exchanged as whole chunk lists (the same bits on any rank count): the
  // ranks' gradient chunks, then their tensor chunks, added as MPI_Allreduce would.
  static void step_in_parts_exchanging_chunks(std::vector<Replica>& rs, const ShardLayout& layout,
                                              const std::vector<float>& g, const GradClip* clip = nullptr) {
    for (auto& r : rs)
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
    if (clip) set_total_from_grad_chunks(rs, layout, *clip);
    exchange_factor_sums(rs, layout);
    std::vector<float> chunks;
    for (uint32_t r = 0; r < rs.size(); ++r) {
      const auto mine = scatter_tensor_chunks(layout, r, rs[r].opt->step_tensor_chunks());
      chunks.resize(mine.size());
      for (size_t k = 0; k < mine.size(); ++k) chunks[k] += mine[k];
    }
    const auto sums = reduce_tensor_chunks(layout, chunks);
    for (uint32_t r = 0; r < rs.size(); ++r) rs[r].opt->step_finish(gather_tensor_sums(layout, r, sums));
  }
  static void expect_within_rounding(const std::vector<float>& got, const std::vector<float>& want,
                                     double absolute = 1e-7) {
    ASSERT_EQ(got.size(), want.size());
    size_t far = 0;
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      far += std::fabs(got[i] - want[i]) > 1e-6 * std::fabs(want[i]) + absolute ? 1 : 0;
      worst = std::max(worst, double(std::fabs(got[i] - want[i])));
    }
    EXPECT_EQ(far, 0u) << "parameters beyond float rounding of the unsharded run's (largest difference " << worst
                       << ")";
  }
};

// Each layout twice: its ranks' per-piece sums added (float rounding of the unsharded run; one
// shard in parts: bit for bit), and its chunk lists exchanged whole: every chunk's partial sums
// are the same bits on any shard and the host reduces each tensor's chunks in the device's order,
// so 2, 3 and 4 shards (tensors cut inside, pieces on both segment paths) take the unsharded
// optimizer's one-part steps bit for bit, parameters and state.
TEST_P(ShardSumsTest, ShardedStepsFollowTheUnshardedStepsWithPerTensorSumsExchanged) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  std::vector<Replica> reference;
  reference.push_back(whole(ctx, p0));
  std::vector<ShardLayout> layouts;
  std::vector<std::vector<Replica>> summed, chunked;
  for (uint32_t ranks : {1u, 2u, 3u, 4u}) {
    layouts.push_back(ShardLayout::even(model(), ranks));
    summed.push_back(shards(ctx, layouts.back(), p0));
    chunked.push_back(shards(ctx, layouts.back(), p0));
  }
  for (int t = 1; t <= 10; ++t) {
    const auto g = random(n, 0.1);
    step(reference, g);
    for (size_t i = 0; i < layouts.size(); ++i) {
      step_in_parts(summed[i], layouts[i], g);
      step_in_parts_exchanging_chunks(chunked[i], layouts[i], g);
    }
  }
  const auto want = params(reference);
  const auto want_state = state(reference);
  EXPECT_EQ(vkt::bits(params(summed[0])), vkt::bits(want)) << "one shard in parts differs from one whole step";
  for (size_t i = 0; i < layouts.size(); ++i) {
    SCOPED_TRACE(std::to_string(layouts[i].ranks()) + " shards");
    expect_within_rounding(params(summed[i]), want);
    for (auto& r : summed[i]) EXPECT_EQ(r.opt->step_count(0), 10u);
    EXPECT_EQ(vkt::bits(params(chunked[i])), vkt::bits(want)) << "chunk lists exchanged";
    const auto got = state(chunked[i]);
    for (const auto& [name, values] : want_state) EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
  }
  // The vectors' sizes are checked.
  EXPECT_THROW(scatter_tensor_chunks(layouts[1], 0, std::vector<float>(3)), Error);
  EXPECT_THROW(reduce_tensor_chunks(layouts[1], std::vector<float>(4)), Error);
}

// With global clipping: grad_sums, tensor_sums, finish. (LAMB and Cautious: StableAdamW's RMS
// clip does not act on these clipped gradients, so the sums' exchange could not be seen.)
class ShardSumsClipTest : public ShardSumsTest {};

TEST_P(ShardSumsClipTest, WithClippingTheStepRunsInThreeParts) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  GradClip clip;
  clip.max_norm = 0.5;
  std::vector<Replica> reference;
  reference.push_back(whole(ctx, p0));
  reference[0].opt->set_grad_clip(clip);
  const ShardLayout four = ShardLayout::even(model(), 4);
  auto summed = shards(ctx, four, p0), chunked = shards(ctx, four, p0);
  for (auto* rs : {&summed, &chunked})
    for (auto& r : *rs) r.opt->set_grad_clip(clip);
  for (int t = 1; t <= 6; ++t) {
    const auto g = random(n, 1.0);
    step(reference, g);
    step_in_parts(summed, four, g, &clip);
    step_in_parts_exchanging_chunks(chunked, four, g, &clip);
  }
  EXPECT_LT(reference[0].opt->step_reports().back().clip_coef, 1.0f) << "nothing was clipped";
  // (Cautious: the coefficient's last bit can flip the mask of an element whose update and
  // gradient nearly cancel, which moves the tensor's mask mean by 1/count: every element of the
  // tensor by about lr/count, 5e-7 here. Within 1e-5.)
  const bool cautious = std::get<0>(GetParam()).name.find("cautious") != std::string::npos;
  expect_within_rounding(params(summed), params(reference), cautious ? 1e-5 : 1e-7);
  // Both sums exchanged as chunk lists (the gradients' and the tensors'): bit for bit.
  EXPECT_EQ(vkt::bits(params(chunked)), vkt::bits(params(reference)));
}

// Shards that hold whole matrices (cut between tensors, or inside a 1-D tensor only): Adafactor
// steps in parts, every matrix's sums coming from one rank (the others add zeros; its factor
// part is empty). Its row statistics sum a row in
// another order when the row starts off the wide access's alignment, and the shards place
// "layer.1.weight" at other alignments than the unsharded buffer does (flat element 74226): the
// steps agree to float rounding (a few row_var elements by an ulp). Muon (on the matrices, with
// AdamW on the rest in the same optimizer) exchanges its per-matrix sums of U^2 the same way; its
// chunk sums and GEMM tiles follow the matrix, not its place in the buffer, and its AdamW group
// takes pieces of the 1-D tensor as any elementwise rule: bit for bit.
class ShardWholeTensorsTest : public ShardSumsTest {};

TEST_P(ShardWholeTensorsTest, ShardsCutBetweenTensorsFollowTheUnshardedSteps) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  std::vector<Replica> reference;
  reference.push_back(whole(ctx, p0));
  // Tensor starts: 0, 70001, 74161, 74226, 94226, 94229. (The last layout cuts the 1-D
  // "embed" inside: Muon's AdamW group takes its pieces, Adafactor their per-tensor sums.)
  std::vector<ShardLayout> layouts = {{tensors(), {{0, 74226}, {74226, n}}},
                                      {tensors(), {{0, 70001}, {70001, 94226}, {94226, n}}},
                                      ShardLayout::whole_tensors(tensors(), 4),
                                      {tensors(), {{0, 137 * 256}, {137 * 256, 74226}, {74226, n}}}};
  std::vector<std::vector<Replica>> sharded;
  for (const auto& layout : layouts) sharded.push_back(shards(ctx, layout, p0));
  for (int t = 1; t <= 8; ++t) {
    const auto g = random(n, 0.1);
    step(reference, g);
    for (size_t i = 0; i < sharded.size(); ++i) step_in_parts(sharded[i], layouts[i], g);
  }
  const auto want_p = params(reference);
  const auto want_state = state(reference);
  const bool exact = std::holds_alternative<MuonOptions>(std::get<0>(GetParam()).options);
  for (auto& s : sharded) {
    SCOPED_TRACE(std::to_string(s.size()) + " shards");
    expect_within_rounding(params(s), want_p);
    if (exact) {
      EXPECT_EQ(vkt::bits(params(s)), vkt::bits(want_p));
    }
    const auto got = state(s);
    ASSERT_EQ(got.size(), want_state.size());
    for (const auto& [name, values] : want_state) {
      SCOPED_TRACE(name);
      expect_within_rounding(got.at(name), values, 0.0);
      if (exact) {
        EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values));
      }
    }
  }
}

// Checkpoints of whole-tensor shards (ShardLayout::whole_tensors) saved at 4 ranks reload at 2
// and 1: Adafactor's row and column statistics and Muon's momentum move whole with their
// tensors, the state read back is the saved bits, and the runs go on as the saved one did
// (within float rounding for Adafactor, whose row sums follow each buffer's alignment). Onto a
// layout that splits a matrix, each of its pieces gets Adafactor's whole statistics.
TEST_P(ShardWholeTensorsTest, CheckpointsOfWholeTensorShardsReloadOnOtherRankCounts) {
  auto ctx = context();
  const ShardLayout four = ShardLayout::whole_tensors(tensors(), 4);
  const uint64_t n = four.total();
  const auto p0 = random(n, 1.0);
  auto saved = shards(ctx, four, p0);
  for (int t = 1; t <= 4; ++t) step_in_parts(saved, four, random(n, 0.1));
  const auto files = checkpoints(saved);
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  const auto want = state(saved);
  const auto p_saved = params(saved);
  std::vector<std::vector<float>> later_grads;
  for (int t = 0; t < 3; ++t) later_grads.push_back(random(n, 0.1));
  for (const auto& g : later_grads) step_in_parts(saved, four, g);
  const auto p_later = params(saved);
  const bool exact = std::holds_alternative<MuonOptions>(std::get<0>(GetParam()).options);
  for (uint32_t ranks : {2u, 1u}) {
    SCOPED_TRACE(std::to_string(ranks) + " shards");
    const ShardLayout target = ShardLayout::whole_tensors(tensors(), ranks);
    auto loaded = reloaded(ctx, four, spans, target, p_saved, want);
    for (const auto& g : later_grads) step_in_parts(loaded, target, g);
    if (exact) {
      EXPECT_EQ(vkt::bits(params(loaded)), vkt::bits(p_later)) << "the run did not go on as the saved one";
    } else {
      expect_within_rounding(params(loaded), p_later);
    }
  }
  if (!exact) {  // Adafactor's factors go whole to each piece of a matrix another layout splits
    // (layer.1.weight, 100 x 200 at 74226, cut after 40 chunks of 256: inside row 51)
    const ShardLayout split{tensors(), {{0, 74226 + 40 * 256}, {74226 + 40 * 256, n}}};
    auto loaded = shards(ctx, split, p_saved);
    for (uint32_t r = 0; r < split.ranks(); ++r)
      loaded[r].opt->load_from_memory(reshard_checkpoint(four, spans, split, r));
    size_t factors = 0;
    for (auto& r : loaded)
      for (const auto& piece : r.names) {
        const size_t ti = r.opt->tensor_index(piece);
        for (const std::string s : {"row_var", "col_var"})
          if (std::ranges::count(r.opt->state_names(ti), s)) {
            const std::string name = piece.substr(0, piece.find('[')) + "." + s;
            EXPECT_EQ(vkt::bits(r.opt->read_state(ti, s)), vkt::bits(want.at(name))) << piece << "." << s;
            ++factors;
          }
      }
    EXPECT_EQ(factors, 2u * 3u) << "layer.0.weight, and both pieces of layer.1.weight";
    for (const auto& g : later_grads) step_in_parts(loaded, split, g);
    expect_within_rounding(params(loaded), p_later);
  }
}

// (Factored Adafactor and Muon's Newton-Schulz GEMMs need buffer device addresses.)
MuonOptions muon_options() {
  MuonOptions o;
  o.lr = 2e-2;
  return o;
}
INSTANTIATE_TEST_SUITE_P(Shards, ShardWholeTensorsTest,
                         ::testing::Combine(::testing::Values(ShardCase{"adafactor", AdafactorOptions{}},
                                                              ShardCase{"muon_and_adamw", muon_options()}),
                                            ::testing::Values(true)),
                         case_name);

// Adafactor on matrices split between ranks (ParamTensor::whole_rows, set by shard_groups):
// each piece keeps its whole matrix's row_var and col_var, and the step takes every rank's sums
// of each row and column (StepPart::factor_sums) before its per-tensor sums. Even layouts of 2,
// 3 and 4 ranks cut the matrices (64 x 65 and 100 x 200; 200 columns take the wide accesses)
// inside rows, the 100 x 200 one into three pieces on 4 ranks, and a layout of 3 ranks leaves
// one rank without a split matrix; the runs follow the
// unsharded one within float rounding (a row cut between ranks and each column add the ranks'
// partial sums), with the per-tensor sums exchanged either way, and with global clipping in
// four parts. Every piece's factors are its whole matrix's, the same on every rank.
class ShardSplitFactorsTest : public ShardSumsTest {
 protected:
  // The model cut at `cuts`.
  static ShardLayout layout_at(const std::vector<uint64_t>& cuts) { return ::layout_at(model(), cuts); }
};

TEST_P(ShardSplitFactorsTest, SplitMatricesTakeEveryRanksRowAndColumnSums) {
  auto ctx = context();
  const auto p0 = random(ShardLayout::even(model(), 1).total(), 1.0);
  const uint64_t n = p0.size();
  const GradClip clip = half_norm_clip();
  std::vector<Replica> reference, clipped_reference;
  reference.push_back(whole(ctx, p0));
  clipped_reference.push_back(whole(ctx, p0));
  clipped_reference[0].opt->set_grad_clip(clip);
  std::vector<ShardLayout> layouts;
  std::vector<std::vector<Replica>> summed, chunked, clipped;
  // Tensor starts: 0, 70001 (64 x 65), 74161, 74226 (100 x 200), 94226, 94229; cuts 256-aligned.
  // (The last layout's rank 0 holds no split matrix: its factor part is empty and its
  // tensor_sums part takes the clipping's outcome, while the other ranks' factor parts do.)
  const std::vector<std::vector<uint64_t>> cuts = {{70001 + 7 * 256},
                                                   {70001 + 3 * 256, 74226 + 41 * 256},
                                                   {70001 + 10 * 256, 74226 + 20 * 256, 74226 + 60 * 256},
                                                   {70001, 74226 + 41 * 256}};
  for (const auto& at : cuts) {
    layouts.push_back(layout_at(at));
    summed.push_back(shards(ctx, layouts.back(), p0));
    chunked.push_back(shards(ctx, layouts.back(), p0));
    clipped.push_back(shards(ctx, layouts.back(), p0));
    for (auto& r : clipped.back()) r.opt->set_grad_clip(clip);
  }
  // Every rank but the last layout's first holds a piece of a split matrix (the whole_rows path).
  size_t ranks_with_split_pieces = 0;
  for (auto& rs : summed)
    for (auto& r : rs) ranks_with_split_pieces += r.opt->factor_sum_count() > 0 ? 1 : 0;
  ASSERT_EQ(ranks_with_split_pieces, 2u + 3u + 4u + 2u);
  for (int t = 1; t <= 8; ++t) {
    const auto g = random(n, 0.1);
    step(reference, g);
    step(clipped_reference, g);
    for (size_t i = 0; i < layouts.size(); ++i) {
      step_in_parts(summed[i], layouts[i], g);
      step_in_parts_exchanging_chunks(chunked[i], layouts[i], g);
      step_in_parts(clipped[i], layouts[i], g, &clip);
    }
  }
  EXPECT_LT(clipped_reference[0].opt->step_reports().back().clip_coef, 1.0f) << "nothing was clipped";
  const auto want = params(reference), want_clipped = params(clipped_reference);
  EXPECT_NE(vkt::bits(want), vkt::bits(want_clipped));
  const auto want_state = state(reference);
  for (size_t i = 0; i < layouts.size(); ++i) {
    SCOPED_TRACE(std::to_string(layouts[i].ranks()) + " shards");
    expect_within_rounding(params(summed[i]), want);
    expect_within_rounding(params(chunked[i]), want);
    expect_within_rounding(params(clipped[i]), want_clipped);
    // Per-element state concatenated; each piece's factors are the whole matrix's.
    for (auto& r : summed[i])
      for (const auto& piece : r.names) {
        const std::string name = piece.substr(0, piece.find('['));
        const size_t ti = r.opt->tensor_index(piece);
        for (const auto& s : r.opt->state_names(ti)) {
          if (s == "step") continue;
          const auto got = r.opt->read_state(ti, s);
          const auto& full = want_state.at(name + "." + s);
          if (s == "row_var" || s == "col_var") {
            SCOPED_TRACE(piece + "." + s);
            expect_within_rounding(got, full, 0.0);
          }
        }
      }
  }
  // The vectors' sizes are checked; optimizers of other rules have no such part.
  EXPECT_THROW(scatter_factor_sums(layouts[0], 0, std::vector<float>(3)), Error);
  EXPECT_THROW(gather_factor_sums(layouts[0], 0, std::vector<float>(3)), Error);
  EXPECT_THROW(summed[0][0].opt->set_factor_sums(std::vector<float>(3)), Error);
}

// Checkpoints of split matrices: saved at 4 ranks (layer.1.weight in three pieces), resharded to
// 3 ranks (other cuts) and to 1 (whole): per-element state reassembled bit for bit, every piece's
// row_var and col_var the saved whole statistics, and the runs go on within float rounding.
TEST_P(ShardSplitFactorsTest, CheckpointsOfSplitMatricesReshard) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const ShardLayout four = layout_at({70001 + 10 * 256, 74226 + 20 * 256, 74226 + 60 * 256});
  const auto p0 = random(n, 1.0);
  auto saved = shards(ctx, four, p0);
  for (int t = 1; t <= 4; ++t) step_in_parts(saved, four, random(n, 0.1));
  const auto files = checkpoints(saved);
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  // What every piece must hold: per-element state by flat place, factors whole.
  auto expect_state = [&](std::vector<Replica>& got, std::vector<Replica>& want) {
    std::map<std::string, std::vector<float>> factors;
    for (auto* rs : {&want, &got})
      for (auto& r : *rs)
        for (const auto& piece : r.names) {
          const size_t ti = r.opt->tensor_index(piece);
          for (const std::string s : {"row_var", "col_var"})
            if (std::ranges::count(r.opt->state_names(ti), s)) {
              const std::string name = piece.substr(0, piece.find('[')) + "." + s;
              const auto v = r.opt->read_state(ti, s);
              if (rs == &want)
                factors[name] = v;
              else
                EXPECT_EQ(vkt::bits(v), vkt::bits(factors.at(name))) << piece << "." << s;
            }
        }
    EXPECT_EQ(factors.size(), 4u);
    std::map<std::string, std::vector<float>> a = state(got), b = state(want);
    for (const auto& [name, values] : b) {
      if (name.ends_with("row_var") || name.ends_with("col_var")) continue;
      EXPECT_EQ(vkt::bits(a.at(name)), vkt::bits(values)) << name;
    }
  };
  const auto p_saved = params(saved);
  std::vector<std::vector<float>> later_grads;
  for (int t = 0; t < 3; ++t) later_grads.push_back(random(n, 0.1));
  std::vector<Replica> reference;  // the whole model's optimizer, loading the one-rank checkpoint
  reference.push_back(whole(ctx, p_saved));
  std::vector<std::vector<Replica>> loaded;
  for (const ShardLayout& target : {layout_at({70001 + 3 * 256, 74226 + 41 * 256}), ShardLayout::even(model(), 1)}) {
    SCOPED_TRACE(std::to_string(target.ranks()) + " shards");
    loaded.push_back(shards(ctx, target, p_saved));
    for (uint32_t r = 0; r < target.ranks(); ++r)
      loaded.back()[r].opt->load_from_memory(reshard_checkpoint(four, spans, target, r));
    expect_state(loaded.back(), saved);
    if (target.ranks() == 1) reference[0].opt->load_from_memory(reshard_checkpoint(four, spans, target, 0));
    for (const auto& g : later_grads) step_in_parts(loaded.back(), target, g);
  }
  for (const auto& g : later_grads) {
    step_in_parts(saved, four, g);
    step(reference, g);
  }
  for (auto& rs : loaded) expect_within_rounding(params(rs), params(saved));
  EXPECT_EQ(vkt::bits(params(loaded.back())), vkt::bits(params(reference))) << "one shard and the whole optimizer";
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardSplitFactorsTest,
                         ::testing::Combine(::testing::Values(ShardCase{"adafactor", AdafactorOptions{}}),
                                            ::testing::Values(true)),
                         case_name);

// Rank-1 normalised 4-bit second moments of matrices split between ranks: each piece keeps its
// whole matrix's row and column maxima; the step finds this rank's part of the new maxima, the
// ranks combine them with MAX (StepPart::factor_sums: scatter_factor_maxima, gather_factor_maxima)
// and the finish encodes against them. MAX is exact, so 2, 3 and 4 shards take the unsharded
// optimizer's steps bit for bit (parameters, codes, maxima), with clipping in three parts too
// (the gradient chunks exchanged whole), and parts recorded once and submitted every step. The cuts fall inside rows of
// both matrices (64 x 65 and 100 x 200) and leave a piece of 256 elements of the 100 x 200 one, fewer than its 300
// maxima (its pass clears a set with a stride).
class ShardSplitRank1Test : public ShardSumsTest {
 protected:
  static ShardLayout layout_at(const std::vector<uint64_t>& cuts) { return ::layout_at(model(), cuts); }
  // The ranks' lists combined with MAX (as MPI_Allreduce with MPI_MAX), written back.
  static void exchange_maxima(std::vector<Replica>& rs, const ShardLayout& layout,
                              const std::vector<std::vector<float>>& mine) {
    std::vector<float> total(factor_maxima_count(layout), 0.0f);
    for (uint32_t r = 0; r < rs.size(); ++r) {
      const auto scattered = scatter_factor_maxima(layout, r, mine[r]);
      for (size_t k = 0; k < total.size(); ++k) total[k] = std::max(total[k], scattered[k]);
    }
    for (uint32_t r = 0; r < rs.size(); ++r) rs[r].opt->set_factor_sums(gather_factor_maxima(layout, r, total));
  }
  static void step_rank1_parts(std::vector<Replica>& rs, const ShardLayout& layout, const std::vector<float>& g,
                               const GradClip* clip = nullptr) {
    for (auto& r : rs)
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
    if (clip) set_total_from_grad_chunks(rs, layout, *clip);
    std::vector<std::vector<float>> mine;
    for (auto& r : rs) mine.push_back(r.opt->step_factor_sums());
    exchange_maxima(rs, layout, mine);
    for (auto& r : rs) r.opt->step_finish();
  }
  static std::vector<ShardLayout> layouts() {
    // Tensor starts: 0, 70001 (64 x 65), 74161, 74226 (100 x 200), 94226, 94229.
    // (The last layout's rank 0 holds no matrix: its factor part is empty and its finish is the
    // whole step, gradient control included.)
    return {layout_at({70001 + 7 * 256}), layout_at({70001 + 3 * 256, 74226 + 41 * 256}),
            layout_at({70001 + 256, 74226 + 20 * 256, 74226 + 21 * 256}), layout_at({70001, 74226 + 41 * 256})};
  }
};

TEST_P(ShardSplitRank1Test, SplitMatricesCombineEveryRanksMaximaBitForBit) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const GradClip clip = half_norm_clip();
  std::vector<Replica> reference, clipped_reference;
  reference.push_back(whole(ctx, p0));
  clipped_reference.push_back(whole(ctx, p0));
  clipped_reference[0].opt->set_grad_clip(clip);
  std::vector<std::vector<Replica>> called, clipped, recorded;
  for (const auto& layout : layouts()) {
    called.push_back(shards(ctx, layout, p0));
    clipped.push_back(shards(ctx, layout, p0));
    for (auto& r : clipped.back()) r.opt->set_grad_clip(clip);
  }
  const ShardLayout last = layouts()[2];
  recorded.push_back(shards(ctx, last, p0));
  // Every rank but the last layout's first holds a piece of a split matrix; a piece's list is
  // three sets of its matrix's maxima.
  size_t ranks_with_split_pieces = 0;
  for (auto& rs : called)
    for (auto& r : rs) ranks_with_split_pieces += r.opt->factor_sum_count() > 0 ? 1 : 0;
  EXPECT_EQ(ranks_with_split_pieces, 2u + 3u + 4u + 2u);
  EXPECT_EQ(called[2][2].opt->factor_sum_count(), 3u * (100 + 200)) << "rank 2: layer.1.weight[5120:5376]";
  EXPECT_EQ(factor_maxima_count(last), 3u * (64 + 65 + 100 + 200));
  vkt::Engine engine(ctx);
  std::vector<std::array<VkCommandBuffer, 2>> cmds;
  for (auto& r : recorded[0]) {
    auto& pair = cmds.emplace_back();
    for (int k = 0; k < 2; ++k) {
      RecordOptions o = vkt::host_reads();
      o.replay = true;
      o.part = k == 0 ? StepPart::factor_sums : StepPart::finish;
      pair[size_t(k)] = engine.begin();
      r.opt->record(pair[size_t(k)], o);
      engine.end(pair[size_t(k)]);
    }
  }
  // (Gradients fall after step 6, so the second moments shrink: a maxima set left uncleared
  // from three steps before would raise the maxima and change the codes.)
  for (int t = 1; t <= 12; ++t) {
    const auto g = random(n, t <= 6 ? 0.1 : 0.002);
    step(reference, g);
    step(clipped_reference, g);
    const auto ls = layouts();
    for (size_t i = 0; i < ls.size(); ++i) {
      step_rank1_parts(called[i], ls[i], g);
      step_rank1_parts(clipped[i], ls[i], g, &clip);
    }
    auto& rs = recorded[0];
    std::vector<std::vector<float>> mine;
    for (size_t r = 0; r < rs.size(); ++r) {
      rs[r].grad.upload(
          std::vector<float>(g.begin() + std::ptrdiff_t(rs[r].begin), g.begin() + std::ptrdiff_t(rs[r].end)));
      engine.submit(cmds[r][0]);
      mine.push_back(rs[r].opt->factor_sums());
    }
    exchange_maxima(rs, last, mine);
    for (size_t r = 0; r < rs.size(); ++r) engine.submit(cmds[r][1]);
  }
  EXPECT_LT(clipped_reference[0].opt->step_reports().back().clip_coef, 1.0f) << "nothing was clipped";
  const auto want = params(reference), want_clipped = params(clipped_reference);
  EXPECT_NE(vkt::bits(want), vkt::bits(want_clipped));
  const auto want_state = state(reference);
  ASSERT_TRUE(want_state.count("layer.1.weight.exp_avg_sq"));
  auto expect_same = [&](std::vector<Replica>& rs, const std::vector<float>& p, const char* what) {
    SCOPED_TRACE(std::to_string(rs.size()) + " shards, " + what);
    EXPECT_EQ(vkt::bits(params(rs)), vkt::bits(p));
  };
  for (size_t i = 0; i < called.size(); ++i) {
    expect_same(called[i], want, "parts called");
    expect_same(clipped[i], want_clipped, "clipped");
    const auto got = state(called[i]);
    ASSERT_EQ(got.size(), want_state.size());
    for (const auto& [name, values] : want_state) EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
  }
  expect_same(recorded[0], want, "recorded once");
  EXPECT_TRUE(messages_->list.empty());
}

// Checkpoints of split rank-1 matrices: saved at 3 ranks, resharded to 2 other cuts and to 1;
// each piece loads its codes and its whole matrix's maxima, and the runs go on as the saved one
// does, bit for bit. What a split piece's rank-1 moment cannot do is refused, naming the reason.
TEST_P(ShardSplitRank1Test, CheckpointsOfSplitRank1MatricesReshard) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const ShardLayout three = layouts()[2];
  auto saved = shards(ctx, three, p0);
  for (int t = 1; t <= 4; ++t) step_rank1_parts(saved, three, random(n, 0.1));
  const auto files = checkpoints(saved);
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  const auto want = state(saved);
  const auto p_saved = params(saved);
  std::vector<std::vector<float>> later_grads;
  for (int t = 0; t < 3; ++t) later_grads.push_back(random(n, 0.1));
  for (const auto& g : later_grads) step_rank1_parts(saved, three, g);
  for (const ShardLayout& target : {layouts()[1], ShardLayout::even(model(), 1)}) {
    SCOPED_TRACE(std::to_string(target.ranks()) + " shards");
    auto loaded = reloaded(ctx, three, spans, target, p_saved, want);
    for (const auto& g : later_grads) step_rank1_parts(loaded, target, g);
    EXPECT_EQ(vkt::bits(params(loaded)), vkt::bits(params(saved))) << "the run did not go on as the saved one";
  }
  // A shard holding part of a split matrix steps in parts only, and in order; its rank-1 moment
  // is not written piece by piece.
  auto& piece = *saved[1].opt;
  const size_t ti = piece.tensor_index(saved[1].names.front());
  ASSERT_NE(saved[1].names.front().find('['), std::string::npos);
  auto expect_error = [](const std::function<void()>& f, Status status, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected a refusal mentioning " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  const auto p_before = params(saved);
  const uint64_t steps_before = piece.step_count(ti);
  expect_error([&] { piece.step(); }, Status::invalid_state, "record the step in parts");
  expect_error([&] { piece.step_finish(); }, Status::invalid_state, "take every rank's maxima first");
  piece.set_grad_clip(half_norm_clip());
  expect_error([&] { piece.step_finish(GradSums{}); }, Status::invalid_state, "need the ranks' maxima too");
  piece.set_grad_clip(GradClip{});
  expect_error([&] { piece.write_state(ti, "exp_avg_sq", piece.read_state(ti, "exp_avg_sq")); }, Status::unsupported,
               "encoded against the whole matrix's maxima");
  expect_error([&] { piece.set_factor_sums(std::vector<float>(3)); }, Status::invalid_argument,
               "three sets of maxima per row and column");
  expect_error([&] { scatter_factor_maxima(three, 1, std::vector<float>(3)); }, Status::invalid_argument,
               "scatter_factor_maxima: 3 floats");
  expect_error([&] { gather_factor_maxima(three, 1, std::vector<float>(3)); }, Status::invalid_argument,
               "gather_factor_maxima: 3 floats");
  EXPECT_EQ(vkt::bits(params(saved)), vkt::bits(p_before)) << "a refused step moved p";
  EXPECT_EQ(piece.step_count(ti), steps_before);
  {  // A piece given as rows instead of whole_rows.
    auto groups = shard_groups(three, 1, templates(), saved[1].param.range(), saved[1].grad.range());
    for (auto& t : groups[0].tensors)
      if (t.whole_rows) t.rows = t.whole_rows, t.whole_rows = 0;
    expect_error([&] { Optimizer o(ctx, groups); }, Status::invalid_argument,
                 "give precision.rank1_second_moment its whole tensor's rows as whole_rows");
  }
  EXPECT_TRUE(messages_->list.empty());
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardSplitRank1Test,
                         ::testing::Combine(::testing::Values([] {
                                              AdamOptions adamw;
                                              adamw.lr = 1e-2, adamw.weight_decay = 0.01;
                                              adamw.decoupled_weight_decay = true;
                                              ShardCase c{"adamw_q4_rank1", adamw, StateDType::q4};
                                              c.rank1 = true;
                                              return c;
                                            }()),
                                            ::testing::Bool()),
                         case_name);

// Muon on matrices split between ranks (AdamW on the rest, in the same optimizer): each piece's
// transient update slot is its whole matrix's; the factor part writes the piece's momentum update
// U at its place (zeros elsewhere), the ranks add their slots (scatter_matrix_updates,
// gather_matrix_updates: exact, each element from one rank), the tensor_sums part takes each
// matrix's sum of U^2 from the ranks' chunks (the unsharded step's bits), and the finish runs
// Newton-Schulz on the whole matrix on every rank holding a piece, each applying its part: 2, 3,
// 4 and 3 shards (matrices cut inside rows, a piece of 256 elements, a rank without a matrix)
// take the unsharded optimizer's steps bit for bit, clipped too; with per-piece sums added, within
// float rounding.
class ShardSplitMuonTest : public ShardSumsTest {
 protected:
  std::vector<ShardLayout> layouts() const {
    // Tensor starts: 0, 70001 (64 x 65), 74161, 74226 (100 x 200), 94226, 94229.
    return {layout_at(tensors(), {70001 + 7 * 256}), layout_at(tensors(), {70001 + 3 * 256, 74226 + 41 * 256}),
            layout_at(tensors(), {70001 + 256, 74226 + 20 * 256, 74226 + 21 * 256}),
            layout_at(tensors(), {70001, 74226 + 41 * 256})};
  }
  // One step in parts: [clip,] the ranks' updates added, then their per-tensor sums (as chunk
  // lists, or per piece added in rank order), then the finish.
  void step_split(std::vector<Replica>& rs, const ShardLayout& layout, const std::vector<float>& g, bool chunks,
                  const GradClip* clip = nullptr) {
    for (auto& r : rs)
      r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
    if (clip) set_total_from_grad_chunks(rs, layout, *clip);
    const auto groups = templates();
    std::vector<float> updates(matrix_update_count(layout, groups), 0.0f);
    for (uint32_t r = 0; r < rs.size(); ++r) {
      const auto mine = scatter_matrix_updates(layout, groups, r, rs[r].opt->step_factor_sums());
      for (size_t k = 0; k < mine.size(); ++k) updates[k] += mine[k];
    }
    for (uint32_t r = 0; r < rs.size(); ++r)
      rs[r].opt->set_factor_sums(gather_matrix_updates(layout, groups, r, updates));
    std::vector<float> sums;
    if (chunks) {
      std::vector<float> all;
      for (uint32_t r = 0; r < rs.size(); ++r) {
        const auto mine = scatter_tensor_chunks(layout, r, rs[r].opt->step_tensor_chunks());
        all.resize(mine.size());
        for (size_t k = 0; k < mine.size(); ++k) all[k] += mine[k];
      }
      sums = reduce_tensor_chunks(layout, all);
    } else {
      std::vector<std::vector<float>> mine;
      for (auto& r : rs) mine.push_back(r.opt->step_tensor_sums());
      sums = combined_tensor_sums(layout, mine);
    }
    for (uint32_t r = 0; r < rs.size(); ++r) rs[r].opt->step_finish(gather_tensor_sums(layout, r, sums));
  }
};

TEST_P(ShardSplitMuonTest, SplitMatricesTakeEveryRanksUpdateBitForBit) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const GradClip clip = half_norm_clip();
  std::vector<Replica> reference, clipped_reference;
  reference.push_back(whole(ctx, p0));
  clipped_reference.push_back(whole(ctx, p0));
  clipped_reference[0].opt->set_grad_clip(clip);
  const auto ls = layouts();
  std::vector<std::vector<Replica>> chunked, summed, clipped;
  for (const auto& layout : ls) {
    chunked.push_back(shards(ctx, layout, p0));
    summed.push_back(shards(ctx, layout, p0));
    clipped.push_back(shards(ctx, layout, p0));
    for (auto& r : clipped.back()) r.opt->set_grad_clip(clip);
  }
  // The three parts recorded once (layout 2) and submitted every step, the lists exchanged
  // through factor_sums()/set_factor_sums() and tensor_sums(): the step calls' bits (per-piece
  // sums added in rank order, as `summed`).
  auto recorded = shards(ctx, ls[2], p0);
  vkt::Engine engine(ctx);
  std::vector<std::array<VkCommandBuffer, 3>> cmds;
  for (auto& r : recorded) {
    auto& parts = cmds.emplace_back();
    const StepPart order[3] = {StepPart::factor_sums, StepPart::tensor_sums, StepPart::finish};
    for (size_t k = 0; k < 3; ++k) {
      RecordOptions o = vkt::host_reads();
      o.replay = true;
      o.part = order[k];
      parts[k] = engine.begin();
      r.opt->record(parts[k], o);
      engine.end(parts[k]);
    }
  }
  auto step_recorded = [&](const std::vector<float>& g) {
    const auto groups = templates();
    std::vector<float> updates(matrix_update_count(ls[2], groups), 0.0f);
    for (uint32_t r = 0; r < recorded.size(); ++r) {
      recorded[r].grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(recorded[r].begin),
                                                 g.begin() + std::ptrdiff_t(recorded[r].end)));
      engine.submit(cmds[r][0]);
      const auto mine = scatter_matrix_updates(ls[2], groups, r, recorded[r].opt->factor_sums());
      for (size_t k = 0; k < mine.size(); ++k) updates[k] += mine[k];
    }
    std::vector<std::vector<float>> sums;
    for (uint32_t r = 0; r < recorded.size(); ++r) {
      recorded[r].opt->set_factor_sums(gather_matrix_updates(ls[2], groups, r, updates));
      engine.submit(cmds[r][1]);
      sums.push_back(recorded[r].opt->tensor_sums());
    }
    const auto total = combined_tensor_sums(ls[2], sums);
    for (uint32_t r = 0; r < recorded.size(); ++r) {
      recorded[r].opt->set_tensor_sums(gather_tensor_sums(ls[2], r, total));
      engine.submit(cmds[r][2]);
    }
  };
  // Every rank but the last layout's first holds a piece of a split matrix, whose list is its
  // whole matrix; the layout's list holds both matrices (both in the Muon group).
  size_t ranks_with_split_pieces = 0;
  for (auto& rs : chunked)
    for (auto& r : rs) ranks_with_split_pieces += r.opt->factor_sum_count() > 0 ? 1 : 0;
  EXPECT_EQ(ranks_with_split_pieces, 2u + 3u + 4u + 2u);
  EXPECT_EQ(chunked[2][2].opt->factor_sum_count(), 100u * 200u) << "rank 2: layer.1.weight[5120:5376]";
  EXPECT_EQ(matrix_update_count(ls[2], templates()), 64u * 65u + 100u * 200u);
  for (int t = 1; t <= 8; ++t) {
    const auto g = random(n, 0.1);
    step(reference, g);
    step(clipped_reference, g);
    for (size_t i = 0; i < ls.size(); ++i) {
      step_split(chunked[i], ls[i], g, true);
      step_split(summed[i], ls[i], g, false);
      step_split(clipped[i], ls[i], g, true, &clip);
    }
    step_recorded(g);
  }
  EXPECT_EQ(vkt::bits(params(recorded)), vkt::bits(params(summed[2]))) << "recorded parts";
  EXPECT_LT(clipped_reference[0].opt->step_reports().back().clip_coef, 1.0f) << "nothing was clipped";
  const auto want = params(reference), want_clipped = params(clipped_reference);
  EXPECT_NE(vkt::bits(want), vkt::bits(want_clipped));
  EXPECT_NE(vkt::bits(want), vkt::bits(p0));
  const auto want_state = state(reference);
  for (size_t i = 0; i < ls.size(); ++i) {
    SCOPED_TRACE(std::to_string(ls[i].ranks()) + " shards");
    EXPECT_EQ(vkt::bits(params(chunked[i])), vkt::bits(want));
    EXPECT_EQ(vkt::bits(params(clipped[i])), vkt::bits(want_clipped));
    expect_within_rounding(params(summed[i]), want);
    const auto got = state(chunked[i]);
    for (const auto& [name, values] : want_state) {
      if (name.ends_with(".update")) continue;  // (transient: a piece's is its whole matrix's)
      EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
    }
  }
  // The lists' sizes are checked, and the order of the parts.
  const auto groups = templates();
  EXPECT_THROW(scatter_matrix_updates(ls[0], groups, 0, std::vector<float>(3)), Error);
  EXPECT_THROW(gather_matrix_updates(ls[0], groups, 0, std::vector<float>(3)), Error);
  EXPECT_THROW(matrix_update_count(ls[0], std::vector<ParamGroup>()), Error);
  {  // A shard whose only matrix is a split piece takes the address path too (its products need it).
    auto o = validated_options();
    o.addressing = Addressing::descriptors;
    auto descriptors = make_context(o);
    EXPECT_THROW(shards(descriptors, ls[2], p0), Error);
  }
  auto& piece = *chunked[0][1].opt;
  try {
    piece.step_tensor_sums();
    ADD_FAILURE() << "the tensor part ran before the factor part";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("takes every rank's part of its split matrices' updates first"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(messages_->list.empty());
}

// Checkpoints of split Muon matrices: saved at 3 ranks, resharded to other cuts and to 1; the
// momentum buffers reassemble bit for bit and the runs go on as the saved one does.
TEST_P(ShardSplitMuonTest, CheckpointsOfSplitMatricesReshard) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  const auto ls = layouts();
  auto saved = shards(ctx, ls[2], p0);
  for (int t = 1; t <= 3; ++t) step_split(saved, ls[2], random(n, 0.1), true);
  const auto files = checkpoints(saved);
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  auto want = state(saved);
  std::erase_if(want, [](const auto& kv) { return kv.first.ends_with(".update"); });
  const auto p_saved = params(saved);
  std::vector<std::vector<float>> later_grads;
  for (int t = 0; t < 3; ++t) later_grads.push_back(random(n, 0.1));
  for (const auto& g : later_grads) step_split(saved, ls[2], g, true);
  for (const ShardLayout& target : {ls[1], ShardLayout::even(tensors(), 1)}) {
    SCOPED_TRACE(std::to_string(target.ranks()) + " shards");
    auto loaded = shards(ctx, target, p_saved);
    for (uint32_t r = 0; r < target.ranks(); ++r)
      loaded[r].opt->load_from_memory(reshard_checkpoint(ls[2], spans, target, r));
    const auto got = state(loaded);
    for (const auto& [name, values] : want) EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
    for (const auto& g : later_grads) step_split(loaded, target, g, true);
    EXPECT_EQ(vkt::bits(params(loaded)), vkt::bits(params(saved))) << "the run did not go on as the saved one";
  }
  EXPECT_TRUE(messages_->list.empty());
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardSplitMuonTest,
                         ::testing::Combine(::testing::Values(ShardCase{"muon_and_adamw", muon_options()}),
                                            ::testing::Values(true)),
                         case_name);

std::vector<ShardCase> sums_cases() {
  LambOptions lamb;
  lamb.lr = 1e-2, lamb.weight_decay = 0.01;
  StableAdamwOptions stable;
  stable.lr = 1e-2;
  AdamOptions cautious;
  cautious.lr = 1e-2, cautious.cautious = true, cautious.decoupled_weight_decay = true, cautious.weight_decay = 0.01;
  return {{"lamb", lamb}, {"stable_adamw", stable}, {"adamw_cautious", cautious}};
}
INSTANTIATE_TEST_SUITE_P(Shards, ShardSumsTest,
                         ::testing::Combine(::testing::ValuesIn(sums_cases()), ::testing::Bool()), case_name);
std::vector<ShardCase> sums_clip_cases() {
  auto cases = sums_cases();
  std::erase_if(cases, [](const ShardCase& c) { return c.name == "stable_adamw"; });
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Shards, ShardSumsClipTest,
                         ::testing::Combine(::testing::ValuesIn(sums_clip_cases()), ::testing::Bool()), case_name);

// Engines record each part once (RecordOptions::part, replay) and submit the recordings every
// step, exchanging the sums between the submissions through grad_sums()/set_grad_sums(),
// factor_sums()/set_factor_sums() (Adafactor) and tensor_sums()/set_tensor_sums() (host-staged,
// as an MPI engine does): the same bits as the step_grad_sums / step_factor_sums /
// step_tensor_sums / step_finish calls, a NaN step skipped alike.
class ShardRecordedPartsTest : public ShardTest {};

TEST_P(ShardRecordedPartsTest, PartsRecordedOnceAndSubmittedEveryStepEqualTheStepCalls) {
  auto ctx = context();
  const ShardLayout four = ShardLayout::even(model(), 4);
  const uint64_t n = four.total();
  const auto p0 = random(n, 1.0);
  const GradClip clip = half_norm_clip();
  auto called = shards(ctx, four, p0), recorded = shards(ctx, four, p0);
  set_clip_and_scaler(called);
  set_clip_and_scaler(recorded);
  const bool factors = std::holds_alternative<AdafactorOptions>(std::get<0>(GetParam()).options);
  const bool per_tensor = std::holds_alternative<LambOptions>(std::get<0>(GetParam()).options) || factors;
  std::vector<StepPart> parts = {StepPart::grad_sums, StepPart::finish};
  if (per_tensor) parts.insert(parts.begin() + 1, StepPart::tensor_sums);
  if (factors) parts.insert(parts.begin() + 1, StepPart::factor_sums);
  // (Adafactor: the even layout cuts layer.0.weight inside a row, so its pieces exchange row and
  // column sums.)
  if (factors) {
    ASSERT_GT(called[2].opt->factor_sum_count(), 0u);
  }
  // The ranks' row and column sums added in rank order.
  auto combined_factor_sums = [&](const std::vector<std::vector<float>>& mine) {
    std::vector<float> total(factor_sum_count(four), 0.0f);
    for (uint32_t r = 0; r < mine.size(); ++r) {
      const auto scattered = scatter_factor_sums(four, r, mine[r]);
      for (size_t k = 0; k < total.size(); ++k) total[k] += scattered[k];
    }
    return total;
  };
  vkt::Engine engine(ctx);
  std::vector<std::vector<VkCommandBuffer>> cmds(recorded.size());
  for (size_t r = 0; r < recorded.size(); ++r)
    for (StepPart part : parts) {
      RecordOptions o = vkt::host_reads();
      o.replay = true;
      o.part = part;
      VkCommandBuffer cmd = engine.begin();
      recorded[r].opt->record(cmd, o);
      engine.end(cmd);
      cmds[r].push_back(cmd);
    }
  const int nan_step = 3;
  for (int t = 1; t <= 6; ++t) {
    auto g = random(n, 1000.0);
    if (t == nan_step) g[n / 3] = std::numeric_limits<float>::quiet_NaN();
    for (auto* rs : {&called, &recorded})
      for (auto& r : *rs)
        r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
    // The calls.
    std::vector<GradSums> sums;
    for (auto& r : called) sums.push_back(r.opt->step_grad_sums());
    GradSums total = combined(clip, sums);
    if (factors) {
      std::vector<std::vector<float>> mine;
      for (auto& r : called) {
        r.opt->set_grad_sums(total);
        mine.push_back(r.opt->step_factor_sums());
      }
      const auto factor_total = combined_factor_sums(mine);
      for (uint32_t r = 0; r < called.size(); ++r)
        called[r].opt->set_factor_sums(gather_factor_sums(four, r, factor_total));
    }
    if (per_tensor) {
      std::vector<std::vector<float>> mine;
      for (auto& r : called) {
        if (!factors) r.opt->set_grad_sums(total);
        mine.push_back(r.opt->step_tensor_sums());
      }
      const auto tensor_total = combined_tensor_sums(four, mine);
      for (uint32_t r = 0; r < called.size(); ++r)
        called[r].opt->step_finish(gather_tensor_sums(four, r, tensor_total));
    } else {
      for (auto& r : called) r.opt->step_finish(total);
    }
    // The recordings.
    sums.clear();
    for (size_t r = 0; r < recorded.size(); ++r) {
      engine.submit(cmds[r][0]);
      sums.push_back(recorded[r].opt->grad_sums());
    }
    total = combined(clip, sums);
    for (auto& r : recorded) r.opt->set_grad_sums(total);
    if (factors) {
      std::vector<std::vector<float>> mine;
      for (size_t r = 0; r < recorded.size(); ++r) {
        engine.submit(cmds[r][1]);
        mine.push_back(recorded[r].opt->factor_sums());
      }
      const auto factor_total = combined_factor_sums(mine);
      for (uint32_t r = 0; r < recorded.size(); ++r)
        recorded[r].opt->set_factor_sums(gather_factor_sums(four, r, factor_total));
    }
    if (per_tensor) {
      std::vector<std::vector<float>> mine;
      for (size_t r = 0; r < recorded.size(); ++r) {
        engine.submit(cmds[r][factors ? 2 : 1]);
        mine.push_back(recorded[r].opt->tensor_sums());
      }
      const auto tensor_total = combined_tensor_sums(four, mine);
      for (uint32_t r = 0; r < recorded.size(); ++r)
        recorded[r].opt->set_tensor_sums(gather_tensor_sums(four, r, tensor_total));
    }
    for (size_t r = 0; r < recorded.size(); ++r) engine.submit(cmds[r].back());
  }
  EXPECT_EQ(vkt::bits(params(recorded)), vkt::bits(params(called)));
  const auto want = state(called), got = state(recorded);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, values] : want) EXPECT_EQ(vkt::bits(got.at(name)), vkt::bits(values)) << name;
  for (size_t r = 0; r < recorded.size(); ++r) {
    const auto a = called[r].opt->step_reports(), b = recorded[r].opt->step_reports();
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), a.size());
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(b[k].skipped, a[k].skipped) << "step " << k + 1;
      EXPECT_EQ(b[k].skipped, int(k) + 1 == nan_step) << "step " << k + 1;
      EXPECT_EQ(b[k].scale, a[k].scale) << "step " << k + 1;
      if (!a[k].skipped) {
        EXPECT_EQ(vkt::bits({b[k].total_norm}), vkt::bits({a[k].total_norm})) << "step " << k + 1;
      }
    }
    EXPECT_EQ(recorded[r].opt->step_count(0), 5u);
  }
  EXPECT_NE(vkt::bits(params(recorded)), vkt::bits(p0)) << "nothing stepped";
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardRecordedPartsTest,
                         ::testing::Combine(::testing::Values(ShardCase{"adamw_q8", shard_cases()[1].options,
                                                                        StateDType::q8},
                                                              ShardCase{"lamb", sums_cases()[0].options}),
                                            ::testing::Bool()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(ShardsFactored, ShardRecordedPartsTest,
                         ::testing::Combine(::testing::Values(ShardCase{"adafactor", AdafactorOptions{}}),
                                            ::testing::Values(true)),
                         case_name);

// SAM across shards: its norm is over all of a group's gradients, so a shard perturbs in two
// parts around the ranks' per-group sums of |g|^2 (added in rank order). The gradient at the
// perturbed point is g + 0.5 p (each replica's own p), so the perturbation reaches the step. One
// shard in parts equals the unsharded optimizer bit for bit; 2, 3 and 4 shards stay within float
// rounding (a group's sum adds the ranks' sums, not one tree). Recorded once (both parts and the
// step, replayable) and submitted every step, 4 shards follow the calls within float rounding
// (replayable steps compute their scalars on the device).
class ShardSamTest : public ShardSumsTest {
 protected:
  // The gradient at the perturbed point of `r`: g + 0.5 p.
  static std::vector<float> perturbed_grad(Replica& r, const std::vector<float>& g) {
    const auto p = r.param.download();
    std::vector<float> out(p.size());
    for (size_t i = 0; i < p.size(); ++i) out[i] = g[r.begin + i] + 0.5f * p[i];
    return out;
  }
  // The ranks' per-group sums added in rank order.
  static std::vector<float> added(std::vector<std::vector<float>> sums) {
    for (size_t r = 1; r < sums.size(); ++r)
      for (size_t g = 0; g < sums[0].size(); ++g) sums[0][g] += sums[r][g];
    return sums[0];
  }
};

TEST_P(ShardSamTest, ShardsPerturbInTwoPartsAroundTheRanksSums) {
  auto ctx = context();
  const uint64_t n = ShardLayout::even(model(), 1).total();
  const auto p0 = random(n, 1.0);
  std::vector<Replica> reference;
  reference.push_back(whole(ctx, p0));
  std::vector<std::vector<Replica>> sharded;
  for (uint32_t ranks : {1u, 2u, 3u, 4u}) sharded.push_back(shards(ctx, ShardLayout::even(model(), ranks), p0));
  auto recorded = shards(ctx, ShardLayout::even(model(), 4), p0);
  vkt::Engine engine(ctx);
  std::vector<std::array<VkCommandBuffer, 3>> cmds;
  for (auto& r : recorded) {
    std::array<VkCommandBuffer, 3> c{};
    for (int k = 0; k < 3; ++k) {
      RecordOptions o = vkt::host_reads();
      o.replay = true;
      o.part = k == 0 ? StepPart::grad_sums : k == 1 ? StepPart::finish : StepPart::whole;
      c[k] = engine.begin();
      if (k < 2)
        r.opt->record_sam_perturb(c[k], o);
      else
        r.opt->record(c[k], o);
      engine.end(c[k]);
    }
    cmds.push_back(c);
  }
  std::vector<float> p_perturbed;
  for (int t = 1; t <= 6; ++t) {
    const auto g = random(n, 0.1);
    Replica& ref = reference[0];
    ref.grad.upload(g);
    ref.opt->sam_perturb();
    if (t == 1) p_perturbed = ref.param.download();
    ref.grad.upload(perturbed_grad(ref, g));
    ref.opt->step();
    for (auto& rs : sharded) {
      std::vector<std::vector<float>> sums;
      for (auto& r : rs) {
        r.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(r.begin), g.begin() + std::ptrdiff_t(r.end)));
        sums.push_back(r.opt->sam_perturb_sums());
        ASSERT_EQ(sums.back().size(), 2u);
      }
      const auto total = added(sums);
      for (auto& r : rs) r.opt->sam_perturb_finish(total);
      for (auto& r : rs) {
        r.grad.upload(perturbed_grad(r, g));
        r.opt->step();
      }
    }
    std::vector<std::vector<float>> sums;
    for (size_t r = 0; r < recorded.size(); ++r) {
      auto& rep = recorded[r];
      rep.grad.upload(std::vector<float>(g.begin() + std::ptrdiff_t(rep.begin), g.begin() + std::ptrdiff_t(rep.end)));
      engine.submit(cmds[r][0]);
      sums.push_back(rep.opt->sam_sums());
    }
    const auto total = added(sums);
    for (size_t r = 0; r < recorded.size(); ++r) {
      recorded[r].opt->set_sam_sums(total);
      engine.submit(cmds[r][1]);
    }
    for (size_t r = 0; r < recorded.size(); ++r) {
      recorded[r].grad.upload(perturbed_grad(recorded[r], g));
      engine.submit(cmds[r][2]);
    }
  }
  EXPECT_NE(vkt::bits(p_perturbed), vkt::bits(p0)) << "the first perturbation moved nothing";
  const auto want = params(reference);
  EXPECT_EQ(vkt::bits(params(sharded[0])), vkt::bits(want)) << "one shard in parts differs from the unsharded run";
  EXPECT_EQ(vkt::bits(state(sharded[0]).at("layer.1.weight.sam_e")),
            vkt::bits(state(reference).at("layer.1.weight.sam_e")));
  for (size_t i = 1; i < sharded.size(); ++i) {
    SCOPED_TRACE(std::to_string(sharded[i].size()) + " shards");
    expect_within_rounding(params(sharded[i]), want);
  }
  SCOPED_TRACE("4 shards, recorded once");
  expect_within_rounding(params(recorded), params(sharded[3]));
  for (auto& r : recorded) EXPECT_EQ(r.opt->step_count(0), 6u);
}

INSTANTIATE_TEST_SUITE_P(
    Shards, ShardSamTest,
    ::testing::Combine(
        ::testing::Values(ShardCase{
            "adamw_sam", shard_cases()[0].options, StateDType::f32, {}, Rounding::nearest_even, SamOptions{0.05}}),
        ::testing::Bool()),
    case_name);

class ShardLayoutTest : public vkt::VulkanTest {};

void expect_invalid(const std::function<void()>& f, const std::string& words) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected a refusal mentioning " << words;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST_F(ShardLayoutTest, EvenLayoutsCutAtTheAlignment) {
  for (uint32_t ranks = 1; ranks <= 7; ++ranks) {
    const ShardLayout l = ShardLayout::even(model(), ranks);
    ASSERT_EQ(l.ranks(), ranks);
    uint64_t covered = 0;
    for (uint32_t r = 0; r < ranks; ++r)
      for (const auto& p : shard_pieces(l, r)) {
        EXPECT_EQ(p.begin % kShardAlignment, 0u) << p.name;
        covered += p.count;
        if (p.count != l.tensors[p.tensor].count) {
          EXPECT_EQ(p.name, l.tensors[p.tensor].name + "[" + std::to_string(p.begin) + ":" +
                                std::to_string(p.begin + p.count) + "]");
        }
      }
    EXPECT_EQ(covered, l.total());
  }
}

TEST_F(ShardLayoutTest, BadLayoutsAreRefusedNamingTheProblem) {
  const ShardLayout good = ShardLayout::even(model(), 4);
  auto bad = [&](const std::function<void(ShardLayout&)>& change, const std::string& words) {
    ShardLayout l = good;
    change(l);
    expect_invalid([&] { l.validate(); }, words);
    expect_invalid([&] { shard_pieces(l, 0); }, words);
  };
  bad([](ShardLayout& l) { l.shards[1].begin -= 256; }, "overlaps shard 0");
  bad([](ShardLayout& l) { l.shards[1].begin += 256; }, "leaves elements");
  bad([](ShardLayout& l) { l.shards[2].end += 1, l.shards[3].begin += 1; }, "not a multiple of 256");
  bad([](ShardLayout& l) { l.shards.pop_back(); }, "the shards end at");
  bad([](ShardLayout& l) { l.shards[3].end += 256; }, "ends past the flat space");
  bad([](ShardLayout& l) { l.shards[1].end = l.shards[1].begin; }, "is empty");
  bad([](ShardLayout& l) { l.shards.clear(); }, "no shards");
  bad([](ShardLayout& l) { l.tensors[3].name = l.tensors[0].name; }, "used twice");
  bad([](ShardLayout& l) { l.tensors[1].rows = 7; }, "does not divide");
  bad([](ShardLayout& l) { l.tensors[4].count = 0; }, "has no elements");
  expect_invalid([] { ShardLayout::even({{"w", 300}}, 2); }, "would leave shard 0 empty");
  expect_invalid([] { ShardLayout::even(model(), 0); }, "ranks = 0");
  expect_invalid([&] { shard_pieces(good, 4); }, "rank 4, but the layout has 4 shards");
  expect_invalid([] { shard_layout_from_json("{\"format\": \"x\"}"); }, "shard index");
  expect_invalid([] { shard_layout_from_json("not json"); }, "shard index");
  std::string json = shard_index_json(good);
  json.replace(json.find("70001"), 5, "70002");  // every later cut moves off the alignment
  expect_invalid([&] { shard_layout_from_json(json); }, "not a multiple of 256");
}

// Layouts cut only between tensors (ZeroRedundancyOptimizer's whole parameters): every cut is a
// tensor boundary near the even cut, every shard keeps a tensor, more ranks than tensors are
// refused; Adafactor's optimizers are made over such shards (ShardWholeTensorsTest steps them).
TEST_F(ShardLayoutTest, WholeTensorLayoutsCutOnlyBetweenTensors) {
  // Tensor starts: 0, 70001, 74161, 74226, 94226, 94229; 98328 elements.
  const std::vector<std::vector<Shard>> want = {{{0, 98328}},
                                                {{0, 70001}, {70001, 98328}},
                                                {{0, 70001}, {70001, 74161}, {74161, 98328}},
                                                {{0, 70001}, {70001, 74161}, {74161, 74226}, {74226, 98328}}};
  for (uint32_t ranks = 1; ranks <= 4; ++ranks) {
    const ShardLayout layout = ShardLayout::whole_tensors(model(), ranks);
    ASSERT_EQ(layout.shards.size(), want[ranks - 1].size());
    for (uint32_t r = 0; r < ranks; ++r) {
      EXPECT_EQ(layout.shards[r].begin, want[ranks - 1][r].begin) << ranks << " ranks, shard " << r;
      EXPECT_EQ(layout.shards[r].end, want[ranks - 1][r].end) << ranks << " ranks, shard " << r;
    }
  }
  // Six tensors: six shards, one tensor each.
  const ShardLayout six = ShardLayout::whole_tensors(model(), 6);
  for (uint32_t r = 0; r < 6; ++r) EXPECT_EQ(shard_pieces(six, r).size(), 1u);
  try {
    ShardLayout::whole_tensors(model(), 7);
    ADD_FAILURE() << "7 shards of 6 whole tensors accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("7 shards of whole tensors, but the layout has 6 tensors"), std::string::npos)
        << e.what();
  }
  auto ctx = make_context();
  const ShardLayout layout = ShardLayout::whole_tensors(model(), 3);
  for (uint32_t r = 0; r < 3; ++r) {
    const Shard s = layout.shards[r];
    auto p = ctx.create_tensor(size_t(s.end - s.begin)), g = ctx.create_tensor(size_t(s.end - s.begin));
    std::vector<ParamGroup> groups(2);
    for (auto& gr : groups) gr.options = AdafactorOptions{};
    EXPECT_NO_THROW(Optimizer(ctx, shard_groups(layout, r, groups, p.range(), g.range()))) << "shard " << r;
  }
}

// What a shard's optimizer cannot do, refused before any GPU work: Muon on a tensor split between
// ranks, Adafactor on a piece described by its own rows (when it is made); a SAM perturbation, or a step with clipping
// or per-tensor sums, in one part; a part it has nothing for; groups and sums that do not fit the layout.
TEST_F(ShardLayoutTest, WhatShardsCannotDoIsRefused) {
  auto ctx = make_context();
  const ShardLayout layout = ShardLayout::even(model(), 4);
  const uint64_t n = layout.shards[0].end;
  auto p = ctx.create_tensor(size_t(n)), g = ctx.create_tensor(size_t(n));
  auto groups_of = [&](RuleOptions o) {
    std::vector<ParamGroup> groups(2);
    for (auto& gr : groups) gr.options = o;
    return shard_groups(layout, 0, groups, p.range(), g.range());
  };
  auto expect_error = [](const std::function<void()>& f, Status status, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected a refusal mentioning " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  {  // Muon's pieces of a matrix: the whole matrix's rows, as whole_rows (ShardSplitMuonTest).
    ParamTensor piece{p.range(), g.range(), "w[0:512]"};
    piece.param.count = piece.grad.count = 512;
    piece.whole_count = 1024;
    piece.whole_rows = 0;
    piece.rows = 8;
    expect_error(
        [&] {
          Optimizer opt(ctx, {{muon_options(), {piece}}});
        },
        Status::invalid_argument, "give Muon its whole matrix's rows as whole_rows");
  }
  {  // Adafactor's pieces of a matrix: the whole matrix's rows, as whole_rows.
    ParamTensor piece{p.range(), g.range(), "w[0:512]"};
    piece.param.count = piece.grad.count = 512;
    piece.whole_count = 1024;
    piece.whole_rows = 16;
    ParamTensor as_rows = piece;
    as_rows.rows = 8, as_rows.whole_rows = 0;
    expect_error(
        [&] {
          Optimizer opt(ctx, {{AdafactorOptions{}, {as_rows}}});
        },
        Status::invalid_argument, "give Adafactor its whole tensor's rows as whole_rows");
    ParamTensor uneven = piece;
    uneven.whole_rows = 1000;
    expect_error(
        [&] {
          Optimizer opt(ctx, {{AdafactorOptions{}, {uneven}}});
        },
        Status::invalid_argument, "whole_rows = 1000 describes a piece of a 2-D tensor");
    Optimizer adafactor(ctx, {{AdafactorOptions{}, {piece}}});
    EXPECT_EQ(adafactor.read_state(0, "row_var").size(), 16u);
    EXPECT_EQ(adafactor.read_state(0, "col_var").size(), 64u);
    EXPECT_EQ(adafactor.factor_sum_count(), 2u * (16 + 64));
    expect_error([&] { adafactor.step(); }, Status::invalid_state, "needs every rank's sums of each whole tensor");
    expect_error([&] { adafactor.step_tensor_sums(); }, Status::invalid_state,
                 "takes every rank's row and column sums first");
    expect_error([&] { adafactor.set_factor_sums(std::vector<float>(3)); }, Status::invalid_argument,
                 "3 floats, but the optimizer's split pieces have 160");
    EXPECT_EQ(adafactor.step_count(0), 0u);
  }
  auto sam_groups = groups_of(AdamOptions{});
  sam_groups[0].sam.rho = 0.05;
  Optimizer sam(ctx, sam_groups);
  expect_error([&] { sam.sam_perturb(); }, Status::invalid_state, "perturb in parts");
  expect_error([&] { sam.set_sam_sums(std::vector<float>(3)); }, Status::invalid_argument,
               "3 floats, but the optimizer has 2 groups");
  RecordOptions tensor_part;
  tensor_part.part = StepPart::tensor_sums;
  {
    vkt::Engine engine(ctx);
    VkCommandBuffer cmd = engine.begin();
    expect_error([&] { sam.record_sam_perturb(cmd, tensor_part); }, Status::invalid_state, "has two parts");
    engine.end(cmd);
  }
  {  // Parts are for shards.
    ParamGroup whole_group{AdamOptions{}, {{p.range(), g.range()}}};
    whole_group.sam.rho = 0.05;
    Optimizer unsharded(ctx, {whole_group});
    vkt::Engine engine(ctx);
    VkCommandBuffer cmd = engine.begin();
    RecordOptions first_part;
    first_part.part = StepPart::grad_sums;
    expect_error([&] { unsharded.record_sam_perturb(cmd, first_part); }, Status::invalid_state,
                 "this one is not sharded");
    engine.end(cmd);
    expect_error([&] { unsharded.sam_perturb_sums(); }, Status::invalid_state, "this one is not sharded");
  }
  Optimizer opt(ctx, groups_of(AdamOptions{}));
  GradClip clip;
  clip.max_norm = 1;
  opt.set_grad_clip(clip);
  p.upload(std::vector<float>(size_t(n), 0.5f));
  g.upload(std::vector<float>(size_t(n), 0.25f));
  expect_error([&] { opt.step(); }, Status::invalid_state, "record the step in parts");
  EXPECT_EQ(vkt::bits(p.download()), vkt::bits(std::vector<float>(size_t(n), 0.5f))) << "a refused step moved p";
  EXPECT_EQ(opt.step_count(0), 0u);
  Optimizer lamb(ctx, groups_of(LambOptions{}));
  expect_error([&] { lamb.step(); }, Status::invalid_state, "needs every rank's sums of each whole tensor");
  expect_error([&] { lamb.step_grad_sums(); }, Status::invalid_state, "no gradient clipping or loss scaler");
  expect_error([&] { lamb.set_tensor_sums(std::vector<float>(3)); }, Status::invalid_argument, "3 floats");
  EXPECT_EQ(vkt::bits(p.download()), vkt::bits(std::vector<float>(size_t(n), 0.5f))) << "a refused step moved p";
  EXPECT_EQ(lamb.step_count(0), 0u);
  expect_error([&] { opt.step_tensor_sums(); }, Status::invalid_state, "no per-tensor sums to exchange");
  expect_error([&] { opt.tensor_sums(); }, Status::invalid_state, "exchanges no per-tensor sums");
  expect_error([&] { opt.tensor_sums_buffer(); }, Status::invalid_state, "exchanges no per-tensor sums");
  EXPECT_EQ(lamb.tensor_sums_buffer().count, 2 * lamb.tensor_count());
  expect_error([&] { scatter_tensor_sums(layout, 0, std::vector<float>(3)); }, Status::invalid_argument,
               "scatter_tensor_sums: 3 floats");
  expect_error([&] { gather_tensor_sums(layout, 0, std::vector<float>(3)); }, Status::invalid_argument,
               "the layout has 6 tensors");
  Optimizer plain(ctx, groups_of(AdamOptions{}));
  expect_error([&] { plain.sam_sums(); }, Status::invalid_state, "exchanges no SAM sums");
  expect_error([&] { plain.step_factor_sums(); }, Status::invalid_state, "exchanges no row or column sums");
  expect_error([&] { lamb.factor_sums_buffer(); }, Status::invalid_state, "exchanges no row or column sums");
  expect_error([&] { plain.step_finish(GradSums{}); }, Status::invalid_state, "no gradient clipping or loss scaler");
  lamb.set_grad_clip(clip);  // its finish needs the per-tensor sums as well
  expect_error([&] { lamb.step_finish(GradSums{}); }, Status::invalid_state, "needs the ranks' per-tensor sums too");
  EXPECT_EQ(lamb.step_count(0), 0u);
  expect_error([&] { plain.step_grad_sums(); }, Status::invalid_state, "has none to split");
  expect_error([&] { shard_groups(layout, 0, std::vector<ParamGroup>(1), p.range(), g.range()); },
               Status::invalid_argument, "is in group 1, but 1 groups were given");
  auto short_range = p.range();
  short_range.count -= 1;
  expect_error([&] { shard_groups(layout, 0, std::vector<ParamGroup>(2), short_range, g.range()); },
               Status::invalid_argument, "flat param range has");
  // whole_count below the range's count
  auto groups = groups_of(AdamOptions{});
  groups[0].tensors[0].whole_count = 1;
  expect_error([&] { Optimizer o(ctx, groups); }, Status::invalid_argument, "whole_count = 1");
  groups = groups_of(AdamOptions{});
  groups[0].tensors[0].whole_offset = groups[0].tensors[0].whole_count;  // past the tensor's end
  expect_error([&] { Optimizer o(ctx, groups); }, Status::invalid_argument, "is past whole_count");
  groups = groups_of(AdamOptions{});  // the first piece as two, both keyed as tensor 0 from element 0
  {
    ParamTensor second = groups[0].tensors[0];
    ParamTensor& first = groups[0].tensors[0];
    first.param.count = first.grad.count = 256;
    second.param.offset += 256 * 4, second.grad.offset += 256 * 4;
    second.param.count -= 256, second.grad.count -= 256;
    second.name += ".second";
    groups[0].tensors.push_back(second);
  }
  expect_error([&] { Optimizer o(ctx, groups); }, Status::invalid_argument,
               "overlap another tensor's with the same key");
  groups[0].tensors.back().whole_offset += 256;  // the elements after the first piece's: its own keys
  { Optimizer o(ctx, groups); }
}

}  // namespace

// Rank-1 second moments on shards that hold their matrices whole: a checkpoint saved on two
// ranks reloads on one with the same state (codes, maxima, counters), and on a layout that
// splits the matrix (its pieces decode to the saved moment).
TEST_F(ShardLayoutTest, RankOneMaximaReshardWithWholeMatrices) {
  auto ctx = make_context();
  const std::vector<FlatTensor> tensors = {{"w", 64 * 48, 64, 0}, {"v", 4096, 0, 0}};
  const ShardLayout two{tensors, {{0, 64 * 48}, {64 * 48, 64 * 48 + 4096}}}, one = ShardLayout::even(tensors, 1);
  std::vector<ParamGroup> templates(1);
  templates[0].options = AdamOptions{};
  templates[0].precision.state = StateDType::q4;
  templates[0].precision.rank1_second_moment = true;
  templates[0].precision.min_8bit_elements = 0;  // (w has 3072 elements)
  std::normal_distribution<float> normal;
  std::vector<float> p0(64 * 48 + 4096);
  for (auto& x : p0) x = normal(rng_);
  auto make = [&](const ShardLayout& layout, uint32_t r, std::vector<Tensor>& keep) {
    const Shard s = layout.shards[r];
    keep.push_back(ctx.create_tensor(std::vector<float>(p0.begin() + long(s.begin), p0.begin() + long(s.end))));
    keep.push_back(ctx.create_tensor(size_t(s.end - s.begin)));
    return std::make_unique<Optimizer>(
        ctx, shard_groups(layout, r, templates, keep[keep.size() - 2].range(), keep.back().range()));
  };
  std::vector<Tensor> keep;
  std::vector<std::unique_ptr<Optimizer>> saved;
  for (uint32_t r = 0; r < 2; ++r) saved.push_back(make(two, r, keep));
  for (int t = 0; t < 3; ++t)
    for (uint32_t r = 0; r < 2; ++r) {
      std::vector<float> g(size_t(two.shards[r].end - two.shards[r].begin));
      for (auto& x : g) x = 0.1f * normal(rng_);
      keep[2 * r + 1].upload(g);
      saved[r]->step();
    }
  std::vector<std::vector<uint8_t>> files;
  for (auto& opt : saved) files.push_back(opt->save_to_memory());
  const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
  auto loaded = make(one, 0, keep);
  loaded->load_from_memory(reshard_checkpoint(two, spans, one, 0));
  for (uint32_t r = 0; r < 2; ++r) {
    const std::string name = tensors[r].name;
    for (const auto& state : saved[r]->state_names(0))
      EXPECT_EQ(vkt::bits(loaded->read_state(loaded->tensor_index(name), state)),
                vkt::bits(saved[r]->read_state(0, state)))
          << name << "." << state;
  }
  // Onto a layout that splits the matrix: each piece takes its codes and the whole maxima.
  const ShardLayout split{tensors, {{0, 1024}, {1024, 64 * 48 + 4096}}};
  std::vector<float> pieces;
  for (uint32_t r = 0; r < 2; ++r) {
    auto piece = make(split, r, keep);
    piece->load_from_memory(reshard_checkpoint(two, spans, split, r));
    const auto v = piece->read_state(0, "exp_avg_sq");
    pieces.insert(pieces.end(), v.begin(), v.end());
  }
  pieces.resize(64 * 48);
  EXPECT_EQ(vkt::bits(pieces), vkt::bits(saved[0]->read_state(0, "exp_avg_sq")));
  EXPECT_TRUE(messages_->list.empty());
}
