// libFuzzer harness of the C API: each input is a sequence of vko_* calls with arguments chosen
// to hurt (sizes whose byte counts overflow, NULL pointers, objects of the other context, handles
// used after their destroy, wrong counts, bad enums and hyperparameters) between ordinary calls
// (tensors, optimizers of every rule, steps, state reads and writes).
//
// The contract checked, beyond "no crash, no sanitizer report":
//  * every status is a vko_status, a failure leaves a message in vko_last_error(), and no call
//    fails with VKO_INTERNAL_ERROR (an error path nobody validated);
//  * a destroyed handle, a NULL handle or a tensor of another context is refused with
//    VKO_INVALID_ARGUMENT; destroying a destroyed or NULL handle is a no-op;
//  * a tensor destroyed while an optimizer uses it stays alive until that optimizer goes, so steps
//    keep working: a step of a live optimizer succeeds;
//  * an element count whose byte count overflows is refused with VKO_INVALID_ARGUMENT, one larger
//    than the device can hold with VKO_INVALID_ARGUMENT or VKO_OUT_OF_MEMORY;
//  * the validation layer (on in both contexts) reports nothing.
//
// The two contexts are created once per process (device creation is slow); every other object is
// destroyed at the end of each input. Element counts passed as valid stay <= kMaxValid, so a
// valid call never allocates much; counts in the overflow range must be refused before anything
// is allocated.
//
// Input format (bytes read in order; reads past the end give 0), one operation after another:
//   op = byte % kOps, then the operation's arguments (see run_op): context selectors (byte % 4:
//   0, 2 first context, 1 second, 3 NULL), tensor and optimizer selectors (byte: 255 NULL, else
//   an index modulo the objects made so far, destroyed ones included), counts (a byte selector
//   then a 16-bit value: see pick_create_count and pick_count), and value patterns.
//   tests/fuzz/make_corpus.py writes seeds in this format.
//
// VKOPTIM_FUZZ_TRACE=1 prints every call's status and message (to read what an input does).
// VKOPTIM_FUZZ_SKIP=dead,foreign,orphan,enum (any subset) keeps destroyed handles, tensors of the
// other context, destroying tensors an optimizer uses, or values that are no vko_rule (and
// vko_dtype values outside the enumeration's range: undefined behaviour once C++ loads them) out
// of the inputs: to look past a known finding while it is being fixed.
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "c_enum_calls.h"

namespace {

constexpr size_t kMaxValid = size_t(1) << 16;  // largest element count passed as a valid one
constexpr int kMaxOps = 96;
constexpr size_t kMaxTensors = 24, kMaxOptimizers = 6;
constexpr int kMaxSteps = 12;  // steps per input: each one submits and waits
constexpr size_t kSizeMax = std::numeric_limits<size_t>::max();

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return uint16_t(u8() | (unsigned(u8()) << 8)); }
  uint32_t u32() { return uint32_t(u16()) | (uint32_t(u16()) << 16); }
  uint64_t u64() { return uint64_t(u32()) | (uint64_t(u32()) << 32); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A contract violation: aborts (a crash for libFuzzer), or with VKOPTIM_FUZZ_CONTINUE=1 prints
// each distinct one once and goes on (to survey every finding in one run).
void finding(const char* format, ...) {
  static const bool keep_going = std::getenv("VKOPTIM_FUZZ_CONTINUE") != nullptr;
  static std::set<std::string> seen;
  char message[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof message, format, args);
  va_end(args);
  // One report per call and status: the message without its explanation in parentheses.
  const std::string key(message, std::strcspn(message, "("));
  if (keep_going && !seen.insert(key).second) return;
  std::fprintf(stderr, "c_api_fuzz: contract violated: %s\n", message);
  if (!keep_going) std::abort();
}

struct Skip {
  bool dead = false, foreign = false, orphan = false, enums = false;
};
const Skip& skip() {
  static const Skip s = [] {
    Skip k;
    if (const char* e = std::getenv("VKOPTIM_FUZZ_SKIP")) {
      const std::string v = e;
      k.dead = v.find("dead") != std::string::npos;
      k.foreign = v.find("foreign") != std::string::npos;
      k.orphan = v.find("orphan") != std::string::npos;
      k.enums = v.find("enum") != std::string::npos;
    }
    return k;
  }();
  return s;
}

// Two contexts with the validation layer on: automatic addressing with mapped memory, and
// descriptors through staging buffers (the other upload/readback and addressing paths). They live
// until the process ends: destroying them at exit would unload the driver and the layer before
// LeakSanitizer names their frames (tests/lsan_suppressions.txt matches on those names).
vko_context* context(int i) {
  static vko_context* contexts[2] = {};
  if (!contexts[i]) {
    vko_context_desc d = vko_context_desc_defaults();
    d.enable_validation = 1;
    if (i == 1) d.force_staging = 1, d.addressing = 2;
    if (vko_context_create(&d, &contexts[i]) != VKO_OK) {
      std::fprintf(stderr, "c_api_fuzz: cannot create context %d: %s\n", i, vko_last_error());
      std::exit(1);
    }
  }
  return contexts[i];
}
uint64_t validation_messages() {
  return vko_context_validation_message_count(context(0)) + vko_context_validation_message_count(context(1));
}

size_t dtype_bytes(uint32_t dtype) {
  return dtype == 0 ? 4 : 2;
}

struct TensorRec {
  vko_tensor* handle;
  int ctx;
  size_t count;
  uint32_t dtype;
  bool dead = false;
};
struct OptRec {
  vko_optimizer* handle;
  int ctx;
  uint32_t rule;
  size_t groups;
  std::vector<size_t> params;  // TensorRec index of each tensor (in optimizer order)
  bool dead = false;
};

// Doubles that break hyperparameters, and ordinary ones.
constexpr double kInf = std::numeric_limits<double>::infinity();
const double kDoubles[] = {0.0,
                           -0.0,
                           1e-3,
                           0.1,
                           0.5,
                           0.9,
                           0.999,
                           1.0,
                           1.5,
                           2.0,
                           10.0,
                           -1.0,
                           -1e-3,
                           1e-8,
                           1e308,
                           5e-324,
                           kInf,
                           -kInf,
                           std::numeric_limits<double>::quiet_NaN(),
                           1e6};
const uint32_t kU32s[] = {0, 1, 2, 3, 4, 255, 0x7fffffffu, 0xffffffffu};
const uint64_t kU64s[] = {0, 1, 255, 256, 4096, uint64_t(1) << 32, ~uint64_t(0)};
const char* const kStateNames[] = {
    "exp_avg",    "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "step",       "sum",
    "square_avg", "grad_avg",   "acc_delta",      "exp_inf",         "ax",         "eta",
    "mu",         "mu_product", "prev",           "step_size",       "z",          "x",
    "lr_max",     "weight_sum", "row_var",        "col_var",         "variance",   "master_param",
    "kahan_comp", "ema",        "exp_avg_fast",   "exp_avg_slow",    "slow_param", "sam_e",
    "",           "bogus",      nullptr};
const vko_slot_dtype kSlotDtypes[] = {{"exp_avg", 2},         {"exp_avg_sq", 3}, {"momentum_buffer", 3},
                                      {"exp_avg", 3},         {"bogus", 2},      {nullptr, 0},
                                      {"max_exp_avg_sq", 3},  {"exp_avg", 7},    {"square_avg", 2},
                                      {"exp_avg_sq", 0xffff}, {"x", 2},          {"exp_avg_sq", 2}};
constexpr size_t kSlotDtypeCount = sizeof kSlotDtypes / sizeof kSlotDtypes[0];

const size_t kDoubleFields[] = {offsetof(vko_hyperparams, lr),
                                offsetof(vko_hyperparams, momentum),
                                offsetof(vko_hyperparams, dampening),
                                offsetof(vko_hyperparams, weight_decay),
                                offsetof(vko_hyperparams, beta1),
                                offsetof(vko_hyperparams, beta2),
                                offsetof(vko_hyperparams, eps),
                                offsetof(vko_hyperparams, alpha),
                                offsetof(vko_hyperparams, rho),
                                offsetof(vko_hyperparams, lr_decay),
                                offsetof(vko_hyperparams, initial_accumulator_value),
                                offsetof(vko_hyperparams, momentum_decay),
                                offsetof(vko_hyperparams, lambd),
                                offsetof(vko_hyperparams, t0),
                                offsetof(vko_hyperparams, etaminus),
                                offsetof(vko_hyperparams, etaplus),
                                offsetof(vko_hyperparams, step_size_min),
                                offsetof(vko_hyperparams, step_size_max),
                                offsetof(vko_hyperparams, r),
                                offsetof(vko_hyperparams, weight_lr_power),
                                offsetof(vko_hyperparams, min_trust_ratio),
                                offsetof(vko_hyperparams, max_trust_ratio),
                                offsetof(vko_hyperparams, beta2_decay),
                                offsetof(vko_hyperparams, eps2),
                                offsetof(vko_hyperparams, d),
                                offsetof(vko_hyperparams, eps_root),
                                offsetof(vko_hyperparams, lookahead_alpha),
                                offsetof(vko_hyperparams, sam_rho),
                                offsetof(vko_hyperparams, clip_exponent),
                                offsetof(vko_hyperparams, learning_rate_power),
                                offsetof(vko_hyperparams, l1),
                                offsetof(vko_hyperparams, l2),
                                offsetof(vko_hyperparams, l2_shrinkage),
                                offsetof(vko_hyperparams, beta),
                                offsetof(vko_hyperparams, beta3),
                                offsetof(vko_hyperparams, ema_decay),
                                offsetof(vko_hyperparams, ema_inv_gamma),
                                offsetof(vko_hyperparams, ema_power),
                                offsetof(vko_hyperparams, ema_min_decay)};
const size_t kU32Fields[] = {offsetof(vko_hyperparams, nesterov),
                             offsetof(vko_hyperparams, maximize),
                             offsetof(vko_hyperparams, amsgrad),
                             offsetof(vko_hyperparams, momentum_form),
                             offsetof(vko_hyperparams, warmup_steps),
                             offsetof(vko_hyperparams, decay_at_z),
                             offsetof(vko_hyperparams, centered),
                             offsetof(vko_hyperparams, eps_in_sqrt),
                             offsetof(vko_hyperparams, decoupled_weight_decay),
                             offsetof(vko_hyperparams, bias_correction),
                             offsetof(vko_hyperparams, state_dtype),
                             offsetof(vko_hyperparams, master_weights),
                             offsetof(vko_hyperparams, rounding),
                             offsetof(vko_hyperparams, amsgrad_max),
                             offsetof(vko_hyperparams, decay_order),
                             offsetof(vko_hyperparams, dampen_first_step),
                             offsetof(vko_hyperparams, lookahead_k),
                             offsetof(vko_hyperparams, use_nvlamb),
                             offsetof(vko_hyperparams, use_clipping),
                             offsetof(vko_hyperparams, beta3_warmup),
                             offsetof(vko_hyperparams, alpha_warmup),
                             offsetof(vko_hyperparams, kahan_summation),
                             offsetof(vko_hyperparams, ema_warmup),
                             offsetof(vko_hyperparams, ema_update_after_step),
                             offsetof(vko_hyperparams, cautious)};
const size_t kU64Fields[] = {offsetof(vko_hyperparams, seed), offsetof(vko_hyperparams, min_8bit_elements)};
const uint32_t kStructSizes[] = {0,
                                 4,
                                 offsetof(vko_hyperparams, alpha) - 8,
                                 offsetof(vko_hyperparams, alpha),
                                 offsetof(vko_hyperparams, state_dtype),
                                 offsetof(vko_hyperparams, slot_dtypes),
                                 sizeof(vko_hyperparams),
                                 sizeof(vko_hyperparams) + 64};

template <class T, size_t N>
T pick(const T (&table)[N], uint8_t b) {
  return table[b % N];
}

// The vko_rule values (0 .. kRules - 1): the last one plus one.
constexpr uint32_t kRules = VKO_RULE_MUON + 1;

// A rule value: mostly a rule, sometimes not one (in and far out of the enumeration's range).
uint32_t pick_rule(Input& in) {
  const uint8_t b = in.u8();
  if (b < 224 || skip().enums) return b % kRules;
  const uint32_t bad[] = {kRules, kRules + 1, 255, 0x7fffffffu, 0xffffffffu, 1000};
  return pick(bad, b);
}

// Hyperparameters: the defaults of a rule (usually the optimizer's), then a few fields changed.
vko_hyperparams make_hyper(Input& in, uint32_t rule) {
  const uint8_t head = in.u8();
  vko_hyperparams h = fuzz_hyperparams_defaults((head & 0x80) ? pick_rule(in) : rule);
  const int edits = (head & 0x7f) % 6;
  for (int e = 0; e < edits; ++e) {
    const uint8_t kind = in.u8(), field = in.u8(), value = in.u8();
    auto* base = reinterpret_cast<unsigned char*>(&h);
    switch (kind % 8) {
      case 0:
      case 1:
      case 2: {
        const double v = kind & 0x80 ? double(value) * 0.01 : pick(kDoubles, value);
        std::memcpy(base + pick(kDoubleFields, field), &v, sizeof v);
        break;
      }
      case 3:
      case 4: {
        const uint32_t v = pick(kU32s, value);
        std::memcpy(base + pick(kU32Fields, field), &v, sizeof v);
        break;
      }
      case 5: {
        const uint64_t v = pick(kU64s, value);
        std::memcpy(base + pick(kU64Fields, field), &v, sizeof v);
        break;
      }
      case 6:
        h.struct_size = pick(kStructSizes, value);
        break;
      case 7:
        if (value % 8 == 7) {
          h.slot_dtypes = nullptr;  // with a count: refused
          h.slot_dtype_count = 1 + field % 2;
        } else {
          const size_t first = field % kSlotDtypeCount;
          h.slot_dtypes = &kSlotDtypes[first];
          h.slot_dtype_count = std::min<size_t>(value % 3, kSlotDtypeCount - first);
        }
        break;
    }
  }
  return h;
}

// Floats for tensors and state: ordinary values, or ones that break arithmetic.
std::vector<float> make_values(Input& in, size_t count) {
  const uint8_t pattern = in.u8();
  std::vector<float> v(std::min(count, kMaxValid + 1));
  const float special[] = {0.0f,
                           -0.0f,
                           1.0f,
                           -1.0f,
                           0.5f,
                           3.0f,
                           16777216.0f,
                           16777217.0f,
                           1e30f,
                           -1e-40f,
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           65504.0f,
                           70000.0f,
                           1e-8f};
  uint32_t x = 0x9e3779b9u * (pattern + 1u);
  for (size_t i = 0; i < v.size(); ++i) {
    x = x * 1664525u + 1013904223u;
    switch (pattern % 4) {
      case 0:
        v[i] = float(int32_t(x >> 8) % 2001 - 1000) * 1e-3f;
        break;
      case 1:
        v[i] = special[pattern / 4 % (sizeof special / sizeof special[0])];
        break;
      case 2:
        v[i] = special[(x >> 16) % (sizeof special / sizeof special[0])];
        break;
      default:
        v[i] = float(i);
    }
  }
  return v;
}

// Counts that must be refused whatever the dtype: their byte count overflows 64 bits.
const size_t kOverflowCounts[] = {size_t(1) << 62,  size_t(1) << 63, kSizeMax,
                                  kSizeMax / 2 + 1, kSizeMax - 2,    (kSizeMax >> 2) + 1};
// Counts too large for any device (no overflow for 16-bit dtypes or any dtype).
const size_t kHugeCounts[] = {size_t(1) << 40, size_t(1) << 50, size_t(1) << 61, kSizeMax / 2, kSizeMax >> 2};

bool bytes_overflow(size_t count, uint32_t dtype) {
  // count * element size, rounded up to whole 32-bit words, must fit in 64 bits.
  const uint64_t bytes = dtype_bytes(dtype);
  return count > (std::numeric_limits<uint64_t>::max() - 3) / bytes;
}

// The element count of a new tensor: small valid ones mostly, 0, overflowing and huge ones.
size_t pick_create_count(Input& in) {
  const uint8_t sel = in.u8();
  const uint16_t v = in.u16();
  if (sel < 160) return 1 + v % 300;
  if (sel < 200) return 1 + v % kMaxValid;
  if (sel < 210) return 0;
  if (sel < 235) return pick(kOverflowCounts, v & 0xff);
  return pick(kHugeCounts, v & 0xff);
}

// A count for an existing object whose right count is `valid`: usually it, or off by one, 0,
// and counts in the overflow range.
size_t pick_count(Input& in, size_t valid) {
  const uint8_t sel = in.u8();
  if (sel < 176) return valid;
  if (sel < 192) return valid + 1;
  if (sel < 208) return valid - 1;
  if (sel < 216) return 0;
  return pick(kOverflowCounts, sel);
}

struct Checker {
  uint64_t messages_before = validation_messages();

  // Every status: a vko_status, a message on failure, never an internal error; `expected` (if
  // not -1) or `also` (if not -1) must match.
  void status(vko_status s, const char* call, int expected = -1, int also = -1) {
    static const bool trace = std::getenv("VKOPTIM_FUZZ_TRACE") != nullptr;
    if (trace) std::fprintf(stderr, "c_api_fuzz: %s -> %d %s\n", call, int(s), s == VKO_OK ? "" : vko_last_error());
    if (int(s) < VKO_OK || int(s) > VKO_INTERNAL_ERROR) finding("%s returned %d, not a vko_status", call, int(s));
    if (s != VKO_OK && vko_last_error()[0] == '\0') finding("%s failed with %d but vko_last_error() is empty", call, s);
    if (s == VKO_INTERNAL_ERROR) finding("%s: VKO_INTERNAL_ERROR: %s", call, vko_last_error());
    if (expected >= 0 && int(s) != expected && int(s) != also)
      finding("%s returned %d, expected %d (%s)", call, int(s), expected, s == VKO_OK ? "" : vko_last_error());
    const uint64_t m = validation_messages();
    if (m != messages_before)
      finding("%s: %llu validation message(s)", call, (unsigned long long)(m - messages_before));
  }
};

class Session {
 public:
  explicit Session(Input& in) : in_(in) {}

  void run() {
    for (int op = 0; op < kMaxOps && !in_.done(); ++op) run_op(in_.u8());
    // Optimizers first: they may hold the last reference to a destroyed tensor.
    for (auto& o : optimizers_)
      if (!o.dead) vko_optimizer_destroy(o.handle);
    for (auto& t : tensors_)
      if (!t.dead) vko_tensor_destroy(t.handle);
    check_.status(VKO_OK, "destroying the input's objects");
  }

 private:
  static constexpr int kOps = 20;

  int pick_ctx() {
    const uint8_t b = in_.u8() % 4;
    return b == 3 ? -1 : b == 1 ? 1 : 0;
  }
  static vko_context* ctx_handle(int c) { return c < 0 ? nullptr : context(c); }

  // A tensor record index, or -1 for NULL. Destroyed ones are kept out under skip().dead, tensors
  // of another context than `ctx` (if >= 0) under skip().foreign.
  long pick_tensor(int ctx = -1) {
    const uint8_t b = in_.u8();
    if (b == 255 || tensors_.empty()) return -1;
    for (size_t k = 0; k < tensors_.size(); ++k) {
      const size_t i = (b + k) % tensors_.size();
      if (skip().dead && tensors_[i].dead) continue;
      if (skip().foreign && ctx >= 0 && tensors_[i].ctx != ctx) continue;
      return long(i);
    }
    return -1;
  }
  vko_tensor* tensor_handle(long i) { return i < 0 ? nullptr : tensors_[size_t(i)].handle; }
  long pick_optimizer() {
    const uint8_t b = in_.u8();
    if (b == 255 || optimizers_.empty()) return -1;
    for (size_t k = 0; k < optimizers_.size(); ++k) {
      const size_t i = (b + k) % optimizers_.size();
      if (skip().dead && optimizers_[i].dead) continue;
      return long(i);
    }
    return -1;
  }
  // The status a call on this object must return when it is NULL or destroyed (-1: any).
  int expect_for_tensor(long i) { return i < 0 || tensors_[size_t(i)].dead ? VKO_INVALID_ARGUMENT : -1; }
  int expect_for_optimizer(long i) { return i < 0 || optimizers_[size_t(i)].dead ? VKO_INVALID_ARGUMENT : -1; }
  bool optimizer_uses(size_t tensor) const {
    for (const auto& o : optimizers_)
      if (!o.dead)
        for (size_t p : o.params)
          if (p == tensor) return true;
    return false;
  }

  void run_op(uint8_t op) {
    switch (op % kOps) {
      case 0:
      case 1:
        return tensor_create();
      case 2:
        return tensor_destroy();
      case 3:
        return tensor_write();
      case 4:
        return tensor_read();
      case 5:
        return tensor_set_rows();
      case 6:
        return tensor_count();
      case 7:
      case 8:
        return optimizer_create();
      case 9:
        return optimizer_destroy();
      case 10:
      case 11:
        return optimizer_step();
      case 12:
        return optimizer_set_lr();
      case 13:
        return optimizer_set_hyperparams();
      case 14:
        return optimizer_read_state();
      case 15:
        return optimizer_write_state();
      case 16:
        return optimizer_memory();
      case 17:
        return context_queries();
      case 18:
        return context_create_bad();
      default:
        return hyperparams_defaults();
    }
  }

  void tensor_create() {
    const int c = pick_ctx();
    const uint8_t db = in_.u8();
    // Not a dtype: 4 (just past vko_dtype's range 0..3), or far out of it (255, ...). U32 (3)
    // tensors hold indices, which the fuzzed calls do not take.
    const uint32_t dtype = db < 240 ? db % 3 : skip().enums ? 4u : pick(kU32s, db) | 4u;
    const size_t count = pick_create_count(in_);
    const bool with_data = in_.u8() & 1;
    const bool huge = count > kMaxValid;
    // A caller cannot own data for a huge count; an overflowing one must be refused before reading.
    std::vector<float> data = with_data && !huge ? make_values(in_, count) : std::vector<float>();
    vko_tensor* t = nullptr;
    const bool out_null = in_.u8() % 16 == 0;
    const vko_status s = fuzz_tensor_create_typed(ctx_handle(c), dtype, with_data && !huge ? data.data() : nullptr,
                                                  count, out_null ? nullptr : &t);
    int expected = -1;
    if (c < 0 || out_null || dtype > 2 || count == 0 || bytes_overflow(count, dtype)) expected = VKO_INVALID_ARGUMENT;
    check_.status(s, "vko_tensor_create_typed", expected);
    if (s == VKO_OK && huge) finding("vko_tensor_create_typed accepted %zu elements of dtype %u", count, dtype);
    if (s == VKO_OK) {
      if (!t) finding("vko_tensor_create_typed returned VKO_OK and no tensor");
      if (vko_tensor_count(t) != count) finding("vko_tensor_count = %zu, created with %zu", vko_tensor_count(t), count);
      if (tensors_.size() < kMaxTensors)
        tensors_.push_back({t, c, count, dtype});
      else
        vko_tensor_destroy(t);
    } else if (!out_null && t) {
      finding("vko_tensor_create_typed failed but set *out");
    }
  }

  void tensor_destroy() {
    const long i = pick_tensor();
    if (i < 0) return vko_tensor_destroy(nullptr);
    TensorRec& t = tensors_[size_t(i)];
    if (t.dead && skip().dead) return;
    if (!t.dead && skip().orphan && optimizer_uses(size_t(i))) return;
    vko_tensor_destroy(t.handle);  // a second destroy must be a no-op
    t.dead = true;
    check_.status(VKO_OK, "vko_tensor_destroy");
  }

  void tensor_write() {
    const long i = pick_tensor();
    const size_t valid = i < 0 ? 1 : tensors_[size_t(i)].count;
    const size_t count = pick_count(in_, valid);
    std::vector<float> values = make_values(in_, count);
    const bool null_data = in_.u8() % 16 == 0;
    const vko_status s = vko_tensor_write(tensor_handle(i), null_data ? nullptr : values.data(), count);
    int expected = expect_for_tensor(i);
    if (expected < 0 && (null_data || count != valid)) expected = VKO_INVALID_ARGUMENT;
    if (expected < 0) expected = VKO_OK;
    check_.status(s, "vko_tensor_write", expected);
    // f32 tensors give back exactly what was written.
    const bool read_back = in_.u8() % 2;
    if (s == VKO_OK && tensors_[size_t(i)].dtype == 0 && read_back) {
      std::vector<float> back(count);
      check_.status(vko_tensor_read(tensor_handle(i), back.data(), count), "vko_tensor_read", VKO_OK);
      if (std::memcmp(back.data(), values.data(), count * sizeof(float)) != 0)
        finding("vko_tensor_read differs from what vko_tensor_write wrote");
    }
  }

  void tensor_read() {
    const long i = pick_tensor();
    const size_t valid = i < 0 ? 1 : tensors_[size_t(i)].count;
    const size_t count = pick_count(in_, valid);
    std::vector<float> out(std::min(count, kMaxValid + 1));
    const bool null_out = in_.u8() % 16 == 0;
    const vko_status s = vko_tensor_read(tensor_handle(i), null_out ? nullptr : out.data(), count);
    int expected = expect_for_tensor(i);
    if (expected < 0) expected = null_out || count != valid ? VKO_INVALID_ARGUMENT : VKO_OK;
    check_.status(s, "vko_tensor_read", expected);
  }

  void tensor_set_rows() {
    const long i = pick_tensor();
    const size_t n = i < 0 ? 1 : tensors_[size_t(i)].count;
    const uint8_t sel = in_.u8();
    const uint16_t v = in_.u16();
    const uint64_t choices[] = {0, 1, 2, 3, n, n + 1, uint64_t(1) << 63, ~uint64_t(0), uint64_t(v % 64 + 1)};
    const uint64_t rows = pick(choices, sel);
    const vko_status s = vko_tensor_set_rows(tensor_handle(i), rows);
    int expected = expect_for_tensor(i);
    if (expected < 0) expected = rows == 0 || n % rows == 0 ? VKO_OK : VKO_INVALID_ARGUMENT;
    check_.status(s, "vko_tensor_set_rows", expected);
  }

  void tensor_count() {
    const long i = pick_tensor();
    const size_t n = vko_tensor_count(tensor_handle(i));
    const size_t expected = i < 0 || tensors_[size_t(i)].dead ? 0 : tensors_[size_t(i)].count;
    if (n != expected) finding("vko_tensor_count = %zu, expected %zu", n, expected);
    check_.status(VKO_OK, "vko_tensor_count");
  }

  void optimizer_create() {
    const int c = pick_ctx();
    const uint32_t rule = pick_rule(in_);
    const uint8_t shape = in_.u8();
    const size_t group_count = shape % 4;
    const bool groups_null = shape % 32 == 31;
    std::vector<vko_param_group> groups(group_count);
    std::vector<std::vector<vko_tensor*>> params(group_count), grads(group_count);
    bool refuse = c < 0 || rule >= kRules || (groups_null && group_count > 0);
    std::vector<size_t> used;
    for (size_t g = 0; g < group_count; ++g) {
      groups[g].hyper = make_hyper(in_, rule);
      const uint8_t gb = in_.u8();
      const size_t n = gb % 4;
      for (size_t k = 0; k < n; ++k) {
        const long p = pick_tensor(c), q = pick_tensor(c);
        for (long x : {p, q})
          if (x < 0 || tensors_[size_t(x)].dead || tensors_[size_t(x)].ctx != c) refuse = true;
        params[g].push_back(tensor_handle(p));
        grads[g].push_back(tensor_handle(q));
        if (p >= 0) used.push_back(size_t(p));
      }
      groups[g].params = gb & 0x40 && n > 0 ? nullptr : params[g].data();
      groups[g].grads = gb & 0x80 && n > 0 ? nullptr : grads[g].data();
      if (n > 0 && (!groups[g].params || !groups[g].grads)) refuse = true;
      groups[g].count = n;
    }
    if (optimizers_.size() >= kMaxOptimizers) return;
    vko_optimizer* o = nullptr;
    const vko_status s =
        fuzz_optimizer_create(ctx_handle(c), rule, groups_null ? nullptr : groups.data(), group_count, &o);
    char call[96];
    std::snprintf(call, sizeof call, "vko_optimizer_create (rule %u, %zu groups)", rule, group_count);
    check_.status(s, rule >= kRules ? call : "vko_optimizer_create", refuse ? VKO_INVALID_ARGUMENT : -1);
    if (s == VKO_OK) {
      if (!o) finding("vko_optimizer_create returned VKO_OK and no optimizer");
      optimizers_.push_back({o, c, rule, group_count, used});
    } else if (o) {
      finding("vko_optimizer_create failed but set *out");
    }
  }

  void optimizer_destroy() {
    const long i = pick_optimizer();
    if (i < 0) return vko_optimizer_destroy(nullptr);
    OptRec& o = optimizers_[size_t(i)];
    if (o.dead && skip().dead) return;
    vko_optimizer_destroy(o.handle);
    o.dead = true;
    check_.status(VKO_OK, "vko_optimizer_destroy");
  }

  void optimizer_step() {
    const long i = pick_optimizer();
    const int n = 1 + in_.u8() % 3;
    for (int k = 0; k < n && steps_ < kMaxSteps; ++k, ++steps_) {
      const vko_status s = vko_optimizer_step(i < 0 ? nullptr : optimizers_[size_t(i)].handle);
      int expected = expect_for_optimizer(i);
      // A live optimizer with tensors steps, even when some of its tensors were destroyed.
      if (expected < 0 && !optimizers_[size_t(i)].params.empty()) expected = VKO_OK;
      check_.status(s, "vko_optimizer_step", expected);
    }
  }

  size_t pick_group(const OptRec* o) {
    const uint8_t b = in_.u8();
    const size_t groups = o ? o->groups : 1;
    if (b < 200) return groups ? b % groups : 0;
    const size_t bad[] = {groups, groups + 1, kSizeMax, size_t(1) << 63};
    return pick(bad, b);
  }

  void optimizer_set_lr() {
    const long i = pick_optimizer();
    const OptRec* o = i < 0 ? nullptr : &optimizers_[size_t(i)];
    const size_t group = pick_group(o);
    const double lr = pick(kDoubles, in_.u8());
    const vko_status s = vko_optimizer_set_lr(o ? o->handle : nullptr, group, lr);
    int expected = expect_for_optimizer(i);
    if (expected < 0 && group >= o->groups) expected = VKO_INVALID_ARGUMENT;
    check_.status(s, "vko_optimizer_set_lr", expected, i >= 0 && !o->dead ? VKO_NOT_FOUND : -1);
  }

  void optimizer_set_hyperparams() {
    const long i = pick_optimizer();
    const OptRec* o = i < 0 ? nullptr : &optimizers_[size_t(i)];
    const size_t group = pick_group(o);
    const vko_hyperparams h = make_hyper(in_, o ? o->rule : 0);
    const bool null_hyper = in_.u8() % 16 == 0;
    const vko_status s = vko_optimizer_set_hyperparams(o ? o->handle : nullptr, group, null_hyper ? nullptr : &h);
    int expected = expect_for_optimizer(i);
    if (expected < 0 && (null_hyper || group >= o->groups)) expected = VKO_INVALID_ARGUMENT;
    check_.status(s, "vko_optimizer_set_hyperparams", expected, i >= 0 && !o->dead && !null_hyper ? VKO_NOT_FOUND : -1);
  }

  // The tensor index of a state call and the element count of its parameter (1 if none).
  std::pair<size_t, size_t> pick_state_tensor(const OptRec* o) {
    const uint8_t b = in_.u8();
    const size_t n = o ? o->params.size() : 0;
    if (b < 220 && n > 0) {
      const size_t t = b % n;
      return {t, tensors_[o->params[t]].count};
    }
    const size_t bad[] = {n, n + 1, kSizeMax, size_t(1) << 63};
    return {pick(bad, b), 1};
  }
  static bool scalar_name(const char* name) {
    if (!name) return false;
    for (const char* s : {"step", "eta", "mu", "mu_product", "lr_max", "weight_sum"})
      if (std::strcmp(name, s) == 0) return true;
    return false;
  }

  void optimizer_read_state() {
    const long i = pick_optimizer();
    const OptRec* o = i < 0 ? nullptr : &optimizers_[size_t(i)];
    const auto [tensor, elements] = pick_state_tensor(o);
    const char* name = pick(kStateNames, in_.u8());
    const size_t count = pick_count(in_, scalar_name(name) ? 1 : elements);
    std::vector<float> out(std::min(count, kMaxValid + 1));
    const bool null_out = in_.u8() % 16 == 0;
    const vko_status s =
        vko_optimizer_read_state(o ? o->handle : nullptr, tensor, name, null_out ? nullptr : out.data(), count);
    int expected = expect_for_optimizer(i);
    if (expected < 0 && (null_out || !name || tensor >= o->params.size())) expected = VKO_INVALID_ARGUMENT;
    // An index out of range: VKO_NOT_FOUND is as good.
    const bool index_only = expected >= 0 && i >= 0 && !o->dead && !null_out && name;
    check_.status(s, "vko_optimizer_read_state", expected, index_only ? VKO_NOT_FOUND : -1);
  }

  void optimizer_write_state() {
    const long i = pick_optimizer();
    const OptRec* o = i < 0 ? nullptr : &optimizers_[size_t(i)];
    const auto [tensor, elements] = pick_state_tensor(o);
    const char* name = pick(kStateNames, in_.u8());
    const size_t count = pick_count(in_, scalar_name(name) ? 1 : elements);
    std::vector<float> values = make_values(in_, count);
    const bool null_values = in_.u8() % 16 == 0;
    const vko_status s =
        vko_optimizer_write_state(o ? o->handle : nullptr, tensor, name, null_values ? nullptr : values.data(), count);
    int expected = expect_for_optimizer(i);
    if (expected < 0 && (null_values || !name || tensor >= o->params.size())) expected = VKO_INVALID_ARGUMENT;
    const bool index_only = expected >= 0 && i >= 0 && !o->dead && !null_values && name;
    check_.status(s, "vko_optimizer_write_state", expected, index_only ? VKO_NOT_FOUND : -1);
  }

  void optimizer_memory() {
    const long i = pick_optimizer();
    const uint8_t b = in_.u8();
    uint64_t bytes = 0;
    double per_element = 0;
    const vko_status s = vko_optimizer_memory(i < 0 ? nullptr : optimizers_[size_t(i)].handle, b & 1 ? nullptr : &bytes,
                                              b & 2 ? nullptr : &per_element);
    check_.status(s, "vko_optimizer_memory", expect_for_optimizer(i) < 0 ? VKO_OK : VKO_INVALID_ARGUMENT);
  }

  void context_queries() {
    const int c = pick_ctx();
    const uint8_t b = in_.u8();
    char name[64];
    const size_t capacities[] = {0, 1, 5, sizeof name};
    const size_t capacity = pick(capacities, b);
    const bool null_name = b & 0x10;
    const vko_status s = vko_context_device_name(ctx_handle(c), null_name ? nullptr : name, capacity);
    check_.status(s, "vko_context_device_name", c < 0 || null_name || capacity == 0 ? VKO_INVALID_ARGUMENT : VKO_OK);
    if (s == VKO_OK && std::strlen(name) >= capacity) finding("vko_context_device_name overran its capacity");
    if (vko_context_validation_message_count(nullptr) != 0) finding("validation message count of NULL is not 0");
    vko_context_destroy(nullptr);
    vko_tensor_destroy(nullptr);
    vko_optimizer_destroy(nullptr);
    check_.status(VKO_OK, "destroying NULL handles");
  }

  // vko_context_create with arguments it must refuse (a context that works would be slow here).
  void context_create_bad() {
    const uint8_t b = in_.u8();
    vko_context_desc d = vko_context_desc_defaults();
    vko_context* c = nullptr;
    vko_context** out = &c;
    switch (b % 5) {
      case 0:
        out = nullptr;
        break;
      case 1:
        d.struct_size = 0;
        break;
      case 2:
        d.struct_size = sizeof d - 4;
        break;
      case 3:
        d.device_index = 1000 + (b >> 3);
        break;
      default:
        d.addressing = 3 + (b >> 3);
        break;
    }
    const vko_status s = vko_context_create(&d, out);
    check_.status(s, b % 5 == 4 ? "vko_context_create (addressing)" : "vko_context_create",
                  b % 5 == 3 ? -1 : VKO_INVALID_ARGUMENT);
    if (s == VKO_OK) {
      finding("vko_context_create accepted a bad descriptor (case %d)", b % 5);
      vko_context_destroy(c);
    }
  }

  void hyperparams_defaults() {
    const uint32_t rule = pick_rule(in_);
    const vko_hyperparams h = fuzz_hyperparams_defaults(rule);
    if (h.struct_size != sizeof h) finding("vko_hyperparams_defaults(%u).struct_size = %u", rule, h.struct_size);
  }

  Input& in_;
  Checker check_;
  std::vector<TensorRec> tensors_;
  std::vector<OptRec> optimizers_;
  int steps_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Session(in).run();
  return 0;
}
