/* Calls of the C API's enum-typed functions with raw 32-bit values (c_enum_calls.c). */
#ifndef VKOPTIM_FUZZ_C_ENUM_CALLS_H
#define VKOPTIM_FUZZ_C_ENUM_CALLS_H

#include <vkoptim/vkoptim.h>

#ifdef __cplusplus
extern "C" {
#endif

vko_status fuzz_tensor_create_typed(vko_context* context, uint32_t dtype, const float* data, size_t count,
                                    vko_tensor** out);
vko_status fuzz_optimizer_create(vko_context* context, uint32_t rule, const vko_param_group* groups, size_t group_count,
                                 vko_optimizer** out);
vko_hyperparams fuzz_hyperparams_defaults(uint32_t rule);

#ifdef __cplusplus
}
#endif
#endif /* VKOPTIM_FUZZ_C_ENUM_CALLS_H */
