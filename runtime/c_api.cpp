// The C API: thin wrappers that turn exceptions into status codes and a per-thread message.
#include "vkoptim/vkoptim.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "vkoptim/vkoptim.hpp"

struct vko_context {
  std::shared_ptr<std::atomic<uint64_t>> validation_messages = std::make_shared<std::atomic<uint64_t>>(0);
  vkoptim::Context context;
};
struct vko_tensor {
  vkoptim::Tensor tensor;
};
struct vko_optimizer {
  vkoptim::Optimizer optimizer;
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

void require(bool ok, const char* message) {
  if (!ok) throw vkoptim::Error(vkoptim::Status::invalid_argument, message);
}

vkoptim::RuleOptions to_options(vko_rule rule, const vko_hyperparams& h) {
  require(h.struct_size >= sizeof(vko_hyperparams),
          "vko_hyperparams.struct_size is too small (use vko_hyperparams_defaults)");
  if (rule == VKO_RULE_SGD) {
    vkoptim::SgdOptions o;
    o.lr = h.lr;
    o.momentum = h.momentum;
    o.dampening = h.dampening;
    o.weight_decay = h.weight_decay;
    o.nesterov = h.nesterov != 0;
    o.maximize = h.maximize != 0;
    o.momentum_form = vkoptim::MomentumForm(h.momentum_form);
    return o;
  }
  require(rule == VKO_RULE_ADAM || rule == VKO_RULE_ADAMW, "rule is not a vko_rule value");
  vkoptim::AdamOptions o;
  o.lr = h.lr;
  o.beta1 = h.beta1;
  o.beta2 = h.beta2;
  o.eps = h.eps;
  o.weight_decay = h.weight_decay;
  o.amsgrad = h.amsgrad != 0;
  o.maximize = h.maximize != 0;
  o.decoupled_weight_decay = rule == VKO_RULE_ADAMW;
  return o;
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
    auto ctx = std::unique_ptr<vko_context>(new vko_context{counter, vkoptim::Context::create(o)});
    *out = ctx.release();
  });
}

void vko_context_destroy(vko_context* context) {
  delete context;
}

vko_status vko_context_device_name(const vko_context* context, char* name, size_t capacity) {
  return guarded([&] {
    require(context && name && capacity > 0, "context and name must not be NULL and capacity must be > 0");
    const std::string& n = context->context.caps().device_name;
    const size_t len = std::min(n.size(), capacity - 1);
    std::memcpy(name, n.data(), len);
    name[len] = '\0';
  });
}

uint64_t vko_context_validation_message_count(const vko_context* context) {
  return context ? context->validation_messages->load() : 0;
}

vko_status vko_tensor_create(vko_context* context, const float* data, size_t count, vko_tensor** out) {
  return guarded([&] {
    require(context && out, "context and out must not be NULL");
    *out = nullptr;
    auto t = data ? context->context.create_tensor(std::span<const float>(data, count))
                  : context->context.create_tensor(count);
    *out = new vko_tensor{std::move(t)};
  });
}

void vko_tensor_destroy(vko_tensor* tensor) {
  delete tensor;
}
size_t vko_tensor_count(const vko_tensor* tensor) {
  return tensor ? tensor->tensor.count() : 0;
}

vko_status vko_tensor_write(vko_tensor* tensor, const float* data, size_t count) {
  return guarded([&] {
    require(tensor && data, "tensor and data must not be NULL");
    tensor->tensor.upload(std::span<const float>(data, count));
  });
}

vko_status vko_tensor_read(const vko_tensor* tensor, float* out, size_t count) {
  return guarded([&] {
    require(tensor && out, "tensor and out must not be NULL");
    if (count != tensor->tensor.count())
      throw vkoptim::Error(vkoptim::Status::invalid_argument, "vko_tensor_read: count = " + std::to_string(count) +
                                                                  " but the tensor has " +
                                                                  std::to_string(tensor->tensor.count()));
    const auto values = tensor->tensor.download();
    std::memcpy(out, values.data(), count * sizeof(float));
  });
}

vko_hyperparams vko_hyperparams_defaults(vko_rule rule) {
  vko_hyperparams h{};
  h.struct_size = sizeof(vko_hyperparams);
  const vkoptim::AdamOptions adam = rule == VKO_RULE_ADAMW ? vkoptim::adamw_options() : vkoptim::AdamOptions{};
  const vkoptim::SgdOptions sgd;
  h.lr = rule == VKO_RULE_SGD ? sgd.lr : adam.lr;
  h.momentum = sgd.momentum;
  h.dampening = sgd.dampening;
  h.weight_decay = rule == VKO_RULE_SGD ? sgd.weight_decay : adam.weight_decay;
  h.beta1 = adam.beta1;
  h.beta2 = adam.beta2;
  h.eps = adam.eps;
  return h;
}

vko_status vko_optimizer_create(vko_context* context, vko_rule rule, const vko_param_group* groups, size_t group_count,
                                vko_optimizer** out) {
  return guarded([&] {
    require(context && out, "context and out must not be NULL");
    *out = nullptr;
    require(groups != nullptr || group_count == 0, "groups is NULL");
    std::vector<vkoptim::ParamGroup> gs;
    for (size_t g = 0; g < group_count; ++g) {
      vkoptim::ParamGroup pg;
      pg.options = to_options(rule, groups[g].hyper);
      require(groups[g].count == 0 || (groups[g].params && groups[g].grads), "vko_param_group params/grads is NULL");
      for (size_t i = 0; i < groups[g].count; ++i) {
        if (!groups[g].params[i] || !groups[g].grads[i])
          throw vkoptim::Error(vkoptim::Status::invalid_argument, "group " + std::to_string(g) + " tensor " +
                                                                      std::to_string(i) + ": param or grad is NULL");
        pg.tensors.push_back({groups[g].params[i]->tensor.range(), groups[g].grads[i]->tensor.range(), ""});
      }
      gs.push_back(std::move(pg));
    }
    *out = new vko_optimizer{vkoptim::Optimizer(context->context, std::move(gs))};
  });
}

void vko_optimizer_destroy(vko_optimizer* optimizer) {
  delete optimizer;
}

vko_status vko_optimizer_set_lr(vko_optimizer* optimizer, size_t group, double lr) {
  return guarded([&] {
    require(optimizer != nullptr, "optimizer is NULL");
    optimizer->optimizer.set_lr(group, lr);
  });
}

vko_status vko_optimizer_set_hyperparams(vko_optimizer* optimizer, size_t group, const vko_hyperparams* hyper) {
  return guarded([&] {
    require(optimizer && hyper, "optimizer and hyper must not be NULL");
    const auto& current = optimizer->optimizer.options(group);
    vko_rule rule = VKO_RULE_SGD;
    if (const auto* adam = std::get_if<vkoptim::AdamOptions>(&current))
      rule = adam->decoupled_weight_decay ? VKO_RULE_ADAMW : VKO_RULE_ADAM;
    optimizer->optimizer.set_options(group, to_options(rule, *hyper));
  });
}

vko_status vko_optimizer_step(vko_optimizer* optimizer) {
  return guarded([&] {
    require(optimizer != nullptr, "optimizer is NULL");
    optimizer->optimizer.step();
  });
}

vko_status vko_optimizer_read_state(vko_optimizer* optimizer, size_t tensor, const char* name, float* out,
                                    size_t count) {
  return guarded([&] {
    require(optimizer && name && out, "optimizer, name and out must not be NULL");
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
    require(optimizer && name && values, "optimizer, name and values must not be NULL");
    optimizer->optimizer.write_state(tensor, name, std::span<const float>(values, count));
  });
}

}  // extern "C"
