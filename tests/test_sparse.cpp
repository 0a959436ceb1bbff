// Row-sparse steps (vkoptim::SparseOptimizer, shaders/sparse_rows.comp) against the double
// reference (reference/sparse_rows.hpp): SparseAdam, sparse Adagrad and FTRL over 50 steps of
// fresh random indices (duplicates and padding included) on both addressing paths, with NaN
// around the tables and in the padding's values; coalescing bit for bit as position-order float
// sums, for any workgroup size; replayed steps; and what the optimizer refuses.
#include <cmath>
#include <limits>
#include <set>

#include "harness.hpp"
#include "reference/sparse_rows.hpp"

namespace {

using namespace vkoptim;
using reference::SparseHyper;

const float kNan = std::numeric_limits<float>::quiet_NaN();

SparseHyper hyper_of(const SparseRuleOptions& options) {
  SparseHyper h;
  if (const auto* o = std::get_if<SparseAdamOptions>(&options)) {
    h.rule = SparseHyper::Rule::sparse_adam;
    h.lr = o->lr, h.beta1 = o->beta1, h.beta2 = o->beta2, h.eps = o->eps, h.maximize = o->maximize;
  } else if (const auto* o = std::get_if<AdagradOptions>(&options)) {
    h.rule = SparseHyper::Rule::adagrad;
    h.lr = o->lr, h.lr_decay = o->lr_decay, h.initial_accumulator_value = o->initial_accumulator_value;
    h.eps = o->eps, h.maximize = o->maximize;
  } else {
    const auto& f = std::get<FtrlOptions>(options);
    h.rule = SparseHyper::Rule::ftrl;
    h.lr = f.lr, h.learning_rate_power = f.learning_rate_power;
    h.initial_accumulator_value = f.initial_accumulator_value;
    h.l1 = f.l1, h.l2 = f.l2, h.l2_shrinkage = f.l2_shrinkage, h.beta = f.beta, h.maximize = f.maximize;
  }
  return h;
}

struct SparseCase {
  std::string name;
  SparseRuleOptions options;
};
void PrintTo(const SparseCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<SparseCase> sparse_cases() {
  std::vector<SparseCase> out;
  SparseAdamOptions adam;
  adam.lr = 1e-2;
  out.push_back({"sparse_adam", adam});
  SparseAdamOptions adam_max = adam;
  adam_max.beta1 = 0.5, adam_max.beta2 = 0.9, adam_max.eps = 1e-3, adam_max.maximize = true;
  out.push_back({"sparse_adam_maximize_betas", adam_max});
  AdagradOptions adagrad;
  adagrad.lr = 0.1, adagrad.lr_decay = 0.01, adagrad.initial_accumulator_value = 0.1;
  out.push_back({"adagrad_lr_decay", adagrad});
  AdagradOptions adagrad_max;
  adagrad_max.eps = 1e-6, adagrad_max.maximize = true;
  out.push_back({"adagrad_maximize", adagrad_max});
  FtrlOptions ftrl;
  ftrl.lr = 0.1, ftrl.l1 = 0.01, ftrl.l2 = 0.001, ftrl.l2_shrinkage = 0.01, ftrl.beta = 0.1;
  out.push_back({"ftrl_l1_l2_shrinkage_beta", ftrl});
  FtrlOptions ftrl_power;
  ftrl_power.lr = 0.05, ftrl_power.learning_rate_power = -0.7, ftrl_power.maximize = true;
  out.push_back({"ftrl_power_maximize", ftrl_power});
  return out;
}

// Tables laid out in shared buffers (parameters, values, indices) with NaN between them.
struct Layout {
  struct Table {
    size_t rows, dim, capacity;
    size_t param_at = 0, values_at = 0, indices_at = 0;  // elements
  };
  std::vector<Table> tables;
  size_t param_total = 0, values_total = 0, indices_total = 0;
};

// Each range starts at a multiple of `gap` elements, after at least `gap` of NaN.
Layout lay_out(std::vector<std::array<size_t, 3>> shapes, size_t gap) {
  Layout l;
  auto next = [gap](size_t end) { return (end + 2 * gap - 1) / gap * gap; };
  for (const auto& [rows, dim, capacity] : shapes) {
    Layout::Table t{rows, dim, capacity};
    t.param_at = next(l.param_total), l.param_total = t.param_at + rows * dim;
    t.values_at = next(l.values_total), l.values_total = t.values_at + capacity * dim;
    t.indices_at = next(l.indices_total), l.indices_total = t.indices_at + capacity;
    l.tables.push_back(t);
  }
  l.param_total += gap, l.values_total += gap, l.indices_total += gap;
  return l;
}

class SparseFixture : public vkt::VulkanTest {
 protected:
  Context context(bool bda, uint32_t workgroup_size = 0) {
    ContextOptions options = validated_options();
    options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
    if (workgroup_size) options.override_caps = [workgroup_size](DeviceCaps& c) { c.workgroup_size = workgroup_size; };
    return make_context(options);
  }
  // A gap of NaN before and after each table that keeps every range aligned for descriptors.
  static size_t gap_for(const Context& ctx) {
    return std::max<size_t>(16, size_t(ctx.caps().min_storage_buffer_offset_alignment) / 4);
  }
  // Indices for a table: rows drawn from a few hot rows (duplicates) and the whole table, some
  // positions padding.
  std::vector<uint32_t> random_indices(size_t rows, size_t capacity) {
    std::vector<uint32_t> out(capacity);
    std::uniform_int_distribution<uint32_t> any(0, uint32_t(rows - 1)), hot(0, uint32_t(std::min<size_t>(rows, 4) - 1));
    std::uniform_real_distribution<double> u(0, 1);
    for (auto& i : out) {
      const double r = u(rng_);
      i = r < 0.05 ? reference::kSkipRow : r < 0.35 ? hot(rng_) : any(rng_);
    }
    return out;
  }
  std::vector<float> random_values(const std::vector<uint32_t>& indices, size_t dim) {
    std::uniform_real_distribution<double> u(-1, 1);
    std::vector<float> out(indices.size() * dim);
    for (size_t i = 0; i < out.size(); ++i) out[i] = indices[i / dim] == reference::kSkipRow ? kNan : float(u(rng_));
    return out;
  }
};

// The tables of `layout` over three buffers.
struct Buffers {
  Tensor param, values, indices;
  Buffers(Context& ctx, const Layout& l)
      : param(ctx.create_tensor(l.param_total)),
        values(ctx.create_tensor(l.values_total)),
        indices(ctx.create_tensor(l.indices_total, DType::u32)) {}
  std::vector<SparseTable> tables(const Layout& l) const {
    std::vector<SparseTable> out;
    for (size_t t = 0; t < l.tables.size(); ++t) {
      const auto& lt = l.tables[t];
      SparseTable st;
      st.param = param.range(), st.param.offset = lt.param_at * 4, st.param.count = lt.rows * lt.dim;
      st.values = values.range(), st.values.offset = lt.values_at * 4, st.values.count = lt.capacity * lt.dim;
      st.indices = indices.range(), st.indices.offset = lt.indices_at * 4, st.indices.count = lt.capacity;
      st.dim = uint32_t(lt.dim);
      st.name = "emb" + std::to_string(t);
      out.push_back(st);
    }
    return out;
  }
};

// Float32 error bound of a value after its history: each step rounds it (8u|x|) and computes its
// change with relative error K u.
struct History {
  std::vector<double> max_abs, sum_abs_change, last;
  explicit History(const std::vector<double>& start)
      : max_abs(start.size()), sum_abs_change(start.size()), last(start) {
    for (size_t i = 0; i < start.size(); ++i) max_abs[i] = std::abs(start[i]);
  }
  void add(const std::vector<double>& now) {
    for (size_t i = 0; i < now.size(); ++i) {
      max_abs[i] = std::max(max_abs[i], std::abs(now[i]));
      sum_abs_change[i] += std::abs(now[i] - last[i]);
      last[i] = now[i];
    }
  }
  std::vector<double> tolerance(int steps) const {
    std::vector<double> tol(max_abs.size());
    for (size_t i = 0; i < tol.size(); ++i)
      tol[i] = 8 * vkt::kUnitRoundoff * steps * max_abs[i] + 256 * vkt::kUnitRoundoff * sum_abs_change[i] + 1e-30;
    return tol;
  }
};

class SparseRowsTest : public SparseFixture, public ::testing::WithParamInterface<std::tuple<SparseCase, bool>> {};

TEST_P(SparseRowsTest, MatchesReferenceOver50Steps) {
  const auto& [c, bda] = GetParam();
  auto ctx = context(bda);
  if (bda && !ctx.supports_buffer_device_address()) GTEST_SKIP() << "no buffer device addresses";
  const Layout l = lay_out({{1000, 7, 301}, {3, 64, 5}, {50, 1, 40}}, gap_for(ctx));
  Buffers b(ctx, l);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<float> p_host(l.param_total, kNan);
  std::vector<std::vector<double>> p_ref;
  std::vector<reference::SparseRows> refs;
  for (const auto& t : l.tables) {
    std::vector<double> p(t.rows * t.dim);
    for (size_t i = 0; i < p.size(); ++i) p_host[t.param_at + i] = float(u(rng_)), p[i] = p_host[t.param_at + i];
    p_ref.push_back(p);
    refs.emplace_back(hyper_of(c.options), t.rows, t.dim);
  }
  b.param.upload(p_host);
  SparseOptimizer opt(ctx, b.tables(l), c.options);
  EXPECT_EQ(opt.uses_device_addresses(), bda);
  std::vector<History> p_hist;
  std::vector<std::map<std::string, History>> s_hist(l.tables.size());
  for (size_t t = 0; t < l.tables.size(); ++t) {
    p_hist.emplace_back(p_ref[t]);
    for (const auto& [name, values] : refs[t].state()) s_hist[t].emplace(name, History(values));
  }
  std::vector<std::set<uint32_t>> touched(l.tables.size());
  const int kSteps = 50;
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<uint32_t> indices(l.indices_total, 0);
    std::vector<float> values(l.values_total, kNan);
    for (size_t t = 0; t < l.tables.size(); ++t) {
      const auto& lt = l.tables[t];
      const auto idx = random_indices(lt.rows, lt.capacity);
      const auto val = random_values(idx, lt.dim);
      std::copy(idx.begin(), idx.end(), indices.begin() + long(lt.indices_at));
      std::copy(val.begin(), val.end(), values.begin() + long(lt.values_at));
      refs[t].step(p_ref[t], idx, val);
      p_hist[t].add(p_ref[t]);
      for (const auto& [name, s] : refs[t].state()) s_hist[t].at(name).add(s);
      for (uint32_t i : idx)
        if (i != reference::kSkipRow) touched[t].insert(i);
    }
    b.indices.upload_indices(indices);
    b.values.upload(values);
    opt.step();
    const SparseStepReport r = opt.last_report();
    ASSERT_EQ(r.step, uint64_t(step));
    ASSERT_FALSE(r.skipped);
    if (step % 10 != 0 && step != 1) continue;
    SCOPED_TRACE("step " + std::to_string(step));
    const auto p_gpu = b.param.download();
    for (size_t t = 0; t < l.tables.size(); ++t) {
      const auto& lt = l.tables[t];
      const std::vector<float> got(p_gpu.begin() + long(lt.param_at),
                                   p_gpu.begin() + long(lt.param_at + lt.rows * lt.dim));
      vkt::expect_close(got, p_ref[t], p_hist[t].tolerance(step), "table " + std::to_string(t) + " param");
      // Rows never touched keep their bits; so does the NaN between the tables.
      for (size_t row = 0; row < lt.rows; ++row) {
        if (touched[t].count(uint32_t(row))) continue;
        for (size_t j = 0; j < lt.dim; ++j) {
          ASSERT_EQ(vkt::bits({got[row * lt.dim + j]}), vkt::bits({p_host[lt.param_at + row * lt.dim + j]}))
              << "untouched row " << row << " of table " << t;
        }
      }
      for (const auto& [name, values] : refs[t].state()) {
        auto tol = s_hist[t].at(name).tolerance(step);
        if (name == "linear") {
          const auto terms = refs[t].linear_terms();
          for (size_t i = 0; i < tol.size(); ++i) tol[i] += 64 * vkt::kUnitRoundoff * terms[i];
        }
        vkt::expect_close(opt.read_state(t, name), values, tol, "table " + std::to_string(t) + " " + name);
      }
    }
    for (size_t i = 0; i < p_gpu.size(); ++i) {
      const bool inside = std::any_of(l.tables.begin(), l.tables.end(), [&](const Layout::Table& t) {
        return i >= t.param_at && i < t.param_at + t.rows * t.dim;
      });
      if (!inside) {
        ASSERT_TRUE(std::isnan(p_gpu[i])) << "gap element " << i << " was written";
      }
    }
  }
  EXPECT_EQ(opt.step_count(), uint64_t(kSteps));
  EXPECT_EQ(opt.read_state(0, "step"), std::vector<float>{float(kSteps)});
  EXPECT_EQ(opt.last_dispatch_count(), 5u * uint32_t(l.tables.size()));
}

INSTANTIATE_TEST_SUITE_P(Rules, SparseRowsTest,
                         ::testing::Combine(::testing::ValuesIn(sparse_cases()), ::testing::Bool()),
                         [](const auto& info) {
                           return std::get<0>(info.param).name +
                                  (std::get<1>(info.param) ? "_addresses" : "_descriptors");
                         });

// Coalescing: a gradient with duplicates gives the same bits as its rows summed on the host in
// float, in position order, handed over without duplicates (in another row order) — for any
// workgroup size, so whatever order the device's invocations arrive in.
class SparseCoalesceTest : public SparseFixture, public ::testing::WithParamInterface<bool> {};

TEST_P(SparseCoalesceTest, DuplicatesSumInPositionOrderForAnyWorkgroupSize) {
  const bool bda = GetParam();
  const size_t rows = 64, dim = 5, capacity = 200;
  std::vector<uint32_t> dup(capacity);
  std::uniform_int_distribution<uint32_t> few(0, 9);  // 200 positions on 10 rows: ~20 duplicates each
  for (auto& i : dup) i = few(rng_);
  const auto dup_values = random_values(dup, dim);
  // The host's coalesce: float sums in position order, then the rows in descending order.
  std::map<uint32_t, std::vector<float>, std::greater<>> sums;
  for (size_t i = 0; i < capacity; ++i) {
    auto& row = sums[dup[i]];
    if (row.empty()) row.assign(dim, 0.0f);
    for (size_t j = 0; j < dim; ++j) row[j] += dup_values[i * dim + j];
  }
  std::vector<uint32_t> unique(capacity, reference::kSkipRow);
  std::vector<float> unique_values(capacity * dim, kNan);
  size_t n = 0;
  for (const auto& [row, v] : sums) {
    unique[n] = row;
    std::copy(v.begin(), v.end(), unique_values.begin() + long(n * dim));
    ++n;
  }
  std::vector<float> p0(rows * dim);
  std::uniform_real_distribution<double> u(-1, 1);
  for (auto& x : p0) x = float(u(rng_));

  std::vector<std::vector<uint32_t>> results;
  for (uint32_t wg : {0u, 32u}) {
    for (bool coalesced : {false, true}) {
      auto ctx = context(bda, wg);
      if (bda && !ctx.supports_buffer_device_address()) GTEST_SKIP() << "no buffer device addresses";
      const Layout l = lay_out({{rows, dim, capacity}}, gap_for(ctx));
      Buffers b(ctx, l);
      std::vector<float> p_host(l.param_total, kNan);
      std::copy(p0.begin(), p0.end(), p_host.begin() + long(l.tables[0].param_at));
      b.param.upload(p_host);
      SparseAdamOptions o;
      o.lr = 0.1;
      SparseOptimizer opt(ctx, b.tables(l), o);
      std::vector<uint32_t> indices(l.indices_total, 0);
      std::vector<float> values(l.values_total, kNan);
      const auto& idx = coalesced ? unique : dup;
      const auto& val = coalesced ? unique_values : dup_values;
      for (int step = 0; step < 3; ++step) {  // the same gradient three times
        std::copy(idx.begin(), idx.end(), indices.begin() + long(l.tables[0].indices_at));
        std::copy(val.begin(), val.end(), values.begin() + long(l.tables[0].values_at));
        b.indices.upload_indices(indices);
        b.values.upload(values);
        opt.step();
      }
      EXPECT_EQ(opt.last_report().rows_updated, uint32_t(sums.size()));
      auto got = vkt::bits(b.param.download());
      for (const char* name : {"exp_avg", "exp_avg_sq"}) {
        const auto s = vkt::bits(opt.read_state(0, name));
        got.insert(got.end(), s.begin(), s.end());
      }
      results.push_back(got);
    }
  }
  for (size_t k = 1; k < results.size(); ++k) EXPECT_EQ(results[k], results[0]) << "run " << k;
  // And the duplicates did sum: the first step moved every named row.
  EXPECT_NE(results[0], vkt::bits(p0));
}

INSTANTIATE_TEST_SUITE_P(Paths, SparseCoalesceTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "addresses" : "descriptors"); });

// A recorded step submitted again and again performs the next step each time, with options set
// between submissions; it equals step() bit for bit.
TEST_F(SparseFixture, RecordedOnceReplaysEachStep) {
  auto ctx = make_context();
  const Layout l = lay_out({{300, 9, 64}}, gap_for(ctx));
  std::vector<std::vector<uint32_t>> idx;
  std::vector<std::vector<float>> val;
  for (int s = 0; s < 8; ++s) {
    idx.push_back(random_indices(300, 64));
    val.push_back(random_values(idx.back(), 9));
  }
  std::vector<float> p0(l.param_total, kNan);
  std::uniform_real_distribution<double> u(-1, 1);
  for (size_t i = 0; i < 300 * 9; ++i) p0[l.tables[0].param_at + i] = float(u(rng_));
  auto upload = [&](Buffers& b, int s) {
    std::vector<uint32_t> indices(l.indices_total, 0);
    std::vector<float> values(l.values_total, kNan);
    std::copy(idx[s].begin(), idx[s].end(), indices.begin() + long(l.tables[0].indices_at));
    std::copy(val[s].begin(), val[s].end(), values.begin() + long(l.tables[0].values_at));
    b.indices.upload_indices(indices);
    b.values.upload(values);
  };
  AdagradOptions o;
  o.lr = 0.2, o.lr_decay = 0.1;
  std::vector<std::vector<uint32_t>> results;
  for (bool replay : {false, true}) {
    Buffers b(ctx, l);
    b.param.upload(p0);
    SparseOptimizer opt(ctx, b.tables(l), o);
    vkt::Engine engine(ctx);
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    if (replay) {
      cmd = engine.begin();
      RecordOptions part = vkt::host_reads();
      part.part = StepPart::grad_sums;  // (parts are for Optimizer steps)
      vkt::expect_error([&] { opt.record(cmd, part); }, Status::invalid_argument, {"StepPart::whole"});
      opt.record(cmd, vkt::host_reads());
      engine.end(cmd);
    }
    for (int s = 0; s < 8; ++s) {
      AdagradOptions now = o;
      now.lr = s < 4 ? 0.2 : 0.05;
      opt.set_options(now);
      upload(b, s);
      if (replay)
        engine.submit(cmd);
      else
        opt.step();
    }
    EXPECT_EQ(opt.step_count(), 8u);
    auto got = vkt::bits(b.param.download());
    const auto sum = vkt::bits(opt.read_state(0, "sum"));
    got.insert(got.end(), sum.begin(), sum.end());
    results.push_back(got);
  }
  EXPECT_EQ(results[0], results[1]);
}

// An out-of-range index skips the whole step (every table), names the position, and changes
// nothing; the next good step is step 1.
TEST_F(SparseFixture, OutOfRangeIndexSkipsTheStepAndChangesNothing) {
  auto ctx = make_context();
  const Layout l = lay_out({{20, 3, 10}, {30, 2, 6}}, gap_for(ctx));
  Buffers b(ctx, l);
  std::vector<float> p0(l.param_total, kNan);
  std::uniform_real_distribution<double> u(-1, 1);
  for (const auto& t : l.tables)
    for (size_t i = 0; i < t.rows * t.dim; ++i) p0[t.param_at + i] = float(u(rng_));
  b.param.upload(p0);
  SparseOptimizer opt(ctx, b.tables(l), SparseAdamOptions{});
  std::vector<uint32_t> indices(l.indices_total, 0);
  std::vector<float> values(l.values_total, 0.5f);
  for (size_t i = 0; i < 10; ++i) indices[l.tables[0].indices_at + i] = uint32_t(i);
  for (size_t i = 0; i < 6; ++i) indices[l.tables[1].indices_at + i] = uint32_t(i);
  indices[l.tables[1].indices_at + 4] = 30;  // one past the last row
  indices[l.tables[1].indices_at + 5] = 1000;
  b.indices.upload_indices(indices);
  b.values.upload(values);
  vkt::expect_error([&] { opt.step(); }, Status::invalid_argument,
                    {"table 1 (emb1)", "indices[4] = 30", "has 30", "2 such indices", "skipped"});
  const SparseStepReport r = opt.last_report();
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(r.bad_indices, 2u);
  EXPECT_EQ(r.bad_table, 1u);
  EXPECT_EQ(r.first_bad_position, 4u);
  EXPECT_EQ(r.first_bad_index, 30u);
  EXPECT_EQ(r.step, 0u);
  EXPECT_EQ(r.rows_updated, 0u);
  EXPECT_EQ(vkt::bits(b.param.download()), vkt::bits(p0));
  for (size_t t = 0; t < 2; ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"})
      for (float x : opt.read_state(t, name)) ASSERT_EQ(x, 0.0f) << name;
  // Fixed, the step runs as the first one, from the unchanged state.
  indices[l.tables[1].indices_at + 4] = 29;
  indices[l.tables[1].indices_at + 5] = reference::kSkipRow;
  b.indices.upload_indices(indices);
  opt.step();
  EXPECT_EQ(opt.step_count(), 1u);
  EXPECT_EQ(opt.last_report().rows_updated, 15u);
  const auto p = b.param.download();
  // SparseAdam's first step moves each touched element by lr (m/sqrt(v) = sign(g) after bias correction).
  const size_t at = l.tables[1].param_at + 29 * 2;
  EXPECT_NEAR(p[at], p0[at] - 1e-3, 1e-6);
  EXPECT_EQ(vkt::bits({p[l.tables[1].param_at + 28 * 2]}), vkt::bits({p0[l.tables[1].param_at + 28 * 2]}));
}

TEST_F(SparseFixture, RefusesBadSetups) {
  auto ctx = make_context();
  const Layout l = lay_out({{10, 4, 6}}, gap_for(ctx));
  Buffers b(ctx, l);
  auto tables = [&] { return b.tables(l); };
  auto make = [&](std::vector<SparseTable> t, SparseRuleOptions o) { SparseOptimizer opt(ctx, std::move(t), o); };
  AdagradOptions decayed;
  decayed.weight_decay = 0.01;
  vkt::expect_error([&] { make(tables(), decayed); }, Status::invalid_argument, {"Adagrad", "weight_decay", "sparse"});
  SparseAdamOptions zero_lr;
  zero_lr.lr = 0;
  vkt::expect_error([&] { make(tables(), zero_lr); }, Status::invalid_argument, {"SparseAdam", "lr"});
  SparseAdamOptions beta;
  beta.beta2 = 1;
  vkt::expect_error([&] { make(tables(), beta); }, Status::invalid_argument, {"beta2", "[0, 1)"});
  FtrlOptions power;
  power.learning_rate_power = 0.5;
  vkt::expect_error([&] { make(tables(), power); }, Status::invalid_argument, {"FTRL", "learning_rate_power"});
  vkt::expect_error([&] { make({}, SparseAdamOptions{}); }, Status::invalid_argument, {"no tables"});
  auto t = tables();
  t[0].dim = 3;
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"dim = 3", "param.count = 40"});
  t = tables();
  t[0].values.count -= 1;
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"values.count = 23"});
  t = tables();
  t[0].indices.dtype = DType::f32;
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"indices.dtype = f32", "u32"});
  t = tables();
  t[0].param.dtype = DType::u32;
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"param.dtype = u32"});
  t = tables();
  t[0].values = t[0].param;
  t[0].values.count = 24;
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"overlaps"});
  t = tables();
  t.push_back(t[0]);
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::invalid_argument, {"name \"emb0\""});
  // Index tensors are no parameters or gradients of a dense optimizer.
  vkt::expect_error(
      [&] {
        Optimizer dense(ctx, {{AdamOptions{}, {{b.param.range(), b.indices.range()}}}});
      },
      Status::invalid_argument, {"grad.dtype = u32", "indices"});
  auto bf16 = ctx.create_tensor(40, DType::bf16);
  t = tables();
  t[0].param = bf16.range();
  vkt::expect_error([&] { make(t, SparseAdamOptions{}); }, Status::unsupported, {"f32"});

  SparseOptimizer opt(ctx, tables(), SparseAdamOptions{});
  vkt::expect_error([&] { opt.set_options(AdagradOptions{}); }, Status::invalid_argument, {"cannot change"});
  SparseAdamOptions flipped;
  flipped.maximize = true;
  vkt::expect_error([&] { opt.set_options(flipped); }, Status::invalid_argument, {"maximize"});
  vkt::expect_error([&] { opt.set_options(zero_lr); }, Status::invalid_argument, {"lr"});
  EXPECT_EQ(std::get<SparseAdamOptions>(opt.options()).lr, 1e-3);
  vkt::expect_error([&] { opt.read_state(0, "sum"); }, Status::not_found, {"sum"});
  vkt::expect_error([&] { opt.read_state(1, "exp_avg"); }, Status::invalid_argument, {"no table 1"});
  vkt::expect_error([&] { opt.write_state(0, "exp_avg", std::vector<float>(3)); }, Status::invalid_argument,
                    {"40 elements"});
  vkt::expect_error([&] { opt.table_index("nope"); }, Status::not_found, {"nope"});
  for (float bad_step : {4294967296.0f, -1.0f, 2.5f})
    vkt::expect_error([&] { opt.write_state(0, "step", std::vector<float>{bad_step}); }, Status::invalid_argument,
                      {"\"step\"", "whole number"});
  EXPECT_EQ(opt.table_index("emb0"), 0u);
  EXPECT_EQ(opt.state_names(), (std::vector<std::string>{"exp_avg", "exp_avg_sq"}));
  vkt::expect_error([&] { b.indices.upload(std::vector<float>(l.indices_total)); }, Status::invalid_argument,
                    {"upload_indices"});
}

// The descriptor path's limits, refused when the optimizer is made (addresses have neither).
TEST_F(SparseFixture, DescriptorLimitsAreRefusedAtCreation) {
  for (int limit = 0; limit < 2; ++limit) {
    ContextOptions options = validated_options();
    options.addressing = Addressing::descriptors;
    options.override_caps = [limit](DeviceCaps& c) {
      if (limit == 0) c.min_storage_buffer_offset_alignment = 1024;
      if (limit == 1) c.max_storage_buffer_range = 1024;  // the least a context takes
    };
    auto ctx = make_context(options);
    const Layout l = lay_out({{10, 4, 64}}, 16);  // ranges at 64-byte offsets; 1536 bytes of scratch
    Buffers b(ctx, l);
    vkt::expect_error([&] { SparseOptimizer opt(ctx, b.tables(l), SparseAdamOptions{}); }, Status::unsupported,
                      {limit == 0 ? "minStorageBufferOffsetAlignment" : "maxStorageBufferRange"});
  }
}

}  // namespace
