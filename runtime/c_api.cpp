// The C API: thin wrappers that turn exceptions into status codes and a per-thread message.
#include "vkoptim/vkoptim.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "optimizer_state.hpp"
#include "vkoptim/vkoptim.hpp"

struct vko_context {
  std::shared_ptr<std::atomic<uint64_t>> validation_messages = std::make_shared<std::atomic<uint64_t>>(0);
  vkoptim::Context context;
};
struct vko_tensor {
  // Shared with every optimizer that steps it: vko_tensor_destroy drops the handle's reference,
  // the buffer lives until the last optimizer using it is destroyed too. Null for a tensor on the
  // host's buffer (`borrowed`).
  std::shared_ptr<vkoptim::Tensor> tensor;
  const vko_context* context = nullptr;  // the creating context (compared, never dereferenced)
  uint64_t rows = 0;                     // 2-D shape for rules that factor (vko_tensor_set_rows)
  std::string name;                      // checkpoints' key (vko_tensor_set_name)
  vkoptim::BufferRange borrowed{};
  vkoptim::BufferRange range() const { return tensor ? tensor->range() : borrowed; }
  size_t count() const { return tensor ? tensor->count() : borrowed.count; }
  // The tensor vkoptim owns, for host reads and writes.
  vkoptim::Tensor& owned(const char* call) const {
    if (!tensor)
      throw vkoptim::Error(vkoptim::Status::invalid_state,
                           std::string(call) + ": the tensor is on the host's buffer (the host reads and writes it)");
    return *tensor;
  }
};
struct vko_optimizer {
  std::vector<std::shared_ptr<vkoptim::Tensor>> tensors;  // declared first: outlive `optimizer`
  vkoptim::Optimizer optimizer;
  vko_rule rule;  // as created: AdamW and Adam share the C++ options type
};
struct vko_shard_layout {
  vkoptim::ShardLayout layout;  // validated
};
struct vko_sparse_optimizer {
  std::vector<std::shared_ptr<vkoptim::Tensor>> tensors;  // declared first: outlive `optimizer`
  vkoptim::SparseOptimizer optimizer;
  vko_rule rule;
};

namespace {

std::string& last_error() {
  thread_local std::string message;  // the C API's documented per-thread error slot
  return message;
}

template <typename F>
vko_status guarded(F&& body) {
  try {
    body();
    last_error().clear();
    return VKO_OK;
  } catch (const vkoptim::Error& e) {
    last_error() = e.what();
    return vko_status(int(e.status()));
  } catch (const std::bad_alloc&) {
    last_error() = "out of host memory";
    return VKO_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return VKO_INTERNAL_ERROR;
  } catch (...) {
    last_error() = "unknown error";
    return VKO_INTERNAL_ERROR;
  }
}

// The integer a C caller passed as an enum. C allows any int there; C++ only the range of the
// enumerators (a load of another value is undefined behaviour), so the bits are read as an
// integer and checked before the value is used as the enum.
template <class E>
int32_t enum_bits(const E& value) {
  static_assert(sizeof(E) == sizeof(int32_t));
  int32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// The registry entry of a vko_rule value, or null.
const vkoptim::RuleInfo* registered_rule(int32_t r) {
  for (const auto& info : vkoptim::registered_rules())
    if (info.c_rule == r) return &info;
  return nullptr;
}

bool is_rule(int32_t r) {
  return registered_rule(r) != nullptr;
}

void require(bool ok, const char* message) {
  if (!ok) throw vkoptim::Error(vkoptim::Status::invalid_argument, message);
}
void require(bool ok, const std::string& message) {
  require(ok, message.c_str());
}

// The handles that are alive, with their kind. Every entry point looks its handles up here, so a
// destroyed (or never created) handle, or a handle of the wrong kind (untyped in ctypes), is
// refused with VKO_INVALID_ARGUMENT instead of being dereferenced. A handle whose address was
// reused by a later object of the same kind refers to that object: the caller's error, but never
// freed memory. It is the C API's one process-wide table; a mutex guards it because handles
// cross threads.
enum class Kind { context, tensor, optimizer, sparse_optimizer, shard_layout };
template <class T>
constexpr Kind kind_of() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, vko_context>) return Kind::context;
  if constexpr (std::is_same_v<U, vko_tensor>) return Kind::tensor;
  if constexpr (std::is_same_v<U, vko_sparse_optimizer>) return Kind::sparse_optimizer;
  if constexpr (std::is_same_v<U, vko_shard_layout>) return Kind::shard_layout;
  return Kind::optimizer;
}

class LiveHandles {
 public:
  void add(const void* handle, Kind kind) {
    std::lock_guard lock(mutex_);
    live_[handle] = kind;
  }
  // False when `handle` was not a live handle of `kind`.
  bool remove(const void* handle, Kind kind) {
    std::lock_guard lock(mutex_);
    const auto it = live_.find(handle);
    if (it == live_.end() || it->second != kind) return false;
    live_.erase(it);
    return true;
  }
  bool alive(const void* handle, Kind kind) const {
    std::lock_guard lock(mutex_);
    const auto it = live_.find(handle);
    return it != live_.end() && it->second == kind;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<const void*, Kind> live_;
};

LiveHandles& live_handles() {
  // Never destroyed: handles may still be destroyed from atexit handlers or static destructors.
  static LiveHandles* handles = new LiveHandles;
  return *handles;
}

template <class T>
bool is_live(T* handle) {
  return handle && live_handles().alive(handle, kind_of<T>());
}

// `handle` checked to be non-NULL and a live handle of its kind; `what` names the argument.
template <class T>
T& live(T* handle, const char* what) {
  if (!handle) throw vkoptim::Error(vkoptim::Status::invalid_argument, std::string(what) + " is NULL");
  if (!is_live(handle))
    throw vkoptim::Error(vkoptim::Status::invalid_argument,
                         std::string(what) +
                             " is not a live handle of its kind (destroyed, never created, or "
                             "another kind of object)");
  return *handle;
}

template <class T>
T* publish(std::unique_ptr<T> object) {
  live_handles().add(object.get(), kind_of<T>());
  return object.release();
}

template <class T>
void destroy(T* handle) {
  if (handle && live_handles().remove(handle, kind_of<T>())) delete handle;
}

// The group's storage policy from the C struct (validated by the optimizer).
vkoptim::PrecisionOptions to_precision(const vko_hyperparams& h) {
  vkoptim::PrecisionOptions p;
  p.state = vkoptim::StateDType(h.state_dtype);
  p.master_weights = h.master_weights != 0;
  require(h.kahan_summation <= 1,
          "vko_hyperparams.kahan_summation = " + std::to_string(h.kahan_summation) + " is not 0 or 1");
  p.kahan_summation = h.kahan_summation != 0;
  require(h.rank1_second_moment <= 1,
          "vko_hyperparams.rank1_second_moment = " + std::to_string(h.rank1_second_moment) + " is not 0 or 1");
  p.rank1_second_moment = h.rank1_second_moment != 0;
  p.rounding = vkoptim::Rounding(h.rounding);
  p.seed = h.seed;
  p.min_8bit_elements = h.min_8bit_elements;
  require(h.slot_dtype_count == 0 || h.slot_dtypes, "vko_hyperparams.slot_dtypes is NULL");
  for (size_t i = 0; i < h.slot_dtype_count; ++i) {
    require(h.slot_dtypes[i].name != nullptr, "vko_hyperparams.slot_dtypes[].name is NULL");
    p.slots.push_back({h.slot_dtypes[i].name, vkoptim::StateDType(h.slot_dtypes[i].dtype)});
  }
  return p;
}

// Every field of vko_hyperparams a rule may read, by name (struct_size and the storage policy's,
// which every rule reads through to_precision, aside).
using HyperField = std::variant<double vko_hyperparams::*, uint32_t vko_hyperparams::*>;
#define VKO_FIELD(name) std::pair<const char*, HyperField>(#name, &vko_hyperparams::name)
const std::pair<const char*, HyperField> kRuleFields[] = {VKO_FIELD(lr),
                                                          VKO_FIELD(momentum),
                                                          VKO_FIELD(dampening),
                                                          VKO_FIELD(weight_decay),
                                                          VKO_FIELD(beta1),
                                                          VKO_FIELD(beta2),
                                                          VKO_FIELD(eps),
                                                          VKO_FIELD(nesterov),
                                                          VKO_FIELD(maximize),
                                                          VKO_FIELD(amsgrad),
                                                          VKO_FIELD(momentum_form),
                                                          VKO_FIELD(alpha),
                                                          VKO_FIELD(rho),
                                                          VKO_FIELD(lr_decay),
                                                          VKO_FIELD(initial_accumulator_value),
                                                          VKO_FIELD(momentum_decay),
                                                          VKO_FIELD(lambd),
                                                          VKO_FIELD(t0),
                                                          VKO_FIELD(etaminus),
                                                          VKO_FIELD(etaplus),
                                                          VKO_FIELD(step_size_min),
                                                          VKO_FIELD(step_size_max),
                                                          VKO_FIELD(r),
                                                          VKO_FIELD(weight_lr_power),
                                                          VKO_FIELD(min_trust_ratio),
                                                          VKO_FIELD(max_trust_ratio),
                                                          VKO_FIELD(warmup_steps),
                                                          VKO_FIELD(decay_at_z),
                                                          VKO_FIELD(centered),
                                                          VKO_FIELD(eps_in_sqrt),
                                                          VKO_FIELD(decoupled_weight_decay),
                                                          VKO_FIELD(bias_correction),
                                                          VKO_FIELD(beta2_decay),
                                                          VKO_FIELD(eps2),
                                                          VKO_FIELD(d),
                                                          VKO_FIELD(eps_root),
                                                          VKO_FIELD(amsgrad_max),
                                                          VKO_FIELD(decay_order),
                                                          VKO_FIELD(dampen_first_step),
                                                          VKO_FIELD(use_nvlamb),
                                                          VKO_FIELD(use_clipping),
                                                          VKO_FIELD(clip_exponent),
                                                          VKO_FIELD(learning_rate_power),
                                                          VKO_FIELD(l1),
                                                          VKO_FIELD(l2),
                                                          VKO_FIELD(l2_shrinkage),
                                                          VKO_FIELD(beta),
                                                          VKO_FIELD(beta3),
                                                          VKO_FIELD(beta3_warmup),
                                                          VKO_FIELD(alpha_warmup),
                                                          VKO_FIELD(cautious),
                                                          VKO_FIELD(ns_a),
                                                          VKO_FIELD(ns_b),
                                                          VKO_FIELD(ns_c),
                                                          VKO_FIELD(ns_steps),
                                                          VKO_FIELD(adjust_lr),
                                                          VKO_FIELD(ns_bf16),
                                                          VKO_FIELD(use_muon),
                                                          VKO_FIELD(adam_eps)};
#undef VKO_FIELD

// Reads a rule's fields of the C struct, remembering which.
struct HyperReader {
  const vko_hyperparams& h;
  std::vector<HyperField> used;
  template <class T>
  T operator()(T vko_hyperparams::*field) {
    used.emplace_back(field);
    return h.*field;
  }
  bool flag(uint32_t vko_hyperparams::*field, const char* name) {
    const uint32_t v = (*this)(field);
    require(v <= 1, std::string("vko_hyperparams.") + name + " = " + std::to_string(v) + " is not 0 or 1");
    return v != 0;
  }
};

// Every rule field `used` does not list must keep vko_hyperparams_defaults(rule)'s value: otherwise
// it is refused, naming it and `rule_name`.
void refuse_unused(vko_rule rule, const vko_hyperparams& h, const std::vector<HyperField>& used,
                   const std::string& rule_name) {
  const vko_hyperparams defaults = vko_hyperparams_defaults(rule);
  for (const auto& [name, field] : kRuleFields) {
    if (std::find(used.begin(), used.end(), field) != used.end()) continue;
    const bool untouched = std::visit(
        [&](auto member) { return std::memcmp(&(h.*member), &(defaults.*member), sizeof(h.*member)) == 0; }, field);
    if (!untouched)
      throw vkoptim::Error(vkoptim::Status::invalid_argument,
                           std::string("vko_hyperparams.") + name + " is not used by " + rule_name +
                               " and must keep vko_hyperparams_defaults' value (it is not ignored silently)");
  }
}

// The C++ options of `rule` from the C struct, every field mapped by name. A field the rule does
// not read must keep vko_hyperparams_defaults(rule)'s value: otherwise it is refused, naming it.
vkoptim::RuleOptions to_options(vko_rule rule, const vko_hyperparams& h) {
  using namespace vkoptim;
  using H = vko_hyperparams;
  HyperReader f{h, {}};
  auto read = [&]() -> RuleOptions {
    switch (rule) {
      case VKO_RULE_SGD: {
        SgdOptions o;
        o.lr = f(&H::lr), o.momentum = f(&H::momentum), o.dampening = f(&H::dampening);
        o.weight_decay = f(&H::weight_decay), o.nesterov = f.flag(&H::nesterov, "nesterov");
        o.maximize = f.flag(&H::maximize, "maximize"), o.momentum_form = MomentumForm(f(&H::momentum_form));
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        o.dampen_first_step = f.flag(&H::dampen_first_step, "dampen_first_step");
        o.cautious = f.flag(&H::cautious, "cautious");
        return o;
      }
      case VKO_RULE_ADAM:
      case VKO_RULE_ADAMW: {
        AdamOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.amsgrad = f.flag(&H::amsgrad, "amsgrad");
        o.maximize = f.flag(&H::maximize, "maximize");
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        require(rule != VKO_RULE_ADAMW || o.decoupled_weight_decay,
                "vko_hyperparams.decoupled_weight_decay = 0 with VKO_RULE_ADAMW (AdamW decouples; use VKO_RULE_ADAM)");
        o.bias_correction = f.flag(&H::bias_correction, "bias_correction"), o.eps_root = f(&H::eps_root);
        o.amsgrad_max = AmsgradMax(f(&H::amsgrad_max)), o.decay_order = DecayOrder(f(&H::decay_order));
        o.cautious = f.flag(&H::cautious, "cautious");
        return o;
      }
      case VKO_RULE_ADAGRAD: {
        AdagradOptions o;
        o.lr = f(&H::lr), o.lr_decay = f(&H::lr_decay), o.weight_decay = f(&H::weight_decay);
        o.initial_accumulator_value = f(&H::initial_accumulator_value), o.eps = f(&H::eps);
        o.maximize = f.flag(&H::maximize, "maximize");
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        return o;
      }
      case VKO_RULE_RMSPROP: {
        RmspropOptions o;
        o.lr = f(&H::lr), o.alpha = f(&H::alpha), o.eps = f(&H::eps), o.weight_decay = f(&H::weight_decay);
        o.momentum = f(&H::momentum), o.centered = f.flag(&H::centered, "centered");
        o.maximize = f.flag(&H::maximize, "maximize"), o.eps_in_sqrt = f.flag(&H::eps_in_sqrt, "eps_in_sqrt");
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        return o;
      }
      case VKO_RULE_ADADELTA: {
        AdadeltaOptions o;
        o.lr = f(&H::lr), o.rho = f(&H::rho), o.eps = f(&H::eps), o.weight_decay = f(&H::weight_decay);
        o.maximize = f.flag(&H::maximize, "maximize");
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        return o;
      }
      case VKO_RULE_ADAMAX: {
        AdamaxOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.maximize = f.flag(&H::maximize, "maximize");
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        return o;
      }
      case VKO_RULE_NADAM: {
        NadamOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.momentum_decay = f(&H::momentum_decay);
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_RADAM: {
        RadamOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay);
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_ASGD: {
        AsgdOptions o;
        o.lr = f(&H::lr), o.lambd = f(&H::lambd), o.alpha = f(&H::alpha), o.t0 = f(&H::t0);
        o.weight_decay = f(&H::weight_decay), o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_RPROP: {
        RpropOptions o;
        o.lr = f(&H::lr), o.etaminus = f(&H::etaminus), o.etaplus = f(&H::etaplus);
        o.step_size_min = f(&H::step_size_min), o.step_size_max = f(&H::step_size_max);
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_LION: {
        LionOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.weight_decay = f(&H::weight_decay);
        o.maximize = f.flag(&H::maximize, "maximize"), o.cautious = f.flag(&H::cautious, "cautious");
        return o;
      }
      case VKO_RULE_SCHEDULE_FREE_ADAMW: {
        ScheduleFreeAdamwOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.warmup_steps = f(&H::warmup_steps), o.r = f(&H::r);
        o.weight_lr_power = f(&H::weight_lr_power), o.decay_at_z = f.flag(&H::decay_at_z, "decay_at_z");
        return o;
      }
      case VKO_RULE_ADAFACTOR: {
        AdafactorOptions o;
        o.lr = f(&H::lr), o.beta2_decay = f(&H::beta2_decay), o.eps1 = f(&H::eps), o.eps2 = f(&H::eps2);
        o.d = f(&H::d), o.beta1 = f(&H::beta1), o.weight_decay = f(&H::weight_decay);
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_LAMB: {
        LambOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.bias_correction = f.flag(&H::bias_correction, "bias_correction");
        o.min_trust_ratio = f(&H::min_trust_ratio), o.max_trust_ratio = f(&H::max_trust_ratio);
        o.maximize = f.flag(&H::maximize, "maximize"), o.use_nvlamb = f.flag(&H::use_nvlamb, "use_nvlamb");
        return o;
      }
      case VKO_RULE_ADOPT: {
        AdoptOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay);
        o.decoupled_weight_decay = f.flag(&H::decoupled_weight_decay, "decoupled_weight_decay");
        o.use_clipping = f.flag(&H::use_clipping, "use_clipping"), o.clip_exponent = f(&H::clip_exponent);
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_STABLE_ADAMW: {
        StableAdamwOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
        o.weight_decay = f(&H::weight_decay), o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_ADEMAMIX: {
        AdemamixOptions o;
        o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.beta3 = f(&H::beta3);
        o.alpha = f(&H::alpha), o.beta3_warmup = f(&H::beta3_warmup), o.alpha_warmup = f(&H::alpha_warmup);
        o.eps = f(&H::eps), o.weight_decay = f(&H::weight_decay), o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
      case VKO_RULE_MUON: {
        MuonOptions o;
        o.lr = f(&H::lr), o.weight_decay = f(&H::weight_decay), o.momentum = f(&H::momentum);
        o.nesterov = f.flag(&H::nesterov, "nesterov");
        o.ns_a = f(&H::ns_a), o.ns_b = f(&H::ns_b), o.ns_c = f(&H::ns_c), o.eps = f(&H::eps);
        o.ns_steps = f(&H::ns_steps), o.adjust_lr = MuonLrAdjust(f(&H::adjust_lr));
        o.ns_bf16 = f.flag(&H::ns_bf16, "ns_bf16"), o.use_muon = f.flag(&H::use_muon, "use_muon");
        o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.adam_eps = f(&H::adam_eps);
        return o;
      }
      case VKO_RULE_FTRL: {
        FtrlOptions o;
        o.lr = f(&H::lr), o.learning_rate_power = f(&H::learning_rate_power);
        o.initial_accumulator_value = f(&H::initial_accumulator_value);
        o.l1 = f(&H::l1), o.l2 = f(&H::l2), o.l2_shrinkage = f(&H::l2_shrinkage), o.beta = f(&H::beta);
        o.maximize = f.flag(&H::maximize, "maximize");
        return o;
      }
    }
    throw vkoptim::Error(vkoptim::Status::invalid_argument,
                         "rule = " + std::to_string(int(rule)) + " is not a vko_rule");
  };
  const RuleOptions options = read();
  refuse_unused(rule, h, f.used, registered_rule(enum_bits(rule))->name);
  return options;
}

// The group's Lookahead and SAM from the C struct (validated by the optimizer).
vkoptim::LookaheadOptions to_lookahead(const vko_hyperparams& h) {
  return {h.lookahead_k, h.lookahead_alpha};
}
vkoptim::EmaOptions to_ema(const vko_hyperparams& h) {
  return {h.ema_decay,     vkoptim::EmaWarmup(h.ema_warmup), h.ema_inv_gamma, h.ema_power,
          h.ema_min_decay, h.ema_update_after_step};
}
vkoptim::SamOptions to_sam(const vko_hyperparams& h) {
  return {h.sam_rho};
}

// The C++ defaults of `rule` (a valid vko_rule).
vkoptim::RuleOptions default_options(vko_rule rule) {
  return registered_rule(enum_bits(rule))->defaults;
}

// `given` over the rule's defaults: fields past the caller's struct_size keep their defaults.
vko_hyperparams with_defaults(vko_rule rule, const vko_hyperparams& given) {
  require(given.struct_size >= offsetof(vko_hyperparams, alpha),
          "vko_hyperparams.struct_size is too small (start from vko_hyperparams_defaults)");
  vko_hyperparams h = vko_hyperparams_defaults(rule);
  std::memcpy(&h, &given, std::min<size_t>(given.struct_size, sizeof h));
  h.struct_size = sizeof h;
  return h;
}

// A struct of the step API (sizes only grow): `given` over `defaults` for the fields its
// struct_size covers.
template <class T>
T over_defaults(const T& given, T defaults, const char* name) {
  require(given.struct_size >= sizeof(uint32_t) * 2, (std::string(name) + ".struct_size is too small").c_str());
  std::memcpy(&defaults, &given, std::min<size_t>(given.struct_size, sizeof defaults));
  defaults.struct_size = sizeof defaults;
  return defaults;
}

// A C schedule as vkoptim::LrSchedule (pieces nest once; validated by set_schedule).
vkoptim::LrSchedule to_schedule(const vko_schedule& given, int depth) {
  require(depth < 2, "vko_schedule.pieces: pieces cannot have pieces of their own");
  const vko_schedule c = over_defaults(given, vko_schedule_defaults(VKO_SCHEDULE_CONSTANT), "vko_schedule");
  require(c.kind <= VKO_SCHEDULE_CHAINED, ("vko_schedule.kind = " + std::to_string(c.kind) + " is not a kind").c_str());
  require(c.milestone_count == 0 || c.milestones, "vko_schedule.milestones is NULL");
  require(c.piece_count == 0 || c.pieces, "vko_schedule.pieces is NULL");
  vkoptim::LrSchedule s;
  s.kind = vkoptim::ScheduleKind(c.kind);
  const std::vector<uint32_t> milestones(c.milestones, c.milestones + c.milestone_count);
  s.inverse_time = {c.decay_rate};
  s.exponential = {c.gamma};
  s.step = {c.step_size, c.gamma};
  s.multi_step = {milestones, c.gamma};
  s.constant_factor = {c.factor, c.total_iters};
  s.linear = {c.start_factor, c.end_factor, c.total_iters};
  s.polynomial = {c.total_iters, c.power};
  s.cosine_annealing = {c.t_max, c.eta_min};
  s.cosine_warm_restarts = {c.t_0, c.t_mult, c.eta_min};
  s.one_cycle = {c.max_lr,           c.total_steps, c.pct_start,        vkoptim::AnnealStrategy(c.anneal_strategy),
                 c.three_phase != 0, c.div_factor,  c.final_div_factor, c.cycle_momentum != 0,
                 c.base_momentum,    c.max_momentum};
  s.cyclic = {c.base_lr,
              c.max_lr,
              c.step_size_up,
              c.step_size_down,
              vkoptim::CyclicMode(c.mode),
              c.gamma,
              c.cycle_momentum != 0,
              c.base_momentum,
              c.max_momentum};
  s.cosine_with_warmup = {c.num_warmup_steps, c.num_training_steps, c.num_cycles, c.min_lr_ratio};
  s.warmup_stable_decay = {c.num_warmup_steps,
                           c.num_stable_steps,
                           c.num_decay_steps,
                           vkoptim::WsdShape(c.warmup_shape),
                           vkoptim::WsdShape(c.decay_shape),
                           c.num_cycles,
                           c.min_lr_ratio};
  if (s.kind == vkoptim::ScheduleKind::sequential || s.kind == vkoptim::ScheduleKind::chained) {
    for (size_t i = 0; i < c.piece_count; ++i) s.pieces.push_back(to_schedule(c.pieces[i], depth + 1));
    if (s.kind == vkoptim::ScheduleKind::sequential) s.milestones = milestones;
  }
  return s;
}

// The C++ RecordOptions of vko_record_options (NULL: the defaults).
vkoptim::RecordOptions to_record_options(const vko_record_options* options) {
  const vko_record_options o = options ? over_defaults(*options, vko_record_options_defaults(), "vko_record_options")
                                       : vko_record_options_defaults();
  require(o.entry_barrier <= 1 && o.exit_barrier <= 1 && o.replay <= 1,
          "vko_record_options: entry_barrier, exit_barrier and replay are 0 or 1");
  vkoptim::RecordOptions r;
  r.entry_barrier = o.entry_barrier != 0;
  r.exit_barrier = o.exit_barrier != 0;
  r.exit_stage_mask = o.exit_stage_mask;
  r.exit_access_mask = o.exit_access_mask;
  r.timestamp_pool = o.timestamp_pool;
  r.first_query = o.first_query;
  r.replay = o.replay != 0;
  require(o.part <= VKO_STEP_FACTOR_SUMS,
          "vko_record_options.part = " + std::to_string(o.part) + " is not a vko_step_part");
  r.part = vkoptim::StepPart(o.part);
  return r;
}

// The group's options, wrappers and storage policy from its C hyperparameters (no tensors).
vkoptim::ParamGroup to_group(vko_rule rule, const vko_hyperparams& given, size_t g, const vkoptim::Context& context) {
  vkoptim::ParamGroup pg;
  const vko_hyperparams h = with_defaults(rule, given);
  pg.options = to_options(rule, h);
  pg.precision = to_precision(h);
  // A storage policy the rule cannot take is refused naming the C fields that set it.
  try {
    vkoptim::detail::validate_precision(vkoptim::detail::rule_for(pg.options), pg.options, pg.precision, g,
                                        context.caps());
  } catch (const vkoptim::Error& e) {
    throw vkoptim::Error(e.status(),
                         std::string("vko_hyperparams.state_dtype / slot_dtypes / master_weights: ") + e.what());
  }
  pg.lookahead = to_lookahead(h);
  pg.sam = to_sam(h);
  pg.ema = to_ema(h);
  return pg;
}

void require_rule(const vko_rule& rule) {  // (by reference: the bits are checked before the enum is loaded)
  if (!is_rule(enum_bits(rule)))
    throw vkoptim::Error(vkoptim::Status::invalid_argument,
                         "rule = " + std::to_string(enum_bits(rule)) + " is not a vko_rule");
}

// The C caller's flat tensors (NULL only with count 0).
std::vector<vkoptim::FlatTensor> flat_tensors_in(const vko_flat_tensor* tensors, size_t tensor_count) {
  require(tensors != nullptr || tensor_count == 0, "tensors is NULL");
  std::vector<vkoptim::FlatTensor> ts;
  for (size_t i = 0; i < tensor_count; ++i) {
    require(tensors[i].name != nullptr, "tensors[" + std::to_string(i) + "].name is NULL");
    ts.push_back({tensors[i].name, tensors[i].count, tensors[i].rows, tensors[i].group});
  }
  return ts;
}

// `count` floats from the C caller into a vector (NULL only with count 0).
std::vector<float> floats_in(const float* data, size_t count, const char* what) {
  require(data != nullptr || count == 0, std::string(what) + " is NULL");
  return std::vector<float>(data, data + count);
}
// `values` out to the C caller's `out`, which must hold exactly that many.
void floats_out(const std::vector<float>& values, float* out, size_t count, const char* call) {
  require(out != nullptr || values.empty(), std::string(call) + ": out is NULL");
  require(count == values.size(), std::string(call) + ": count = " + std::to_string(count) + ", but there are " +
                                      std::to_string(values.size()) + " floats");
  std::copy(values.begin(), values.end(), out);
}
void buffer_out(const vkoptim::BufferRange& r, VkBuffer* buffer, VkDeviceSize* offset) {
  require(buffer && offset, "buffer and offset must not be NULL");
  *buffer = r.buffer;
  *offset = r.offset;
}

// A sparse rule's options from the C struct: the rule's own fields, every other one (the storage
// policy and wrappers included) at vko_hyperparams_defaults(rule)'s value.
vkoptim::SparseRuleOptions to_sparse_options(vko_rule rule, const vko_hyperparams* given) {
  using namespace vkoptim;
  using H = vko_hyperparams;
  const int32_t r = enum_bits(rule);  // (compared as bits: an out-of-range enum is not loaded)
  require(r == VKO_RULE_ADAM || r == VKO_RULE_ADAGRAD || r == VKO_RULE_FTRL,
          "rule = " + std::to_string(r) +
              ": a sparse optimizer runs VKO_RULE_ADAM (SparseAdam), VKO_RULE_ADAGRAD or VKO_RULE_FTRL");
  const vko_hyperparams h = given ? with_defaults(rule, *given) : vko_hyperparams_defaults(rule);
  HyperReader f{h, {}};
  SparseRuleOptions options;
  const char* name = "SparseAdam";
  if (rule == VKO_RULE_ADAM) {
    SparseAdamOptions o;
    o.lr = f(&H::lr), o.beta1 = f(&H::beta1), o.beta2 = f(&H::beta2), o.eps = f(&H::eps);
    o.maximize = f.flag(&H::maximize, "maximize");
    options = o;
  } else if (rule == VKO_RULE_ADAGRAD) {
    name = "sparse Adagrad";
    AdagradOptions o;
    o.lr = f(&H::lr), o.lr_decay = f(&H::lr_decay), o.weight_decay = f(&H::weight_decay);
    o.initial_accumulator_value = f(&H::initial_accumulator_value), o.eps = f(&H::eps);
    o.maximize = f.flag(&H::maximize, "maximize");
    options = o;
  } else {
    name = "sparse FTRL";
    options = std::get<FtrlOptions>(to_options(rule, h));  // (which refuses FTRL's unused fields)
  }
  if (rule != VKO_RULE_FTRL) refuse_unused(rule, h, f.used, name);
  const vko_hyperparams d = vko_hyperparams_defaults(rule);
  const bool plain = h.state_dtype == d.state_dtype && h.master_weights == d.master_weights &&
                     h.kahan_summation == d.kahan_summation && h.rounding == d.rounding && h.slot_dtype_count == 0 &&
                     h.lookahead_k == d.lookahead_k && h.sam_rho == d.sam_rho && h.ema_decay == d.ema_decay &&
                     h.rank1_second_moment == d.rank1_second_moment;
  require(plain, std::string("vko_hyperparams: ") + name +
                     " keeps f32 state without wrappers: state_dtype, master_weights, kahan_summation, rounding, "
                     "slot_dtypes, lookahead_k, sam_rho, ema_decay and rank1_second_moment must keep their defaults");
  return options;
}

// The groups' options (what the layout functions of Muon's updates read) from their C
// hyperparameters.
std::vector<vkoptim::ParamGroup> option_groups(vko_rule rule, const vko_hyperparams* hypers, size_t group_count) {
  require_rule(rule);
  require(hypers != nullptr || group_count == 0, "hypers is NULL");
  std::vector<vkoptim::ParamGroup> groups(group_count);
  for (size_t i = 0; i < group_count; ++i) groups[i].options = to_options(rule, with_defaults(rule, hypers[i]));
  return groups;
}

}  // namespace

extern "C" {

const char* vko_last_error(void) {
  return last_error().c_str();
}

vko_context_desc vko_context_desc_defaults(void) {
  vko_context_desc d{};
  d.struct_size = sizeof(vko_context_desc);
  d.device_index = -1;
  return d;
}

vko_status vko_context_create(const vko_context_desc* desc, vko_context** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    const vko_context_desc d = desc ? *desc : vko_context_desc_defaults();
    require(d.struct_size >= sizeof(vko_context_desc),
            "vko_context_desc.struct_size is too small (use vko_context_desc_defaults)");
    vkoptim::ContextOptions o;
    o.device_index = d.device_index;
    o.enable_validation = d.enable_validation != 0;
    o.force_staging = d.force_staging != 0;
    o.addressing = vkoptim::Addressing(d.addressing);
    auto counter = std::make_shared<std::atomic<uint64_t>>(0);
    o.validation_callback = [counter](std::string_view message) {
      ++*counter;
      std::fprintf(stderr, "vkoptim validation: %.*s\n", int(message.size()), message.data());
    };
    *out = publish(std::unique_ptr<vko_context>(new vko_context{counter, vkoptim::Context::create(o)}));
  });
}

vko_device_binding vko_device_binding_defaults(void) {
  vko_device_binding b{};
  b.struct_size = sizeof b;
  b.api_version = VK_API_VERSION_1_2;
  return b;
}

vko_status vko_context_adopt(const vko_device_binding* binding, const vko_context_desc* desc, vko_context** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require(binding != nullptr, "binding is NULL");
    const vko_device_binding b = over_defaults(*binding, vko_device_binding_defaults(), "vko_device_binding");
    const vko_context_desc d = desc ? *desc : vko_context_desc_defaults();
    require(d.struct_size >= sizeof(vko_context_desc),
            "vko_context_desc.struct_size is too small (use vko_context_desc_defaults)");
    require(d.device_index == -1, "vko_context_desc.device_index: an adopted context uses the binding's device");
    require(d.enable_validation == 0,
            "vko_context_desc.enable_validation: an adopted device carries the layers its host enabled");
    require(b.buffer_device_address_enabled <= 1 && b.shader_int64_enabled <= 1 && b.full_subgroups_enabled <= 1,
            "vko_device_binding: the *_enabled fields are 0 or 1");
    require((b.lock_queue == nullptr) == (b.unlock_queue == nullptr),
            "vko_device_binding: lock_queue and unlock_queue come together");
    vkoptim::DeviceBinding db;
    db.instance = b.instance, db.physical_device = b.physical_device, db.device = b.device, db.queue = b.queue;
    db.queue_family_index = b.queue_family_index, db.api_version = b.api_version;
    db.buffer_device_address_enabled = b.buffer_device_address_enabled != 0;
    db.shader_int64_enabled = b.shader_int64_enabled != 0;
    db.full_subgroups_enabled = b.full_subgroups_enabled != 0;
    db.get_instance_proc_addr = b.get_instance_proc_addr, db.get_device_proc_addr = b.get_device_proc_addr;
    db.lock_queue = b.lock_queue, db.unlock_queue = b.unlock_queue, db.queue_lock_user = b.queue_lock_user;
    vkoptim::ContextOptions o;
    o.force_staging = d.force_staging != 0;
    o.addressing = vkoptim::Addressing(d.addressing);
    auto counter = std::make_shared<std::atomic<uint64_t>>(0);
    *out = publish(std::unique_ptr<vko_context>(new vko_context{counter, vkoptim::Context::adopt(db, o)}));
  });
}

void vko_context_destroy(vko_context* context) {
  destroy(context);
}

vko_status vko_context_device_name(const vko_context* context, char* name, size_t capacity) {
  return guarded([&] {
    require(name && capacity > 0, "name must not be NULL and capacity must be > 0");
    const std::string& n = live(context, "context").context.caps().device_name;
    const size_t len = std::min(n.size(), capacity - 1);
    std::memcpy(name, n.data(), len);
    name[len] = '\0';
  });
}

uint64_t vko_context_validation_message_count(const vko_context* context) {
  return is_live(context) ? context->validation_messages->load() : 0;
}

vko_status vko_tensor_create(vko_context* context, const float* data, size_t count, vko_tensor** out) {
  return vko_tensor_create_typed(context, VKO_DTYPE_F32, data, count, out);
}

vko_status vko_tensor_create_typed(vko_context* context, vko_dtype dtype, const float* data, size_t count,
                                   vko_tensor** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    vko_context& c = live(context, "context");
    const int32_t d = enum_bits(dtype);
    if (d != VKO_DTYPE_F32 && d != VKO_DTYPE_F16 && d != VKO_DTYPE_BF16 && d != VKO_DTYPE_U32)
      throw vkoptim::Error(vkoptim::Status::invalid_argument, "dtype = " + std::to_string(d) + " is not a vko_dtype");
    require(d != VKO_DTYPE_U32 || !data,
            "a U32 tensor holds indices: create it with data NULL and write them with "
            "vko_tensor_write_indices");
    auto t = std::make_shared<vkoptim::Tensor>(c.context.create_tensor(count, vkoptim::DType(d)));
    if (data) t->upload(std::span<const float>(data, count));
    *out = publish(std::unique_ptr<vko_tensor>(new vko_tensor{std::move(t), context, 0, "", {}}));
  });
}

vko_status vko_tensor_from_buffer(vko_context* context, const vko_buffer_range* range, vko_tensor** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    live(context, "context");
    require(range != nullptr, "range is NULL");
    vko_buffer_range defaults{};
    defaults.struct_size = sizeof defaults;
    const vko_buffer_range r = over_defaults(*range, defaults, "vko_buffer_range");
    require(r.buffer != VK_NULL_HANDLE, "vko_buffer_range.buffer is VK_NULL_HANDLE");
    require(r.dtype <= VKO_DTYPE_U32, "vko_buffer_range.dtype = " + std::to_string(r.dtype) + " is not a vko_dtype");
    require(r.device_address <= 1, "vko_buffer_range.device_address is 0 or 1");
    vkoptim::BufferRange b;
    b.buffer = r.buffer, b.offset = r.offset, b.count = r.count, b.dtype = vkoptim::DType(r.dtype);
    b.buffer_size = r.buffer_size, b.device_address = r.device_address != 0;
    // (The optimizer checks the range against buffer_size, alignment and limits when it takes it.)
    *out = publish(std::unique_ptr<vko_tensor>(new vko_tensor{nullptr, context, 0, "", b}));
  });
}

void vko_tensor_destroy(vko_tensor* tensor) {
  destroy(tensor);
}
size_t vko_tensor_count(const vko_tensor* tensor) {
  return is_live(tensor) ? tensor->count() : 0;
}

vko_status vko_tensor_set_name(vko_tensor* tensor, const char* name) {
  return guarded([&] { live(tensor, "tensor").name = name ? name : ""; });
}

vko_status vko_tensor_set_rows(vko_tensor* tensor, uint64_t rows) {
  return guarded([&] {
    vko_tensor& t = live(tensor, "tensor");
    if (rows != 0 && t.count() % rows != 0)
      throw vkoptim::Error(vkoptim::Status::invalid_argument, "vko_tensor_set_rows: rows = " + std::to_string(rows) +
                                                                  " does not divide the element count " +
                                                                  std::to_string(t.count()));
    t.rows = rows;
  });
}

vko_status vko_tensor_write(vko_tensor* tensor, const float* data, size_t count) {
  return guarded([&] {
    vko_tensor& t = live(tensor, "tensor");
    require(data != nullptr, "data is NULL");
    t.owned("vko_tensor_write").upload(std::span<const float>(data, count));
  });
}

vko_status vko_tensor_read(const vko_tensor* tensor, float* out, size_t count) {
  return guarded([&] {
    const vko_tensor& t = live(tensor, "tensor");
    require(out != nullptr, "out is NULL");
    vkoptim::Tensor& owned = t.owned("vko_tensor_read");
    if (count != owned.count())
      throw vkoptim::Error(
          vkoptim::Status::invalid_argument,
          "vko_tensor_read: count = " + std::to_string(count) + " but the tensor has " + std::to_string(owned.count()));
    const auto values = owned.download();
    std::memcpy(out, values.data(), count * sizeof(float));
  });
}

vko_hyperparams vko_hyperparams_defaults(vko_rule rule) {
  vko_hyperparams h{};
  h.struct_size = sizeof(vko_hyperparams);
  if (!is_rule(enum_bits(rule))) return h;  // not a rule: zeros (creation will say so)
  // Every field from the C++ defaults of the rules that use it, then the rule's own.
  const vkoptim::SgdOptions sgd;
  const vkoptim::RmspropOptions rmsprop;
  const vkoptim::AdagradOptions adagrad;
  const vkoptim::AsgdOptions asgd;
  const vkoptim::RpropOptions rprop;
  const vkoptim::ScheduleFreeAdamwOptions sf;
  h.momentum = sgd.momentum, h.dampening = sgd.dampening;
  h.alpha = rmsprop.alpha, h.rho = vkoptim::AdadeltaOptions{}.rho, h.lr_decay = adagrad.lr_decay;
  h.initial_accumulator_value = adagrad.initial_accumulator_value;
  h.momentum_decay = vkoptim::NadamOptions{}.momentum_decay, h.lambd = asgd.lambd, h.t0 = asgd.t0;
  h.etaminus = rprop.etaminus, h.etaplus = rprop.etaplus;
  h.step_size_min = rprop.step_size_min, h.step_size_max = rprop.step_size_max;
  h.r = sf.r, h.weight_lr_power = sf.weight_lr_power, h.warmup_steps = sf.warmup_steps;
  h.bias_correction = 1;
  h.min_8bit_elements = vkoptim::PrecisionOptions{}.min_8bit_elements;
  const vkoptim::AdafactorOptions adafactor;
  h.beta2_decay = adafactor.beta2_decay, h.eps2 = adafactor.eps2, h.d = adafactor.d;
  std::visit(
      [&](const auto& o) {
        using O = std::decay_t<decltype(o)>;
        h.lr = o.lr;
        if constexpr (requires { o.weight_decay; }) h.weight_decay = o.weight_decay;
        if constexpr (requires { o.eps; }) h.eps = o.eps;
        if constexpr (requires { o.beta2; }) h.beta1 = o.beta1, h.beta2 = o.beta2;
        if constexpr (std::is_same_v<O, vkoptim::RmspropOptions>) h.alpha = o.alpha;
        if constexpr (std::is_same_v<O, vkoptim::AsgdOptions>) h.alpha = o.alpha;
        if constexpr (std::is_same_v<O, vkoptim::AdemamixOptions>) h.alpha = o.alpha;
        if constexpr (std::is_same_v<O, vkoptim::AdafactorOptions>) h.eps = o.eps1;
        if constexpr (std::is_same_v<O, vkoptim::MuonOptions>) h.momentum = o.momentum, h.nesterov = o.nesterov;
        if constexpr (requires { o.decoupled_weight_decay; }) h.decoupled_weight_decay = o.decoupled_weight_decay;
        if constexpr (requires { o.use_nvlamb; }) h.use_nvlamb = o.use_nvlamb;
        if constexpr (requires { o.use_clipping; }) h.use_clipping = o.use_clipping, h.clip_exponent = o.clip_exponent;
        if constexpr (requires { o.learning_rate_power; }) {
          h.learning_rate_power = o.learning_rate_power;
          h.initial_accumulator_value = o.initial_accumulator_value;
        }
      },
      default_options(rule));
  const vkoptim::MuonOptions muon;
  h.ns_a = muon.ns_a, h.ns_b = muon.ns_b, h.ns_c = muon.ns_c, h.ns_steps = muon.ns_steps;
  h.adjust_lr = uint32_t(muon.adjust_lr), h.ns_bf16 = muon.ns_bf16, h.use_muon = muon.use_muon;
  h.adam_eps = muon.adam_eps;
  const vkoptim::AdemamixOptions ademamix;
  h.beta3 = ademamix.beta3, h.beta3_warmup = ademamix.beta3_warmup, h.alpha_warmup = ademamix.alpha_warmup;
  h.lookahead_alpha = vkoptim::LookaheadOptions{}.alpha;
  const vkoptim::EmaOptions ema;
  h.ema_decay = ema.decay, h.ema_warmup = uint32_t(ema.warmup), h.ema_update_after_step = ema.update_after_step;
  h.ema_inv_gamma = ema.inv_gamma, h.ema_power = ema.power, h.ema_min_decay = ema.min_decay;
  return h;
}

vko_status vko_optimizer_create(vko_context* context, vko_rule rule, const vko_param_group* groups, size_t group_count,
                                vko_optimizer** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require_rule(rule);
    vko_context& c = live(context, "context");
    require(groups != nullptr || group_count == 0, "groups is NULL");
    std::vector<vkoptim::ParamGroup> gs;
    std::vector<std::shared_ptr<vkoptim::Tensor>> keep;
    for (size_t g = 0; g < group_count; ++g) {
      vkoptim::ParamGroup pg = to_group(rule, groups[g].hyper, g, c.context);
      require(groups[g].count == 0 || (groups[g].params && groups[g].grads), "vko_param_group params/grads is NULL");
      for (size_t i = 0; i < groups[g].count; ++i) {
        const std::string where = "group " + std::to_string(g) + " tensor " + std::to_string(i);
        const vko_tensor& p = live(groups[g].params[i], (where + " param").c_str());
        const vko_tensor& gr = live(groups[g].grads[i], (where + " grad").c_str());
        for (const vko_tensor* t : {&p, &gr})
          if (t->context != context)
            throw vkoptim::Error(vkoptim::Status::invalid_argument,
                                 where + (t == &p ? " param" : " grad") +
                                     " was created in another vko_context; an optimizer steps tensors of its own");
        pg.tensors.push_back({p.range(), gr.range(), p.name, p.rows});
        for (const vko_tensor* t : {&p, &gr})
          if (t->tensor) keep.push_back(t->tensor);
      }
      gs.push_back(std::move(pg));
    }
    *out = publish(std::unique_ptr<vko_optimizer>(
        new vko_optimizer{std::move(keep), vkoptim::Optimizer(c.context, std::move(gs)), rule}));
  });
}

void vko_optimizer_destroy(vko_optimizer* optimizer) {
  destroy(optimizer);
}

vko_status vko_optimizer_set_lr(vko_optimizer* optimizer, size_t group, double lr) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.set_lr(group, lr); });
}

vko_status vko_optimizer_set_hyperparams(vko_optimizer* optimizer, size_t group, const vko_hyperparams* hyper) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(hyper != nullptr, "hyper is NULL");
    const vko_rule rule = optimizer->rule;
    const vko_hyperparams h = with_defaults(rule, *hyper);
    const vkoptim::PrecisionOptions p = to_precision(h), current = optimizer->optimizer.precision(group);
    auto same_slots = [](const std::vector<vkoptim::SlotDType>& a, const std::vector<vkoptim::SlotDType>& b) {
      return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                        [](const auto& x, const auto& y) { return x.name == y.name && x.dtype == y.dtype; });
    };
    if (p.state != current.state || p.master_weights != current.master_weights ||
        p.kahan_summation != current.kahan_summation || p.rounding != current.rounding || p.seed != current.seed ||
        p.min_8bit_elements != current.min_8bit_elements || p.rank1_second_moment != current.rank1_second_moment ||
        !same_slots(p.slots, current.slots))
      throw vkoptim::Error(vkoptim::Status::invalid_state,
                           "vko_optimizer_set_hyperparams: group " + std::to_string(group) +
                               ": state_dtype, master_weights, kahan_summation, rounding, seed, min_8bit_elements, "
                               "rank1_second_moment and slot_dtypes are fixed at creation");
    // Options, Lookahead, SAM and the EMA all or nothing: a refused part restores what the others
    // changed.
    vkoptim::Optimizer& o = optimizer->optimizer;
    const vkoptim::RuleOptions options = to_options(rule, h), old_options = o.options(group);
    const vkoptim::LookaheadOptions old_lookahead = o.lookahead(group);
    const vkoptim::SamOptions old_sam = o.sam(group);
    const vkoptim::EmaOptions old_ema = o.ema(group);
    vkoptim::detail::validate_wrappers(group, to_lookahead(h), to_sam(h), to_ema(h));
    // (An EMA being turned off goes first, one being turned on last: Lookahead refuses an EMA.)
    auto set_wrappers = [&](const vkoptim::LookaheadOptions& la, const vkoptim::SamOptions& sam,
                            const vkoptim::EmaOptions& ema) {
      if (ema.decay == 0) o.set_ema(group, ema);
      o.set_lookahead(group, la);
      o.set_sam(group, sam);
      if (ema.decay != 0) o.set_ema(group, ema);
    };
    try {
      o.set_options(group, options);
      set_wrappers(to_lookahead(h), to_sam(h), to_ema(h));
    } catch (...) {
      set_wrappers(old_lookahead, old_sam, old_ema);
      o.set_options(group, old_options);
      throw;
    }
  });
}

vko_status vko_optimizer_shape(vko_optimizer* optimizer, vko_step_shape* out) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(out != nullptr, "out is NULL");
    const vkoptim::StepShape shape = o.shape();
    *out = {shape.fast_elements, shape.careful_elements, shape.batches, shape.subgroup_reduced_groups};
  });
}

vko_status vko_optimizer_sam_perturb(vko_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.sam_perturb(); });
}

vko_status vko_optimizer_step(vko_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.step(); });
}

vko_status vko_optimizer_read_state(vko_optimizer* optimizer, size_t tensor, const char* name, float* out,
                                    size_t count) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(name && out, "name and out must not be NULL");
    const auto values = optimizer->optimizer.read_state(tensor, name);
    if (count != values.size())
      throw vkoptim::Error(vkoptim::Status::invalid_argument,
                           std::string("vko_optimizer_read_state(\"") + name + "\"): count = " + std::to_string(count) +
                               " but the state has " + std::to_string(values.size()) + " elements");
    std::memcpy(out, values.data(), count * sizeof(float));
  });
}

vko_status vko_optimizer_write_state(vko_optimizer* optimizer, size_t tensor, const char* name, const float* values,
                                     size_t count) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(name && values, "name and values must not be NULL");
    optimizer->optimizer.write_state(tensor, name, std::span<const float>(values, count));
  });
}

vko_status vko_optimizer_memory(const vko_optimizer* optimizer, uint64_t* state_bytes,
                                double* state_bytes_per_element) {
  return guarded([&] {
    const auto m = live(optimizer, "optimizer").optimizer.memory();
    if (state_bytes) *state_bytes = m.state_bytes;
    if (state_bytes_per_element) *state_bytes_per_element = m.state_bytes_per_element();
  });
}

vko_status vko_optimizer_save(vko_optimizer* optimizer, const char* path) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(path != nullptr, "path is NULL");
    o.save(path);
  });
}

vko_status vko_optimizer_load(vko_optimizer* optimizer, const char* path, uint32_t convert_storage) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(path != nullptr, "path is NULL");
    require(convert_storage <= 1, "convert_storage is " + std::to_string(convert_storage) + ", not 0 or 1");
    o.load(path, {.convert_storage = convert_storage != 0});
  });
}

vko_status vko_optimizer_save_to_memory(vko_optimizer* optimizer, uint8_t* out, size_t capacity, size_t* size) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(size != nullptr, "size is NULL");
    const auto bytes = o.save_to_memory();
    *size = bytes.size();
    if (!out) return;
    require(capacity >= bytes.size(), "capacity " + std::to_string(capacity) + " is below the checkpoint's " +
                                          std::to_string(bytes.size()) + " bytes");
    std::memcpy(out, bytes.data(), bytes.size());
  });
}

vko_status vko_optimizer_load_from_memory(vko_optimizer* optimizer, const uint8_t* data, size_t size,
                                          uint32_t convert_storage) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(data != nullptr || size == 0, "data is NULL");
    require(convert_storage <= 1, "convert_storage is " + std::to_string(convert_storage) + ", not 0 or 1");
    o.load_from_memory({data, size}, {.convert_storage = convert_storage != 0});
  });
}

vko_status vko_context_vulkan_handles(const vko_context* context, vko_vulkan_handles* out) {
  return guarded([&] {
    const auto& c = live(context, "context").context;
    require(out != nullptr, "out is NULL");
    *out = {c.instance(), c.physical_device(), c.device(), c.queue(), c.queue_family_index()};
  });
}

vko_record_options vko_record_options_defaults(void) {
  const vkoptim::RecordOptions d;
  vko_record_options o{};
  o.struct_size = sizeof o;
  o.entry_barrier = d.entry_barrier;
  o.exit_barrier = d.exit_barrier;
  o.exit_stage_mask = d.exit_stage_mask;
  o.exit_access_mask = d.exit_access_mask;
  o.timestamp_pool = d.timestamp_pool;
  o.first_query = d.first_query;
  o.replay = d.replay;
  o.part = uint32_t(d.part);
  return o;
}

vko_status vko_optimizer_initialize(vko_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.initialize(); });
}

vko_status vko_optimizer_record(vko_optimizer* optimizer, VkCommandBuffer cmd, const vko_record_options* options) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.record(cmd, to_record_options(options)); });
}

vko_status vko_optimizer_record_sam_perturb(vko_optimizer* optimizer, VkCommandBuffer cmd,
                                            const vko_record_options* options) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.record_sam_perturb(cmd, to_record_options(options)); });
}

vko_schedule vko_schedule_defaults(vko_schedule_kind kind) {
  const vkoptim::LrSchedule d;
  vko_schedule c{};
  c.struct_size = sizeof c;
  c.kind = uint32_t(kind);
  c.decay_rate = d.inverse_time.decay_rate;
  switch (kind) {  // gamma's default is the kind's
    case VKO_SCHEDULE_STEP:
      c.gamma = d.step.gamma;
      break;
    case VKO_SCHEDULE_MULTI_STEP:
      c.gamma = d.multi_step.gamma;
      break;
    case VKO_SCHEDULE_CYCLIC:
      c.gamma = d.cyclic.gamma;
      break;
    default:
      c.gamma = d.exponential.gamma;
  }
  c.step_size = d.step.step_size;
  c.factor = d.constant_factor.factor;
  c.start_factor = d.linear.start_factor;
  c.end_factor = d.linear.end_factor;
  c.total_iters = kind == VKO_SCHEDULE_CONSTANT_FACTOR ? d.constant_factor.total_iters
                  : kind == VKO_SCHEDULE_POLYNOMIAL    ? d.polynomial.total_iters
                                                       : d.linear.total_iters;
  c.power = d.polynomial.power;
  c.t_max = d.cosine_annealing.t_max;
  c.t_0 = d.cosine_warm_restarts.t_0;
  c.t_mult = d.cosine_warm_restarts.t_mult;
  c.eta_min = d.cosine_annealing.eta_min;
  c.base_lr = d.cyclic.base_lr;
  c.max_lr = kind == VKO_SCHEDULE_CYCLIC ? d.cyclic.max_lr : d.one_cycle.max_lr;
  c.total_steps = d.one_cycle.total_steps;
  c.pct_start = d.one_cycle.pct_start;
  c.anneal_strategy = uint32_t(d.one_cycle.anneal_strategy);
  c.three_phase = d.one_cycle.three_phase;
  c.div_factor = d.one_cycle.div_factor;
  c.final_div_factor = d.one_cycle.final_div_factor;
  const bool cyclic = kind == VKO_SCHEDULE_CYCLIC;
  c.cycle_momentum = cyclic ? d.cyclic.cycle_momentum : d.one_cycle.cycle_momentum;
  c.base_momentum = cyclic ? d.cyclic.base_momentum : d.one_cycle.base_momentum;
  c.max_momentum = cyclic ? d.cyclic.max_momentum : d.one_cycle.max_momentum;
  c.step_size_up = d.cyclic.step_size_up;
  c.step_size_down = d.cyclic.step_size_down;
  c.mode = uint32_t(d.cyclic.mode);
  c.num_warmup_steps = d.cosine_with_warmup.num_warmup_steps;
  c.num_training_steps = d.cosine_with_warmup.num_training_steps;
  c.num_stable_steps = d.warmup_stable_decay.num_stable_steps;
  c.num_decay_steps = d.warmup_stable_decay.num_decay_steps;
  c.num_cycles = d.cosine_with_warmup.num_cycles;
  c.min_lr_ratio = d.cosine_with_warmup.min_lr_ratio;
  c.warmup_shape = uint32_t(d.warmup_stable_decay.warmup_shape);
  c.decay_shape = uint32_t(d.warmup_stable_decay.decay_shape);
  return c;
}

vko_status vko_optimizer_set_schedule(vko_optimizer* optimizer, size_t group, const vko_schedule* schedule) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(schedule != nullptr, "schedule is NULL");
    optimizer->optimizer.set_schedule(group, to_schedule(*schedule, 0));
  });
}

vko_grad_clip vko_grad_clip_defaults(void) {
  const vkoptim::GradClip d;
  vko_grad_clip c{};
  c.struct_size = sizeof c;
  c.max_norm = d.max_norm;
  c.norm_type = d.norm_type;
  c.error_if_nonfinite = d.error_if_nonfinite;
  c.clip_value = d.clip_value;
  return c;
}

vko_status vko_optimizer_set_grad_clip(vko_optimizer* optimizer, const vko_grad_clip* clip) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(clip != nullptr, "clip is NULL");
    const vko_grad_clip c = over_defaults(*clip, vko_grad_clip_defaults(), "vko_grad_clip");
    require(c.group_count == 0 || c.groups, "vko_grad_clip.groups is NULL");
    require(c.error_if_nonfinite <= 1, "vko_grad_clip.error_if_nonfinite is 0 or 1");
    vkoptim::GradClip g;
    g.max_norm = c.max_norm;
    g.norm_type = c.norm_type;
    g.error_if_nonfinite = c.error_if_nonfinite != 0;
    g.clip_value = c.clip_value;
    g.groups.assign(c.groups, c.groups + c.group_count);
    optimizer->optimizer.set_grad_clip(g);
  });
}

vko_grad_scaler vko_grad_scaler_defaults(void) {
  const vkoptim::GradScalerOptions d;
  vko_grad_scaler c{};
  c.struct_size = sizeof c;
  c.enabled = d.enabled;
  c.init_scale = d.init_scale;
  c.growth_factor = d.growth_factor;
  c.backoff_factor = d.backoff_factor;
  c.growth_interval = d.growth_interval;
  return c;
}

vko_status vko_optimizer_set_grad_scaler(vko_optimizer* optimizer, const vko_grad_scaler* scaler) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(scaler != nullptr, "scaler is NULL");
    const vko_grad_scaler c = over_defaults(*scaler, vko_grad_scaler_defaults(), "vko_grad_scaler");
    require(c.enabled <= 1, "vko_grad_scaler.enabled is 0 or 1");
    optimizer->optimizer.set_grad_scaler(
        {c.enabled != 0, c.init_scale, c.growth_factor, c.backoff_factor, c.growth_interval});
  });
}

vko_status vko_optimizer_loss_scale(vko_optimizer* optimizer, float* out) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(out != nullptr, "out is NULL");
    *out = optimizer->optimizer.loss_scale();
  });
}

vko_status vko_optimizer_loss_scale_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(buffer && offset, "buffer and offset must not be NULL");
    const vkoptim::BufferRange r = optimizer->optimizer.loss_scale_buffer();
    *buffer = r.buffer;
    *offset = r.offset;
  });
}

vko_status vko_optimizer_step_reports(const vko_optimizer* optimizer, vko_step_report* out, size_t capacity,
                                      size_t* count) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(count != nullptr && (capacity == 0 || out), "count (and out, with a capacity) must not be NULL");
    const auto reports = optimizer->optimizer.step_reports();
    const size_t n = std::min(capacity, reports.size());
    for (size_t i = 0; i < n; ++i) {
      const vkoptim::StepReport& r = reports[reports.size() - n + i];
      out[i] = {r.step, r.total_norm, r.clip_coef, r.scale, r.found_inf, r.skipped, r.nonfinite_norm, r.growth_tracker};
    }
    *count = n;
  });
}

vko_status vko_tensor_write_indices(vko_tensor* tensor, const uint32_t* data, size_t count) {
  return guarded([&] {
    vko_tensor& t = live(tensor, "tensor");
    require(data != nullptr, "data is NULL");
    t.owned("vko_tensor_write_indices").upload_indices(std::span<const uint32_t>(data, count));
  });
}

vko_status vko_tensor_read_indices(const vko_tensor* tensor, uint32_t* out, size_t count) {
  return guarded([&] {
    const vko_tensor& t = live(tensor, "tensor");
    require(out != nullptr, "out is NULL");
    vkoptim::Tensor& owned = t.owned("vko_tensor_read_indices");
    require(count == owned.count(), "vko_tensor_read_indices: count = " + std::to_string(count) +
                                        " but the tensor has " + std::to_string(owned.count()));
    const auto values = owned.download_indices();
    std::memcpy(out, values.data(), count * sizeof(uint32_t));
  });
}

vko_status vko_sparse_optimizer_create(vko_context* context, vko_rule rule, const vko_hyperparams* hyper,
                                       const vko_sparse_table* tables, size_t table_count, vko_sparse_optimizer** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    vko_context& c = live(context, "context");
    const vkoptim::SparseRuleOptions options = to_sparse_options(rule, hyper);
    require(tables != nullptr || table_count == 0, "tables is NULL");
    std::vector<vkoptim::SparseTable> ts;
    std::vector<std::shared_ptr<vkoptim::Tensor>> keep;
    for (size_t i = 0; i < table_count; ++i) {
      vko_sparse_table defaults{};
      defaults.struct_size = sizeof defaults;
      const vko_sparse_table t = over_defaults(tables[i], defaults, "vko_sparse_table");
      const std::string where = "table " + std::to_string(i);
      const vko_tensor& p = live(t.param, (where + " param").c_str());
      const vko_tensor& idx = live(t.indices, (where + " indices").c_str());
      const vko_tensor& val = live(t.values, (where + " values").c_str());
      for (const vko_tensor* x : {&p, &idx, &val}) {
        if (x->context != context)
          throw vkoptim::Error(vkoptim::Status::invalid_argument,
                               where +
                                   ": a tensor was created in another vko_context; an optimizer steps tensors "
                                   "of its own");
        if (x->tensor) keep.push_back(x->tensor);
      }
      ts.push_back({p.range(), t.dim, idx.range(), val.range(), p.name});
    }
    *out = publish(std::unique_ptr<vko_sparse_optimizer>(
        new vko_sparse_optimizer{std::move(keep), vkoptim::SparseOptimizer(c.context, std::move(ts), options), rule}));
  });
}

void vko_sparse_optimizer_destroy(vko_sparse_optimizer* optimizer) {
  destroy(optimizer);
}

vko_status vko_sparse_optimizer_set_hyperparams(vko_sparse_optimizer* optimizer, const vko_hyperparams* hyper) {
  return guarded([&] {
    vko_sparse_optimizer& o = live(optimizer, "optimizer");
    require(hyper != nullptr, "hyper is NULL");
    o.optimizer.set_options(to_sparse_options(o.rule, hyper));
  });
}

vko_status vko_sparse_optimizer_initialize(vko_sparse_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.initialize(); });
}

vko_status vko_sparse_optimizer_record(vko_sparse_optimizer* optimizer, VkCommandBuffer cmd,
                                       const vko_record_options* options) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.record(cmd, to_record_options(options)); });
}

vko_status vko_sparse_optimizer_step(vko_sparse_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.step(); });
}

vko_status vko_sparse_optimizer_last_report(const vko_sparse_optimizer* optimizer, vko_sparse_report* out) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(out != nullptr, "out is NULL");
    const vkoptim::SparseStepReport r = optimizer->optimizer.last_report();
    *out = {r.step, r.skipped, r.bad_indices, r.bad_table, r.first_bad_position, r.first_bad_index, r.rows_updated};
  });
}

vko_status vko_sparse_optimizer_read_state(vko_sparse_optimizer* optimizer, size_t table, const char* name, float* out,
                                           size_t count) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(name && out, "name and out must not be NULL");
    const auto values = optimizer->optimizer.read_state(table, name);
    require(count == values.size(), std::string("vko_sparse_optimizer_read_state(\"") + name +
                                        "\"): count = " + std::to_string(count) + " but the state has " +
                                        std::to_string(values.size()) + " elements");
    std::memcpy(out, values.data(), count * sizeof(float));
  });
}

vko_status vko_sparse_optimizer_write_state(vko_sparse_optimizer* optimizer, size_t table, const char* name,
                                            const float* values, size_t count) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(name && values, "name and values must not be NULL");
    optimizer->optimizer.write_state(table, name, std::span<const float>(values, count));
  });
}

// ---- Sharded state ----------------------------------------------------------------------------

vko_status vko_shard_layout_create_whole_tensors(const vko_flat_tensor* tensors, size_t tensor_count, uint32_t ranks,
                                                 vko_shard_layout** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    auto layout = vkoptim::ShardLayout::whole_tensors(flat_tensors_in(tensors, tensor_count), ranks);
    *out = publish(std::unique_ptr<vko_shard_layout>(new vko_shard_layout{std::move(layout)}));
  });
}

vko_status vko_shard_layout_create(const vko_flat_tensor* tensors, size_t tensor_count, uint32_t ranks,
                                   const uint64_t* cuts, vko_shard_layout** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    auto ts = flat_tensors_in(tensors, tensor_count);
    vkoptim::ShardLayout layout;
    if (!cuts) {
      layout = vkoptim::ShardLayout::even(std::move(ts), ranks);
    } else {
      layout.tensors = std::move(ts);
      for (uint32_t r = 0; r < ranks; ++r) layout.shards.push_back({cuts[r], cuts[r + 1]});
    }
    layout.validate();
    *out = publish(std::unique_ptr<vko_shard_layout>(new vko_shard_layout{std::move(layout)}));
  });
}

vko_status vko_shard_layout_from_json(const char* json, vko_shard_layout** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require(json != nullptr, "json is NULL");
    *out = publish(std::unique_ptr<vko_shard_layout>(new vko_shard_layout{vkoptim::shard_layout_from_json(json)}));
  });
}

void vko_shard_layout_destroy(vko_shard_layout* layout) {
  destroy(layout);
}

vko_status vko_shard_layout_json(const vko_shard_layout* layout, char* out, size_t capacity, size_t* size) {
  return guarded([&] {
    const std::string json = vkoptim::shard_index_json(live(layout, "layout").layout);
    require(size != nullptr, "size is NULL");
    *size = json.size() + 1;
    if (!out) return;
    require(capacity >= json.size() + 1, "capacity " + std::to_string(capacity) + " is below the " +
                                             std::to_string(json.size() + 1) + " bytes of the index");
    std::memcpy(out, json.c_str(), json.size() + 1);
  });
}

vko_status vko_shard_layout_info(const vko_shard_layout* layout, uint32_t* ranks, size_t* tensors, uint64_t* total) {
  return guarded([&] {
    const vkoptim::ShardLayout& l = live(layout, "layout").layout;
    if (ranks) *ranks = l.ranks();
    if (tensors) *tensors = l.tensors.size();
    if (total) *total = l.total();
  });
}

vko_status vko_shard_layout_shard(const vko_shard_layout* layout, uint32_t rank, uint64_t* begin, uint64_t* end) {
  return guarded([&] {
    const vkoptim::ShardLayout& l = live(layout, "layout").layout;
    require(begin && end, "begin and end must not be NULL");
    require(rank < l.ranks(),
            "rank " + std::to_string(rank) + ", but the layout has " + std::to_string(l.ranks()) + " shards");
    *begin = l.shards[rank].begin;
    *end = l.shards[rank].end;
  });
}

vko_status vko_optimizer_create_shard(vko_context* context, vko_rule rule, const vko_shard_layout* layout,
                                      uint32_t rank, const vko_hyperparams* hypers, size_t group_count,
                                      vko_tensor* param, vko_tensor* grad, vko_optimizer** out) {
  return guarded([&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    require_rule(rule);
    vko_context& c = live(context, "context");
    const vkoptim::ShardLayout& l = live(layout, "layout").layout;
    require(hypers != nullptr || group_count == 0, "hypers is NULL");
    const vko_tensor& p = live(param, "param");
    const vko_tensor& g = live(grad, "grad");
    for (const vko_tensor* t : {&p, &g})
      if (t->context != context)
        throw vkoptim::Error(vkoptim::Status::invalid_argument,
                             std::string(t == &p ? "param" : "grad") +
                                 " was created in another vko_context; an optimizer steps tensors of its own");
    std::vector<vkoptim::ParamGroup> groups;
    for (size_t i = 0; i < group_count; ++i) groups.push_back(to_group(rule, hypers[i], i, c.context));
    std::vector<std::shared_ptr<vkoptim::Tensor>> keep;
    for (const vko_tensor* t : {&p, &g})
      if (t->tensor) keep.push_back(t->tensor);
    *out = publish(std::unique_ptr<vko_optimizer>(new vko_optimizer{
        std::move(keep),
        vkoptim::Optimizer(c.context, vkoptim::shard_groups(l, rank, std::move(groups), p.range(), g.range())), rule}));
  });
}

vko_status vko_optimizer_tensor_count(const vko_optimizer* optimizer, size_t* out) {
  return guarded([&] {
    const vko_optimizer& o = live(optimizer, "optimizer");
    require(out != nullptr, "out is NULL");
    *out = o.optimizer.tensor_count();
  });
}

vko_status vko_combine_grad_sums(const vko_grad_clip* clip, const vko_grad_sums* a, const vko_grad_sums* b,
                                 vko_grad_sums* out) {
  return guarded([&] {
    require(clip && a && b && out, "clip, a, b and out must not be NULL");
    const vko_grad_clip c = over_defaults(*clip, vko_grad_clip_defaults(), "vko_grad_clip");
    vkoptim::GradClip g;
    g.norm_type = c.norm_type;
    const vkoptim::GradSums r = vkoptim::combine_grad_sums(g, {a->norm_sum, a->nonfinite}, {b->norm_sum, b->nonfinite});
    *out = {r.norm_sum, r.nonfinite};
  });
}

vko_status vko_optimizer_step_grad_sums(vko_optimizer* optimizer, vko_grad_sums* out) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(out != nullptr, "out is NULL");
    const vkoptim::GradSums r = optimizer->optimizer.step_grad_sums();
    *out = {r.norm_sum, r.nonfinite};
  });
}

vko_status vko_optimizer_grad_chunk_count(const vko_optimizer* optimizer, size_t* out) {
  return guarded([&] {
    const auto& o = live(optimizer, "optimizer").optimizer;
    require(out != nullptr, "out is NULL");
    *out = o.grad_chunk_count();
  });
}

vko_status vko_optimizer_step_grad_chunks(vko_optimizer* optimizer, vko_grad_sums* out, size_t count) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(out != nullptr, "out is NULL");
    require(count == o.grad_chunk_count(), "vko_optimizer_step_grad_chunks: count = " + std::to_string(count) +
                                               ", but the optimizer's gradients have " +
                                               std::to_string(o.grad_chunk_count()) + " chunks of 256 elements");
    const auto chunks = o.step_grad_chunks();
    for (size_t i = 0; i < count; ++i) out[i] = {chunks[i].norm_sum, chunks[i].nonfinite};
  });
}

vko_status vko_shard_grad_chunk_count(const vko_shard_layout* layout, size_t* out) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    require(out != nullptr, "out is NULL");
    size_t chunks = 0;
    for (const auto& t : l.tensors) chunks += size_t((t.count + 255) / 256);
    *out = chunks;
  });
}

vko_status vko_shard_scatter_grad_chunks(const vko_shard_layout* layout, uint32_t rank, const vko_grad_sums* local,
                                         size_t local_count, vko_grad_sums* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    require(local != nullptr || local_count == 0, "local is NULL");
    require(out != nullptr, "out is NULL");
    // The shard's chunk count first: `local` is read only once its length is known to be right.
    require(rank < l.ranks(), "vko_shard_scatter_grad_chunks: rank " + std::to_string(rank) + ", but the layout has " +
                                  std::to_string(l.ranks()) + " ranks");
    size_t expected = 0;
    for (const auto& piece : vkoptim::shard_pieces(l, rank)) expected += size_t((piece.count + 255) / 256);
    require(local_count == expected, "vko_shard_scatter_grad_chunks: local_count = " + std::to_string(local_count) +
                                         ", but rank " + std::to_string(rank) + "'s shard has " +
                                         std::to_string(expected) + " chunks");
    std::vector<vkoptim::GradSums> in(local_count);
    for (size_t i = 0; i < local_count; ++i) in[i] = {local[i].norm_sum, local[i].nonfinite};
    const auto placed = vkoptim::scatter_grad_chunks(l, rank, in);
    require(out_count == placed.size(), "vko_shard_scatter_grad_chunks: out_count = " + std::to_string(out_count) +
                                            ", but the layout has " + std::to_string(placed.size()) + " chunks");
    for (size_t i = 0; i < placed.size(); ++i) out[i] = {placed[i].norm_sum, placed[i].nonfinite};
  });
}

vko_status vko_reduce_grad_chunks(const vko_grad_clip* clip, const vko_grad_sums* chunks, size_t count,
                                  vko_grad_sums* out) {
  return guarded([&] {
    require(clip && out, "clip and out must not be NULL");
    require(chunks != nullptr || count == 0, "chunks is NULL");
    const vko_grad_clip c = over_defaults(*clip, vko_grad_clip_defaults(), "vko_grad_clip");
    vkoptim::GradClip g;
    g.norm_type = c.norm_type;
    std::vector<vkoptim::GradSums> in(count);
    for (size_t i = 0; i < count; ++i) in[i] = {chunks[i].norm_sum, chunks[i].nonfinite};
    const vkoptim::GradSums r = vkoptim::reduce_grad_chunks(g, in);
    *out = {r.norm_sum, r.nonfinite};
  });
}

vko_status vko_optimizer_step_finish(vko_optimizer* optimizer, const vko_grad_sums* combined) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(combined != nullptr, "combined is NULL");
    optimizer->optimizer.step_finish(vkoptim::GradSums{combined->norm_sum, combined->nonfinite});
  });
}

vko_status vko_optimizer_grad_sums(vko_optimizer* optimizer, vko_grad_sums* out) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(out != nullptr, "out is NULL");
    const vkoptim::GradSums r = optimizer->optimizer.grad_sums();
    *out = {r.norm_sum, r.nonfinite};
  });
}

vko_status vko_optimizer_set_grad_sums(vko_optimizer* optimizer, const vko_grad_sums* combined) {
  return guarded([&] {
    live(optimizer, "optimizer");
    require(combined != nullptr, "combined is NULL");
    optimizer->optimizer.set_grad_sums({combined->norm_sum, combined->nonfinite});
  });
}

vko_status vko_optimizer_grad_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset) {
  return guarded([&] { buffer_out(live(optimizer, "optimizer").optimizer.grad_sums_buffer(), buffer, offset); });
}

vko_status vko_optimizer_step_tensor_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    // (checked before the submission: a wrong count submits nothing)
    require(count == 2 * o.tensor_count(), "vko_optimizer_step_tensor_sums: count = " + std::to_string(count) +
                                               ", but the optimizer has " + std::to_string(o.tensor_count()) +
                                               " tensors (two floats each)");
    require(out != nullptr, "out is NULL");
    floats_out(o.step_tensor_sums(), out, count, "vko_optimizer_step_tensor_sums");
  });
}

vko_status vko_optimizer_step_finish_tensor_sums(vko_optimizer* optimizer, const float* combined, size_t count) {
  return guarded([&] {
    live(optimizer, "optimizer").optimizer.step_finish(std::span<const float>(floats_in(combined, count, "combined")));
  });
}

vko_status vko_optimizer_tensor_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    floats_out(live(optimizer, "optimizer").optimizer.tensor_sums(), out, count, "vko_optimizer_tensor_sums");
  });
}

vko_status vko_optimizer_set_tensor_sums(vko_optimizer* optimizer, const float* combined, size_t count) {
  return guarded(
      [&] { live(optimizer, "optimizer").optimizer.set_tensor_sums(floats_in(combined, count, "combined")); });
}

vko_status vko_optimizer_tensor_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset) {
  return guarded([&] { buffer_out(live(optimizer, "optimizer").optimizer.tensor_sums_buffer(), buffer, offset); });
}

vko_status vko_shard_scatter_tensor_sums(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                         size_t local_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::scatter_tensor_sums(l, rank, floats_in(local, local_count, "local")), out, out_count,
               "vko_shard_scatter_tensor_sums");
  });
}

vko_status vko_shard_gather_tensor_sums(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                        size_t combined_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::gather_tensor_sums(l, rank, floats_in(combined, combined_count, "combined")), out, out_count,
               "vko_shard_gather_tensor_sums");
  });
}

vko_status vko_optimizer_factor_sum_count(const vko_optimizer* optimizer, size_t* out) {
  return guarded([&] {
    const auto& o = live(optimizer, "optimizer").optimizer;
    require(out != nullptr, "out is NULL");
    *out = o.factor_sum_count();
  });
}

vko_status vko_optimizer_step_factor_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    // (checked before the submission: a wrong count submits nothing)
    require(count == o.factor_sum_count(), "vko_optimizer_step_factor_sums: count = " + std::to_string(count) +
                                               ", but the optimizer's pieces of split matrices have " +
                                               std::to_string(o.factor_sum_count()) + " row and column sums");
    require(out != nullptr || count == 0, "out is NULL");
    floats_out(o.step_factor_sums(), out, count, "vko_optimizer_step_factor_sums");
  });
}

vko_status vko_optimizer_factor_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    floats_out(live(optimizer, "optimizer").optimizer.factor_sums(), out, count, "vko_optimizer_factor_sums");
  });
}

vko_status vko_optimizer_set_factor_sums(vko_optimizer* optimizer, const float* combined, size_t count) {
  return guarded(
      [&] { live(optimizer, "optimizer").optimizer.set_factor_sums(floats_in(combined, count, "combined")); });
}

vko_status vko_optimizer_factor_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset) {
  return guarded([&] { buffer_out(live(optimizer, "optimizer").optimizer.factor_sums_buffer(), buffer, offset); });
}

vko_status vko_shard_factor_sum_count(const vko_shard_layout* layout, size_t* out) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    require(out != nullptr, "out is NULL");
    *out = vkoptim::factor_sum_count(l);
  });
}

vko_status vko_shard_scatter_factor_sums(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                         size_t local_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::scatter_factor_sums(l, rank, floats_in(local, local_count, "local")), out, out_count,
               "vko_shard_scatter_factor_sums");
  });
}

vko_status vko_shard_gather_factor_sums(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                        size_t combined_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::gather_factor_sums(l, rank, floats_in(combined, combined_count, "combined")), out, out_count,
               "vko_shard_gather_factor_sums");
  });
}

vko_status vko_shard_factor_maxima_count(const vko_shard_layout* layout, size_t* out) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    require(out != nullptr, "out is NULL");
    *out = vkoptim::factor_maxima_count(l);
  });
}

vko_status vko_shard_scatter_factor_maxima(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                           size_t local_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::scatter_factor_maxima(l, rank, floats_in(local, local_count, "local")), out, out_count,
               "vko_shard_scatter_factor_maxima");
  });
}

vko_status vko_shard_gather_factor_maxima(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                          size_t combined_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::gather_factor_maxima(l, rank, floats_in(combined, combined_count, "combined")), out, out_count,
               "vko_shard_gather_factor_maxima");
  });
}

vko_status vko_shard_matrix_update_count(const vko_shard_layout* layout, vko_rule rule, const vko_hyperparams* hypers,
                                         size_t group_count, size_t* out) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    require(out != nullptr, "out is NULL");
    *out = vkoptim::matrix_update_count(l, option_groups(rule, hypers, group_count));
  });
}

vko_status vko_shard_scatter_matrix_updates(const vko_shard_layout* layout, vko_rule rule,
                                            const vko_hyperparams* hypers, size_t group_count, uint32_t rank,
                                            const float* local, size_t local_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::scatter_matrix_updates(l, option_groups(rule, hypers, group_count), rank,
                                               floats_in(local, local_count, "local")),
               out, out_count, "vko_shard_scatter_matrix_updates");
  });
}

vko_status vko_shard_gather_matrix_updates(const vko_shard_layout* layout, vko_rule rule, const vko_hyperparams* hypers,
                                           size_t group_count, uint32_t rank, const float* combined,
                                           size_t combined_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    floats_out(vkoptim::gather_matrix_updates(l, option_groups(rule, hypers, group_count), rank,
                                              floats_in(combined, combined_count, "combined")),
               out, out_count, "vko_shard_gather_matrix_updates");
  });
}

vko_status vko_optimizer_step_finish_factors(vko_optimizer* optimizer) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.step_finish(); });
}

vko_status vko_optimizer_step_tensor_chunks(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    // (checked before the submission: a wrong count submits nothing)
    require(count == 2 * o.grad_chunk_count(), "vko_optimizer_step_tensor_chunks: count = " + std::to_string(count) +
                                                   ", but the optimizer's tensors have " +
                                                   std::to_string(o.grad_chunk_count()) +
                                                   " chunks of 256 elements (two floats each)");
    require(out != nullptr, "out is NULL");
    floats_out(o.step_tensor_chunks(), out, count, "vko_optimizer_step_tensor_chunks");
  });
}

vko_status vko_shard_scatter_tensor_chunks(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                           size_t local_count, float* out, size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    // The shard's chunk count first: `local` is read only once its length is known to be right.
    require(rank < l.ranks(), "vko_shard_scatter_tensor_chunks: rank " + std::to_string(rank) +
                                  ", but the layout has " + std::to_string(l.ranks()) + " ranks");
    size_t expected = 0;
    for (const auto& piece : vkoptim::shard_pieces(l, rank)) expected += 2 * size_t((piece.count + 255) / 256);
    require(local_count == expected, "vko_shard_scatter_tensor_chunks: local_count = " + std::to_string(local_count) +
                                         ", but rank " + std::to_string(rank) + "'s shard has " +
                                         std::to_string(expected / 2) + " chunks (two floats each)");
    floats_out(vkoptim::scatter_tensor_chunks(l, rank, floats_in(local, local_count, "local")), out, out_count,
               "vko_shard_scatter_tensor_chunks");
  });
}

vko_status vko_reduce_tensor_chunks(const vko_shard_layout* layout, const float* chunks, size_t count, float* out,
                                    size_t out_count) {
  return guarded([&] {
    const auto& l = live(layout, "layout").layout;
    size_t expected = 0;
    for (const auto& t : l.tensors) expected += 2 * size_t((t.count + 255) / 256);
    require(count == expected, "vko_reduce_tensor_chunks: count = " + std::to_string(count) + ", but the layout has " +
                                   std::to_string(expected / 2) + " chunks (two floats each)");
    floats_out(vkoptim::reduce_tensor_chunks(l, floats_in(chunks, count, "chunks")), out, out_count,
               "vko_reduce_tensor_chunks");
  });
}

vko_status vko_optimizer_sam_perturb_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded([&] {
    auto& o = live(optimizer, "optimizer").optimizer;
    require(count == o.group_count(), "vko_optimizer_sam_perturb_sums: count = " + std::to_string(count) +
                                          ", but the optimizer has " + std::to_string(o.group_count()) +
                                          " groups (one float each)");
    require(out != nullptr, "out is NULL");
    floats_out(o.sam_perturb_sums(), out, count, "vko_optimizer_sam_perturb_sums");
  });
}

vko_status vko_optimizer_sam_perturb_finish(vko_optimizer* optimizer, const float* combined, size_t count) {
  return guarded(
      [&] { live(optimizer, "optimizer").optimizer.sam_perturb_finish(floats_in(combined, count, "combined")); });
}

vko_status vko_optimizer_sam_sums(vko_optimizer* optimizer, float* out, size_t count) {
  return guarded(
      [&] { floats_out(live(optimizer, "optimizer").optimizer.sam_sums(), out, count, "vko_optimizer_sam_sums"); });
}

vko_status vko_optimizer_set_sam_sums(vko_optimizer* optimizer, const float* combined, size_t count) {
  return guarded([&] { live(optimizer, "optimizer").optimizer.set_sam_sums(floats_in(combined, count, "combined")); });
}

vko_status vko_optimizer_sam_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset) {
  return guarded([&] { buffer_out(live(optimizer, "optimizer").optimizer.sam_sums_buffer(), buffer, offset); });
}

vko_status vko_reshard_checkpoint(const vko_shard_layout* saved, const uint8_t* const* files, const size_t* file_sizes,
                                  size_t file_count, const vko_shard_layout* target, uint32_t rank, uint8_t* out,
                                  size_t capacity, size_t* size) {
  return guarded([&] {
    const auto& from = live(saved, "saved").layout;
    const auto& to = live(target, "target").layout;
    require(size != nullptr, "size is NULL");
    require(file_count == 0 || (files && file_sizes), "files and file_sizes must not be NULL");
    std::vector<std::span<const uint8_t>> spans;
    for (size_t i = 0; i < file_count; ++i) {
      require(files[i] != nullptr || file_sizes[i] == 0, "files[" + std::to_string(i) + "] is NULL");
      spans.emplace_back(files[i], file_sizes[i]);
    }
    const std::vector<uint8_t> bytes = vkoptim::reshard_checkpoint(from, spans, to, rank);
    *size = bytes.size();
    if (!out) return;
    require(capacity >= bytes.size(), "capacity " + std::to_string(capacity) + " is below the checkpoint's " +
                                          std::to_string(bytes.size()) + " bytes");
    std::memcpy(out, bytes.data(), bytes.size());
  });
}

}  // extern "C"
