// vkoptim::Optimizer: parameter groups and their validation, state names, the public API.
#include "vkoptim/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "optimizer_state.hpp"

namespace vkoptim {
namespace detail {

std::string tensor_label(size_t group, size_t index_in_group) {
  return "group " + std::to_string(group) + " tensor " + std::to_string(index_in_group);
}

namespace {
void check_range(const BufferRange& r, const std::string& what) {
  if (!r.buffer) throw Error(Status::invalid_argument, what + ".buffer is VK_NULL_HANDLE");
  if (r.count == 0) throw Error(Status::invalid_argument, what + ".count is 0");
  if (r.dtype != DType::f32)
    throw Error(Status::unsupported, what + ".dtype is " + dtype_name(r.dtype) + "; only f32 is supported so far");
  if (r.offset % dtype_size(r.dtype) != 0)
    throw Error(Status::invalid_argument, what + ".offset = " + std::to_string(r.offset) + " is not a multiple of " +
                                              std::to_string(dtype_size(r.dtype)) + " bytes");
  if (r.buffer_size == 0)
    throw Error(Status::invalid_argument,
                what + ".buffer_size is 0; declare the buffer's size so the range can be checked");
  const VkDeviceSize bytes = VkDeviceSize(r.count) * dtype_size(r.dtype);
  if (r.offset > r.buffer_size || bytes > r.buffer_size - r.offset)
    throw Error(Status::invalid_argument, what + " range [" + std::to_string(r.offset) + ", " +
                                              std::to_string(r.offset + bytes) +
                                              ") exceeds buffer_size = " + std::to_string(r.buffer_size));
}

struct Span {
  VkBuffer buffer;
  VkDeviceSize begin, end;
  bool written;
  std::string what;
};

// Parameters are written: no parameter may overlap another parameter or any gradient.
void check_overlaps(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.buffer != b.buffer ? a.buffer < b.buffer : a.begin < b.begin;
  });
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size() && spans[j].buffer == spans[i].buffer && spans[j].begin < spans[i].end; ++j)
      if (spans[i].written || spans[j].written)
        throw Error(Status::invalid_argument, spans[i].what + " overlaps " + spans[j].what +
                                                  " in the same buffer; parameters must not alias other tensors");
}

}  // namespace

void validate_wrappers(size_t group, const LookaheadOptions& la, const SamOptions& sam) {
  if (!(std::isfinite(la.alpha) && la.alpha >= 0 && la.alpha <= 1))
    throw Error(Status::invalid_argument, "group " + std::to_string(group) + ": lookahead.alpha = " +
                                              std::to_string(la.alpha) + ": must be in [0, 1]");
  if (!(std::isfinite(sam.rho) && sam.rho >= 0))
    throw Error(Status::invalid_argument, "group " + std::to_string(group) + ": sam.rho = " + std::to_string(sam.rho) +
                                              ": must be finite and >= 0");
}

// Physical state slot (operand - 2) of each state name: the rule's slots keep their positions
// (its shader hard-codes them); Lookahead's slow weights and SAM's perturbation take the next
// free ones after the last active rule slot. -1: not kept. Throws when they do not fit.
std::vector<int> slot_map(const Rule& r, const RuleOptions& options, const LookaheadOptions& la,
                          const SamOptions& sam) {
  const auto active = r.active_slots(options);
  std::vector<int> map(r.slot_names().size() + 2, -1);
  int next = 0;
  for (size_t k = 0; k < active.size(); ++k)
    if (active[k]) {
      map[k] = int(k);
      next = int(k) + 1;
    }
  const bool wrappers[2] = {la.k > 0, sam.rho > 0};
  for (int w = 0; w < 2; ++w)
    if (wrappers[w]) map[r.slot_names().size() + size_t(w)] = next++;
  if (next > int(kMaxStateSlots))
    throw Error(Status::unsupported, std::string(r.name()) + " with these options keeps " + std::to_string(next) +
                                         " state slots with Lookahead/SAM; at most " + std::to_string(kMaxStateSlots) +
                                         " fit (e.g. drop amsgrad, or one of the wrappers)");
  return map;
}

void OptimizerState::add_group(ParamGroup group) {
  if (finalized)
    throw Error(Status::invalid_state,
                "add_param_group: state already exists (a step was taken or state accessed); "
                "add every group before the first step");
  const size_t g = groups.size();
  const Rule& r = rule_for(group.options);
  if (rule && &r != rule)
    throw Error(Status::invalid_argument, "group " + std::to_string(g) + " uses " + r.name() +
                                              " but the optimizer's rule is " + rule->name() +
                                              "; one rule per optimizer");
  r.validate(group.options, g);
  validate_wrappers(g, group.lookahead, group.sam);
  slot_map(r, group.options, group.lookahead, group.sam);  // throws when the slots do not fit

  std::vector<Span> spans;
  auto add_span = [&](const BufferRange& b, bool written, const std::string& what) {
    spans.push_back({b.buffer, b.offset, b.offset + VkDeviceSize(b.count) * dtype_size(b.dtype), written, what});
  };
  for (const auto& t : tensors) {
    add_span(t.tensor.param, true, tensor_label(t.group, t.index_in_group) + " param");
    add_span(t.tensor.grad, false, tensor_label(t.group, t.index_in_group) + " grad");
  }
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    const auto& t = group.tensors[i];
    const std::string label = tensor_label(g, i);
    check_range(t.param, label + " param");
    check_range(t.grad, label + " grad");
    if (t.rows != 0 && (t.param.count % t.rows != 0))
      throw Error(Status::invalid_argument, label + ": rows = " + std::to_string(t.rows) +
                                                " does not divide the element count " + std::to_string(t.param.count));
    if (t.param.count != t.grad.count)
      throw Error(Status::invalid_argument, label + ": param.count = " + std::to_string(t.param.count) +
                                                " but grad.count = " + std::to_string(t.grad.count));
    if (t.param.dtype != t.grad.dtype)
      throw Error(Status::invalid_argument, label + ": param.dtype = " + dtype_name(t.param.dtype) +
                                                " but grad.dtype = " + dtype_name(t.grad.dtype));
    if (!t.name.empty())
      for (const auto& other : tensors)
        if (other.tensor.name == t.name)
          throw Error(Status::invalid_argument, label + ": name \"" + t.name + "\" is already used");
    add_span(t.param, true, label + " param");
    add_span(t.grad, false, label + " grad");
  }
  check_overlaps(std::move(spans));

  rule = &r;
  groups.push_back(group.options);
  lookahead.push_back(group.lookahead);
  sam.push_back(group.sam);
  sam_perturbed.push_back(false);
  for (size_t i = 0; i < group.tensors.size(); ++i) {
    TensorRecord rec;
    rec.tensor = std::move(group.tensors[i]);
    rec.group = uint32_t(g);
    rec.index_in_group = uint32_t(i);
    rec.scalars = r.initial_scalars(group.options);
    tensors.push_back(std::move(rec));
  }
}

std::vector<std::string> OptimizerState::slot_names() const {
  auto names = rule->slot_names();
  names.push_back("slow_param");
  names.push_back("sam_e");
  return names;
}

const TensorRecord& OptimizerState::tensor(size_t index) const {
  if (index >= tensors.size())
    throw Error(Status::not_found, "tensor index " + std::to_string(index) + " is out of range (the optimizer has " +
                                       std::to_string(tensors.size()) + " tensors)");
  return tensors[index];
}

OptimizerState::Slot OptimizerState::slot_index(size_t ti, std::string_view name) const {
  const TensorRecord& t = tensor(ti);
  const auto names = slot_names();
  const auto map = slots(t.group);
  std::string valid;
  for (size_t k = 0; k < names.size(); ++k) {
    if (map[k] < 0 || slot_elements(t, k) == 0) continue;
    if (names[k] == name) return {size_t(map[k]), slot_elements(t, k)};
    valid += names[k] + ", ";
  }
  for (const auto& scalar : rule->scalar_names()) valid += scalar + ", ";
  throw Error(Status::not_found, std::string(rule->name()) + " tensor " + std::to_string(ti) + " has no state \"" +
                                     std::string(name) + "\" (it has: " + valid + "step)");
}

}  // namespace detail

Optimizer::Optimizer(Context& context, std::vector<ParamGroup> groups)
    : state_(std::make_unique<detail::OptimizerState>()) {
  state_->ctx = context.state_;
  if (groups.empty()) throw Error(Status::invalid_argument, "Optimizer: groups is empty");
  for (auto& g : groups) state_->add_group(std::move(g));
}
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;
Optimizer::~Optimizer() = default;

void Optimizer::add_param_group(ParamGroup group) {
  state_->add_group(std::move(group));
}
size_t Optimizer::group_count() const {
  return state_->groups.size();
}
size_t Optimizer::tensor_count() const {
  return state_->tensors.size();
}

size_t Optimizer::tensor_index(std::string_view name) const {
  for (size_t i = 0; i < state_->tensors.size(); ++i)
    if (state_->tensors[i].tensor.name == name) return i;
  throw Error(Status::not_found, "no tensor named \"" + std::string(name) + "\"");
}

const RuleOptions& Optimizer::options(size_t group) const {
  if (group >= state_->groups.size())
    throw Error(Status::not_found, "group " + std::to_string(group) + " is out of range (the optimizer has " +
                                       std::to_string(state_->groups.size()) + " groups)");
  return state_->groups[group];
}

void Optimizer::set_options(size_t group, const RuleOptions& options) {
  const RuleOptions& current = this->options(group);
  const detail::Rule& rule = detail::rule_for(options);
  if (&rule != state_->rule)
    throw Error(Status::invalid_argument, "set_options: group " + std::to_string(group) + " uses " +
                                              state_->rule->name() + ", not " + rule.name());
  rule.validate(options, group);
  const auto map = detail::slot_map(rule, options, state_->lookahead[group], state_->sam[group]);
  if (state_->finalized && map != detail::slot_map(rule, current, state_->lookahead[group], state_->sam[group]))
    throw Error(Status::invalid_state, "set_options: group " + std::to_string(group) +
                                           ": the new options change which state exists (momentum on/off, amsgrad) "
                                           "after state was allocated");
  state_->groups[group] = options;
}

const LookaheadOptions& Optimizer::lookahead(size_t group) const {
  options(group);  // validates the index
  return state_->lookahead[group];
}

void Optimizer::set_lookahead(size_t group, const LookaheadOptions& la) {
  state_->set_wrappers(group, la, sam(group));
}

const SamOptions& Optimizer::sam(size_t group) const {
  options(group);  // validates the index
  return state_->sam[group];
}

void Optimizer::set_sam(size_t group, const SamOptions& sam) {
  state_->set_wrappers(group, lookahead(group), sam);
}

void Optimizer::set_lr(size_t group, double lr) {
  RuleOptions o = options(group);
  std::visit([&](auto& v) { v.lr = lr; }, o);
  set_options(group, o);
}

void Optimizer::record(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, false);
}

void Optimizer::record_sam_perturb(VkCommandBuffer cmd, const RecordOptions& options) {
  state_->record(cmd, options, true);
}

void Optimizer::step() {
  state_->submit(false);
}
void Optimizer::sam_perturb() {
  state_->submit(true);
}

std::vector<std::string> Optimizer::pass_names() const {
  std::vector<std::string> out;
  for (const auto& p : state_->passes) out.emplace_back(p.shader);
  return out;
}

std::vector<std::string> Optimizer::state_names(size_t tensor) const {
  const auto& t = state_->tensor(tensor);
  const auto names = state_->slot_names();
  const auto map = state_->slots(t.group);
  std::vector<std::string> out;
  for (size_t k = 0; k < names.size(); ++k)
    if (map[k] >= 0 && state_->slot_elements(t, k) > 0) out.push_back(names[k]);
  for (const auto& scalar : state_->rule->scalar_names()) out.push_back(scalar);
  out.push_back("step");
  return out;
}

std::vector<float> Optimizer::read_state(size_t tensor, std::string_view name) {
  auto& s = *state_;
  const auto& t = s.tensor(tensor);
  if (name == "step") return {float(t.step)};
  if (const int k = s.scalar_index(name); k >= 0) return {float(t.scalars[size_t(k)])};
  const size_t slot = s.slot_index(tensor, name).index;
  s.ensure_initialised();
  const auto& region = s.tensors[tensor].slots[slot];
  const auto& arena = *s.arenas[region.arena];
  std::vector<float> out(region.elements);
  s.ctx->read_buffer(arena.buffer, &arena, region.offset, out.data(), out.size() * sizeof(float));
  return out;
}

void Optimizer::write_state(size_t tensor, std::string_view name, std::span<const float> values) {
  auto& s = *state_;
  s.tensor(tensor);  // validates the index
  if (name == "step") {
    if (values.size() != 1 || !(values[0] >= 0) || values[0] != std::floor(values[0]) || values[0] > 16777216.0f)
      throw Error(Status::invalid_argument, "write_state(\"step\"): expects one non-negative whole number, got " +
                                                std::to_string(values.size()) + " values" +
                                                (values.empty() ? "" : " starting " + std::to_string(values[0])));
    s.tensors[tensor].step = uint64_t(values[0]);
    return;
  }
  if (const int k = s.scalar_index(name); k >= 0) {
    if (values.size() != 1 || !std::isfinite(values[0]))
      throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) +
                                                "\"): expects one finite value, got " + std::to_string(values.size()) +
                                                " values");
    s.tensors[tensor].scalars[size_t(k)] = values[0];
    return;
  }
  const auto [slot, elements] = s.slot_index(tensor, name);
  if (values.size() != elements)
    throw Error(Status::invalid_argument, "write_state(\"" + std::string(name) + "\"): values has " +
                                              std::to_string(values.size()) + " elements, tensor " +
                                              std::to_string(tensor) + "'s state has " + std::to_string(elements));
  s.ensure_initialised();
  const auto& region = s.tensors[tensor].slots[slot];
  const auto& arena = *s.arenas[region.arena];
  s.ctx->write_buffer(arena.buffer, &arena, region.offset, values.data(), values.size_bytes());
  s.tensors[tensor].fresh = false;
}

uint64_t Optimizer::step_count(size_t tensor) const {
  return state_->tensor(tensor).step;
}
uint32_t Optimizer::last_dispatch_count() const {
  return state_->last_dispatches;
}
bool Optimizer::uses_device_addresses() {
  state_->finalize();
  return state_->use_bda;
}

StepShape Optimizer::shape() {
  auto& s = *state_;
  s.finalize();
  StepShape out;
  for (const auto& b : s.plan.batches) {
    uint64_t n = 0;
    for (uint32_t i = b.seg_begin; i < b.seg_end; ++i) n += s.plan.segments[i].count;
    (b.careful ? out.careful_elements : out.fast_elements) += n;
  }
  out.batches = uint32_t(s.plan.batches.size());
  return out;
}
VkDeviceSize Optimizer::state_bytes() const {
  return state_->state_bytes;
}

uint32_t Optimizer::bytes_per_element(size_t group) const {
  options(group);  // validates the index
  const auto map = state_->slots(uint32_t(group));
  return uint32_t(4 * (3 + 2 * std::count_if(map.begin(), map.end(), [](int p) { return p >= 0; })));
}

}  // namespace vkoptim
