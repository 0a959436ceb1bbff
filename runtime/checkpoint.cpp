// Checkpoints: the whole optimizer in the safetensors format (safetensors.hpp), keyed as torch
// names its state. README, "Checkpoints", documents the keys and the metadata.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "checkpoint_file.hpp"
#include "optimizer_state.hpp"
#include "safetensors.hpp"

// JSON forms of the options (one line per struct). Enums are their numbers.
namespace vkoptim {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SgdOptions, lr, momentum, dampening, weight_decay, nesterov, decoupled_weight_decay,
                                   maximize, momentum_form, dampen_first_step, cautious)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdamOptions, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
                                   decoupled_weight_decay, bias_correction, eps_root, amsgrad_max, decay_order,
                                   cautious)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdagradOptions, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize,
                                   decoupled_weight_decay)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RmspropOptions, lr, alpha, eps, weight_decay, momentum, centered, maximize,
                                   decoupled_weight_decay, eps_in_sqrt)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdadeltaOptions, lr, rho, eps, weight_decay, maximize, decoupled_weight_decay)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdamaxOptions, lr, beta1, beta2, eps, weight_decay, maximize, decoupled_weight_decay)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(NadamOptions, lr, beta1, beta2, eps, weight_decay, momentum_decay,
                                   decoupled_weight_decay, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RadamOptions, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AsgdOptions, lr, lambd, alpha, t0, weight_decay, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RpropOptions, lr, etaminus, etaplus, step_size_min, step_size_max, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LionOptions, lr, beta1, beta2, weight_decay, maximize, cautious)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ScheduleFreeAdamwOptions, lr, beta1, beta2, eps, weight_decay, warmup_steps, r,
                                   weight_lr_power, decay_at_z)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LambOptions, lr, beta1, beta2, eps, weight_decay, bias_correction, min_trust_ratio,
                                   max_trust_ratio, maximize, use_nvlamb)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdafactorOptions, lr, beta2_decay, eps1, eps2, d, weight_decay, beta1, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdoptOptions, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
                                   use_clipping, clip_exponent, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(StableAdamwOptions, lr, beta1, beta2, eps, weight_decay, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AdemamixOptions, lr, beta1, beta2, beta3, alpha, beta3_warmup, alpha_warmup, eps,
                                   weight_decay, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MuonOptions, lr, weight_decay, momentum, nesterov, ns_a, ns_b, ns_c, eps, ns_steps,
                                   adjust_lr, ns_bf16, use_muon, beta1, beta2, adam_eps)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(FtrlOptions, lr, learning_rate_power, initial_accumulator_value, l1, l2,
                                   l2_shrinkage, beta, maximize)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(InverseTimeDecay, decay_rate)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ExponentialLR, gamma)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(StepLR, step_size, gamma)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MultiStepLR, milestones, gamma)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ConstantLR, factor, total_iters)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LinearLR, start_factor, end_factor, total_iters)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PolynomialLR, total_iters, power)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CosineAnnealingLR, t_max, eta_min)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CosineAnnealingWarmRestarts, t_0, t_mult, eta_min)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OneCycleLR, max_lr, total_steps, pct_start, anneal_strategy, three_phase, div_factor,
                                   final_div_factor, cycle_momentum, base_momentum, max_momentum)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CyclicLR, base_lr, max_lr, step_size_up, step_size_down, mode, gamma, cycle_momentum,
                                   base_momentum, max_momentum)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CosineWithWarmup, num_warmup_steps, num_training_steps, num_cycles, min_lr_ratio)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(WarmupStableDecay, num_warmup_steps, num_stable_steps, num_decay_steps, warmup_shape,
                                   decay_shape, num_cycles, min_lr_ratio)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LrSchedule, kind, inverse_time, exponential, step, multi_step, constant_factor,
                                   linear, polynomial, cosine_annealing, cosine_warm_restarts, one_cycle, cyclic,
                                   cosine_with_warmup, warmup_stable_decay, pieces, milestones)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LookaheadOptions, k, alpha)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SamOptions, rho)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EmaOptions, decay, warmup, inv_gamma, power, min_decay, update_after_step)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SlotDType, name, dtype)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PrecisionOptions, state, slots, master_weights, kahan_summation, rounding, seed,
                                   min_8bit_elements, rank1_second_moment)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(GradClip, max_norm, norm_type, error_if_nonfinite, clip_value, groups)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(GradScalerOptions, enabled, init_scale, growth_factor, backoff_factor,
                                   growth_interval)
}  // namespace vkoptim

namespace vkoptim::detail {
namespace {

using nlohmann::json;
namespace st = safetensors;

constexpr const char* kFormat = "vkoptim.optimizer";
constexpr const char* kFormatVersion = "1";
constexpr const char* kLibraryVersion = VKOPTIM_VERSION;

[[noreturn]] void refuse(const std::string& what) {
  throw Error(Status::invalid_argument, "checkpoint: " + what);
}

// JSON has no inf or nan: they are written as the strings "inf", "-inf", "nan" and read back.
void encode_nonfinite(json& j) {
  if (j.is_number_float() && !std::isfinite(j.get<double>())) {
    const double v = j.get<double>();
    j = std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
  } else if (j.is_structured()) {
    for (auto& e : j) encode_nonfinite(e);
  }
}
void decode_nonfinite(json& j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == "inf")
      j = INFINITY;
    else if (s == "-inf")
      j = -INFINITY;
    else if (s == "nan")
      j = NAN;
  } else if (j.is_structured()) {
    for (auto& e : j) decode_nonfinite(e);
  }
}
template <class T>
json to_json_value(const T& v) {
  json j = v;
  encode_nonfinite(j);
  return j;
}
// `j` (at `where`, for messages) as a T: every field T has must be there, and nothing else.
template <class T>
T from_json_value(json j, const std::string& where) {
  decode_nonfinite(j);
  if (!j.is_object()) refuse(where + " is not an object");
  T v;
  try {
    v = j.get<T>();
  } catch (const json::exception& e) {
    refuse(where + ": " + e.what());
  }
  const json known = v;
  for (const auto& [k, _] : j.items())
    if (!known.contains(k)) refuse(where + " has the field \"" + k + "\", which this version does not know");
  return v;
}

// The name a tensor's state goes by: its ParamTensor name, or its index (torch's state keys).
std::string tensor_name(const OptimizerState& s, size_t t) {
  const auto& name = s.tensors[t].tensor.name;
  return name.empty() ? std::to_string(t) : name;
}
std::string state_key(const OptimizerState& s, size_t t, const std::string& slot) {
  return "state." + tensor_name(s, t) + "." + slot;
}

// The shape a per-element state of tensor t has (the parameter's: 2-D when it has rows).
std::vector<uint64_t> param_shape(const TensorRecord& t, uint64_t elements) {
  if (elements == t.tensor.param.count && t.tensor.rows > 0) return {t.tensor.rows, elements / t.tensor.rows};
  return {elements};
}

st::DType file_dtype(uint32_t code) {
  return code == kBF16        ? st::DType::BF16
         : code == kF16       ? st::DType::F16
         : is_quantized(code) ? st::DType::U8
                              : st::DType::F32;
}
// The shape a state region has in the file: the parameter's, or for 4-bit codes (two a byte,
// element 0 in the low nibble) their bytes.
std::vector<uint64_t> file_shape(const TensorRecord& t, const StateRegion& region) {
  if (is_q4(region.code)) return {quantized_bytes(region.elements, region.code)};
  return param_shape(t, region.elements);
}
// The key suffix of a quantized region's block absmax: 8-bit per 256 elements, 4-bit per 128.
std::string absmax_suffix(uint32_t code) {
  return is_q4(code) ? ".absmax128" : ".absmax";
}

// A state region of the optimizer and where it goes in the file.
struct SavedRegion {
  size_t tensor;
  const StateRegion* region;
  size_t spec;           // its TensorSpec
  int absmax_spec = -1;  // quantized: the TensorSpec of its block absmax
  uint32_t column = 0;   // quantized: its column in the tensor's absmax region
  int rank1_spec = -1;   // a rank-1 normalised second moment: the TensorSpec of its maxima...
  uint64_t steps = 0;    // ...and the tensor's step count (which set holds them)
};

// Each state name of a tensor record with its region (rule and wrapper slots, then the master):
// its placed regions, or (a record copied through plan_regions) the regions it would have.
std::vector<std::pair<std::string, const StateRegion*>> regions_of(const OptimizerState& s, const TensorRecord& rec) {
  std::vector<std::pair<std::string, const StateRegion*>> out;
  const auto names = s.slot_names();
  const auto map = s.slots(rec.group);
  for (size_t k = 0; k < names.size(); ++k)
    if (map[k] >= 0 && rec.slots[size_t(map[k])].active && !s.transient_slot(k))
      out.emplace_back(names[k], &rec.slots[size_t(map[k])]);
  if (const char* master = s.master_name(rec)) out.emplace_back(master, &rec.master);
  return out;
}
const StateRegion& region_named(const OptimizerState& s, size_t t, const std::string& name) {
  for (const auto& [n, region] : regions_of(s, s.tensors[t]))
    if (n == name) return *region;
  throw Error(Status::not_found, "checkpoint: tensor " + std::to_string(t) + " has no " + name);
}

// Every tensor's checkpoint name; two tensors going by the same one cannot be saved or loaded.
std::vector<std::string> checkpoint_names(const OptimizerState& s) {
  std::vector<std::string> names;
  std::map<std::string, size_t> seen;
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    names.push_back(tensor_name(s, t));
    if (const auto [it, fresh] = seen.emplace(names.back(), t); !fresh)
      throw Error(Status::invalid_state, "checkpoint: tensors " + std::to_string(it->second) + " and " +
                                             std::to_string(t) + " both go by \"" + names.back() +
                                             "\" (a tensor without a name goes by its index): name them apart");
  }
  return names;
}

// A SAM perturbation awaiting its restore (on the host, or once steps run on the device, in the
// step buffer): the parameters are mid-step.
bool sam_pending(const OptimizerState& s) {
  for (size_t g = 0; g < s.groups.size(); ++g) {
    if (s.sam_perturbed[g]) return true;
    if (s.device_steps && s.step_words()[s.step_layout.group_records + g * kGroupRecordWords + kGroupSamPending] != 0)
      return true;
  }
  return false;
}

// JSON of the metadata (param_groups, grad_control), refused when it nests deeper than any
// checkpoint does (dumping or walking a deeper value would recurse).
json parse_metadata(const std::string& text, const char* what) {
  constexpr int kMaxDepth = 16;
  bool too_deep = false;
  json j;
  try {
    j = json::parse(text, [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) too_deep = true;
      return depth <= kMaxDepth;
    });
  } catch (const json::exception& e) {
    refuse(std::string(what) + " is not JSON: " + e.what());
  }
  if (too_deep) refuse(std::string(what) + " nests deeper than " + std::to_string(kMaxDepth) + " levels");
  return j;
}

// The checksum of a checkpoint: crc32 (zlib's) of the header text without "crc32" (canonical,
// see safetensors::header_text), then of the data; 8 hex digits. It covers every byte a load uses.
std::string checksum(const std::string& header_without_crc, std::span<const uint8_t> data) {
  uLong crc = crc32_z(0, nullptr, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(header_without_crc.data()), header_without_crc.size());
  if (!data.empty()) crc = crc32_z(crc, data.data(), data.size());  // (a null buffer would reset it)
  char text[16];
  std::snprintf(text, sizeof text, "%08lx", crc);
  return text;
}

uint32_t* control_words(const OptimizerState& s) {
  return s.step_words() + kControlBase;
}

struct Checkpoint {
  std::vector<uint8_t> header, data;
};

Checkpoint build(OptimizerState& s) {
  checkpoint_names(s);
  s.ensure_initialised();
  s.ctx->wait_idle();
  if (sam_pending(s))
    throw Error(Status::invalid_state, "save: a SAM perturbation awaits its restore (save between steps)");
  std::vector<st::TensorSpec> specs;
  std::vector<SavedRegion> regions;
  struct SavedScalar {
    size_t spec;
    double value;
  };
  std::vector<SavedScalar> scalars;
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    const auto& rec = s.tensors[t];
    const uint64_t step =
        s.device_steps ? s.step_words()[s.step_layout.tensor_records + t * kTensorRecordWords] : rec.step;
    const bool fresh =
        s.device_steps ? s.step_words()[s.step_layout.tensor_records + t * kTensorRecordWords + 1] != 0 : rec.fresh;
    if (fresh && step == 0) continue;  // no state yet, as in torch
    for (const auto& [name, region] : regions_of(s, rec)) {
      SavedRegion r{t, region, specs.size()};
      specs.push_back({state_key(s, t, name), file_dtype(region->code), file_shape(rec, *region)});
      if (s.rank1(rec) && region->code == kQ4Unsigned) {
        r.rank1_spec = int(specs.size());
        r.steps = step;
        // Row and column maxima as two keys: their lengths pin the shape (a transposed tensor
        // has as many maxima in all).
        // (A piece of a split matrix keeps the whole matrix's.)
        specs.push_back({state_key(s, t, name) + ".rank1_rows", st::DType::F32, {s.matrix_rows(rec)}});
        specs.push_back({state_key(s, t, name) + ".rank1_cols", st::DType::F32, {s.matrix_cols(rec)}});
      } else if (is_quantized(region->code)) {
        r.absmax_spec = int(specs.size());
        r.column = s.quant_column(t, *region);
        const uint32_t block = quant_block(region->code);
        specs.push_back({state_key(s, t, name) + absmax_suffix(region->code),
                         st::DType::F32,
                         {(region->elements + block - 1) / block}});
      }
      regions.push_back(r);
    }
    // torch keeps the step as a float32 scalar tensor; the rule's host scalars are kept in double.
    scalars.push_back({specs.size(), double(step)});
    specs.push_back({state_key(s, t, "step"), st::DType::F32, {}});
    const auto names = s.rule->scalar_names();
    const Scalars values = s.device_steps ? s.rule->carried_scalars(s.device_carry(t)) : rec.scalars;
    for (size_t k = 0; k < names.size(); ++k) {
      scalars.push_back({specs.size(), values[k]});
      specs.push_back({state_key(s, t, names[k]), st::DType::F64, {}});
    }
  }
  Checkpoint c;
  c.data.resize(st::layout(specs));
  for (const auto& r : regions) {
    const auto& arena = *s.arenas[r.region->arena];
    s.ctx->read_buffer(arena.buffer, &arena, r.region->offset, c.data.data() + specs[r.spec].offset,
                       specs[r.spec].bytes());
    if (r.rank1_spec >= 0) {
      const auto maxima = s.read_rank1(r.tensor, r.steps);  // rows, then columns
      const auto& row_spec = specs[size_t(r.rank1_spec)];
      std::memcpy(c.data.data() + row_spec.offset, maxima.data(), row_spec.bytes());
      std::memcpy(c.data.data() + specs[size_t(r.rank1_spec) + 1].offset, maxima.data() + row_spec.bytes() / 4,
                  specs[size_t(r.rank1_spec) + 1].bytes());
    }
    if (r.absmax_spec >= 0) {
      const auto& am = s.tensors[r.tensor].absmax;
      std::vector<float> absmax(am.elements);
      s.ctx->read_buffer(s.arenas[am.arena]->buffer, s.arenas[am.arena].get(), am.offset, absmax.data(),
                         absmax.size() * 4);
      const uint32_t columns = s.quant_slot_count(s.tensors[r.tensor]);
      uint8_t* out = c.data.data() + specs[size_t(r.absmax_spec)].offset;
      for (uint64_t b = 0; b < specs[size_t(r.absmax_spec)].shape[0]; ++b)
        std::memcpy(out + 4 * b, &absmax[b * columns + r.column], 4);
    }
  }
  for (const auto& sc : scalars) {
    uint8_t* at = c.data.data() + specs[sc.spec].offset;
    if (specs[sc.spec].dtype == st::DType::F64) {
      std::memcpy(at, &sc.value, 8);
    } else {
      const float f = float(sc.value);
      std::memcpy(at, &f, 4);
    }
  }

  json groups = json::array();
  for (size_t g = 0; g < s.groups.size(); ++g) {
    json params = json::array();
    for (size_t t = 0; t < s.tensors.size(); ++t)
      if (s.tensors[t].group == g) params.push_back(tensor_name(s, t));
    groups.push_back({{"rule", s.rule->name()},
                      {"options", std::visit([](const auto& o) { return to_json_value(o); }, s.groups[g])},
                      {"schedule", to_json_value(s.schedules[g])},
                      {"lookahead", to_json_value(s.lookahead[g])},
                      {"sam", to_json_value(s.sam[g])},
                      {"ema", to_json_value(s.ema[g])},
                      {"precision", to_json_value(s.precision[g])},
                      {"params", params}});
  }
  json control = {{"clip", to_json_value(s.clip)}, {"scaler", to_json_value(s.scaler)}};
  if (s.step_buffer) {
    float scale;
    std::memcpy(&scale, control_words(s) + kControlScale, 4);
    control["scale"] = to_json_value(double(scale));  // an overflowed scale is "inf"
    control["growth_tracker"] = control_words(s)[kControlGrowthTracker];
  }
  std::map<std::string, std::string> metadata = {{"format", kFormat},
                                                 {"format_version", kFormatVersion},
                                                 {"vkoptim_version", kLibraryVersion},
                                                 {"param_groups", groups.dump()},
                                                 {"grad_control", control.dump()}};
  try {
    metadata["crc32"] = checksum(st::header_text(specs, metadata), c.data);
    c.header = st::header(st::header_text(specs, metadata));
  } catch (const json::exception& e) {
    throw Error(Status::invalid_argument, std::string("save: a tensor name is not valid UTF-8: ") + e.what());
  }
  return c;
}

}  // namespace

std::vector<uint8_t> checkpoint_file(const std::vector<st::TensorSpec>& specs, std::span<const uint8_t> data,
                                     std::map<std::string, std::string> metadata) {
  metadata.erase("crc32");
  metadata["crc32"] = checksum(st::header_text(specs, metadata), data);
  std::vector<uint8_t> file = st::header(st::header_text(specs, metadata));
  file.insert(file.end(), data.begin(), data.end());
  return file;
}

namespace {

[[noreturn]] void io_failure(const std::string& what, const std::string& path) {
  throw Error(Status::io_error, what + " " + path + ": " + std::strerror(errno));
}

void write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      io_failure("writing", path);
    }
    p += w;
    n -= size_t(w);
  }
}

// Writes `parts` to `path` atomically: a temporary file in the same folder, fsync, rename over
// `path`, fsync of the folder. A crash at any point leaves the old file or the new one, whole.
void write_atomically(const std::string& path, std::initializer_list<std::span<const uint8_t>> parts) {
  const std::filesystem::path target(path);
  const std::filesystem::path folder = target.has_parent_path() ? target.parent_path() : ".";
  std::string temp = (folder / ("." + target.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) io_failure("creating a temporary file in", folder.string());
  try {
    for (const auto& part : parts) write_all(fd, part.data(), part.size(), temp);
    if (::fsync(fd) != 0) io_failure("syncing", temp);
    if (::close(fd) != 0) io_failure("closing", temp);
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    errno = e;
    io_failure("renaming the checkpoint to", path);
  }
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir < 0) io_failure("opening the folder", folder.string());
  const int synced = ::fsync(dir);
  ::close(dir);
  if (synced != 0) io_failure("syncing the folder", folder.string());
}

std::vector<uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) io_failure("opening", path);
  struct stat st_buf;
  if (::fstat(fd, &st_buf) != 0) {
    ::close(fd);
    io_failure("reading", path);
  }
  std::vector<uint8_t> bytes(size_t(st_buf.st_size));
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + at, bytes.size() - at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      if (r == 0) errno = EIO;
      io_failure("reading", path);
    }
    at += size_t(r);
  }
  ::close(fd);
  return bytes;
}

// A state region's `count` values in the file, stored as `code`, as float32 (for conversions
// between storage types).
std::vector<float> file_values(const st::TensorView& v, const st::TensorView* absmax, uint32_t code, uint64_t count,
                               const std::vector<float>* rank1_maxima = nullptr, const TensorRecord* matrix = nullptr) {
  if (!is_quantized(code)) return decode(v.data.data(), count, code);
  if (rank1_maxima)
    return dequantize_rank1(v.data, count, OptimizerState::matrix_first(*matrix), OptimizerState::matrix_rows(*matrix),
                            OptimizerState::matrix_cols(*matrix), rank1_maxima->data());
  std::vector<float> scale(absmax->elements());
  std::memcpy(scale.data(), absmax->data.data(), scale.size() * 4);
  return dequantize(v.data, count, code, scale.data(), 1);
}

// Writes float32 values into a region in its storage type (quantized: codes and its absmax column).
// (A rank-1 normalised second moment: as the moment after `steps` steps.)
void write_region(OptimizerState& s, size_t t, const StateRegion& region, std::span<const float> values,
                  uint64_t steps) {
  const auto& arena = *s.arenas[region.arena];
  if (!is_quantized(region.code)) {
    const auto bytes = encode(values, region.code);
    s.ctx->write_buffer(arena.buffer, &arena, region.offset, bytes.data(), bytes.size());
    return;
  }
  if (const auto& rec = s.tensors[t]; s.rank1(rec) && region.code == kQ4Unsigned) {
    std::vector<float> maxima(OptimizerState::rank1_floats(rec));
    const auto codes = quantize_rank1(values, rec.tensor.rows, rec.tensor.param.count / rec.tensor.rows, maxima.data());
    s.ctx->write_buffer(arena.buffer, &arena, region.offset, codes.data(), codes.size());
    s.write_rank1(t, maxima, steps);
    return;
  }
  const auto& am = s.tensors[t].absmax;
  const auto& am_arena = *s.arenas[am.arena];
  std::vector<float> absmax(am.elements);
  s.ctx->read_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
  const auto codes =
      quantize(values, region.code, absmax.data() + s.quant_column(t, region), s.quant_slot_count(s.tensors[t]));
  s.ctx->write_buffer(arena.buffer, &arena, region.offset, codes.data(), codes.size());
  s.ctx->write_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
}

}  // namespace

// Loading: everything is checked before anything changes, so a refused checkpoint leaves the
// optimizer as it was.
void load_checkpoint(OptimizerState& s, std::span<const uint8_t> bytes, const LoadOptions& options) {
  const st::File f = st::parse(bytes);
  auto meta = [&](const char* key) -> const std::string& {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) refuse(std::string("__metadata__ lacks \"") + key + "\"");
    return it->second;
  };
  if (meta("format") != kFormat) refuse("__metadata__.format is \"" + meta("format") + "\", not " + kFormat);
  if (meta("format_version") != kFormatVersion)
    refuse("format_version " + meta("format_version") + " (this version reads " + kFormatVersion + ")");
  json unsigned_header = json::parse(f.header_text);
  unsigned_header["__metadata__"].erase("crc32");
  const std::string crc = checksum(unsigned_header.dump(), f.data);
  if (meta("crc32") != crc) refuse("the crc32 of header and data is " + crc + ", the header says " + meta("crc32"));
  const json groups = parse_metadata(meta("param_groups"), "param_groups");
  json control = parse_metadata(meta("grad_control"), "grad_control");
  if (!control.is_object()) refuse("grad_control is not a JSON object");
  if (!groups.is_array() || groups.size() != s.groups.size())
    refuse("the checkpoint has " + std::to_string(groups.is_array() ? groups.size() : 0) +
           " param_groups, the optimizer " + std::to_string(s.groups.size()));

  // Groups: the same rule and tensors; options, schedules and wrappers from the checkpoint.
  std::vector<RuleOptions> new_options(s.groups);
  std::vector<LrSchedule> new_schedules(s.schedules);
  std::vector<LookaheadOptions> new_lookahead(s.lookahead);
  std::vector<SamOptions> new_sam(s.sam);
  std::vector<EmaOptions> new_ema(s.ema);
  std::vector<PrecisionOptions> saved_precision(s.groups.size());
  if (sam_pending(s))
    throw Error(Status::invalid_state, "load: a SAM perturbation awaits its restore (load between steps)");
  std::map<std::string, size_t> tensor_of;
  const auto names = checkpoint_names(s);
  for (size_t t = 0; t < s.tensors.size(); ++t) tensor_of[names[t]] = t;
  for (size_t g = 0; g < s.groups.size(); ++g) {
    const std::string where = "param_groups[" + std::to_string(g) + "]";
    const json& jg = groups[g];
    if (!jg.is_object() || !jg.contains("rule") || !jg["rule"].is_string()) refuse(where + " lacks its rule");
    if (jg["rule"].get<std::string>() != s.rule->name())
      refuse(where + " is " + jg["rule"].get<std::string>() + ", the optimizer's group " + std::to_string(g) + " " +
             s.rule->name());
    for (const char* field : {"options", "schedule", "lookahead", "sam", "precision", "params"})
      if (!jg.contains(field)) refuse(where + " lacks \"" + field + "\"");
    std::visit(
        [&](auto& o) {
          json options = jg["options"];
          // (cautious came after the format: checkpoints without it took plain steps.)
          if constexpr (requires { o.cautious; })
            if (options.is_object() && !options.contains("cautious")) options["cautious"] = false;
          o = from_json_value<std::decay_t<decltype(o)>>(options, where + ".options");
        },
        new_options[g]);
    new_schedules[g] = from_json_value<LrSchedule>(jg["schedule"], where + ".schedule");
    new_lookahead[g] = from_json_value<LookaheadOptions>(jg["lookahead"], where + ".lookahead");
    new_sam[g] = from_json_value<SamOptions>(jg["sam"], where + ".sam");
    // (The EMA came after the format: checkpoints without it keep none.)
    new_ema[g] = jg.contains("ema") ? from_json_value<EmaOptions>(jg["ema"], where + ".ema") : EmaOptions{};
    // (kahan_summation came after the format: checkpoints without it keep no compensation.)
    json precision = jg["precision"];
    if (precision.is_object() && !precision.contains("kahan_summation")) precision["kahan_summation"] = false;
    // (So did rank1_second_moment: without it, second moments keep blocks.)
    if (precision.is_object() && !precision.contains("rank1_second_moment")) precision["rank1_second_moment"] = false;
    saved_precision[g] = from_json_value<PrecisionOptions>(precision, where + ".precision");
    s.rule->validate(new_options[g], g);
    validate_precision(*s.rule, new_options[g], s.precision[g], g, s.ctx->caps);
    validate_group_schedule(*s.rule, new_options[g], new_schedules[g], g);
    validate_wrappers(g, new_lookahead[g], new_sam[g], new_ema[g]);
    if (slot_map(*s.rule, new_options[g], new_lookahead[g], new_sam[g], new_ema[g]) != s.slots(uint32_t(g)))
      refuse(where + " keeps other state than the optimizer's group " + std::to_string(g) +
             " (momentum, amsgrad, Lookahead, SAM or the EMA differ)");
    require_same_passes(*s.rule, new_options[g], g, {{g, &s.groups[g]}});  // e.g. cautious differs
    const auto& mine = s.precision[g];
    const auto& theirs = saved_precision[g];
    const bool same_storage =
        mine.state == theirs.state && mine.master_weights == theirs.master_weights &&
        mine.kahan_summation == theirs.kahan_summation && mine.min_8bit_elements == theirs.min_8bit_elements &&
        mine.rank1_second_moment == theirs.rank1_second_moment && json(mine.slots) == json(theirs.slots);
    if (!same_storage && !options.convert_storage)
      refuse(where + " stores its state otherwise than the optimizer's group (precision " +
             to_json_value(theirs).dump() + " against " + to_json_value(mine).dump() +
             "); load with LoadOptions::convert_storage to convert it");
    std::set<std::string> listed;
    if (!jg["params"].is_array()) refuse(where + ".params is not an array");
    for (const auto& p : jg["params"]) {
      if (!p.is_string()) refuse(where + ".params holds " + p.dump());
      const auto it = tensor_of.find(p.get<std::string>());
      if (it == tensor_of.end() || s.tensors[it->second].group != g)
        refuse(where + " has the tensor \"" + p.get<std::string>() + "\", which the optimizer's group " +
               std::to_string(g) + " does not");
      listed.insert(p.get<std::string>());
    }
    for (size_t t = 0; t < s.tensors.size(); ++t)
      if (s.tensors[t].group == g && !listed.count(tensor_name(s, t)))
        refuse(where + " lacks the optimizer's tensor \"" + tensor_name(s, t) + "\"");
  }
  const GradClip clip = from_json_value<GradClip>(control.value("clip", json()), "grad_control.clip");
  const GradScalerOptions scaler =
      from_json_value<GradScalerOptions>(control.value("scaler", json()), "grad_control.scaler");
  validate_clip(clip, s.groups.size());
  if (scaler.enabled) validate_scaler(scaler);
  if (clip.max_norm > 0 || clip.clip_value > 0 || scaler.enabled) s.check_grad_control();
  // The scaler's running state, when the saved optimizer had a step buffer.
  std::optional<std::pair<float, uint32_t>> scaler_state;
  if (control.contains("scale") || control.contains("growth_tracker")) {
    decode_nonfinite(control);
    const json scale = control.value("scale", json()), tracker = control.value("growth_tracker", json());
    if (!scale.is_number() || !tracker.is_number_unsigned() || tracker.get<uint64_t>() > UINT32_MAX)
      refuse("grad_control's scale and growth_tracker are not a number and a count");
    scaler_state = {{scale.get<float>(), tracker.get<uint32_t>()}};
  }

  // Tensors: every key is a known state of a known tensor, of the expected type and shape (checked
  // against the regions each tensor keeps, planned without allocating anything).
  std::set<std::string> used;
  auto find = [&](const std::string& key) -> const st::TensorView* {
    const auto it = f.tensors.find(key);
    if (it == f.tensors.end()) return nullptr;
    used.insert(key);
    return &it->second;
  };
  auto check = [&](const std::string& key, const st::TensorView* v, st::DType dtype,
                   const std::vector<uint64_t>& shape) {
    if (v->dtype != dtype || v->shape != shape)
      refuse("\"" + key + "\" is " + st::dtype_name(v->dtype) + json(v->shape).dump() + ", expected " +
             st::dtype_name(dtype) + json(shape).dump());
  };
  struct Write {
    size_t tensor;
    std::string name;  // the state (its region, once allocated: region_named)
    const st::TensorView* values;
    const st::TensorView* absmax;  // quantized
    bool convert;
    uint32_t file_code;               // how the file stores it (precision.hpp)
    std::vector<float> rank1_maxima;  // a rank-1 normalised second moment's: rows, then columns
  };
  struct TensorLoad {
    bool present = false;
    uint64_t step = 0;
    Scalars scalars{};
  };
  std::vector<Write> writes;
  std::vector<size_t> fresh_compensations;  // tensors whose Kahan compensation starts at 0 (converting)
  std::vector<TensorLoad> loads(s.tensors.size());
  const auto scalar_names = s.rule->scalar_names();
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    TensorRecord rec = s.tensors[t];
    s.plan_regions(rec);
    const std::string step_key = state_key(s, t, "step");
    const st::TensorView* step = find(step_key);
    if (!step) continue;  // no state: the tensor starts afresh
    check(step_key, step, st::DType::F32, {});
    float step_value;
    std::memcpy(&step_value, step->data.data(), 4);
    // (float32, as torch keeps it: counts past 2^24 are saved rounded)
    if (!(step_value >= 0) || step_value != std::floor(step_value) || step_value > 4294967295.0f)
      refuse("\"" + step_key + "\" is " + std::to_string(step_value) + ", not a step count");
    loads[t] = {true, uint64_t(step_value), s.rule->initial_scalars(new_options[rec.group])};
    for (size_t k = 0; k < scalar_names.size(); ++k) {
      const std::string key = state_key(s, t, scalar_names[k]);
      const st::TensorView* v = find(key);
      if (!v) refuse("\"" + key + "\" is missing");
      check(key, v, st::DType::F64, {});
      std::memcpy(&loads[t].scalars[k], v->data.data(), 8);
    }
    const bool convert = options.convert_storage;
    for (const auto& [name, region] : regions_of(s, rec)) {
      const std::string key = state_key(s, t, name);
      const st::TensorView* v = find(key);
      const st::TensorView* absmax = find(key + ".absmax");
      if (!v) {
        // The master stays what the parameter gives; a compensation starts at 0.
        if (name == "master_param" && convert) continue;
        if (name == "kahan_comp" && convert) {
          fresh_compensations.push_back(t);
          continue;
        }
        refuse("\"" + key + "\" is missing");
      }
      // State is F32, BF16 or quantized codes (U8, with their absmax: ".absmax" per 256 elements
      // for 8-bit codes, ".absmax128" per 128 for 4-bit ones, packed), whatever the optimizer
      // keeps; an f16 parameter's Kahan compensation is F16.
      const st::TensorView* absmax128 = find(key + ".absmax128");
      const bool f16_file = v->dtype == st::DType::F16 && name == "kahan_comp";
      const bool codes_file = v->dtype == st::DType::U8;
      if (v->dtype != st::DType::F32 && v->dtype != st::DType::BF16 && !codes_file && !f16_file)
        refuse("\"" + key + "\" is " + st::dtype_name(v->dtype) + ": state is F32, BF16 or U8 codes");
      // (A rank-1 normalised second moment has its row and column maxima, ".rank1_rows" and
      // ".rank1_cols", instead of block absmax.)
      const st::TensorView* rank1_rows = find(key + ".rank1_rows");
      const st::TensorView* rank1_cols = find(key + ".rank1_cols");
      if ((rank1_rows != nullptr) != (rank1_cols != nullptr))
        refuse("\"" + key +
               (rank1_rows ? ".rank1_rows\" is there without \"" + key + ".rank1_cols\""
                           : ".rank1_cols\" is there without \"" + key + ".rank1_rows\""));
      const bool rank1 = rank1_rows != nullptr;
      if ((absmax || absmax128 || rank1) && !codes_file)
        refuse("\"" + key +
               (absmax      ? ".absmax"
                : absmax128 ? ".absmax128"
                            : ".rank1_rows") +
               "\" belongs to no quantized state");
      if (int(absmax != nullptr) + int(absmax128 != nullptr) + int(rank1) > 1)
        refuse("\"" + key +
               "\" has more than one of .absmax (8-bit), .absmax128 (4-bit) and .rank1_rows/_cols (4-bit rank-1)");
      if (codes_file && !absmax && !absmax128 && !rank1 && find(key + ".rank1"))
        refuse("\"" + key +
               ".rank1\" (the rank-1 maxima as one [rows + cols] key) is an earlier form this version does not "
               "read: the maxima are \"" +
               key + ".rank1_rows\" [rows] and \"" + key + ".rank1_cols\" [cols]");
      if (codes_file && !absmax && !absmax128 && !rank1)
        refuse("\"" + key + "\" holds codes, but its \"" + key + ".absmax\" (8-bit), \"" + key +
               ".absmax128\" (4-bit) or \"" + key + ".rank1_rows\"/\"" + key +
               ".rank1_cols\" (4-bit rank-1) is missing");
      // The map a quantized slot uses (signed or unsigned), in the file's bit width.
      const auto all_names = s.slot_names();
      const size_t slot = size_t(std::find(all_names.begin(), all_names.end(), name) - all_names.begin());
      const uint32_t map = slot < s.rule->slot_names().size() ? s.rule->q8_map(new_options[rec.group], slot) : 0;
      uint32_t file_code = v->dtype == st::DType::BF16 ? kBF16 : v->dtype == st::DType::F16 ? kF16 : kF32;
      if (codes_file) {
        if (!map) refuse("\"" + key + "\" is U8 codes, but " + name + " cannot be quantized");
        file_code = absmax128 || rank1 ? four_bit(map) : map;
        if (rank1 && (file_code != kQ4Unsigned || s.matrix_rows(rec) < 2))
          refuse("\"" + key + ".rank1_rows\": rank-1 maxima belong to the 4-bit second moment of a 2-D tensor");
      }
      const bool rank1_here = s.rank1(rec) && region->code == kQ4Unsigned;
      const bool same_scheme = file_code == region->code && rank1 == rank1_here;
      if (!same_scheme && rank1_here && s.split_rank1(rec))
        refuse("\"" + key +
               "\": this piece's rank-1 second moment is encoded against its whole tensor's maxima, "
               "which other ranks' pieces share; converting into it needs the whole tensor (convert an unsharded "
               "checkpoint, or load a resharded rank-1 one)");
      StateRegion as_filed = *region;
      as_filed.code = file_code;
      if (!convert) {
        auto scheme = [](uint32_t code, bool rank1_normalised) {
          return std::string(rank1_normalised ? "rank-1 normalised 4-bit" : is_q4(code) ? "4-bit" : "8-bit");
        };
        if (is_quantized(file_code) && is_quantized(region->code) && !same_scheme)
          refuse("\"" + key + "\" holds " + scheme(file_code, rank1) + " codes, the optimizer keeps " +
                 scheme(region->code, rank1_here) + " ones (load with convert_storage to convert)");
        check(key, v, file_dtype(region->code), file_shape(rec, *region));
      }
      check(key, v, v->dtype, file_shape(rec, as_filed));
      std::vector<float> rank1_maxima;
      if (rank1) {
        const uint64_t rows = s.matrix_rows(rec), cols = s.matrix_cols(rec);
        check(key + ".rank1_rows", rank1_rows, st::DType::F32, {rows});
        check(key + ".rank1_cols", rank1_cols, st::DType::F32, {cols});
        rank1_maxima.resize(rows + cols);
        std::memcpy(rank1_maxima.data(), rank1_rows->data.data(), rows * 4);
        std::memcpy(rank1_maxima.data() + rows, rank1_cols->data.data(), cols * 4);
        // (A maximum is one of the moment's values: a negative or non-finite one decodes to no
        // second moment.)
        if (!std::all_of(rank1_maxima.begin(), rank1_maxima.end(), [](float m) { return m >= 0 && std::isfinite(m); }))
          refuse("\"" + key + ".rank1_rows\"/\"" + key + ".rank1_cols\" hold a negative or non-finite maximum");
      } else if (codes_file) {
        const uint32_t block = quant_block(file_code);
        check(key + absmax_suffix(file_code), absmax ? absmax : absmax128, st::DType::F32,
              {(region->elements + block - 1) / block});
      }
      writes.push_back({t, name, v, absmax ? absmax : absmax128, !same_scheme, file_code, std::move(rank1_maxima)});
    }
  }
  for (const auto& entry : f.tensors) {
    const std::string& key = entry.first;
    // Converting drops masters and compensations the optimizer does not keep.
    auto ends_with = [&](const std::string& suffix) {
      return key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool dropped_master = options.convert_storage && (ends_with(".master_param") || ends_with(".kahan_comp"));
    if (!used.count(key) && !dropped_master) refuse("\"" + key + "\" is not state of this optimizer");
  }

  // Everything checked: apply. The state's regions (what a first step would allocate)...
  s.ensure_initialised();
  s.ctx->wait_idle();
  // ...options, schedules, wrappers, gradient control...
  for (size_t g = 0; g < s.groups.size(); ++g) {
    s.groups[g] = new_options[g];
    s.schedules[g] = new_schedules[g];
    s.lookahead[g] = new_lookahead[g];
    s.sam[g] = new_sam[g];
    s.ema[g] = new_ema[g];
    s.write_group_record(uint32_t(g));
  }
  s.clip = clip;
  s.scaler = scaler;
  s.write_control(true);
  if (s.step_buffer && scaler_state) {
    std::memcpy(control_words(s) + kControlScale, &scaler_state->first, 4);
    control_words(s)[kControlGrowthTracker] = scaler_state->second;
  }
  // ...then each tensor's state: loaded, or (no state in the checkpoint) its initial values.
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    if (loads[t].present) continue;
    for (const auto& [name, region] : regions_of(s, s.tensors[t])) {
      if (name == "master_param") continue;  // it already holds the parameter
      const std::vector<float> initial(region->elements, region->initial);
      write_region(s, t, *region, initial, 0);
    }
  }
  for (size_t t : fresh_compensations) {
    const StateRegion& region = region_named(s, t, "kahan_comp");
    write_region(s, t, region, std::vector<float>(region.elements, 0.0f), 0);
  }
  for (const auto& w : writes) {
    const StateRegion& region = region_named(s, w.tensor, w.name);
    if (!w.convert) {
      const auto& arena = *s.arenas[region.arena];
      s.ctx->write_buffer(arena.buffer, &arena, region.offset, w.values->data.data(), w.values->data.size());
      if (!w.rank1_maxima.empty()) {
        s.write_rank1(w.tensor, w.rank1_maxima, loads[w.tensor].step);
      } else if (is_quantized(region.code)) {
        const auto& am = s.tensors[w.tensor].absmax;
        const auto& am_arena = *s.arenas[am.arena];
        std::vector<float> absmax(am.elements);
        s.ctx->read_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
        const uint32_t columns = s.quant_slot_count(s.tensors[w.tensor]), column = s.quant_column(w.tensor, region);
        for (uint64_t b = 0; b < w.absmax->elements(); ++b)
          std::memcpy(&absmax[b * columns + column], w.absmax->data.data() + 4 * b, 4);
        s.ctx->write_buffer(am_arena.buffer, &am_arena, am.offset, absmax.data(), absmax.size() * 4);
      }
    } else {
      write_region(s, w.tensor, region,
                   file_values(*w.values, w.absmax, w.file_code, region.elements,
                               w.rank1_maxima.empty() ? nullptr : &w.rank1_maxima, &s.tensors[w.tensor]),
                   loads[w.tensor].step);
    }
  }
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    auto& rec = s.tensors[t];
    rec.step = loads[t].present ? loads[t].step : 0;
    rec.fresh = !loads[t].present;
    rec.scalars = loads[t].present ? loads[t].scalars : s.rule->initial_scalars(s.groups[rec.group]);
    if (s.device_steps) {
      uint32_t* words = s.step_words() + s.step_layout.tensor_records + t * kTensorRecordWords;
      words[0] = uint32_t(rec.step);
      words[1] = rec.fresh ? 1 : 0;
      s.set_device_carry(t, s.rule->device_carry(rec.scalars));
    }
  }
}

}  // namespace vkoptim::detail

namespace vkoptim {

std::vector<uint8_t> Optimizer::save_to_memory() {
  auto c = detail::build(*state_);
  c.header.insert(c.header.end(), c.data.begin(), c.data.end());
  return std::move(c.header);
}

void Optimizer::save(const std::string& path) {
  const auto c = detail::build(*state_);
  detail::write_atomically(path, {c.header, c.data});
}

void Optimizer::load_from_memory(std::span<const uint8_t> checkpoint, const LoadOptions& options) {
  detail::load_checkpoint(*state_, checkpoint, options);
}

void Optimizer::load(const std::string& path, const LoadOptions& options) {
  const auto bytes = detail::read_file(path);
  detail::load_checkpoint(*state_, bytes, options);
}

}  // namespace vkoptim
