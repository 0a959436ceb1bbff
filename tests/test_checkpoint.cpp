// Checkpoints (Optimizer::save / load, safetensors): save -> load -> continue equals uninterrupted
// training bit for bit for every rule and storage policy on both addressing paths; torch's key
// names; storage conversion; and every damaged or lying checkpoint refused with the optimizer
// unchanged (truncation at every offset, every bit flipped, headers that lie).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace {

using namespace vkoptim;
using nlohmann::json;

const std::vector<size_t> kSizes = {3, 257, 4099, 64 * 65};  // the last is 2-D (64 rows)

// Parameters (named w0, w1, ...) and gradients over two groups (tensor i in group i % 2).
struct Model {
  std::vector<Tensor> params, grads;
  std::vector<ParamGroup> groups;
  // two_d: the last tensor is 64 rows (Adafactor factors it, on the address path only).
  Model(Context& ctx, const RuleOptions& options, const PrecisionOptions& precision, DType param_dtype,
        const std::vector<std::vector<float>>& p0, bool two_d = true)
      : groups(2) {
    for (size_t i = 0; i < kSizes.size(); ++i) {
      params.push_back(ctx.create_tensor(kSizes[i], param_dtype));
      params.back().upload(p0[i]);
      grads.push_back(ctx.create_tensor(kSizes[i]));
      groups[i % 2].tensors.push_back(
          {params.back().range(), grads.back().range(), "w" + std::to_string(i), i == 3 && two_d ? 64u : 0u});
    }
    for (auto& g : groups) {
      g.options = options;
      g.precision = precision;
    }
    // Muon: its matrices in group 0 (3 x 1 and 1 x 4099), AdamW in group 1 (use_muon = false);
    // without device addresses, AdamW in both.
    if (auto* muon = std::get_if<MuonOptions>(&groups[1].options)) {
      muon->use_muon = false;
      if (two_d) {
        groups[0].tensors[0].rows = 3;
        groups[0].tensors[1].rows = 1;
      } else {
        std::get<MuonOptions>(groups[0].options).use_muon = false;
      }
    }
  }
  void step(Optimizer& opt, const std::vector<std::vector<float>>& g) {
    for (size_t i = 0; i < g.size(); ++i) grads[i].upload(g[i]);
    opt.step();
  }
  std::vector<std::vector<float>> download() {
    std::vector<std::vector<float>> out;
    for (auto& p : params) out.push_back(p.download());
    return out;
  }
};

std::vector<std::vector<float>> random_values(std::mt19937_64& rng, double scale = 1.0) {
  std::uniform_real_distribution<float> dist(-float(scale), float(scale));
  std::vector<std::vector<float>> out;
  for (size_t n : kSizes) {
    out.emplace_back(n);
    for (auto& v : out.back()) v = dist(rng);
  }
  return out;
}

// Every state of every tensor, by name (values as float32).
std::map<std::string, std::vector<float>> all_state(Optimizer& opt) {
  std::map<std::string, std::vector<float>> out;
  for (size_t t = 0; t < opt.tensor_count(); ++t)
    for (const auto& name : opt.state_names(t)) out[std::to_string(t) + "." + name] = opt.read_state(t, name);
  return out;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << what << " differs";
}

struct RoundTripCase {
  // A failing case prints as its name rather than as bytes.
  friend void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << c.name; }
  std::string name;
  RuleOptions options;
  StateDType state = StateDType::f32;
  bool masters = false;  // bf16 parameters with fp32 masters
  LookaheadOptions lookahead{};
  bool grad_control = false;  // replayable steps with the loss scaler, clipping and a schedule
  bool rank1 = false;         // 4-bit second moments of 2-D tensors normalised rank-1
};

RuleOptions sgd_momentum() {
  SgdOptions o;
  o.momentum = 0.9;
  return o;
}
RuleOptions nadam_decoupled() {
  NadamOptions o;
  o.decoupled_weight_decay = true;
  o.weight_decay = 0.01;
  return o;
}

std::vector<RoundTripCase> round_trip_cases() {
  std::vector<RoundTripCase> cases;
  for (const auto& info : registered_rules()) {
    cases.push_back({info.name, info.defaults});
    cases.push_back({info.name, info.defaults, StateDType::bf16});
    cases.push_back({info.name, info.defaults, StateDType::f32, true});
  }
  cases.push_back({"sgd_momentum", sgd_momentum()});
  cases.push_back({"nadam_decoupled", nadam_decoupled()});
  for (auto [name, options] : {std::pair{"adamw", RuleOptions(adamw_options())},
                               {"lion", RuleOptions(LionOptions{})},
                               {"sgd_momentum", sgd_momentum()}})
    for (StateDType quantized : {StateDType::q8, StateDType::q4}) cases.push_back({name, options, quantized});
  cases.push_back({"sgd_momentum", sgd_momentum(), StateDType::bf16});
  cases.push_back({"adamw", adamw_options(), StateDType::q8, true});
  cases.push_back({"adamw", adamw_options(), StateDType::q4, true});
  cases.push_back({"adam", AdamOptions{}, StateDType::f32, false, {3, 0.5}});
  cases.push_back({"adamw", adamw_options(), StateDType::f32, false, {}, true});
  cases.push_back({"nadam_decoupled", nadam_decoupled(), StateDType::bf16, false, {}, true});
  cases.push_back({"adamw", adamw_options(), StateDType::q4, false, {}, false, true});
  cases.push_back({"adamw", adamw_options(), StateDType::q4, true, {}, true, true});  // a skipped step too
  for (auto& c : cases)
    c.name += std::string(c.state == StateDType::bf16 ? "_bf16" : "") + (c.state == StateDType::q8 ? "_q8" : "") +
              (c.state == StateDType::q4 ? "_q4" : "") + (c.masters ? "_masters" : "") +
              (c.lookahead.k ? "_lookahead" : "") + (c.grad_control ? "_scaler_clip_schedule" : "") +
              (c.rank1 ? "_rank1" : "");
  return cases;
}

class CheckpointRoundTrip : public vkt::VulkanTest,
                            public ::testing::WithParamInterface<std::tuple<RoundTripCase, bool>> {};

// 5 steps, save, 5 more steps; a second optimizer from the saved parameters loads the checkpoint
// and takes the same 5 steps: parameters and every state bit for bit.
TEST_P(CheckpointRoundTrip, SaveLoadContinueEqualsUninterrupted) {
  const auto& [c, bda] = GetParam();
  auto options = validated_options();
  options.addressing = bda ? Addressing::device_address : Addressing::descriptors;
  auto ctx = make_context(options);
  PrecisionOptions precision;
  precision.state = c.state;
  precision.master_weights = c.masters;
  precision.min_8bit_elements = 0;
  precision.rank1_second_moment = c.rank1;
  if (std::holds_alternative<AdafactorOptions>(c.options) && c.state == StateDType::bf16)
    precision.slots = {{"row_var", StateDType::f32}, {"col_var", StateDType::f32}};  // factors stay f32
  const DType param_dtype = c.masters ? DType::bf16 : DType::f32;
  const auto p0 = random_values(rng_);
  std::vector<std::vector<std::vector<float>>> grads;
  for (int s = 0; s < 10; ++s) grads.push_back(random_values(rng_, 0.1));

  const bool two_d =
      bda || !(std::holds_alternative<AdafactorOptions>(c.options) || std::holds_alternative<MuonOptions>(c.options));
  // The scaler's scale moves (backoff on a planted inf, growth every 2 clean steps) and the
  // schedule's lr with the step: both must continue where they were.
  auto setup = [&](Model& m) {
    for (auto& g : m.groups) {
      g.lookahead = c.lookahead;
      if (c.grad_control) g.schedule = make_schedule(CosineAnnealingLR{.t_max = 8, .eta_min = 1e-5});
    }
    auto opt = std::make_unique<Optimizer>(ctx, m.groups);
    if (c.grad_control) {
      opt->set_grad_clip({.max_norm = 0.5});
      opt->set_grad_scaler({.enabled = true, .init_scale = 1024, .growth_interval = 2});
    }
    return opt;
  };
  if (c.grad_control) grads[3][1][7] = INFINITY;
  Model a(ctx, c.options, precision, param_dtype, p0, two_d);
  auto first_opt = setup(a);
  Optimizer& first = *first_opt;
  for (int s = 0; s < 5; ++s) a.step(first, grads[size_t(s)]);
  const auto checkpoint = first.save_to_memory();
  const auto saved_params = a.download();
  for (int s = 5; s < 10; ++s) a.step(first, grads[size_t(s)]);

  Model b(ctx, c.options, precision, param_dtype, saved_params, two_d);
  auto second_opt = setup(b);
  Optimizer& second = *second_opt;
  second.load_from_memory(checkpoint);
  for (int s = 5; s < 10; ++s) b.step(second, grads[size_t(s)]);

  const auto pa = a.download(), pb = b.download();
  for (size_t i = 0; i < pa.size(); ++i) expect_same_bits(pa[i], pb[i], "parameter w" + std::to_string(i));
  const auto sa = all_state(first), sb = all_state(second);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, values] : sa) expect_same_bits(values, sb.at(name), name);
  EXPECT_EQ(first.loss_scale(), second.loss_scale());
  EXPECT_TRUE(messages_->list.empty());
}

std::string round_trip_name(const ::testing::TestParamInfo<std::tuple<RoundTripCase, bool>>& p) {
  return std::get<0>(p.param).name + (std::get<1>(p.param) ? "_bda" : "_desc");
}

INSTANTIATE_TEST_SUITE_P(Rules, CheckpointRoundTrip,
                         ::testing::Combine(::testing::ValuesIn(round_trip_cases()), ::testing::Bool()),
                         round_trip_name);

// The checkpoint's parts, parsed as any safetensors reader would.
struct Parsed {
  json header;
  std::vector<uint8_t> data;
};
Parsed parse(const std::vector<uint8_t>& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  Parsed p;
  p.header = json::parse(file.begin() + 8, file.begin() + 8 + long(n));
  p.data.assign(file.begin() + 8 + long(n), file.end());
  return p;
}
// A file of a header text and data.
std::vector<uint8_t> file_of(const std::string& text, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out(8 + text.size() + data.size());
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + text.size(), data.data(), data.size());
  return out;
}
// A file from a header and data, signed as README documents: crc32 of the header without its
// crc32 (compact JSON, sorted keys) followed by the data.
std::vector<uint8_t> assemble(json header, const std::vector<uint8_t>& data) {
  header["__metadata__"].erase("crc32");
  const std::string unsigned_text = header.dump();
  uLong crc = crc32_z(0, nullptr, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(unsigned_text.data()), unsigned_text.size());
  if (!data.empty()) crc = crc32_z(crc, data.data(), data.size());
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08lx", crc);
  header["__metadata__"]["crc32"] = hex;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return file_of(text, data);
}

class CheckpointTest : public vkt::VulkanTest {
 protected:
  // A small Adam optimizer (tensors w0..w3) after 3 steps.
  struct Setup {
    std::unique_ptr<Model> model;
    std::unique_ptr<Optimizer> opt;
  };
  Setup make(Context& ctx, const RuleOptions& options = adamw_options(), PrecisionOptions precision = {},
             int steps = 3) {
    Setup s;
    precision.min_8bit_elements = 0;
    s.model = std::make_unique<Model>(ctx, options, precision, DType::f32, random_values(rng_));
    s.opt = std::make_unique<Optimizer>(ctx, s.model->groups);
    for (int i = 0; i < steps; ++i) s.model->step(*s.opt, random_values(rng_, 0.1));
    return s;
  }
  // Loading `file` is refused with invalid_argument, a message containing `words`, and changes
  // nothing (the optimizer saves the same bytes as before).
  // Two parameters holding the same n values, and a gradient.
  static std::array<Tensor, 3> twin_tensors(Context& ctx, size_t n) {
    std::vector<float> p0(n), g0(n);
    for (size_t i = 0; i < n; ++i) p0[i] = float(i % 13) * 0.1f - 0.6f, g0[i] = float(i % 7) - 3.0f;
    return {ctx.create_tensor(p0), ctx.create_tensor(p0), ctx.create_tensor(g0)};
  }
  static void expect_refused(Optimizer& opt, const std::vector<uint8_t>& file, const std::string& words) {
    const auto before = opt.save_to_memory();
    try {
      opt.load_from_memory(file);
      ADD_FAILURE() << "loaded; expected a refusal mentioning " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
    EXPECT_EQ(opt.save_to_memory(), before) << "a refused load changed the optimizer";
  }
};

TEST_F(CheckpointTest, KeysFollowTorchAndTheMetadataDescribesTheOptimizer) {
  auto ctx = make_context();
  PrecisionOptions q8;
  q8.state = StateDType::q8;
  auto s = make(ctx, adamw_options(), q8);
  const Parsed p = parse(s.opt->save_to_memory());
  EXPECT_EQ(p.header["state.w1.exp_avg"]["dtype"], "U8");
  EXPECT_EQ(p.header["state.w1.exp_avg"]["shape"], json::array({257}));
  EXPECT_EQ(p.header["state.w1.exp_avg.absmax"]["dtype"], "F32");
  EXPECT_EQ(p.header["state.w1.exp_avg.absmax"]["shape"], json::array({2}));
  EXPECT_EQ(p.header["state.w3.exp_avg_sq"]["shape"], json::array({64, 65}));
  EXPECT_EQ(p.header["state.w0.step"]["dtype"], "F32");
  EXPECT_EQ(p.header["state.w0.step"]["shape"], json::array());
  float step;
  const auto offsets = p.header["state.w0.step"]["data_offsets"];
  std::memcpy(&step, p.data.data() + offsets[0].get<size_t>(), 4);
  EXPECT_EQ(step, 3.0f);
  const json& meta = p.header["__metadata__"];
  EXPECT_EQ(meta["format"], "vkoptim.optimizer");
  const json groups = json::parse(meta["param_groups"].get<std::string>());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0]["rule"], "Adam");
  EXPECT_EQ(groups[0]["options"]["weight_decay"], 1e-2);
  EXPECT_EQ(groups[1]["params"], json::array({"w1", "w3"}));
  EXPECT_EQ(groups[0]["precision"]["state"], int(StateDType::q8));
  // 4-bit: the codes packed two a byte (257 elements: 129 bytes), an absmax per 128 elements.
  PrecisionOptions q4;
  q4.state = StateDType::q4;
  const Parsed p4 = parse(make(ctx, adamw_options(), q4).opt->save_to_memory());
  EXPECT_EQ(p4.header["state.w1.exp_avg"]["dtype"], "U8");
  EXPECT_EQ(p4.header["state.w1.exp_avg"]["shape"], json::array({129}));
  EXPECT_EQ(p4.header["state.w1.exp_avg.absmax128"]["dtype"], "F32");
  EXPECT_EQ(p4.header["state.w1.exp_avg.absmax128"]["shape"], json::array({3}));
  EXPECT_FALSE(p4.header.contains("state.w1.exp_avg.absmax"));
  EXPECT_EQ(p4.header["state.w3.exp_avg_sq"]["shape"], json::array({64 * 65 / 2}));
  // Rank-1 second moments: the 64 x 65 matrix's 64 row maxima and 65 column maxima instead of
  // block absmax; the 1-D tensors keep blocks.
  PrecisionOptions rank1 = q4;
  rank1.rank1_second_moment = true;
  const Parsed r1 = parse(make(ctx, adamw_options(), rank1).opt->save_to_memory());
  EXPECT_EQ(r1.header["state.w3.exp_avg_sq.rank1_rows"]["dtype"], "F32");
  EXPECT_EQ(r1.header["state.w3.exp_avg_sq.rank1_rows"]["shape"], json::array({64}));
  EXPECT_EQ(r1.header["state.w3.exp_avg_sq.rank1_cols"]["dtype"], "F32");
  EXPECT_EQ(r1.header["state.w3.exp_avg_sq.rank1_cols"]["shape"], json::array({65}));
  EXPECT_FALSE(r1.header.contains("state.w3.exp_avg_sq.absmax128"));
  EXPECT_TRUE(r1.header.contains("state.w3.exp_avg.absmax128"));
  EXPECT_TRUE(r1.header.contains("state.w1.exp_avg_sq.absmax128"));
  EXPECT_FALSE(r1.header.contains("state.w1.exp_avg_sq.rank1_rows"));
  EXPECT_EQ(
      json::parse(r1.header["__metadata__"]["param_groups"].get<std::string>())[0]["precision"]["rank1_second_moment"],
      true);
  // The header starts the data 8-byte aligned; offsets cover it exactly.
  uint64_t n;
  std::vector<uint8_t> file = s.opt->save_to_memory();
  std::memcpy(&n, file.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
}

// A checkpoint written before the storage policy had kahan_summation (the field absent) loads,
// as a policy without the compensation; any other missing field is still refused.
TEST_F(CheckpointTest, CheckpointsWithoutKahanSummationLoad) {
  auto ctx = make_context();
  auto s = make(ctx);
  const auto saved = s.opt->save_to_memory();
  Parsed p = parse(saved);
  json groups = json::parse(p.header["__metadata__"]["param_groups"].get<std::string>());
  for (auto& g : groups) {
    ASSERT_TRUE(g["precision"].contains("kahan_summation"));
    g["precision"].erase("kahan_summation");
  }
  p.header["__metadata__"]["param_groups"] = groups.dump();
  auto twin = make(ctx);
  twin.opt->load_from_memory(assemble(p.header, p.data));
  EXPECT_EQ(twin.opt->save_to_memory(), saved);
  for (auto& g : groups) g["precision"].erase("master_weights");
  p.header["__metadata__"]["param_groups"] = groups.dump();
  expect_refused(*twin.opt, assemble(p.header, p.data), "master_weights");
}

// The EMA's options and state go with the checkpoint; a twin loads them and goes on alike. A
// checkpoint without "ema" (written before it existed) loads as one without an EMA.
TEST_F(CheckpointTest, TheEmaSavesAndLoads) {
  auto ctx = make_context();
  const size_t n = 300;
  auto tensors = twin_tensors(ctx, n);
  Tensor &p = tensors[0], &q = tensors[1], &g = tensors[2];
  const EmaOptions ema{.decay = 0.99, .warmup = EmaWarmup::power, .update_after_step = 2};
  auto make_opt = [&](Tensor& t, EmaOptions e) {
    ParamGroup group{adamw_options(), {{t.range(), g.range(), "w"}}};
    group.ema = e;
    return std::make_unique<Optimizer>(ctx, std::vector<ParamGroup>{group});
  };
  auto opt = make_opt(p, ema), twin = make_opt(q, ema);
  for (int s = 0; s < 6; ++s) opt->step();
  const auto saved = opt->save_to_memory();
  const Parsed parsed = parse(saved);
  EXPECT_EQ(parsed.header["state.w.ema"]["dtype"], "F32");
  q.upload(p.download());
  twin->load_from_memory(saved);
  EXPECT_EQ(twin->ema(0).update_after_step, 2u);
  for (int s = 0; s < 4; ++s) {
    opt->step();
    twin->step();
  }
  EXPECT_EQ(vkt::bits(twin->read_state(0, "ema")), vkt::bits(opt->read_state(0, "ema")));
  EXPECT_EQ(vkt::bits(q.download()), vkt::bits(p.download()));
  // Another EMA setting loads (options come from the checkpoint); no EMA does not (other state).
  auto other = make_opt(q, {.decay = 0.5});
  other->load_from_memory(saved);
  EXPECT_EQ(other->ema(0).decay, 0.99);
  auto without = make_opt(q, {});
  expect_refused(*without, saved, "EMA");
  // Written before the EMA existed: no "ema" in the group.
  auto plain = make_opt(q, {});
  plain->step();
  const auto plain_saved = plain->save_to_memory();
  Parsed old = parse(plain_saved);
  json groups = json::parse(old.header["__metadata__"]["param_groups"].get<std::string>());
  groups[0].erase("ema");
  old.header["__metadata__"]["param_groups"] = groups.dump();
  auto reader = make_opt(q, {});
  reader->load_from_memory(assemble(old.header, old.data));
  EXPECT_EQ(reader->save_to_memory(), plain_saved);
}

TEST_F(CheckpointTest, CautiousStepsSaveAndLoad) {
  auto ctx = make_context();
  const size_t n = 300;
  auto tensors = twin_tensors(ctx, n);
  Tensor &p = tensors[0], &q = tensors[1], &g = tensors[2];
  auto make_opt = [&](Tensor& t, bool cautious) {
    AdamOptions o = adamw_options();
    o.cautious = cautious;
    return std::make_unique<Optimizer>(ctx, std::vector<ParamGroup>{{o, {{t.range(), g.range(), "w"}}}});
  };
  auto opt = make_opt(p, true), twin = make_opt(q, true);
  for (int s = 0; s < 3; ++s) {
    opt->step();
    g.upload(std::vector<float>(n, float(s) - 1.5f));  // some steps mask, some do not
  }
  const auto saved = opt->save_to_memory();
  q.upload(p.download());
  twin->load_from_memory(saved);
  for (int s = 0; s < 3; ++s) {
    opt->step();
    twin->step();
  }
  EXPECT_EQ(vkt::bits(q.download()), vkt::bits(p.download()));
  EXPECT_EQ(vkt::bits(twin->read_state(0, "exp_avg")), vkt::bits(opt->read_state(0, "exp_avg")));
  // A plain optimizer takes other passes: refused, as a cautious one is for a plain checkpoint.
  auto plain = make_opt(q, false);
  expect_refused(*plain, saved, "cautious");
  plain->step();
  const auto plain_saved = plain->save_to_memory();
  expect_refused(*twin, plain_saved, "cautious");
  // Written before cautious steps existed: no "cautious" in the options, which were plain.
  Parsed old = parse(plain_saved);
  json groups = json::parse(old.header["__metadata__"]["param_groups"].get<std::string>());
  ASSERT_TRUE(groups[0]["options"].contains("cautious"));
  groups[0]["options"].erase("cautious");
  old.header["__metadata__"]["param_groups"] = groups.dump();
  auto reader = make_opt(q, false);
  reader->load_from_memory(assemble(old.header, old.data));
  EXPECT_EQ(reader->save_to_memory(), plain_saved);
}

TEST_F(CheckpointTest, FilesAreWrittenAtomicallyAndLoadBack) {
  auto ctx = make_context();
  auto s = make(ctx);
  const auto dir = std::filesystem::temp_directory_path() / ("vkoptim_ckpt_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "opt.safetensors").string();
  s.opt->save(path);
  s.opt->save(path);  // over the existing file
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1) << "a temporary file was left";
  const auto expected = s.opt->save_to_memory();
  auto t = make(ctx, adamw_options(), {}, 0);
  t.opt->load(path);
  EXPECT_EQ(t.opt->save_to_memory(), expected);
  try {
    t.opt->load((dir / "missing.safetensors").string());
    ADD_FAILURE() << "loaded a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::io_error) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
  try {
    s.opt->save((dir / "no_such_folder" / "x.safetensors").string());
    ADD_FAILURE() << "saved into a missing folder";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::io_error) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// fp32 state into 8-bit and bf16 optimizers and back: refused without convert_storage; with it,
// the 8-bit state is the fp32 one quantized, and going back to fp32 gives the dequantized values.
TEST_F(CheckpointTest, StoragePoliciesConvertWhenAsked) {
  auto ctx = make_context();
  auto f32 = make(ctx);
  const auto fp32_file = f32.opt->save_to_memory();
  PrecisionOptions q8;
  q8.state = StateDType::q8;
  auto q = make(ctx, adamw_options(), q8, 0);
  expect_refused(*q.opt, fp32_file, "convert_storage");
  LoadOptions convert;
  convert.convert_storage = true;
  q.opt->load_from_memory(fp32_file, convert);
  for (size_t t = 0; t < q.opt->tensor_count(); ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"}) {
      const auto want = f32.opt->read_state(t, name), got = q.opt->read_state(t, name);
      ASSERT_EQ(want.size(), got.size());
      for (size_t i = 0; i < want.size(); i += 256) {
        float absmax = 0;
        for (size_t k = i; k < std::min(want.size(), i + 256); ++k) absmax = std::max(absmax, std::abs(want[k]));
        for (size_t k = i; k < std::min(want.size(), i + 256); ++k)
          ASSERT_LE(std::abs(got[k] - want[k]), 0.02f * absmax) << name << " of tensor " << t << " at " << k;
      }
    }
  EXPECT_EQ(q.opt->step_count(0), 3u);
  // Back: the 8-bit state's values exactly.
  const auto q8_file = q.opt->save_to_memory();
  auto back = make(ctx, adamw_options(), {}, 0);
  back.opt->load_from_memory(q8_file, convert);
  for (size_t t = 0; t < back.opt->tensor_count(); ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"})
      expect_same_bits(back.opt->read_state(t, name), q.opt->read_state(t, name), name);
  // 4-bit: fp32 in within each block's coarsest half gap (0.1125 x absmax); a 4-bit file into an
  // 8-bit optimizer is refused without converting, converts with it, and back to fp32 exactly.
  PrecisionOptions q4;
  q4.state = StateDType::q4;
  auto f = make(ctx, adamw_options(), q4, 0);
  expect_refused(*f.opt, q8_file, "convert_storage");
  f.opt->load_from_memory(fp32_file, convert);
  for (size_t t = 0; t < f.opt->tensor_count(); ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"}) {
      const auto want = f32.opt->read_state(t, name), got = f.opt->read_state(t, name);
      for (size_t i = 0; i < want.size(); i += 128) {
        float absmax = 0;
        for (size_t k = i; k < std::min(want.size(), i + 128); ++k) absmax = std::max(absmax, std::abs(want[k]));
        for (size_t k = i; k < std::min(want.size(), i + 128); ++k)
          ASSERT_LE(std::abs(got[k] - want[k]), 0.1126f * absmax) << name << " of tensor " << t << " at " << k;
      }
    }
  {  // an 8-bit state whose absmax claims 4-bit codes (the metadata saying 8-bit)
    Parsed p8 = parse(q8_file);
    p8.header["state.w1.exp_avg.absmax128"] = p8.header["state.w1.exp_avg.absmax"];
    p8.header.erase("state.w1.exp_avg.absmax");
    expect_refused(*q.opt, assemble(p8.header, p8.data), "holds 4-bit codes, the optimizer keeps 8-bit ones");
  }
  const auto q4_file = f.opt->save_to_memory();
  expect_refused(*q.opt, q4_file, "convert_storage");
  q.opt->load_from_memory(q4_file, convert);
  auto back4 = make(ctx, adamw_options(), {}, 0);
  back4.opt->load_from_memory(q4_file, convert);
  for (size_t t = 0; t < back4.opt->tensor_count(); ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"})
      expect_same_bits(back4.opt->read_state(t, name), f.opt->read_state(t, name), name);
  // Rank-1 second moments (w3, 64 x 65): fp32 in within half the linear map's gap (1/32) of each
  // element's min(row max, column max), or below its first value (1/16) within 1/16; 4-bit blockwise and rank-1 files
  // refused between each other without converting; back to fp32 exactly.
  PrecisionOptions rank1 = q4;
  rank1.rank1_second_moment = true;
  auto r = make(ctx, adamw_options(), rank1, 0);
  expect_refused(*r.opt, q4_file, "convert_storage");
  r.opt->load_from_memory(fp32_file, convert);
  {
    const auto want = f32.opt->read_state(3, "exp_avg_sq"), got = r.opt->read_state(3, "exp_avg_sq");
    std::vector<float> row_max(64, 0.0f), col_max(65, 0.0f);
    for (size_t k = 0; k < want.size(); ++k) {
      row_max[k / 65] = std::max(row_max[k / 65], want[k]);
      col_max[k % 65] = std::max(col_max[k % 65], want[k]);
    }
    for (size_t k = 0; k < want.size(); ++k)
      ASSERT_LE(std::abs(got[k] - want[k]),
                (want[k] < std::min(row_max[k / 65], col_max[k % 65]) / 16 ? 0.0626f : 0.0313f) *
                    std::min(row_max[k / 65], col_max[k % 65]))
          << k;
  }
  const auto rank1_file = r.opt->save_to_memory();
  expect_refused(*f.opt, rank1_file, "convert_storage");
  {  // a file whose policy claims blockwise second moments but keeps rank-1 maxima
    Parsed p = parse(rank1_file);
    json groups = json::parse(p.header["__metadata__"]["param_groups"].get<std::string>());
    for (auto& g : groups) g["precision"]["rank1_second_moment"] = false;
    p.header["__metadata__"]["param_groups"] = groups.dump();
    expect_refused(*f.opt, assemble(p.header, p.data),
                   "holds rank-1 normalised 4-bit codes, the optimizer keeps 4-bit ones");
  }
  {  // the maxima of a 65 x 64 matrix (as many in all), and a negative maximum: refused
    Parsed p = parse(rank1_file);
    const std::string key = "state.w3.exp_avg_sq";
    json transposed = p.header;
    std::swap(transposed[key + ".rank1_rows"], transposed[key + ".rank1_cols"]);
    expect_refused(*r.opt, assemble(transposed, p.data), key + ".rank1_rows");
    std::vector<uint8_t> data = p.data;
    const float negative = -1.0f;
    std::memcpy(data.data() + p.header[key + ".rank1_cols"]["data_offsets"][0].get<size_t>() + 8, &negative, 4);
    expect_refused(*r.opt, assemble(p.header, data), "negative or non-finite maximum");
    json earlier = p.header;  // the maxima under one [rows + cols] key, an earlier form
    earlier[key + ".rank1"] = earlier[key + ".rank1_rows"];
    earlier[key + ".rank1"]["shape"] = json::array({65 + 64});
    earlier[key + ".rank1"]["data_offsets"][1] = earlier[key + ".rank1_cols"]["data_offsets"][1];
    earlier.erase(key + ".rank1_rows");
    earlier.erase(key + ".rank1_cols");
    expect_refused(*r.opt, assemble(earlier, p.data), key + ".rank1_cols\" [cols]");
  }
  f.opt->load_from_memory(rank1_file, convert);
  auto back_rank1 = make(ctx, adamw_options(), {}, 0);
  back_rank1.opt->load_from_memory(rank1_file, convert);
  for (size_t t = 0; t < back_rank1.opt->tensor_count(); ++t)
    for (const char* name : {"exp_avg", "exp_avg_sq"})
      expect_same_bits(back_rank1.opt->read_state(t, name), r.opt->read_state(t, name), name);
  PrecisionOptions bf16;
  bf16.state = StateDType::bf16;
  auto b = make(ctx, adamw_options(), bf16, 0);
  b.opt->load_from_memory(fp32_file, convert);
  const auto want = f32.opt->read_state(2, "exp_avg"), got = b.opt->read_state(2, "exp_avg");
  for (size_t i = 0; i < want.size(); ++i) ASSERT_LE(std::abs(got[i] - want[i]), std::abs(want[i]) / 128) << i;
  EXPECT_TRUE(messages_->list.empty());
}

// One AdamW tensor of 5 elements after 2 steps: a checkpoint small enough to damage every byte.
struct Tiny {
  Tensor p, g;
  Optimizer opt;
  Tiny(Context& ctx, std::mt19937_64& rng)
      : p(ctx.create_tensor(random_values(rng)[0])),
        g(ctx.create_tensor(std::vector<float>{0.1f, -0.2f, 0.3f})),
        opt(ctx, {ParamGroup{adamw_options(), {{p.range(), g.range(), "w"}}}}) {
    opt.step();
    opt.step();
  }
};

TEST_F(CheckpointTest, TruncationAtEveryOffsetIsRefused) {
  auto ctx = make_context();
  Tiny s(ctx, rng_);
  const auto file = s.opt.save_to_memory();
  for (size_t n = 0; n < file.size(); ++n) {
    const std::vector<uint8_t> prefix(file.begin(), file.begin() + long(n));
    EXPECT_THROW(s.opt.load_from_memory(prefix), Error) << "truncated at " << n;
  }
  EXPECT_EQ(s.opt.save_to_memory(), file);
}

TEST_F(CheckpointTest, EveryFlippedBitIsRefused) {
  auto ctx = make_context();
  Tiny t(ctx, rng_);
  Optimizer* opt = &t.opt;
  const auto file = opt->save_to_memory();
  const auto before = file;
  size_t accepted = 0;
  for (size_t byte = 0; byte < file.size(); ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      auto damaged = file;
      damaged[byte] ^= uint8_t(1u << bit);
      try {
        opt->load_from_memory(damaged);
        ++accepted;
        ADD_FAILURE() << "accepted a flip of bit " << bit << " of byte " << byte;
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), Status::invalid_argument) << e.what();
      }
    }
  EXPECT_EQ(accepted, 0u);
  EXPECT_EQ(opt->save_to_memory(), before);
}

TEST_F(CheckpointTest, HeadersThatLieAreRefusedNamingTheProblem) {
  auto ctx = make_context();
  auto s = make(ctx);
  const Parsed p = parse(s.opt->save_to_memory());
  auto lie = [&](const std::function<void(json&, std::vector<uint8_t>&)>& change, const std::string& words) {
    json h = p.header;
    auto data = p.data;
    change(h, data);
    expect_refused(*s.opt, assemble(h, data), words);
  };
  const std::string key = "state.w1.exp_avg";
  lie([&](json& h, auto&) { h[key]["data_offsets"][1] = p.data.size() + 4; }, "outside the data");
  lie([&](json& h, auto&) { h[key]["data_offsets"][0] = h[key]["data_offsets"][0].get<uint64_t>() + 4; }, key);
  lie([&](json& h, auto&) { h[key]["dtype"] = "F17"; }, "F17");
  lie([&](json& h, auto&) { h[key]["dtype"] = "BF16"; }, key);
  lie([&](json& h, auto&) { h[key]["shape"] = json::array({258}); }, key);
  lie(
      [&](json& h, auto& d) {
        // Same bytes, another shape: a shape check, not a size check.
        h[key]["shape"] = json::array({1, 257});
        (void)d;
      },
      "expected F32[257]");
  lie([&](json& h, auto&) { h.erase(key); }, "gap");
  lie(
      [&](json& h, auto& d) {
        h["state.w9.exp_avg"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {d.size(), d.size() + 4}}};
        d.resize(d.size() + 4);
      },
      "state.w9.exp_avg");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["rule"] = "Lion";
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "Lion");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["options"]["amsgrad"] = true;
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "other state");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["options"]["lr"] = -1;
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "lr");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["options"].erase("beta2");
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "beta2");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["options"]["gamma"] = 1;
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "gamma");
  lie(
      [&](json& h, auto&) {
        json g = json::parse(h["__metadata__"]["param_groups"].get<std::string>());
        g[0]["params"] = json::array({"w0", "w5"});
        h["__metadata__"]["param_groups"] = g.dump();
      },
      "w5");
  lie([&](json& h, auto&) { h["__metadata__"].erase("param_groups"); }, "param_groups");
  lie([&](json& h, auto&) { h["__metadata__"]["grad_control"] = "[]"; }, "grad_control");
  lie(
      [&](json& h, auto&) {
        json c = json::parse(h["__metadata__"]["grad_control"].get<std::string>());
        c["scaler"]["enabled"] = true;
        c["scaler"]["growth_interval"] = 0;
        h["__metadata__"]["grad_control"] = c.dump();
      },
      "growth_interval");
  lie(
      [&](json& h, auto&) {
        std::string deep(100000, '[');
        deep += std::string(100000, ']');
        h["__metadata__"]["param_groups"] = deep;
      },
      "nests deeper");
  lie(
      [&](json& h, auto& d) {
        // A stray absmax next to F32 state.
        h[key + ".absmax"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {d.size(), d.size() + 8}}};
        d.resize(d.size() + 8);
      },
      "belongs to no quantized state");
  lie(
      [&](json& h, auto&) {
        json c = json::parse(h["__metadata__"]["grad_control"].get<std::string>());
        c["scale"] = "big";
        c["growth_tracker"] = 0;
        h["__metadata__"]["grad_control"] = c.dump();
      },
      "scale");
  lie([&](json& h, auto&) { h["__metadata__"]["format_version"] = "2"; }, "format_version");
  // Not UTF-8, duplicate keys, a header length beyond the file: built by hand.
  auto raw = [](const std::string& text) { return file_of(text); };
  expect_refused(*s.opt, raw("{\"a\xff\": 1}"), "UTF-8");
  expect_refused(*s.opt, raw(std::string(5000, '[') + std::string(5000, ']')), "nests deeper");
  expect_refused(*s.opt, raw("{\"__metadata__\": {}, \"__metadata__\": {}}"), "twice");
  auto too_long = raw("{}");
  too_long[0] = 200;
  expect_refused(*s.opt, too_long, "beyond the file");
  EXPECT_TRUE(messages_->list.empty());
}

// A tensor without state in the checkpoint (saved before its first step) starts afresh: SGD's
// first step copies the gradient, as it would have.
TEST_F(CheckpointTest, TensorsWithoutStateStartAfresh) {
  auto ctx = make_context();
  auto fresh = make(ctx, sgd_momentum(), {}, 0);
  const auto file = fresh.opt->save_to_memory();
  EXPECT_EQ(parse(file).data.size(), 0u);
  auto s = make(ctx, sgd_momentum(), {}, 2);
  s.opt->load_from_memory(file);
  EXPECT_EQ(s.opt->step_count(0), 0u);
  const auto g = random_values(rng_, 0.1);
  s.model->step(*s.opt, g);
  expect_same_bits(s.opt->read_state(s.opt->tensor_index("w1"), "momentum_buffer"), g[1],
                   "momentum_buffer after the first step");
}

// State of another dtype is refused even when converting (only F32, BF16 and 8-bit codes are
// state); a refused load leaves an optimizer that never stepped unallocated (groups can still be
// added); tensors that would share a checkpoint name are refused; a pending SAM perturbation
// refuses saving and loading.
TEST_F(CheckpointTest, ConversionTakesOnlyStateTypesAndRefusalsAllocateNothing) {
  auto ctx = make_context();
  auto s = make(ctx);
  Parsed p = parse(s.opt->save_to_memory());
  const std::string key = "state.w0.exp_avg";
  p.header[key]["dtype"] = "F16";
  p.header[key]["shape"] = json::array({6});  // 12 bytes of F16 where 3 F32 were
  auto fresh = make(ctx, adamw_options(), {}, 0);
  try {
    fresh.opt->load_from_memory(assemble(p.header, p.data), {.convert_storage = true});
    ADD_FAILURE() << "F16 state was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::invalid_argument) << e.what();
  }
  // Nothing was allocated by the refused loads: the optimizer still takes another group.
  auto extra_p = ctx.create_tensor(5), extra_g = ctx.create_tensor(5);
  EXPECT_NO_THROW(fresh.opt->add_param_group({adamw_options(), {{extra_p.range(), extra_g.range(), "extra"}}}));

  auto a = ctx.create_tensor(4), ga = ctx.create_tensor(4), b = ctx.create_tensor(4), gb = ctx.create_tensor(4);
  Optimizer clash(ctx, {ParamGroup{adamw_options(), {{a.range(), ga.range(), "1"}, {b.range(), gb.range(), ""}}}});
  try {
    clash.save_to_memory();
    ADD_FAILURE() << "two tensors going by \"1\" were saved";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::invalid_state) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"1\""), std::string::npos) << e.what();
  }

  auto w = ctx.create_tensor(std::vector<float>{1, 2, 3}), g = ctx.create_tensor(std::vector<float>{0.1f, 0.2f, 0.3f});
  ParamGroup sam_group{SgdOptions{}, {{w.range(), g.range(), "w"}}};
  sam_group.sam.rho = 0.05;
  Optimizer sam(ctx, {sam_group});
  const auto before = sam.save_to_memory();
  sam.sam_perturb();
  EXPECT_THROW(sam.save_to_memory(), Error);
  EXPECT_THROW(sam.load_from_memory(before), Error);
  sam.step();
  EXPECT_NO_THROW(sam.load_from_memory(before));
  EXPECT_TRUE(messages_->list.empty());
}

// A process killed (SIGKILL) at random points while it saves over an existing checkpoint: the
// file is always whole, the old one or a new one, and loads.
TEST_F(CheckpointTest, KilledWhileSavingLeavesALoadableFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("vkoptim_kill_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "opt.safetensors").string();
  auto run = [&](bool once) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(VKOPTIM_CHECKPOINT_WRITER, VKOPTIM_CHECKPOINT_WRITER, path.c_str(), once ? "--once" : nullptr, nullptr);
      ::_exit(127);
    }
    return pid;
  };
  int status = 0;
  ASSERT_EQ(::waitpid(run(true), &status, 0) > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
  auto ctx = make_context();
  auto p = ctx.create_tensor(size_t(1) << 20), g = ctx.create_tensor(size_t(1) << 20);
  Optimizer opt(ctx, {ParamGroup{adamw_options(), {{p.range(), g.range(), "w"}}}});
  std::uniform_int_distribution<int> delay_ms(100, 1500);
  uint64_t last_step = 0;
  for (int kill = 0; kill < 6; ++kill) {
    const pid_t pid = run(false);
    ::usleep(useconds_t(delay_ms(rng_)) * 1000);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ASSERT_NO_THROW(opt.load(path)) << "after kill " << kill;
    const uint64_t step = opt.step_count(0);
    EXPECT_GE(step, 1u);
    last_step = std::max(last_step, step);
  }
  RecordProperty("largest_step_seen", int(last_step));
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(messages_->list.empty());
}

}  // namespace
