/* vkoptim C API: optimizer update rules as Vulkan compute shaders, for any language with a C FFI
 * (Python ctypes, Rust, C#). Plain structs, status codes, a per-thread last-error message.
 * No exception crosses this boundary.
 *
 * Structs are zero-initialisable and only grow: always start from the matching vko_*_defaults()
 * call (or memset to 0 and set struct_size) so new fields get their defaults.
 *
 * Handles and lifetimes: every call checks its handles against the table of live ones; a NULL,
 * destroyed or never-created handle gets VKO_INVALID_ARGUMENT (vko_*_destroy of one is a no-op).
 * Objects keep what they use alive: a tensor destroyed while an optimizer steps it stays on the
 * device until that optimizer is destroyed (only the handle is gone); tensors and optimizers
 * keep their context's device objects alive after vko_context_destroy. Sizes whose byte counts
 * overflow are refused (VKO_INVALID_ARGUMENT or, past the device's memory, VKO_OUT_OF_MEMORY)
 * before anything is allocated.
 *
 * Threads: the error message is per thread. Different objects may be used from different
 * threads at once, also objects of one context (its internals are locked); one object is used
 * by one thread at a time, and destroying an object while another thread uses it is an error. */
#ifndef VKOPTIM_H
#define VKOPTIM_H

#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan_core.h>

// Exported when building the library (VKOPTIM_BUILDING), imported when consuming it.
#if defined(_WIN32)
#if defined(VKOPTIM_BUILDING)
#define VKO_API __declspec(dllexport)
#else
#define VKO_API __declspec(dllimport)
#endif
#elif defined(VKOPTIM_BUILDING)
#define VKO_API __attribute__((visibility("default")))
#else
#define VKO_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vko_status {
  VKO_OK = 0,
  VKO_INVALID_ARGUMENT = 1,
  VKO_UNSUPPORTED = 2,
  VKO_OUT_OF_MEMORY = 3,
  VKO_VULKAN_ERROR = 4,
  VKO_INVALID_STATE = 5,
  VKO_NOT_FOUND = 6,
  VKO_INTERNAL_ERROR = 7,
  VKO_IO_ERROR = 8
} vko_status;

typedef struct vko_context vko_context;
typedef struct vko_tensor vko_tensor;
typedef struct vko_optimizer vko_optimizer;

/* The message of the last failed call on this thread ("" when none). Valid until the next call. */
VKO_API const char* vko_last_error(void);

/* ---- Context ---------------------------------------------------------------------------- */
typedef struct vko_context_desc {
  uint32_t struct_size;       /* sizeof(vko_context_desc) */
  int32_t device_index;       /* -1: automatic (VKOPTIM_DEVICE, then discrete > integrated > CPU) */
  uint32_t enable_validation; /* 1: VK_LAYER_KHRONOS_validation with synchronization validation */
  uint32_t force_staging;     /* 1: never map device memory, copy through staging buffers */
  uint32_t addressing;        /* 0 automatic, 1 buffer device addresses, 2 descriptors */
} vko_context_desc;

VKO_API vko_context_desc vko_context_desc_defaults(void);
VKO_API vko_status vko_context_create(const vko_context_desc* desc, vko_context** out);
/* Adopts a host engine's device (vkoptim::DeviceBinding): every handle is borrowed and must
 * outlive the context and everything made from it. The host declares the features it enabled
 * (Vulkan cannot be asked). desc may be NULL; its addressing and force_staging apply, while
 * device_index and enable_validation belong to vko_context_create (an adopted device carries
 * what its host enabled): other values than the defaults are refused. */
typedef struct vko_device_binding {
  uint32_t struct_size; /* sizeof(vko_device_binding) */
  VkInstance instance;
  VkPhysicalDevice physical_device;
  VkDevice device;
  VkQueue queue; /* a queue with compute, used only by calls that submit */
  uint32_t queue_family_index;
  uint32_t api_version;                             /* the instance's VkApplicationInfo::apiVersion */
  uint32_t buffer_device_address_enabled;           /* VkPhysicalDeviceVulkan12Features::bufferDeviceAddress */
  uint32_t shader_int64_enabled;                    /* VkPhysicalDeviceFeatures::shaderInt64 */
  uint32_t full_subgroups_enabled;                  /* subgroupSizeControl and computeFullSubgroups (1.3) */
  PFN_vkGetInstanceProcAddr get_instance_proc_addr; /* NULL: the loader's */
  PFN_vkGetDeviceProcAddr get_device_proc_addr;     /* NULL: the loader's */
  /* The host's lock around vkoptim's vkQueueSubmit / vkQueueWaitIdle (both or neither). */
  void (*lock_queue)(void* user);
  void (*unlock_queue)(void* user);
  void* queue_lock_user;
} vko_device_binding;
VKO_API vko_device_binding vko_device_binding_defaults(void);
VKO_API vko_status vko_context_adopt(const vko_device_binding* binding, const vko_context_desc* desc,
                                     vko_context** out);
/* Destroys the context handle; its tensors and optimizers stay usable until they are destroyed
 * (they hold the device objects), but no new object can be made from it. */
VKO_API void vko_context_destroy(vko_context* context);
/* Copies the device name (NUL-terminated, truncated to capacity). */
VKO_API vko_status vko_context_device_name(const vko_context* context, char* name, size_t capacity);
/* Number of validation messages reported so far (always 0 without enable_validation). */
VKO_API uint64_t vko_context_validation_message_count(const vko_context* context);

/* ---- Tensors (owned by vkoptim) ----------------------------------------------------------- */
/* U32: indices (a sparse table's rows); created with data NULL, written with vko_tensor_write_indices. */
typedef enum vko_dtype { VKO_DTYPE_F32 = 0, VKO_DTYPE_F16 = 1, VKO_DTYPE_BF16 = 2, VKO_DTYPE_U32 = 3 } vko_dtype;
/* A tensor of `count` floats, initialised from `data` (NULL: zeros). */
VKO_API vko_status vko_tensor_create(vko_context* context, const float* data, size_t count, vko_tensor** out);
/* The same in a storage type: floats are rounded to nearest even on the way in (vko_tensor_write)
 * and converted exactly on the way out (vko_tensor_read). */
VKO_API vko_status vko_tensor_create_typed(vko_context* context, vko_dtype dtype, const float* data, size_t count,
                                           vko_tensor** out);
/* Destroys the handle. The tensor's buffer lives on while an optimizer that steps it exists. */
/* A tensor on the host's own buffer (vkoptim::BufferRange): `count` elements of `dtype` from byte
 * `offset` of `buffer` (created with VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, and with
 * SHADER_DEVICE_ADDRESS_BIT when device_address = 1; buffer_size its VkBufferCreateInfo::size).
 * The buffer is borrowed: it must outlive every optimizer stepping the tensor. The host writes
 * and reads it: vko_tensor_write and vko_tensor_read refuse such a tensor (VKO_INVALID_STATE). */
typedef struct vko_buffer_range {
  uint32_t struct_size; /* sizeof(vko_buffer_range) */
  VkBuffer buffer;
  VkDeviceSize offset;
  size_t count;
  uint32_t dtype; /* vko_dtype */
  VkDeviceSize buffer_size;
  uint32_t device_address;
} vko_buffer_range;
VKO_API vko_status vko_tensor_from_buffer(vko_context* context, const vko_buffer_range* range, vko_tensor** out);
VKO_API void vko_tensor_destroy(vko_tensor* tensor);
VKO_API size_t vko_tensor_count(const vko_tensor* tensor);
/* Marks the tensor as 2-D, rows x count/rows (row-major), for the matrix rules (Adafactor, Muon).
 * 0: 1-D (the default). Takes effect for optimizers created afterwards. */
VKO_API vko_status vko_tensor_set_rows(vko_tensor* tensor, uint64_t rows);
/* The name the tensor's state goes by in checkpoints ("state.<name>.exp_avg"; without one, its
 * index in the optimizer). Read when an optimizer is created; NULL or "" clears it. */
VKO_API vko_status vko_tensor_set_name(vko_tensor* tensor, const char* name);
VKO_API vko_status vko_tensor_write(vko_tensor* tensor, const float* data, size_t count);
VKO_API vko_status vko_tensor_read(const vko_tensor* tensor, float* out, size_t count);
/* The same for U32 tensors (copied as they are); vko_tensor_write and vko_tensor_read refuse them. */
VKO_API vko_status vko_tensor_write_indices(vko_tensor* tensor, const uint32_t* data, size_t count);
VKO_API vko_status vko_tensor_read_indices(const vko_tensor* tensor, uint32_t* out, size_t count);

/* ---- Optimizers ---------------------------------------------------------------------------- */
typedef enum vko_rule {
  VKO_RULE_SGD = 0,
  VKO_RULE_ADAM = 1,
  VKO_RULE_ADAMW = 2,
  VKO_RULE_ADAGRAD = 3,
  VKO_RULE_RMSPROP = 4,
  VKO_RULE_ADADELTA = 5,
  VKO_RULE_ADAMAX = 6,
  VKO_RULE_NADAM = 7,
  VKO_RULE_RADAM = 8,
  VKO_RULE_ASGD = 9,
  VKO_RULE_RPROP = 10,
  VKO_RULE_LION = 11,
  VKO_RULE_SCHEDULE_FREE_ADAMW = 12,
  VKO_RULE_LAMB = 13,
  VKO_RULE_ADAFACTOR = 14, /* eps is its eps1; 2-D tensors via vko_tensor_set_rows */
  VKO_RULE_ADOPT = 15,
  VKO_RULE_FTRL = 16, /* initial_accumulator_value as Adagrad's */
  VKO_RULE_STABLE_ADAMW = 17,
  VKO_RULE_ADEMAMIX = 18, /* alpha is its mixing coefficient */
  VKO_RULE_MUON = 19      /* 2-D parameters; use_muon = 0 groups run AdamW (beta1, beta2, adam_eps) */
} vko_rule;

typedef enum vko_momentum_form { VKO_MOMENTUM_TORCH = 0, VKO_MOMENTUM_EMA = 1 } vko_momentum_form;
/* Storage of every state slot, and rounding of 16-bit writes (vkoptim::PrecisionOptions). */
typedef enum vko_state_dtype {
  VKO_STATE_F32 = 0,
  VKO_STATE_BF16 = 2,
  VKO_STATE_Q8 = 3,
  VKO_STATE_Q4 = 4
} vko_state_dtype;
typedef enum vko_rounding { VKO_ROUND_NEAREST_EVEN = 0, VKO_ROUND_STOCHASTIC = 1 } vko_rounding;
/* The storage of one state slot by name, e.g. {"exp_avg_sq", VKO_STATE_BF16}, over state_dtype. */
typedef struct vko_slot_dtype {
  const char* name;
  uint32_t dtype; /* vko_state_dtype */
} vko_slot_dtype;

/* Hyperparameters of one group, named as in include/vkoptim/rules.hpp (which gives each rule's
 * formula). Start from vko_hyperparams_defaults(rule): a field the rule does not use must keep
 * that value, else creation (and vko_optimizer_set_hyperparams) fails with VKO_INVALID_ARGUMENT
 * naming the field, so that no setting is silently ignored. A caller built against an older,
 * shorter struct gets the defaults for the fields it lacks. The storage policy, Lookahead and
 * SAM fields apply to every rule. */
typedef struct vko_hyperparams {
  uint32_t struct_size; /* sizeof(vko_hyperparams) */
  double lr;
  double momentum;
  double dampening;
  double weight_decay;
  double beta1;
  double beta2;
  double eps;
  uint32_t nesterov;
  uint32_t maximize;
  uint32_t amsgrad;
  uint32_t momentum_form; /* vko_momentum_form */
  /* Added with the further rules. */
  double alpha;                            /* RMSprop smoothing, ASGD power */
  double rho;                              /* Adadelta */
  double lr_decay;                         /* Adagrad */
  double initial_accumulator_value;        /* Adagrad */
  double momentum_decay;                   /* NAdam */
  double lambd;                            /* ASGD */
  double t0;                               /* ASGD */
  double etaminus, etaplus;                /* Rprop */
  double step_size_min, step_size_max;     /* Rprop */
  double r, weight_lr_power;               /* Schedule-Free AdamW */
  double min_trust_ratio, max_trust_ratio; /* LAMB (max 0: no clamp) */
  uint32_t warmup_steps;                   /* Schedule-Free AdamW */
  uint32_t decay_at_z;                     /* Schedule-Free AdamW */
  uint32_t centered;                       /* RMSprop */
  uint32_t eps_in_sqrt;                    /* RMSprop */
  uint32_t decoupled_weight_decay;         /* all rules with L2 decay (AdamW: always) */
  uint32_t bias_correction;                /* Adam, AdamW, LAMB (default 1) */
  double beta2_decay;                      /* Adafactor */
  double eps2;                             /* Adafactor */
  double d;                                /* Adafactor: update clipping threshold */
  /* Added with mixed precision: the group's storage policy, fixed when the optimizer is created
   * (vko_optimizer_set_hyperparams refuses a different one with VKO_INVALID_STATE). */
  uint32_t state_dtype;       /* vko_state_dtype of every state slot */
  uint32_t master_weights;    /* keep fp32 copies ("master_param") of 16-bit parameters */
  uint32_t rounding;          /* vko_rounding */
  uint64_t seed;              /* stochastic rounding */
  uint64_t min_8bit_elements; /* smaller tensors keep 8-bit-policy slots in f32 (default 4096) */
  /* Per-slot exceptions to state_dtype (read during vko_optimizer_create and
   * vko_optimizer_set_hyperparams only; NULL when slot_dtype_count is 0). */
  const vko_slot_dtype* slot_dtypes;
  size_t slot_dtype_count;
  /* Added with the parity switches and wrappers. */
  double eps_root;            /* Adam, AdamW: optax's sqrt(v/bc2 + eps_root) */
  uint32_t amsgrad_max;       /* Adam, AdamW: vkoptim::AmsgradMax (0 raw, torch; 1 bias-corrected, optax) */
  uint32_t decay_order;       /* Adam, AdamW: vkoptim::DecayOrder (0 before the update; 1 after, bitsandbytes) */
  uint32_t dampen_first_step; /* SGD: MLX's first step b = (1 - dampening) g */
  uint32_t lookahead_k;       /* Lookahead around the rule every k steps (0: off) */
  double lookahead_alpha;     /* Lookahead's slow-weight step (default 0.5) */
  double sam_rho;             /* SAM's neighbourhood (0: off; see vko_optimizer_sam_perturb) */
  /* Added with LAMB's Apex parity switch. */
  uint32_t use_nvlamb; /* LAMB (default 1): 0 takes plain lr steps in groups without weight decay (Apex) */
  /* Added with ADOPT. */
  uint32_t use_clipping; /* ADOPT (default 1): clip the normalised gradient to (t-1)^clip_exponent */
  double clip_exponent;  /* ADOPT (default 0.25) */
  /* Added with FTRL. */
  double learning_rate_power; /* FTRL (default -0.5) */
  double l1, l2;              /* FTRL regularisation strengths */
  double l2_shrinkage;        /* FTRL */
  double beta;                /* FTRL */
  /* Added with AdEMAMix. */
  double beta3;          /* AdEMAMix: the slow EMA's factor (default 0.9999) */
  uint32_t beta3_warmup; /* AdEMAMix: steps of beta3's half-life warmup (0: none) */
  uint32_t alpha_warmup; /* AdEMAMix: steps of alpha's linear warmup (0: none) */
  /* Added with Kahan summation: part of the storage policy (vkoptim::PrecisionOptions). */
  uint32_t kahan_summation; /* 16-bit parameters keep a compensation instead of fp32 masters */
  /* Added with the EMA of the parameters (vkoptim::EmaOptions; state "ema"). */
  double ema_decay;               /* 0: no EMA */
  uint32_t ema_warmup;            /* vkoptim::EmaWarmup: 0 none (swa_utils), 1 ratio (diffusers), 2 power */
  uint32_t ema_update_after_step; /* steps during which the EMA copies the parameter */
  double ema_inv_gamma;           /* power warmup (default 1) */
  double ema_power;               /* power warmup (default 2/3) */
  double ema_min_decay;           /* ratio and power warmups (default 0) */
  /* Added with cautious steps. */
  uint32_t cautious; /* SGD (with momentum), Adam, AdamW, Lion: mask the update where it disagrees with g */
  /* Added with Muon (vkoptim::MuonOptions). */
  double ns_a, ns_b, ns_c; /* Newton-Schulz coefficients (3.4445, -4.775, 2.0315) */
  uint32_t ns_steps;       /* Newton-Schulz iterations (default 5) */
  uint32_t adjust_lr;      /* vkoptim::MuonLrAdjust: 0 original, 1 match_rms_adamw, 2 spectral_unclamped */
  uint32_t ns_bf16;        /* Newton-Schulz on bf16 values (default 1, torch); 0: float32 */
  uint32_t use_muon;       /* default 1; 0: the group runs AdamW (MuonWithAuxAdam) */
  double adam_eps;         /* AdamW's eps in use_muon = 0 groups (default 1e-10) */
  /* Added with rank-1 normalised 4-bit second moments: part of the storage policy. */
  uint32_t rank1_second_moment; /* vkoptim::PrecisionOptions::rank1_second_moment */
} vko_hyperparams;

/* The rule's defaults (torch.optim's where torch has the rule; AdamW: weight_decay = 1e-2). */
VKO_API vko_hyperparams vko_hyperparams_defaults(vko_rule rule);

typedef struct vko_param_group {
  vko_hyperparams hyper;
  vko_tensor* const* params; /* count entries */
  vko_tensor* const* grads;  /* count entries, same sizes as params */
  size_t count;
} vko_param_group;

/* An optimizer over `group_count` groups. Tensors are numbered 0.. in group order. */
VKO_API vko_status vko_optimizer_create(vko_context* context, vko_rule rule, const vko_param_group* groups,
                                        size_t group_count, vko_optimizer** out);
VKO_API void vko_optimizer_destroy(vko_optimizer* optimizer);
VKO_API vko_status vko_optimizer_set_lr(vko_optimizer* optimizer, size_t group, double lr);
VKO_API vko_status vko_optimizer_set_hyperparams(vko_optimizer* optimizer, size_t group, const vko_hyperparams* hyper);
/* Records, submits and waits for one step. */
VKO_API vko_status vko_optimizer_step(vko_optimizer* optimizer);
/* State by torch's name ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "step").
 * `count` must equal the tensor's element count (1 for "step"). */
VKO_API vko_status vko_optimizer_read_state(vko_optimizer* optimizer, size_t tensor, const char* name, float* out,
                                            size_t count);
VKO_API vko_status vko_optimizer_write_state(vko_optimizer* optimizer, size_t tensor, const char* name,
                                             const float* values, size_t count);
/* Bytes of state the optimizer keeps (slots, master weights, 8-bit absmax; known before the first
 * step), and per parameter element. Either pointer may be NULL. */
VKO_API vko_status vko_optimizer_memory(const vko_optimizer* optimizer, uint64_t* state_bytes,
                                        double* state_bytes_per_element);

/* How a step is laid out (vkoptim::StepShape): elements on the fast and careful paths, batches
 * (dispatches per pass), groups whose 8-bit blocks reduce within subgroups. */
typedef struct vko_step_shape {
  uint64_t fast_elements;
  uint64_t careful_elements;
  uint32_t batches;
  uint32_t subgroup_reduced_groups;
} vko_step_shape;
VKO_API vko_status vko_optimizer_shape(vko_optimizer* optimizer, vko_step_shape* out);

/* SAM's first half (vkoptim::Optimizer::sam_perturb) for the groups with sam_rho > 0: p += e; the
 * next step restores p before its update. Submits and waits. */
VKO_API vko_status vko_optimizer_sam_perturb(vko_optimizer* optimizer);

/* Checkpoints (vkoptim::Optimizer::save / load; README "Checkpoints"): the whole optimizer in the
 * safetensors format. A tensor's state goes by its name (vko_tensor_set_name), else by its index
 * ("state.0.exp_avg", as torch's state_dict). save replaces `path` atomically; load checks the
 * whole file before it changes anything. convert_storage: 1 converts a checkpoint of another
 * storage policy (fp32, bf16, 8-bit state) through float32; 0 refuses it. File errors return
 * VKO_IO_ERROR. */
VKO_API vko_status vko_optimizer_save(vko_optimizer* optimizer, const char* path);
VKO_API vko_status vko_optimizer_load(vko_optimizer* optimizer, const char* path, uint32_t convert_storage);
/* The checkpoint in memory: *size receives its byte count; with `out` non-NULL, the bytes are
 * written there too (capacity >= *size, else VKO_INVALID_ARGUMENT and nothing written). */
VKO_API vko_status vko_optimizer_save_to_memory(vko_optimizer* optimizer, uint8_t* out, size_t capacity, size_t* size);
VKO_API vko_status vko_optimizer_load_from_memory(vko_optimizer* optimizer, const uint8_t* data, size_t size,
                                                  uint32_t convert_storage);

/* ---- The whole step on the device (include/vkoptim/optimizer.hpp, schedule.hpp) ------------ */
/* The context's Vulkan objects, so that a C engine can record vkoptim's steps into its own
 * command buffers: pools on queue_family_index, submitted to queue (externally synchronized with
 * the context: do not submit to it from two threads at once). */
typedef struct vko_vulkan_handles {
  VkInstance instance;
  VkPhysicalDevice physical_device;
  VkDevice device;
  VkQueue queue;
  uint32_t queue_family_index;
} vko_vulkan_handles;
VKO_API vko_status vko_context_vulkan_handles(const vko_context* context, vko_vulkan_handles* out);

/* vkoptim::StepPart: a replayable step with gradient clipping or the loss scaler, or a shard's step
 * or SAM perturbation, recorded in parts around the ranks' combined sums (README "Sharded state"). */
typedef enum vko_step_part {
  VKO_STEP_WHOLE = 0,
  VKO_STEP_GRAD_SUMS = 1,
  VKO_STEP_FINISH = 2,
  VKO_STEP_TENSOR_SUMS = 3,
  VKO_STEP_FACTOR_SUMS = 4
} vko_step_part;

/* RecordOptions: what vko_optimizer_record does at its edges, and replay (record once, submit once
 * per step: the device counts steps and computes each step's scalars). */
typedef struct vko_record_options {
  uint32_t struct_size;   /* sizeof(vko_record_options) */
  uint32_t entry_barrier; /* default 1 */
  uint32_t exit_barrier;  /* default 1 */
  VkPipelineStageFlags exit_stage_mask;
  VkAccessFlags exit_access_mask;
  VkQueryPool timestamp_pool; /* VK_NULL_HANDLE: none */
  uint32_t first_query;
  uint32_t replay; /* 1: a replayable step */
  uint32_t part;   /* vko_step_part: the part of a step (or SAM perturbation) in parts; default whole */
} vko_record_options;
VKO_API vko_record_options vko_record_options_defaults(void);
/* Allocates and initialises the state (one submission, waited for). */
VKO_API vko_status vko_optimizer_initialize(vko_optimizer* optimizer);
/* Records one step into `cmd` (recording, from a pool of the context's queue family); see
 * Optimizer::record for the contract. options may be NULL (the defaults). */
VKO_API vko_status vko_optimizer_record(vko_optimizer* optimizer, VkCommandBuffer cmd,
                                        const vko_record_options* options);
/* SAM's first half recorded into `cmd` (Optimizer::record_sam_perturb; same contract). */
VKO_API vko_status vko_optimizer_record_sam_perturb(vko_optimizer* optimizer, VkCommandBuffer cmd,
                                                    const vko_record_options* options);

/* A group's learning-rate schedule (vkoptim::LrSchedule), one kind per struct; fields the kind does
 * not use are ignored. Start from vko_schedule_defaults(kind): torch's defaults per kind. */
typedef enum vko_schedule_kind {
  VKO_SCHEDULE_CONSTANT = 0,
  VKO_SCHEDULE_INVERSE_TIME = 1,          /* base / (1 + decay_rate s) */
  VKO_SCHEDULE_EXPONENTIAL = 2,           /* torch ExponentialLR: gamma */
  VKO_SCHEDULE_INVERSE_TIME_SQUARED = 3,  /* base / (1 + decay_rate s)^2 */
  VKO_SCHEDULE_STEP = 4,                  /* StepLR: step_size, gamma */
  VKO_SCHEDULE_MULTI_STEP = 5,            /* MultiStepLR: milestones, gamma */
  VKO_SCHEDULE_CONSTANT_FACTOR = 6,       /* ConstantLR: factor, total_iters */
  VKO_SCHEDULE_LINEAR = 7,                /* LinearLR: start_factor, end_factor, total_iters */
  VKO_SCHEDULE_POLYNOMIAL = 8,            /* PolynomialLR: total_iters, power */
  VKO_SCHEDULE_COSINE_ANNEALING = 9,      /* CosineAnnealingLR: t_max, eta_min */
  VKO_SCHEDULE_COSINE_WARM_RESTARTS = 10, /* CosineAnnealingWarmRestarts: t_0, t_mult, eta_min */
  VKO_SCHEDULE_ONE_CYCLE = 11,            /* OneCycleLR: max_lr, total_steps, pct_start, anneal_strategy,
                                             three_phase, div_factor, final_div_factor, cycle_momentum,
                                             base_momentum, max_momentum */
  VKO_SCHEDULE_CYCLIC = 12,               /* CyclicLR: base_lr, max_lr, step_size_up, step_size_down, mode,
                                             gamma, cycle_momentum, base_momentum, max_momentum */
  VKO_SCHEDULE_COSINE_WITH_WARMUP = 13,   /* num_warmup_steps, num_training_steps, num_cycles, min_lr_ratio */
  VKO_SCHEDULE_WARMUP_STABLE_DECAY = 14,  /* num_warmup_steps, num_stable_steps, num_decay_steps,
                                             warmup_shape, decay_shape, num_cycles, min_lr_ratio */
  VKO_SCHEDULE_SEQUENTIAL = 15,           /* SequentialLR: pieces, milestones (piece_count - 1) */
  VKO_SCHEDULE_CHAINED = 16               /* ChainedScheduler: pieces */
} vko_schedule_kind;
typedef struct vko_schedule vko_schedule;
struct vko_schedule {
  uint32_t struct_size; /* sizeof(vko_schedule) */
  uint32_t kind;        /* vko_schedule_kind */
  double decay_rate;
  double gamma;
  uint32_t step_size;
  const uint32_t* milestones; /* multi_step, sequential */
  size_t milestone_count;
  double factor;
  double start_factor, end_factor;
  uint32_t total_iters;
  double power;
  uint32_t t_max, t_0, t_mult;
  double eta_min;
  double base_lr, max_lr;
  uint32_t total_steps;
  double pct_start;
  uint32_t anneal_strategy; /* 0 cos, 1 linear */
  uint32_t three_phase;
  double div_factor, final_div_factor;
  uint32_t cycle_momentum;
  double base_momentum, max_momentum;
  uint32_t step_size_up, step_size_down;
  uint32_t mode; /* 0 triangular, 1 triangular2, 2 exp_range */
  uint32_t num_warmup_steps, num_training_steps, num_stable_steps, num_decay_steps;
  double num_cycles, min_lr_ratio;
  uint32_t warmup_shape, decay_shape; /* 0 linear, 1 cosine, 2 1-sqrt */
  const vko_schedule* pieces;         /* sequential, chained */
  size_t piece_count;
};
VKO_API vko_schedule vko_schedule_defaults(vko_schedule_kind kind);
VKO_API vko_status vko_optimizer_set_schedule(vko_optimizer* optimizer, size_t group, const vko_schedule* schedule);

/* Gradient clipping (vkoptim::GradClip) and the loss scaler (GradScalerOptions), on the device in
 * replayable steps; vko_optimizer_step switches to them. */
typedef struct vko_grad_clip {
  uint32_t struct_size;        /* sizeof(vko_grad_clip) */
  double max_norm;             /* clip_grad_norm_; 0: off */
  double norm_type;            /* p > 0, or INFINITY (default 2) */
  uint32_t error_if_nonfinite; /* a non-finite norm skips the step; vko_optimizer_step fails */
  double clip_value;           /* clip_grad_value_; 0: off */
  const size_t* groups;        /* the groups clipped; NULL / 0: every group */
  size_t group_count;
} vko_grad_clip;
VKO_API vko_grad_clip vko_grad_clip_defaults(void);
VKO_API vko_status vko_optimizer_set_grad_clip(vko_optimizer* optimizer, const vko_grad_clip* clip);
typedef struct vko_grad_scaler {
  uint32_t struct_size; /* sizeof(vko_grad_scaler) */
  uint32_t enabled;
  double init_scale, growth_factor, backoff_factor; /* 65536, 2, 0.5 */
  uint32_t growth_interval;                         /* 2000 */
} vko_grad_scaler;
VKO_API vko_grad_scaler vko_grad_scaler_defaults(void);
VKO_API vko_status vko_optimizer_set_grad_scaler(vko_optimizer* optimizer, const vko_grad_scaler* scaler);
/* The current loss scale (waits for the queue), and where it lives for the engine's backward to
 * bind (a float at *offset of *buffer). */
VKO_API vko_status vko_optimizer_loss_scale(vko_optimizer* optimizer, float* out);
VKO_API vko_status vko_optimizer_loss_scale_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset);
typedef struct vko_step_report {
  uint32_t step;
  float total_norm, clip_coef, scale;
  uint32_t found_inf, skipped, nonfinite_norm, growth_tracker;
} vko_step_report;
/* The reports of the last (at most 16) steps with gradient control, oldest first (see
 * Optimizer::step_reports): up to `capacity` of the newest into out, their number in *count. */
VKO_API vko_status vko_optimizer_step_reports(const vko_optimizer* optimizer, vko_step_report* out, size_t capacity,
                                              size_t* count);

/* ---- Sharded state (include/vkoptim/shard.hpp, README "Sharded state") --------------------- */
/* The model as one flat space of tensors cut into one shard per rank; each rank's optimizer keeps
 * and updates its shard's state. The engine communicates (reduce-scatter, all-gather, the sums
 * below); vkoptim does not. */
typedef struct vko_shard_layout vko_shard_layout;
typedef struct vko_flat_tensor {
  const char* name; /* unique; pieces and checkpoint keys are named after it */
  uint64_t count;
  uint64_t rows; /* 2-D (rows x count/rows); 0: 1-D */
  uint32_t group;
} vko_flat_tensor;
/* A layout of the tensors (the flat space is their concatenation, in this order) in `ranks` shards:
 * shard r is [cuts[r], cuts[r + 1]) (ranks + 1 entries), or with cuts NULL, shards of about equal
 * size (ShardLayout::even). Refused naming the problem: overlaps, gaps, cuts inside a tensor off
 * the 256-element alignment, empty shards, names used twice, ... */
VKO_API vko_status vko_shard_layout_create(const vko_flat_tensor* tensors, size_t tensor_count, uint32_t ranks,
                                           const uint64_t* cuts, vko_shard_layout** out);
/* Shards cut only between tensors (ShardLayout::whole_tensors: each cut at the tensor boundary
 * nearest the even cut): Muon's matrices whole, with no update exchange. */
VKO_API vko_status vko_shard_layout_create_whole_tensors(const vko_flat_tensor* tensors, size_t tensor_count,
                                                         uint32_t ranks, vko_shard_layout** out);
VKO_API vko_status vko_shard_layout_from_json(const char* json, vko_shard_layout** out);
VKO_API void vko_shard_layout_destroy(vko_shard_layout* layout);
/* The layout's index JSON (saved next to the ranks' checkpoints): *size receives its length plus
 * the terminating NUL; with out non-NULL it is written there (capacity >= *size). */
VKO_API vko_status vko_shard_layout_json(const vko_shard_layout* layout, char* out, size_t capacity, size_t* size);
/* Rank count, tensor count and flat size (any pointer may be NULL), and shard `rank`'s range. */
VKO_API vko_status vko_shard_layout_info(const vko_shard_layout* layout, uint32_t* ranks, size_t* tensors,
                                         uint64_t* total);
VKO_API vko_status vko_shard_layout_shard(const vko_shard_layout* layout, uint32_t rank, uint64_t* begin,
                                          uint64_t* end);
/* Shard `rank`'s optimizer (shard_groups): hypers[g] is group g's hyperparameters (one per group
 * the layout's tensors name); param and grad are the shard's flat tensors (element 0 is the
 * shard's first element; at least the shard's size). Its tensors are the shard's pieces, by
 * group then flat order. */
VKO_API vko_status vko_optimizer_create_shard(vko_context* context, vko_rule rule, const vko_shard_layout* layout,
                                              uint32_t rank, const vko_hyperparams* hypers, size_t group_count,
                                              vko_tensor* param, vko_tensor* grad, vko_optimizer** out);
VKO_API vko_status vko_optimizer_tensor_count(const vko_optimizer* optimizer, size_t* out);

/* Steps in parts (Optimizer::step_grad_sums / step_finish): this rank's gradient sums, then the
 * ranks' combined total (vko_combine_grad_sums in rank order). */
typedef struct vko_grad_sums {
  float norm_sum;  /* sum |g|^p over the clipped groups (max |g| for the inf norm) */
  float nonfinite; /* 0; 1: a non-finite element; 2: one in a clipped group */
} vko_grad_sums;
VKO_API vko_status vko_combine_grad_sums(const vko_grad_clip* clip, const vko_grad_sums* a, const vko_grad_sums* b,
                                         vko_grad_sums* out);
VKO_API vko_status vko_optimizer_step_grad_sums(vko_optimizer* optimizer, vko_grad_sums* out);
VKO_API vko_status vko_optimizer_step_finish(vko_optimizer* optimizer, const vko_grad_sums* combined);
/* The ranks' chunk sums exchanged whole, for the same total on any number of ranks
 * (Optimizer::step_grad_chunks, vkoptim::scatter_grad_chunks, reduce_grad_chunks): the first part
 * returns this rank's sums of each 256-element chunk (count = vko_optimizer_grad_chunk_count);
 * scatter places them in the layout's chunk list (out_count = vko_shard_grad_chunk_count); add
 * the ranks' lists element by element (any order: each chunk comes from one rank); reduce gives
 * the total for vko_optimizer_step_finish. */
VKO_API vko_status vko_optimizer_grad_chunk_count(const vko_optimizer* optimizer, size_t* out);
VKO_API vko_status vko_optimizer_step_grad_chunks(vko_optimizer* optimizer, vko_grad_sums* out, size_t count);
VKO_API vko_status vko_shard_grad_chunk_count(const vko_shard_layout* layout, size_t* out);
VKO_API vko_status vko_shard_scatter_grad_chunks(const vko_shard_layout* layout, uint32_t rank,
                                                 const vko_grad_sums* local, size_t local_count, vko_grad_sums* out,
                                                 size_t out_count);
VKO_API vko_status vko_reduce_grad_chunks(const vko_grad_clip* clip, const vko_grad_sums* chunks, size_t count,
                                          vko_grad_sums* out);
/* For recorded parts (VKO_STEP_GRAD_SUMS, then VKO_STEP_FINISH): read and write the total between
 * the submissions (waiting for the queue), or find it (two floats at *offset, host-visible). */
VKO_API vko_status vko_optimizer_grad_sums(vko_optimizer* optimizer, vko_grad_sums* out);
VKO_API vko_status vko_optimizer_set_grad_sums(vko_optimizer* optimizer, const vko_grad_sums* combined);
VKO_API vko_status vko_optimizer_grad_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset);
/* Per-tensor sums (LAMB, StableAdamW, Cautious on shards; Optimizer::step_tensor_sums): two floats
 * per tensor of the optimizer (count = 2 * vko_optimizer_tensor_count). scatter places a rank's at
 * their layout tensors (out_count = 2 * the layout's tensors); add the ranks' element by element
 * in rank order; gather picks the rank's back (out_count = 2 * its optimizer's tensors). */
VKO_API vko_status vko_optimizer_step_tensor_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_step_finish_tensor_sums(vko_optimizer* optimizer, const float* combined, size_t count);
VKO_API vko_status vko_optimizer_tensor_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_set_tensor_sums(vko_optimizer* optimizer, const float* combined, size_t count);
VKO_API vko_status vko_optimizer_tensor_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset);
VKO_API vko_status vko_shard_scatter_tensor_sums(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                                 size_t local_count, float* out, size_t out_count);
VKO_API vko_status vko_shard_gather_tensor_sums(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                                size_t combined_count, float* out, size_t out_count);
/* The same sums as the same bits on any number of ranks (Optimizer::step_tensor_chunks,
 * vkoptim::scatter_tensor_chunks, reduce_tensor_chunks): the first part returns this rank's partial
 * sums of each 256-element chunk (count = 2 * vko_optimizer_grad_chunk_count); scatter places them
 * in the layout's chunk list (out_count = 2 * vko_shard_grad_chunk_count); add the ranks' lists
 * element by element (any order: each chunk comes from one rank); reduce sums each tensor's chunks
 * as the device does (out_count = 2 * the layout's tensors), the input of
 * vko_shard_gather_tensor_sums. */
VKO_API vko_status vko_optimizer_step_tensor_chunks(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_shard_scatter_tensor_chunks(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                                   size_t local_count, float* out, size_t out_count);
VKO_API vko_status vko_reduce_tensor_chunks(const vko_shard_layout* layout, const float* chunks, size_t count,
                                            float* out, size_t out_count);
/* Adafactor on shards (Optimizer::step_factor_sums; vkoptim::scatter_factor_sums,
 * gather_factor_sums): the part before the per-tensor sums returns this rank's sums of g^2 over
 * each row, then each column, of the whole tensor of each of its pieces of a split matrix (two
 * floats each, the second 0; count = vko_optimizer_factor_sum_count, 0 on layouts cut between
 * tensors only); scatter places them in the layout's list (out_count = vko_shard_factor_sum_count);
 * add the ranks' lists element by element (in rank order for the same bits every run); gather
 * picks the rank's back for vko_optimizer_set_factor_sums; then the per-tensor sums as above.
 * Recorded: part VKO_STEP_FACTOR_SUMS between VKO_STEP_GRAD_SUMS (with clipping) and
 * VKO_STEP_TENSOR_SUMS, the sums at vko_optimizer_factor_sums_buffer (host-visible). */
VKO_API vko_status vko_optimizer_factor_sum_count(const vko_optimizer* optimizer, size_t* out);
VKO_API vko_status vko_optimizer_step_factor_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_factor_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_set_factor_sums(vko_optimizer* optimizer, const float* combined, size_t count);
VKO_API vko_status vko_optimizer_factor_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset);
VKO_API vko_status vko_shard_factor_sum_count(const vko_shard_layout* layout, size_t* out);
VKO_API vko_status vko_shard_scatter_factor_sums(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                                 size_t local_count, float* out, size_t out_count);
VKO_API vko_status vko_shard_gather_factor_sums(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                                size_t combined_count, float* out, size_t out_count);
/* Rank-1 4-bit second moments (rank1_second_moment) of matrices split between ranks
 * (vkoptim::scatter_factor_maxima, gather_factor_maxima): the factor part
 * (vko_optimizer_step_factor_sums, count = vko_optimizer_factor_sum_count) returns, per piece of a
 * split matrix, three sets of its whole matrix's row then column maxima; scatter places them in
 * the layout's list (out_count = vko_shard_factor_maxima_count); combine the ranks' lists element
 * by element with MAX (exact: any order); gather picks the rank's back for
 * vko_optimizer_set_factor_sums; vko_optimizer_step_finish_factors then finishes the step (the
 * same bits as an unsharded optimizer). With clipping, the total is set before the factor part.
 * Recorded: VKO_STEP_FACTOR_SUMS, then VKO_STEP_FINISH. */
VKO_API vko_status vko_shard_factor_maxima_count(const vko_shard_layout* layout, size_t* out);
VKO_API vko_status vko_shard_scatter_factor_maxima(const vko_shard_layout* layout, uint32_t rank, const float* local,
                                                   size_t local_count, float* out, size_t out_count);
VKO_API vko_status vko_shard_gather_factor_maxima(const vko_shard_layout* layout, uint32_t rank, const float* combined,
                                                  size_t combined_count, float* out, size_t out_count);
VKO_API vko_status vko_optimizer_step_finish_factors(vko_optimizer* optimizer);
/* Muon on matrices split between ranks (vkoptim::scatter_matrix_updates, gather_matrix_updates):
 * the factor part (vko_optimizer_step_factor_sums) returns, per piece of a split matrix in a Muon
 * group, the whole matrix's momentum update (its piece's elements, zeros elsewhere); scatter places
 * them in the layout's list (out_count = vko_shard_matrix_update_count; rule and hypers as given
 * to vko_optimizer_create_shard, which say the Muon groups); add the ranks' lists element by
 * element (exact: each element from one rank); gather picks the rank's back for
 * vko_optimizer_set_factor_sums; then the per-tensor sums (vko_optimizer_step_tensor_sums or
 * _chunks) and vko_optimizer_step_finish_tensor_sums. Recorded: VKO_STEP_FACTOR_SUMS,
 * VKO_STEP_TENSOR_SUMS, VKO_STEP_FINISH. */
VKO_API vko_status vko_shard_matrix_update_count(const vko_shard_layout* layout, vko_rule rule,
                                                 const vko_hyperparams* hypers, size_t group_count, size_t* out);
VKO_API vko_status vko_shard_scatter_matrix_updates(const vko_shard_layout* layout, vko_rule rule,
                                                    const vko_hyperparams* hypers, size_t group_count, uint32_t rank,
                                                    const float* local, size_t local_count, float* out,
                                                    size_t out_count);
VKO_API vko_status vko_shard_gather_matrix_updates(const vko_shard_layout* layout, vko_rule rule,
                                                   const vko_hyperparams* hypers, size_t group_count, uint32_t rank,
                                                   const float* combined, size_t combined_count, float* out,
                                                   size_t out_count);
/* SAM on shards (Optimizer::sam_perturb_sums / sam_perturb_finish): one float per group (0 for groups
 * without SAM). Recorded: vko_optimizer_record_sam_perturb with part VKO_STEP_GRAD_SUMS, then
 * VKO_STEP_FINISH; the buffer holds two floats per group (the sum, then 0: an 8-byte stride) and is
 * the same memory as vko_optimizer_tensor_sums_buffer's (a perturbation and a step never overlap). */
VKO_API vko_status vko_optimizer_sam_perturb_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_sam_perturb_finish(vko_optimizer* optimizer, const float* combined, size_t count);
VKO_API vko_status vko_optimizer_sam_sums(vko_optimizer* optimizer, float* out, size_t count);
VKO_API vko_status vko_optimizer_set_sam_sums(vko_optimizer* optimizer, const float* combined, size_t count);
VKO_API vko_status vko_optimizer_sam_sums_buffer(vko_optimizer* optimizer, VkBuffer* buffer, VkDeviceSize* offset);
/* The checkpoint of shard `rank` of `target` from the checkpoints files[r] (file_sizes[r] bytes)
 * the ranks of `saved` wrote (reshard_checkpoint): *size receives its byte count; with out
 * non-NULL it is written there (capacity >= *size). Load it with vko_optimizer_load_from_memory. */
VKO_API vko_status vko_reshard_checkpoint(const vko_shard_layout* saved, const uint8_t* const* files,
                                          const size_t* file_sizes, size_t file_count, const vko_shard_layout* target,
                                          uint32_t rank, uint8_t* out, size_t capacity, size_t* size);

/* ---- Sparse embedding tables (vkoptim::SparseOptimizer, include/vkoptim/sparse.hpp) ---------- */
typedef struct vko_sparse_optimizer vko_sparse_optimizer;
/* A table (param: rows x dim f32, its name from vko_tensor_set_name) and its row-sparse gradient:
 * indices (U32, one row per position, 0xFFFFFFFF for padding) and values (f32, positions x dim). */
typedef struct vko_sparse_table {
  uint32_t struct_size; /* sizeof(vko_sparse_table) */
  vko_tensor* param;
  vko_tensor* indices;
  vko_tensor* values;
  uint32_t dim;
} vko_sparse_table;
/* rule: VKO_RULE_ADAM (SparseAdam: lr, beta1, beta2, eps, maximize), VKO_RULE_ADAGRAD (weight_decay
 * must be 0) or VKO_RULE_FTRL; hyper from vko_hyperparams_defaults(rule) (NULL: the defaults), every
 * other field (storage policy and wrappers included) at its default. */
VKO_API vko_status vko_sparse_optimizer_create(vko_context* context, vko_rule rule, const vko_hyperparams* hyper,
                                               const vko_sparse_table* tables, size_t table_count,
                                               vko_sparse_optimizer** out);
VKO_API void vko_sparse_optimizer_destroy(vko_sparse_optimizer* optimizer);
/* Same rule, same maximize (and FTRL's learning_rate_power = -0.5 or not); reaches recorded steps. */
VKO_API vko_status vko_sparse_optimizer_set_hyperparams(vko_sparse_optimizer* optimizer, const vko_hyperparams* hyper);
VKO_API vko_status vko_sparse_optimizer_initialize(vko_sparse_optimizer* optimizer);
/* A replayable step (options->replay is implied; options may be NULL). */
VKO_API vko_status vko_sparse_optimizer_record(vko_sparse_optimizer* optimizer, VkCommandBuffer cmd,
                                               const vko_record_options* options);
/* Submits and waits; VKO_INVALID_ARGUMENT (naming the table, position and index) when an index was
 * out of range: the step was skipped and nothing changed. */
VKO_API vko_status vko_sparse_optimizer_step(vko_sparse_optimizer* optimizer);
typedef struct vko_sparse_report {
  uint64_t step; /* steps taken */
  uint32_t skipped, bad_indices, bad_table, first_bad_position, first_bad_index, rows_updated;
} vko_sparse_report;
/* The last step's report (no wait; complete once its submission has completed). */
VKO_API vko_status vko_sparse_optimizer_last_report(const vko_sparse_optimizer* optimizer, vko_sparse_report* out);
/* A table's state slot by name (rows x dim floats), or "step" (1 value). */
VKO_API vko_status vko_sparse_optimizer_read_state(vko_sparse_optimizer* optimizer, size_t table, const char* name,
                                                   float* out, size_t count);
VKO_API vko_status vko_sparse_optimizer_write_state(vko_sparse_optimizer* optimizer, size_t table, const char* name,
                                                    const float* values, size_t count);

#ifdef __cplusplus
}
#endif
#endif /* VKOPTIM_H */
