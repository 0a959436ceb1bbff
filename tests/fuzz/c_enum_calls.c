/* The C API's enum-typed parameters called the way a C caller (or Python ctypes) calls them: any
 * 32-bit value converts to the enum in C, which C++ code cannot do without undefined behaviour
 * for values outside the enumeration's range. */
#include "c_enum_calls.h"

vko_status fuzz_tensor_create_typed(vko_context* context, uint32_t dtype, const float* data, size_t count,
                                    vko_tensor** out) {
  return vko_tensor_create_typed(context, (vko_dtype)dtype, data, count, out);
}

vko_status fuzz_optimizer_create(vko_context* context, uint32_t rule, const vko_param_group* groups, size_t group_count,
                                 vko_optimizer** out) {
  return vko_optimizer_create(context, (vko_rule)rule, groups, group_count, out);
}

vko_hyperparams fuzz_hyperparams_defaults(uint32_t rule) {
  return vko_hyperparams_defaults((vko_rule)rule);
}
