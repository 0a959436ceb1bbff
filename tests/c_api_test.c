/* Drives the C API from plain C: context, tensors, an AdamW optimizer with two groups, steps,
 * lr changes, state access and error reporting, checked against a scalar double computation. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vkoptim/vkoptim.h"

static int failures = 0;
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      ++failures;                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, "\n");                                                   \
    }                                                                          \
  } while (0)
#define OK(call)                                                                                      \
  do {                                                                                                \
    vko_status s_ = (call);                                                                           \
    if (s_ != VKO_OK) {                                                                               \
      fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, (int)s_, vko_last_error()); \
      return 1;                                                                                       \
    }                                                                                                 \
  } while (0)

enum { N0 = 257, N1 = 3, STEPS = 20 };

/* AdamW in double, torch semantics. */
static void adamw_ref(double* p, const double* g, double* m, double* v, size_t n, double lr, double b1, double b2,
                      double eps, double wd, int t) {
  const double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
  for (size_t i = 0; i < n; ++i) {
    p[i] *= 1 - lr * wd;
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
  }
}

/* Sharded state: the shards of a flat model ("w", 1000 elements cut inside at 256; "b", 7, in
 * group 1) step as one unsharded optimizer does, within float rounding (the ranks' sums are added
 * across ranks), with the sums exchanged through the host: clipping's chunk sums whole (bit for
 * bit then) or its ranks' totals (with LAMB), LAMB's chunk partials whole (bit for bit) or, when
 * clipped, its per-tensor sums, SAM's per-group sums. `saved` (when not NULL) receives each rank's
 * checkpoint. */
enum { SW = 1000, SB = 7, SN = SW + SB, SSTEPS = 4 };
static int shard_run(vko_context* ctx, const vko_shard_layout* layout, vko_rule rule, const vko_hyperparams* h,
                     int clip, float* p_ref, float* p_sharded, uint8_t** saved, size_t* saved_sizes) {
  float p0[SN], grad[SN];
  for (int i = 0; i < SN; ++i) p0[i] = 0.5f * sinf((float)i);
  vko_tensor *w = NULL, *wg = NULL, *b = NULL, *bg = NULL;
  OK(vko_tensor_create(ctx, p0, SW, &w));
  OK(vko_tensor_create(ctx, NULL, SW, &wg));
  OK(vko_tensor_create(ctx, p0 + SW, SB, &b));
  OK(vko_tensor_create(ctx, NULL, SB, &bg));
  vko_param_group groups[2] = {{*h, &w, &wg, 1}, {*h, &b, &bg, 1}};
  vko_optimizer* ref = NULL;
  OK(vko_optimizer_create(ctx, rule, groups, 2, &ref));
  vko_grad_clip c = vko_grad_clip_defaults();
  c.max_norm = 0.05;
  if (clip) OK(vko_optimizer_set_grad_clip(ref, &c));
  uint32_t ranks = 0;
  size_t layout_tensors = 0;
  OK(vko_shard_layout_info(layout, &ranks, &layout_tensors, NULL));
  vko_optimizer* shard[4] = {NULL};
  vko_tensor *sp[4] = {NULL}, *sg[4] = {NULL};
  uint64_t begin[4], end[4];
  const vko_hyperparams hypers[2] = {*h, *h};
  for (uint32_t r = 0; r < ranks; ++r) {
    OK(vko_shard_layout_shard(layout, r, &begin[r], &end[r]));
    OK(vko_tensor_create(ctx, p0 + begin[r], end[r] - begin[r], &sp[r]));
    OK(vko_tensor_create(ctx, NULL, end[r] - begin[r], &sg[r]));
    OK(vko_optimizer_create_shard(ctx, rule, layout, r, hypers, 2, sp[r], sg[r], &shard[r]));
    if (clip) OK(vko_optimizer_set_grad_clip(shard[r], &c));
  }
  if (clip) {
    CHECK(vko_optimizer_step(shard[0]) == VKO_INVALID_STATE, "a shard stepped with clipping in one part");
    CHECK(strstr(vko_last_error(), "in parts") != NULL, "message: %s", vko_last_error());
  }
  const int lamb = rule == VKO_RULE_LAMB, sam = h->sam_rho > 0;
  for (int t = 1; t <= SSTEPS; ++t) {
    for (int i = 0; i < SN; ++i) grad[i] = 0.1f * cosf((float)(i * (t + 1)));
    OK(vko_tensor_write(wg, grad, SW));
    OK(vko_tensor_write(bg, grad + SW, SB));
    for (uint32_t r = 0; r < ranks; ++r) OK(vko_tensor_write(sg[r], grad + begin[r], end[r] - begin[r]));
    if (sam) {
      OK(vko_optimizer_sam_perturb(ref));
      float mine[2], total[2] = {0, 0};
      for (uint32_t r = 0; r < ranks; ++r) {
        OK(vko_optimizer_sam_perturb_sums(shard[r], mine, 2));
        total[0] += mine[0], total[1] += mine[1];
      }
      for (uint32_t r = 0; r < ranks; ++r) OK(vko_optimizer_sam_perturb_finish(shard[r], total, 2));
      /* The gradient at the perturbed point: g + 0.5 p, from each optimizer's own p. */
      float at[SN];
      OK(vko_tensor_read(w, at, SW));
      OK(vko_tensor_read(b, at + SW, SB));
      for (int i = 0; i < SN; ++i) at[i] = grad[i] + 0.5f * at[i];
      OK(vko_tensor_write(wg, at, SW));
      OK(vko_tensor_write(bg, at + SW, SB));
      for (uint32_t r = 0; r < ranks; ++r) {
        OK(vko_tensor_read(sp[r], at + begin[r], end[r] - begin[r]));
        for (uint64_t i = begin[r]; i < end[r]; ++i) at[i] = grad[i] + 0.5f * at[i];
        OK(vko_tensor_write(sg[r], at + begin[r], end[r] - begin[r]));
      }
    }
    OK(vko_optimizer_step(ref));
    if (clip && !lamb) { /* the chunk sums exchanged whole: the unsharded optimizer's total */
      size_t all = 0;
      OK(vko_shard_grad_chunk_count(layout, &all));
      vko_grad_sums chunks[8], mine[8], placed[8], total;
      CHECK(all <= 8, "%zu chunks", all);
      memset(chunks, 0, sizeof chunks);
      for (uint32_t r = 0; r < ranks; ++r) {
        size_t count = 0;
        OK(vko_optimizer_grad_chunk_count(shard[r], &count));
        CHECK(vko_optimizer_step_grad_chunks(shard[r], mine, count + 1) == VKO_INVALID_ARGUMENT,
              "a wrong chunk count accepted");
        OK(vko_optimizer_step_grad_chunks(shard[r], mine, count));
        CHECK(vko_shard_scatter_grad_chunks(layout, r, mine, count + 1, placed, all) == VKO_INVALID_ARGUMENT,
              "a wrong local chunk count accepted");
        OK(vko_shard_scatter_grad_chunks(layout, r, mine, count, placed, all));
        for (size_t k = 0; k < all; ++k) {
          chunks[k].norm_sum += placed[k].norm_sum;
          chunks[k].nonfinite += placed[k].nonfinite;
        }
      }
      OK(vko_reduce_grad_chunks(&c, chunks, all, &total));
      for (uint32_t r = 0; r < ranks; ++r) OK(vko_optimizer_step_finish(shard[r], &total));
    } else if (clip) {
      vko_grad_sums total, mine;
      for (uint32_t r = 0; r < ranks; ++r) {
        OK(vko_optimizer_step_grad_sums(shard[r], &mine));
        if (r == 0)
          total = mine;
        else
          OK(vko_combine_grad_sums(&c, &total, &mine, &total));
      }
      for (uint32_t r = 0; r < ranks; ++r)
        if (lamb)
          OK(vko_optimizer_set_grad_sums(shard[r], &total));
        else
          OK(vko_optimizer_step_finish(shard[r], &total));
    }
    if (lamb && !clip) { /* the chunk partials exchanged whole: the unsharded optimizer's sums */
      size_t all = 0;
      OK(vko_shard_grad_chunk_count(layout, &all));
      float mine[16], placed[16], chunks[16], sums[4], combined[8];
      CHECK(all <= 8 && layout_tensors <= 2, "%zu chunks", all);
      memset(chunks, 0, sizeof chunks);
      for (uint32_t r = 0; r < ranks; ++r) {
        size_t count = 0;
        OK(vko_optimizer_grad_chunk_count(shard[r], &count));
        CHECK(vko_optimizer_step_tensor_chunks(shard[r], mine, 2 * count + 1) == VKO_INVALID_ARGUMENT,
              "a wrong chunk count accepted");
        OK(vko_optimizer_step_tensor_chunks(shard[r], mine, 2 * count));
        CHECK(vko_shard_scatter_tensor_chunks(layout, r, mine, 2 * count + 2, placed, 2 * all) == VKO_INVALID_ARGUMENT,
              "a wrong local chunk count accepted");
        OK(vko_shard_scatter_tensor_chunks(layout, r, mine, 2 * count, placed, 2 * all));
        for (size_t k = 0; k < 2 * all; ++k) chunks[k] += placed[k];
      }
      OK(vko_reduce_tensor_chunks(layout, chunks, 2 * all, sums, 2 * layout_tensors));
      for (uint32_t r = 0; r < ranks; ++r) {
        size_t count = 0;
        OK(vko_optimizer_tensor_count(shard[r], &count));
        OK(vko_shard_gather_tensor_sums(layout, r, sums, 2 * layout_tensors, combined, 2 * count));
        OK(vko_optimizer_step_finish_tensor_sums(shard[r], combined, 2 * count));
      }
    } else if (lamb) {
      float local[8], scattered[4], total[4] = {0, 0, 0, 0}, combined[8];
      for (uint32_t r = 0; r < ranks; ++r) {
        size_t count = 0;
        OK(vko_optimizer_tensor_count(shard[r], &count));
        OK(vko_optimizer_step_tensor_sums(shard[r], local, 2 * count));
        OK(vko_shard_scatter_tensor_sums(layout, r, local, 2 * count, scattered, 2 * layout_tensors));
        for (size_t k = 0; k < 2 * layout_tensors; ++k) total[k] += scattered[k];
      }
      for (uint32_t r = 0; r < ranks; ++r) {
        size_t count = 0;
        OK(vko_optimizer_tensor_count(shard[r], &count));
        OK(vko_shard_gather_tensor_sums(layout, r, total, 2 * layout_tensors, combined, 2 * count));
        OK(vko_optimizer_step_finish_tensor_sums(shard[r], combined, 2 * count));
      }
    }
    if (!clip && !lamb)
      for (uint32_t r = 0; r < ranks; ++r) OK(vko_optimizer_step(shard[r]));
  }
  OK(vko_tensor_read(w, p_ref, SW));
  OK(vko_tensor_read(b, p_ref + SW, SB));
  for (uint32_t r = 0; r < ranks; ++r) {
    OK(vko_tensor_read(sp[r], p_sharded + begin[r], end[r] - begin[r]));
    if (saved) {
      OK(vko_optimizer_save_to_memory(shard[r], NULL, 0, &saved_sizes[r]));
      saved[r] = malloc(saved_sizes[r]);
      OK(vko_optimizer_save_to_memory(shard[r], saved[r], saved_sizes[r], &saved_sizes[r]));
    }
    vko_optimizer_destroy(shard[r]);
    vko_tensor_destroy(sp[r]);
    vko_tensor_destroy(sg[r]);
  }
  vko_optimizer_destroy(ref);
  vko_tensor_destroy(w);
  vko_tensor_destroy(wg);
  vko_tensor_destroy(b);
  vko_tensor_destroy(bg);
  return 0;
}

int main(void) {
  vko_context_desc desc = vko_context_desc_defaults();
  desc.enable_validation = 1;
  vko_context* ctx = NULL;
  OK(vko_context_create(&desc, &ctx));
  char name[256];
  OK(vko_context_device_name(ctx, name, sizeof name));
  printf("device: %s\n", name);

  const size_t sizes[2] = {N0, N1};
  float host_p[2][N0], host_g[2][N0];
  double ref_p[2][N0], ref_g[2][N0], ref_m[2][N0], ref_v[2][N0];
  vko_tensor *p[2], *g[2];
  srand(12345);
  for (int k = 0; k < 2; ++k) {
    for (size_t i = 0; i < sizes[k]; ++i) {
      host_p[k][i] = (float)rand() / (float)RAND_MAX - 0.5f;
      ref_p[k][i] = host_p[k][i];
      ref_m[k][i] = ref_v[k][i] = 0;
    }
    OK(vko_tensor_create(ctx, host_p[k], sizes[k], &p[k]));
    OK(vko_tensor_create(ctx, NULL, sizes[k], &g[k]));
  }

  vko_param_group groups[2];
  memset(groups, 0, sizeof groups);
  for (int k = 0; k < 2; ++k) {
    groups[k].hyper = vko_hyperparams_defaults(VKO_RULE_ADAMW);
    groups[k].params = &p[k];
    groups[k].grads = &g[k];
    groups[k].count = 1;
  }
  groups[1].hyper.lr = 5e-3;
  groups[1].hyper.weight_decay = 0.1;
  vko_optimizer* opt = NULL;
  OK(vko_optimizer_create(ctx, VKO_RULE_ADAMW, groups, 2, &opt));

  double lr[2] = {1e-3, 5e-3};
  for (int t = 1; t <= STEPS; ++t) {
    if (t == 10) {
      lr[0] = 2e-3;
      OK(vko_optimizer_set_lr(opt, 0, lr[0]));
    }
    for (int k = 0; k < 2; ++k) {
      for (size_t i = 0; i < sizes[k]; ++i) {
        host_g[k][i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
        ref_g[k][i] = host_g[k][i];
      }
      OK(vko_tensor_write(g[k], host_g[k], sizes[k]));
      adamw_ref(ref_p[k], ref_g[k], ref_m[k], ref_v[k], sizes[k], lr[k], 0.9, 0.999, 1e-8, k ? 0.1 : 1e-2, t);
    }
    OK(vko_optimizer_step(opt));
  }

  for (int k = 0; k < 2; ++k) {
    float out[N0], m[N0];
    OK(vko_tensor_read(p[k], out, sizes[k]));
    OK(vko_optimizer_read_state(opt, (size_t)k, "exp_avg", m, sizes[k]));
    for (size_t i = 0; i < sizes[k]; ++i) {
      CHECK(fabs(out[i] - ref_p[k][i]) < 1e-5, "param %d[%zu]: %g vs %g", k, i, out[i], ref_p[k][i]);
      CHECK(fabs(m[i] - ref_m[k][i]) < 1e-5, "exp_avg %d[%zu]: %g vs %g", k, i, m[i], ref_m[k][i]);
    }
    float step = 0;
    OK(vko_optimizer_read_state(opt, (size_t)k, "step", &step, 1));
    CHECK(step == STEPS, "step %g", step);
  }

  /* vko_optimizer_set_hyperparams is all or nothing: Lookahead turned on after state exists is
   * refused, and the lr set in the same call does not stick. */
  {
    size_t before = 0, after = 0;
    OK(vko_optimizer_save_to_memory(opt, NULL, 0, &before));
    uint8_t* a = (uint8_t*)malloc(before);
    OK(vko_optimizer_save_to_memory(opt, a, before, &before));
    vko_hyperparams h = vko_hyperparams_defaults(VKO_RULE_ADAMW);
    h.lr = 0.5;
    h.lookahead_k = 5;
    CHECK(vko_optimizer_set_hyperparams(opt, 0, &h) != VKO_OK, "Lookahead turned on after state was allocated");
    h.lookahead_k = 0;
    h.lookahead_alpha = 7; /* out of [0, 1]: refused before anything changes */
    CHECK(vko_optimizer_set_hyperparams(opt, 0, &h) == VKO_INVALID_ARGUMENT && strstr(vko_last_error(), "alpha"),
          "lookahead_alpha = 7: %s", vko_last_error());
    OK(vko_optimizer_save_to_memory(opt, NULL, 0, &after));
    uint8_t* b = (uint8_t*)malloc(after);
    OK(vko_optimizer_save_to_memory(opt, b, after, &after));
    CHECK(before == after && memcmp(a, b, before) == 0, "a refused vko_optimizer_set_hyperparams changed the group");
    free(a);
    free(b);
  }

  /* A host engine's device adopted, tensors on the host's own buffer, SAM, the step's shape. */
  {
    vko_vulkan_handles vh;
    OK(vko_context_vulkan_handles(ctx, &vh));
    vko_device_binding binding = vko_device_binding_defaults();
    binding.instance = vh.instance;
    binding.physical_device = vh.physical_device;
    binding.device = vh.device;
    binding.queue = vh.queue;
    binding.queue_family_index = vh.queue_family_index;
    vko_context_desc adopt_desc = vko_context_desc_defaults();
    adopt_desc.enable_validation = 1;
    vko_context* adopted = NULL;
    CHECK(vko_context_adopt(&binding, &adopt_desc, &adopted) == VKO_INVALID_ARGUMENT &&
              strstr(vko_last_error(), "enable_validation"),
          "enable_validation taken for an adopted device: %s", vko_last_error());
    adopt_desc = vko_context_desc_defaults();
    adopt_desc.addressing = 2; /* descriptors: the buffer has no device address */
    OK(vko_context_adopt(&binding, &adopt_desc, &adopted));

    /* 16 parameters then 16 gradients in one host-visible buffer of the host's. */
    VkBufferCreateInfo bci;
    memset(&bci, 0, sizeof bci);
    bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
    bci.size = 128;
    bci.usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    VkBuffer buffer = VK_NULL_HANDLE;
    CHECK(vkCreateBuffer(vh.device, &bci, NULL, &buffer) == VK_SUCCESS, "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vh.device, buffer, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(vh.physical_device, &mp);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = 0;
    while (type < mp.memoryTypeCount &&
           !((req.memoryTypeBits >> type & 1u) && (mp.memoryTypes[type].propertyFlags & want) == want))
      ++type;
    CHECK(type < mp.memoryTypeCount, "no host-visible coherent memory type");
    VkMemoryAllocateInfo mai;
    memset(&mai, 0, sizeof mai);
    mai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = type;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    CHECK(vkAllocateMemory(vh.device, &mai, NULL, &memory) == VK_SUCCESS, "vkAllocateMemory");
    vkBindBufferMemory(vh.device, buffer, memory, 0);
    float* host = NULL;
    vkMapMemory(vh.device, memory, 0, 128, 0, (void**)&host);
    for (int i = 0; i < 16; ++i) host[i] = 1.0f, host[16 + i] = 0.5f;

    vko_buffer_range pr = {sizeof(vko_buffer_range), buffer, 0, 16, VKO_DTYPE_F32, 128, 0};
    vko_buffer_range gr = pr;
    gr.offset = 64;
    vko_tensor *hp = NULL, *hg = NULL;
    OK(vko_tensor_from_buffer(adopted, &pr, &hp));
    OK(vko_tensor_from_buffer(adopted, &gr, &hg));
    float scratch[16];
    CHECK(vko_tensor_read(hp, scratch, 16) == VKO_INVALID_STATE, "a host buffer's tensor was read by vkoptim");
    CHECK(vko_tensor_count(hp) == 16, "count %zu", vko_tensor_count(hp));
    vko_param_group sam_group = {vko_hyperparams_defaults(VKO_RULE_SGD), &hp, &hg, 1};
    sam_group.hyper.lr = 0.1;
    sam_group.hyper.sam_rho = 0.05;
    vko_optimizer* sam = NULL;
    OK(vko_optimizer_create(adopted, VKO_RULE_SGD, &sam_group, 1, &sam));
    OK(vko_optimizer_sam_perturb(sam));
    /* e = rho g / |g| = 0.05 * 0.5 / 2 */
    CHECK(fabs(host[3] - 1.0125f) < 1e-6, "perturbed p = %g", host[3]);
    OK(vko_optimizer_step(sam)); /* restores p, then p -= lr g */
    for (int i = 0; i < 16; ++i) CHECK(fabs(host[i] - 0.95f) < 1e-6, "p[%d] = %g after SAM + SGD", i, host[i]);
    vko_step_shape shape;
    OK(vko_optimizer_shape(sam, &shape));
    CHECK(shape.fast_elements + shape.careful_elements == 16, "shape covers %llu elements",
          (unsigned long long)(shape.fast_elements + shape.careful_elements));
    vko_optimizer_destroy(sam);
    vko_tensor_destroy(hp);
    vko_tensor_destroy(hg);
    vko_context_destroy(adopted);
    vkUnmapMemory(vh.device, memory);
    vkDestroyBuffer(vh.device, buffer, NULL);
    vkFreeMemory(vh.device, memory, NULL);
  }

  /* Checkpoints: in memory (size query, too small a buffer refused), through a file, garbage
   * refused with the optimizer unchanged, a missing file an I/O error. */
  {
    size_t size = 0;
    OK(vko_optimizer_save_to_memory(opt, NULL, 0, &size));
    CHECK(size > 8, "checkpoint of %zu bytes", size);
    uint8_t* saved = (uint8_t*)malloc(size);
    CHECK(vko_optimizer_save_to_memory(opt, saved, size - 1, &size) == VKO_INVALID_ARGUMENT, "short buffer taken");
    OK(vko_optimizer_save_to_memory(opt, saved, size, &size));
    const char* path = "/tmp/vkoptim_c_api_test.safetensors";
    OK(vko_optimizer_save(opt, path));
    OK(vko_optimizer_load(opt, path, 0));
    OK(vko_optimizer_load_from_memory(opt, saved, size, 0));
    remove(path);
    uint8_t garbage[64];
    memset(garbage, 0x5a, sizeof garbage);
    CHECK(vko_optimizer_load_from_memory(opt, garbage, sizeof garbage, 0) == VKO_INVALID_ARGUMENT, "garbage loaded");
    CHECK(strlen(vko_last_error()) > 0, "no message for a refused checkpoint");
    CHECK(vko_optimizer_load(opt, "/tmp/no/such/vkoptim.safetensors", 0) == VKO_IO_ERROR, "missing file: %s",
          vko_last_error());
    CHECK(vko_optimizer_load_from_memory(opt, saved, size, 2) == VKO_INVALID_ARGUMENT, "convert_storage = 2 taken");
    size_t again = 0;
    OK(vko_optimizer_save_to_memory(opt, NULL, 0, &again));
    uint8_t* after = (uint8_t*)malloc(again);
    OK(vko_optimizer_save_to_memory(opt, after, again, &again));
    CHECK(again == size && memcmp(after, saved, size) == 0, "refused loads changed the optimizer");
    free(after);
    free(saved);
  }

  /* A rule added later (Adagrad), driven through a struct of the original size: the fields it
   * lacks (lr_decay, initial_accumulator_value) take their defaults. */
  {
    float ap[N1] = {0.5f, -1.0f, 2.0f}, ag[N1] = {0.1f, -0.2f, 0.3f}, out[N1];
    vko_tensor *tp, *tg;
    OK(vko_tensor_create(ctx, ap, N1, &tp));
    OK(vko_tensor_create(ctx, ag, N1, &tg));
    vko_param_group ag_group;
    memset(&ag_group, 0, sizeof ag_group);
    ag_group.hyper = vko_hyperparams_defaults(VKO_RULE_ADAGRAD);
    ag_group.hyper.struct_size = (uint32_t)offsetof(vko_hyperparams, alpha);
    ag_group.params = &tp;
    ag_group.grads = &tg;
    ag_group.count = 1;
    vko_optimizer* adagrad = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAGRAD, &ag_group, 1, &adagrad));
    OK(vko_optimizer_step(adagrad));
    OK(vko_optimizer_step(adagrad));
    OK(vko_tensor_read(tp, out, N1));
    for (size_t i = 0; i < N1; ++i) {
      /* two steps from sum = 0, lr = 1e-2, eps = 1e-10: g/sqrt(g^2) then g/sqrt(2 g^2) */
      const double g = ag[i], expected = ap[i] - 1e-2 * g / (fabs(g) + 1e-10) - 1e-2 * g / (sqrt(2 * g * g) + 1e-10);
      CHECK(fabs(out[i] - expected) < 1e-6, "adagrad[%zu]: %g vs %g", i, out[i], expected);
    }
    float sum[N1];
    OK(vko_optimizer_read_state(adagrad, 0, "sum", sum, N1));
    CHECK(fabs(sum[2] - 2 * 0.3f * 0.3f) < 1e-6, "adagrad sum %g", sum[2]);
    vko_optimizer_destroy(adagrad);
    vko_tensor_destroy(tp);
    vko_tensor_destroy(tg);
  }

  /* Adafactor with a 2-D tensor: factored state of one value per row and per column. */
  {
    float m[6] = {1, 2, 3, 4, 5, 6}, gm[6] = {1, -1, 1, -1, 1, -1}, row_var[2], col_var[3];
    vko_tensor *tp, *tg;
    OK(vko_tensor_create(ctx, m, 6, &tp));
    OK(vko_tensor_create(ctx, gm, 6, &tg));
    CHECK(vko_tensor_set_rows(tp, 4) == VKO_INVALID_ARGUMENT, "rows = 4 of 6 elements accepted");
    OK(vko_tensor_set_rows(tp, 2));
    vko_param_group af;
    memset(&af, 0, sizeof af);
    af.hyper = vko_hyperparams_defaults(VKO_RULE_ADAFACTOR);
    af.params = &tp;
    af.grads = &tg;
    af.count = 1;
    vko_optimizer* adafactor = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAFACTOR, &af, 1, &adafactor));
    OK(vko_optimizer_step(adafactor));
    OK(vko_optimizer_read_state(adafactor, 0, "row_var", row_var, 2));
    OK(vko_optimizer_read_state(adafactor, 0, "col_var", col_var, 3));
    /* step 1: w = 1, so the factors are the plain means of g^2 = 1 */
    CHECK(fabs(row_var[0] - 1) < 1e-6 && fabs(col_var[2] - 1) < 1e-6, "factors %g %g", row_var[0], col_var[2]);
    vko_optimizer_destroy(adafactor);
    vko_tensor_destroy(tp);
    vko_tensor_destroy(tg);
  }

  /* Mixed precision: bf16 parameters and gradients, fp32 masters, 8-bit Adam state. */
  {
    enum { NQ = 1024 };
    float pq[NQ], gq[NQ], master[NQ], out[NQ];
    for (size_t i = 0; i < NQ; ++i) {
      pq[i] = (float)((double)i / NQ - 0.5); /* exact in bf16 for most i: the check rounds anyway */
      gq[i] = (i % 3 == 0) ? -0.25f : 0.5f;
    }
    vko_tensor *tp, *tg, *bad_tensor = NULL;
    OK(vko_tensor_create_typed(ctx, VKO_DTYPE_BF16, pq, NQ, &tp));
    OK(vko_tensor_create_typed(ctx, VKO_DTYPE_BF16, gq, NQ, &tg));
    CHECK(vko_tensor_create_typed(ctx, (vko_dtype)7, pq, NQ, &bad_tensor) == VKO_INVALID_ARGUMENT && !bad_tensor,
          "dtype 7 accepted");
    OK(vko_tensor_read(tp, out, NQ)); /* what the parameters start from, after rounding */
    vko_param_group qg;
    memset(&qg, 0, sizeof qg);
    qg.hyper = vko_hyperparams_defaults(VKO_RULE_ADAM);
    qg.hyper.state_dtype = VKO_STATE_Q8;
    qg.hyper.master_weights = 1;
    qg.params = &tp;
    qg.grads = &tg;
    qg.count = 1;
    uint64_t bytes = 0;
    double per_element = 0;
    /* By default tensors below 4096 elements keep f32 state: masters 4 B + m and v 8 B */
    CHECK(qg.hyper.min_8bit_elements == 4096, "min_8bit_elements default %llu",
          (unsigned long long)qg.hyper.min_8bit_elements);
    vko_optimizer* small = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &qg, 1, &small));
    OK(vko_optimizer_memory(small, &bytes, &per_element));
    CHECK(bytes == 12 * NQ, "small tensor with the default min_8bit_elements: %llu bytes", (unsigned long long)bytes);
    vko_optimizer_destroy(small);
    qg.hyper.min_8bit_elements = 0;
    vko_optimizer* q8 = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &qg, 1, &q8));
    OK(vko_optimizer_memory(q8, &bytes, &per_element));
    /* master 4 B + two 1-byte codes per element, one float absmax per 256 elements and state */
    CHECK(bytes == 4 * NQ + 2 * NQ + 2 * 4 * (NQ / 256), "8-bit Adam with masters: %llu bytes",
          (unsigned long long)bytes);
    CHECK(fabs(per_element - 6.03125) < 1e-12, "bytes per element %g", per_element);
    OK(vko_optimizer_step(q8));
    OK(vko_optimizer_read_state(q8, 0, "master_param", master, NQ));
    float pnew[NQ];
    OK(vko_tensor_read(tp, pnew, NQ));
    for (size_t i = 0; i < NQ; ++i) {
      /* Adam's first step moves by lr * sign(g) (m/sqrt(v) = g/|g|, eps negligible) */
      const double expected = out[i] - 1e-3 * (gq[i] > 0 ? 1 : -1);
      CHECK(fabs(master[i] - expected) < 1e-6, "master[%zu] %g vs %g", i, master[i], expected);
      CHECK(fabs(pnew[i] - master[i]) <= fabs(master[i]) / 256, "bf16 param[%zu] %g vs master %g", i, pnew[i],
            master[i]);
    }
    vko_hyperparams other = qg.hyper;
    other.state_dtype = VKO_STATE_F32;
    CHECK(vko_optimizer_set_hyperparams(q8, 0, &other) == VKO_INVALID_STATE, "storage policy change accepted");
    CHECK(strstr(vko_last_error(), "fixed at creation") != NULL, "message: %s", vko_last_error());
    /* One slot apart: exp_avg_sq in bf16, exp_avg as the group's (q8) */
    const vko_slot_dtype v_bf16 = {"exp_avg_sq", VKO_STATE_BF16};
    other = qg.hyper;
    other.slot_dtypes = &v_bf16;
    other.slot_dtype_count = 1;
    CHECK(vko_optimizer_set_hyperparams(q8, 0, &other) == VKO_INVALID_STATE, "slot dtype change accepted");
    vko_param_group sg = qg;
    sg.hyper = other;
    vko_optimizer* split = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &sg, 1, &split));
    OK(vko_optimizer_memory(split, &bytes, &per_element));
    /* master 4 B + exp_avg 1 B + exp_avg_sq 2 B per element, and 4 absmax floats (a region padded
     * to 32 bytes) */
    CHECK(bytes == 4 * NQ + NQ + 32 + 2 * NQ, "split policy: %llu bytes", (unsigned long long)bytes);
    OK(vko_optimizer_set_hyperparams(split, 0, &sg.hyper)); /* the same policy: accepted */
    vko_optimizer_destroy(split);
    /* 4-bit state: half a byte per element and state, one float absmax per 128 elements and state;
     * the first step as the 8-bit one's */
    vko_param_group fg = qg;
    fg.hyper.state_dtype = VKO_STATE_Q4;
    vko_optimizer* q4 = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &fg, 1, &q4));
    OK(vko_optimizer_memory(q4, &bytes, &per_element));
    CHECK(bytes == 4 * NQ + NQ + 2 * 4 * (NQ / 128), "4-bit Adam with masters: %llu bytes", (unsigned long long)bytes);
    OK(vko_optimizer_write_state(q4, 0, "master_param", out, NQ));
    OK(vko_optimizer_step(q4));
    float master4[NQ];
    OK(vko_optimizer_read_state(q4, 0, "master_param", master4, NQ));
    for (size_t i = 0; i < NQ; ++i)
      CHECK(fabs(master4[i] - master[i]) < 1e-6, "4-bit master[%zu] %g vs 8-bit %g", i, master4[i], master[i]);
    /* Rank-1 second moments of a 32 x 32 matrix: three sets of 32 + 32 maxima after the absmax
     * entries; the first step as the blockwise one's */
    vko_param_group rg = fg;
    rg.hyper.rank1_second_moment = 1;
    OK(vko_tensor_set_rows(tp, 32));
    vko_optimizer* rank1 = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &rg, 1, &rank1));
    OK(vko_optimizer_memory(rank1, &bytes, &per_element));
    CHECK(bytes == 4 * NQ + NQ + 2 * 4 * (NQ / 128) + 3 * 64 * 4, "rank-1 4-bit Adam with masters: %llu bytes",
          (unsigned long long)bytes);
    OK(vko_optimizer_write_state(rank1, 0, "master_param", out, NQ));
    OK(vko_optimizer_step(rank1));
    OK(vko_optimizer_read_state(rank1, 0, "master_param", master4, NQ));
    for (size_t i = 0; i < NQ; ++i)
      CHECK(fabs(master4[i] - master[i]) < 1e-6, "rank-1 master[%zu] %g vs 8-bit %g", i, master4[i], master[i]);
    float v1[NQ];
    OK(vko_optimizer_read_state(rank1, 0, "exp_avg_sq", v1, NQ));
    /* (1 - b2) g^2: every row and column holds both gradients, so the scale is 0.001 * 0.5^2 and
     * both values sit on the map (1/4 and 1) */
    for (size_t i = 0; i < NQ; ++i)
      CHECK(fabs(v1[i] - 0.001 * gq[i] * gq[i]) <= 1e-9, "rank-1 exp_avg_sq[%zu] %g", i, v1[i]);
    vko_optimizer_destroy(rank1);
    OK(vko_tensor_set_rows(tp, 0));
    const vko_slot_dtype m_q8 = {"exp_avg", VKO_STATE_Q8};
    fg.hyper.slot_dtypes = &m_q8;
    fg.hyper.slot_dtype_count = 1;
    vko_optimizer* mixed = NULL;
    CHECK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &fg, 1, &mixed) == VKO_INVALID_ARGUMENT && !mixed,
          "8-bit and 4-bit state in one group accepted");
    CHECK(strstr(vko_last_error(), "mixes 8-bit and 4-bit") != NULL, "message: %s", vko_last_error());
    vko_optimizer_destroy(q4);
    const vko_slot_dtype unknown = {"exp_avg_squared", VKO_STATE_BF16};
    sg.hyper.slot_dtypes = &unknown;
    CHECK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &sg, 1, &split) == VKO_INVALID_ARGUMENT && !split,
          "unknown slot name accepted");
    CHECK(strstr(vko_last_error(), "exp_avg_squared") != NULL, "message: %s", vko_last_error());
    sg.hyper.slot_dtypes = NULL; /* a count without entries */
    CHECK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &sg, 1, &split) == VKO_INVALID_ARGUMENT && !split,
          "slot_dtypes NULL with a count accepted");
    CHECK(strstr(vko_last_error(), "slot_dtypes") != NULL, "message: %s", vko_last_error());
    vko_optimizer_destroy(q8);
    vko_tensor_destroy(tp);
    vko_tensor_destroy(tg);
  }

  /* Errors: status code, a message naming the argument, and nothing changed. */
  float before[N1], after[N1];
  OK(vko_tensor_read(p[1], before, N1));
  CHECK(vko_optimizer_set_lr(opt, 0, -1.0) == VKO_INVALID_ARGUMENT, "negative lr accepted");
  CHECK(strstr(vko_last_error(), "lr") != NULL, "message: %s", vko_last_error());
  float m1[N1];
  CHECK(vko_optimizer_read_state(opt, 1, "no_such_state", m1, N1) == VKO_NOT_FOUND, "unknown state accepted");
  CHECK(vko_optimizer_read_state(opt, 1, "exp_avg", m1, 2) == VKO_INVALID_ARGUMENT, "short read accepted");
  vko_hyperparams bad = vko_hyperparams_defaults(VKO_RULE_ADAMW);
  bad.beta1 = 1.0;
  CHECK(vko_optimizer_set_hyperparams(opt, 1, &bad) == VKO_INVALID_ARGUMENT, "beta1 = 1 accepted");
  CHECK(strstr(vko_last_error(), "beta1") != NULL, "message: %s", vko_last_error());
  /* An optimizer without tensors is made (as in C++, where groups can be added later) but cannot
   * step. */
  vko_optimizer* none = NULL;
  OK(vko_optimizer_create(ctx, VKO_RULE_SGD, NULL, 0, &none));
  CHECK(vko_optimizer_step(none) == VKO_INVALID_STATE, "an optimizer without tensors stepped");
  CHECK(strstr(vko_last_error(), "no tensors") != NULL, "message: %s", vko_last_error());
  vko_optimizer_destroy(none);

  /* Values that are no vko_rule, even with no groups to use them: refused. */
  CHECK(
      vko_optimizer_create(ctx, (vko_rule)(VKO_RULE_MUON + 1), NULL, 0, &none) == VKO_INVALID_ARGUMENT && none == NULL,
      "the value past the last rule accepted");
  CHECK(vko_optimizer_create(ctx, (vko_rule)0x7fffffff, NULL, 0, &none) == VKO_INVALID_ARGUMENT && none == NULL,
        "rule 0x7fffffff accepted");
  CHECK(vko_hyperparams_defaults((vko_rule)-1).lr == 0, "defaults for a value that is no rule");

  /* Sizes whose byte count overflows, or beyond the device's memory: refused, nothing made. */
  vko_tensor* huge = NULL;
  CHECK(vko_tensor_create(ctx, NULL, (size_t)1 << 62, &huge) == VKO_INVALID_ARGUMENT && huge == NULL, "2^62 floats: %s",
        vko_last_error());
  CHECK(strstr(vko_last_error(), "overflows") != NULL, "message: %s", vko_last_error());
  CHECK(vko_tensor_create_typed(ctx, VKO_DTYPE_BF16, NULL, (size_t)1 << 63, &huge) == VKO_INVALID_ARGUMENT &&
            huge == NULL,
        "2^63 bf16: %s", vko_last_error());
  CHECK(vko_tensor_create(ctx, NULL, SIZE_MAX, &huge) == VKO_INVALID_ARGUMENT && huge == NULL, "SIZE_MAX floats: %s",
        vko_last_error());
  /* 2^40 floats (4 TiB): more than any heap of this machine. */
  CHECK(vko_tensor_create(ctx, NULL, (size_t)1 << 40, &huge) == VKO_OUT_OF_MEMORY && huge == NULL, "2^40 floats: %s",
        vko_last_error());

  /* Tensors of another context are refused by name. */
  vko_context* other = NULL;
  OK(vko_context_create(&desc, &other));
  vko_tensor *op = NULL, *og = NULL;
  OK(vko_tensor_create(other, NULL, N1, &op));
  OK(vko_tensor_create(other, NULL, N1, &og));
  vko_tensor* mixed_p[1] = {p[1]};
  vko_tensor* mixed_g[1] = {og};
  vko_param_group mixed = {vko_hyperparams_defaults(VKO_RULE_SGD), mixed_p, mixed_g, 1};
  vko_optimizer* foreign = NULL;
  CHECK(vko_optimizer_create(ctx, VKO_RULE_SGD, &mixed, 1, &foreign) == VKO_INVALID_ARGUMENT && foreign == NULL,
        "a tensor of another context was accepted");
  CHECK(strstr(vko_last_error(), "another vko_context") != NULL, "message: %s", vko_last_error());
  vko_tensor_destroy(op);
  vko_tensor_destroy(og);

  /* Destroyed handles are refused, never dereferenced; destroying twice is a no-op. */
  CHECK(vko_tensor_read(og, after, N1) == VKO_INVALID_ARGUMENT, "a destroyed tensor was read");
  CHECK(strstr(vko_last_error(), "not a live handle") != NULL, "message: %s", vko_last_error());
  CHECK(vko_tensor_count(og) == 0, "a destroyed tensor has a count");
  /* A handle of another kind (untyped in ctypes) is refused, not reinterpreted. */
  CHECK(vko_optimizer_step((vko_optimizer*)p[0]) == VKO_INVALID_ARGUMENT, "a tensor was stepped as an optimizer");
  CHECK(strstr(vko_last_error(), "another kind") != NULL, "message: %s", vko_last_error());
  vko_optimizer_destroy((vko_optimizer*)p[0]); /* a no-op: not an optimizer */
  CHECK(vko_tensor_count(p[0]) == N0, "destroying a tensor as an optimizer destroyed it");
  vko_tensor_destroy(og);
  vko_context_destroy(other);
  CHECK(vko_tensor_create(other, NULL, N1, &op) == VKO_INVALID_ARGUMENT, "a destroyed context made a tensor");
  vko_context_destroy(other);
  OK(vko_tensor_read(p[1], after, N1));
  CHECK(memcmp(before, after, sizeof before) == 0, "a failed call changed parameters");

  /* A gradient destroyed while the optimizer uses it stays alive for the optimizer: steps go on
   * and read the gradient's last values. */
  {
    float sp[N1] = {1.0f, 2.0f, 3.0f}, sg[N1] = {0.5f, -0.5f, 0.25f}, out[N1];
    vko_tensor *tp = NULL, *tg = NULL;
    OK(vko_tensor_create(ctx, sp, N1, &tp));
    OK(vko_tensor_create(ctx, sg, N1, &tg));
    vko_tensor* ps[1] = {tp};
    vko_tensor* gs[1] = {tg};
    vko_param_group group = {vko_hyperparams_defaults(VKO_RULE_SGD), ps, gs, 1};
    group.hyper.lr = 0.5;
    vko_optimizer* sgd = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_SGD, &group, 1, &sgd));
    vko_tensor_destroy(tg);
    CHECK(vko_tensor_write(tg, sg, N1) == VKO_INVALID_ARGUMENT, "a destroyed gradient was written");
    OK(vko_optimizer_step(sgd));
    OK(vko_optimizer_step(sgd));
    OK(vko_tensor_read(tp, out, N1));
    for (size_t i = 0; i < N1; ++i)
      CHECK(out[i] == sp[i] - 2 * 0.5f * sg[i], "p[%zu] = %g, expected %g", i, out[i], sp[i] - 2 * 0.5f * sg[i]);
    vko_optimizer_destroy(sgd);
    CHECK(vko_optimizer_step(sgd) == VKO_INVALID_ARGUMENT, "a destroyed optimizer stepped");
    vko_optimizer_destroy(sgd);
    vko_tensor_destroy(tp);
  }

  {
    /* The whole step on the device from C: a cosine schedule, norm clipping and the loss scaler
     * on two twin optimizers; one steps with vko_optimizer_step, the other is recorded once as a
     * replayable step into the test's own command buffer and submitted per step. Same bits. */
    enum { NR = 300, RSTEPS = 12 };
    float p0[NR], gr[NR], pa[NR], pb[NR];
    for (size_t i = 0; i < NR; ++i) p0[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    vko_tensor *tpa = NULL, *tpb = NULL, *tga = NULL, *tgb = NULL;
    OK(vko_tensor_create(ctx, p0, NR, &tpa));
    OK(vko_tensor_create(ctx, p0, NR, &tpb));
    OK(vko_tensor_create(ctx, NULL, NR, &tga));
    OK(vko_tensor_create(ctx, NULL, NR, &tgb));
    vko_param_group ga = {vko_hyperparams_defaults(VKO_RULE_ADAMW), &tpa, &tga, 1};
    vko_param_group gb = {vko_hyperparams_defaults(VKO_RULE_ADAMW), &tpb, &tgb, 1};
    ga.hyper.lr = gb.hyper.lr = 1e-2;
    vko_optimizer *a = NULL, *b = NULL;
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAMW, &ga, 1, &a));
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAMW, &gb, 1, &b));
    vko_schedule cosine = vko_schedule_defaults(VKO_SCHEDULE_COSINE_ANNEALING);
    cosine.t_max = 10;
    cosine.eta_min = 1e-4;
    vko_grad_clip clip = vko_grad_clip_defaults();
    clip.max_norm = 2.0;
    vko_grad_scaler scaler = vko_grad_scaler_defaults();
    scaler.enabled = 1;
    scaler.init_scale = 256;
    scaler.growth_interval = 5;
    vko_optimizer* both[2] = {a, b};
    for (int k = 0; k < 2; ++k) {
      OK(vko_optimizer_set_schedule(both[k], 0, &cosine));
      OK(vko_optimizer_set_grad_clip(both[k], &clip));
      OK(vko_optimizer_set_grad_scaler(both[k], &scaler));
    }
    vko_vulkan_handles vk;
    OK(vko_context_vulkan_handles(ctx, &vk));
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.queueFamilyIndex = vk.queue_family_index;
    VkCommandPool pool = VK_NULL_HANDLE;
    CHECK(vkCreateCommandPool(vk.device, &pci, NULL, &pool) == VK_SUCCESS, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    CHECK(vkAllocateCommandBuffers(vk.device, &cai, &cmd) == VK_SUCCESS, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence = VK_NULL_HANDLE;
    CHECK(vkCreateFence(vk.device, &fci, NULL, &fence) == VK_SUCCESS, "vkCreateFence");
    OK(vko_optimizer_initialize(b));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(cmd, &bi);
    vko_record_options ro = vko_record_options_defaults();
    ro.replay = 1;
    ro.exit_stage_mask |= VK_PIPELINE_STAGE_HOST_BIT;
    ro.exit_access_mask |= VK_ACCESS_HOST_READ_BIT;
    OK(vko_optimizer_record(b, cmd, &ro));
    vkEndCommandBuffer(cmd);
    for (int t = 1; t <= RSTEPS; ++t) {
      float scale = 0;
      OK(vko_optimizer_loss_scale(a, &scale));
      for (size_t i = 0; i < NR; ++i) gr[i] = ((float)rand() / (float)RAND_MAX * 2.0f - 1.0f) * scale;
      if (t == 4) gr[7] = INFINITY; /* skipped by both, the scale backs off */
      OK(vko_tensor_write(tga, gr, NR));
      OK(vko_tensor_write(tgb, gr, NR));
      OK(vko_optimizer_step(a));
      VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO};
      si.commandBufferCount = 1;
      si.pCommandBuffers = &cmd;
      CHECK(vkQueueSubmit(vk.queue, 1, &si, fence) == VK_SUCCESS, "vkQueueSubmit");
      vkWaitForFences(vk.device, 1, &fence, VK_TRUE, UINT64_MAX);
      vkResetFences(vk.device, 1, &fence);
    }
    OK(vko_tensor_read(tpa, pa, NR));
    OK(vko_tensor_read(tpb, pb, NR));
    CHECK(memcmp(pa, pb, sizeof pa) == 0, "stepped and replayed parameters differ");
    CHECK(memcmp(pa, p0, sizeof pa) != 0, "no step changed the parameters");
    vko_step_report reports[16];
    size_t n = 0;
    OK(vko_optimizer_step_reports(b, reports, 16, &n));
    CHECK(n == RSTEPS && reports[n - 1].step == RSTEPS, "%zu reports", n);
    CHECK(reports[3].skipped && reports[3].found_inf && !reports[4].skipped, "step 4 not skipped alone");
    CHECK(reports[4].scale == 128.0f, "scale after the skipped step %g", reports[4].scale);
    float step = 0, scale_a = 0, scale_b = 0;
    OK(vko_optimizer_read_state(b, 0, "step", &step, 1));
    CHECK(step == RSTEPS - 1, "step %g", step);
    OK(vko_optimizer_loss_scale(a, &scale_a));
    OK(vko_optimizer_loss_scale(b, &scale_b));
    CHECK(scale_a == scale_b && scale_a == 256.0f, "scales %g %g", scale_a, scale_b);
    VkBuffer scale_buffer = VK_NULL_HANDLE;
    VkDeviceSize scale_offset = 0;
    OK(vko_optimizer_loss_scale_buffer(b, &scale_buffer, &scale_offset));
    CHECK(scale_buffer != VK_NULL_HANDLE, "no loss scale buffer");
    /* Bad input is refused naming the field; NULL pointers too. */
    clip.max_norm = -1;
    CHECK(vko_optimizer_set_grad_clip(a, &clip) == VKO_INVALID_ARGUMENT, "negative max_norm accepted");
    CHECK(strstr(vko_last_error(), "max_norm") != NULL, "message: %s", vko_last_error());
    scaler.backoff_factor = 2;
    CHECK(vko_optimizer_set_grad_scaler(a, &scaler) == VKO_INVALID_ARGUMENT, "backoff 2 accepted");
    CHECK(strstr(vko_last_error(), "backoff_factor") != NULL, "message: %s", vko_last_error());
    cosine.kind = 99;
    CHECK(vko_optimizer_set_schedule(a, 0, &cosine) == VKO_INVALID_ARGUMENT, "kind 99 accepted");
    CHECK(vko_optimizer_record(a, VK_NULL_HANDLE, &ro) == VKO_INVALID_ARGUMENT, "a NULL command buffer accepted");
    CHECK(vko_optimizer_step_reports(a, NULL, 4, &n) == VKO_INVALID_ARGUMENT, "NULL out accepted");
    vkDestroyFence(vk.device, fence, NULL);
    vkDestroyCommandPool(vk.device, pool, NULL);
    vko_optimizer_destroy(a);
    vko_optimizer_destroy(b);
    vko_tensor_destroy(tpa);
    vko_tensor_destroy(tpb);
    vko_tensor_destroy(tga);
    vko_tensor_destroy(tgb);
  }

  {
    /* A sparse embedding table: SparseAdam on rows the gradient names (duplicates summed in
     * position order, padding skipped), against a double computation; an out-of-range index
     * skips the step and changes nothing. */
    enum { ROWS = 6, DIM = 4, POS = 4 };
    float table[ROWS * DIM], vals[POS * DIM];
    for (int i = 0; i < ROWS * DIM; ++i) table[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (int i = 0; i < POS * DIM; ++i) vals[i] = 0.25f * (float)(i % 5) - 0.4f;
    const uint32_t idx[POS] = {2, 5, 2, 0xFFFFFFFFu};
    vko_tensor *tp = NULL, *ti = NULL, *tv = NULL;
    OK(vko_tensor_create(ctx, table, ROWS * DIM, &tp));
    OK(vko_tensor_create_typed(ctx, VKO_DTYPE_U32, NULL, POS, &ti));
    OK(vko_tensor_write_indices(ti, idx, POS));
    OK(vko_tensor_create(ctx, vals, POS * DIM, &tv));
    OK(vko_tensor_set_name(tp, "emb"));
    vko_sparse_table st = {sizeof(vko_sparse_table), tp, ti, tv, DIM};
    vko_hyperparams sh = vko_hyperparams_defaults(VKO_RULE_ADAM);
    sh.lr = 0.01;
    vko_sparse_optimizer* sp = NULL;
    OK(vko_sparse_optimizer_create(ctx, VKO_RULE_ADAM, &sh, &st, 1, &sp));
    double rp[ROWS * DIM], rm[ROWS * DIM] = {0}, rv[ROWS * DIM] = {0};
    for (int i = 0; i < ROWS * DIM; ++i) rp[i] = table[i];
    for (int t = 1; t <= 3; ++t) {
      OK(vko_sparse_optimizer_step(sp));
      const double step_size = 0.01 * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t));
      const uint32_t rows[2] = {2, 5};
      for (int r = 0; r < 2; ++r)
        for (int j = 0; j < DIM; ++j) {
          float gf = 0.0f; /* the coalesced gradient: float sums in position order */
          for (int q = 0; q < POS; ++q)
            if (idx[q] == rows[r]) gf += vals[q * DIM + j];
          const size_t e = rows[r] * DIM + (size_t)j;
          rm[e] += 0.1 * (gf - rm[e]);
          rv[e] += 0.001 * ((double)gf * gf - rv[e]);
          rp[e] -= step_size * rm[e] / (sqrt(rv[e]) + 1e-8);
        }
    }
    float got[ROWS * DIM], got_m[ROWS * DIM];
    OK(vko_tensor_read(tp, got, ROWS * DIM));
    OK(vko_sparse_optimizer_read_state(sp, 0, "exp_avg", got_m, ROWS * DIM));
    for (int i = 0; i < ROWS * DIM; ++i) {
      CHECK(fabs(got[i] - rp[i]) <= 1e-5 * (1 + fabs(rp[i])), "sparse param[%d] %g vs %g", i, got[i], rp[i]);
      CHECK(fabs(got_m[i] - rm[i]) <= 1e-6 * (1 + fabs(rm[i])), "exp_avg[%d] %g vs %g", i, got_m[i], rm[i]);
    }
    vko_sparse_report rep;
    OK(vko_sparse_optimizer_last_report(sp, &rep));
    CHECK(rep.step == 3 && rep.rows_updated == 2 && !rep.skipped, "report step %llu rows %u",
          (unsigned long long)rep.step, rep.rows_updated);
    const uint32_t bad[POS] = {1, 6, 0, 0};
    OK(vko_tensor_write_indices(ti, bad, POS));
    CHECK(vko_sparse_optimizer_step(sp) == VKO_INVALID_ARGUMENT, "index 6 of 6 rows accepted");
    CHECK(strstr(vko_last_error(), "indices[1] = 6") != NULL, "message: %s", vko_last_error());
    float after[ROWS * DIM];
    OK(vko_tensor_read(tp, after, ROWS * DIM));
    CHECK(memcmp(after, got, sizeof after) == 0, "a skipped sparse step changed the table");
    float step = 0;
    OK(vko_sparse_optimizer_read_state(sp, 0, "step", &step, 1));
    CHECK(step == 3.0f, "step %g after a skipped step", step);
    /* What a sparse optimizer refuses, naming it. */
    vko_hyperparams wd = vko_hyperparams_defaults(VKO_RULE_ADAGRAD);
    wd.weight_decay = 0.1;
    vko_sparse_optimizer* refused = NULL;
    vko_tensor* tv_refused = NULL;
    CHECK(vko_sparse_optimizer_create(ctx, VKO_RULE_ADAGRAD, &wd, &st, 1, &refused) == VKO_INVALID_ARGUMENT,
          "sparse Adagrad with weight decay accepted");
    CHECK(strstr(vko_last_error(), "weight_decay") != NULL, "message: %s", vko_last_error());
    sh.amsgrad = 1;
    CHECK(vko_sparse_optimizer_create(ctx, VKO_RULE_ADAM, &sh, &st, 1, &refused) == VKO_INVALID_ARGUMENT,
          "SparseAdam with amsgrad accepted");
    CHECK(strstr(vko_last_error(), "amsgrad") != NULL, "message: %s", vko_last_error());
    CHECK(vko_sparse_optimizer_create(ctx, VKO_RULE_SGD, NULL, &st, 1, &refused) == VKO_INVALID_ARGUMENT,
          "sparse SGD accepted");
    vko_hyperparams rank1 = vko_hyperparams_defaults(VKO_RULE_ADAM);
    rank1.rank1_second_moment = 1;
    CHECK(vko_sparse_optimizer_create(ctx, VKO_RULE_ADAM, &rank1, &st, 1, &refused) == VKO_INVALID_ARGUMENT,
          "SparseAdam with rank-1 second moments accepted");
    CHECK(strstr(vko_last_error(), "rank1_second_moment") != NULL, "message: %s", vko_last_error());
    CHECK(vko_tensor_create_typed(ctx, VKO_DTYPE_U32, table, 3, &tv_refused) == VKO_INVALID_ARGUMENT,
          "U32 tensor from floats accepted");
    vko_sparse_optimizer_destroy(sp);
    vko_tensor_destroy(tp);
    vko_tensor_destroy(ti);
    vko_tensor_destroy(tv);
  }

  {
    /* Adafactor on a 3 x 200 matrix split between two ranks (cut at 256: inside row 1): each rank
     * exchanges its row and column sums (factor part) and its per-tensor sums, and the run follows
     * the unsharded optimizer's within float rounding. */
    enum { AR = 3, AC = 200, AN = AR * AC };
    const vko_flat_tensor model[1] = {{"w", AN, AR, 0}};
    const uint64_t cuts[3] = {0, 256, AN};
    vko_shard_layout* layout = NULL;
    OK(vko_shard_layout_create(model, 1, 2, cuts, &layout));
    static float p0[AN], gr[AN], want[AN], got[AN];
    for (int i = 0; i < AN; ++i) p0[i] = 0.01f * (float)((i * 37) % 101) - 0.5f;
    const vko_hyperparams h = vko_hyperparams_defaults(VKO_RULE_ADAFACTOR);
    vko_tensor *wp, *wg, *sp[2], *sg[2];
    OK(vko_tensor_create(ctx, p0, AN, &wp));
    OK(vko_tensor_create(ctx, NULL, AN, &wg));
    OK(vko_tensor_set_rows(wp, AR));
    vko_param_group group = {h, &wp, &wg, 1};
    vko_optimizer *ref = NULL, *shard[2] = {NULL, NULL};
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAFACTOR, &group, 1, &ref));
    for (uint32_t r = 0; r < 2; ++r) {
      OK(vko_tensor_create(ctx, p0 + cuts[r], cuts[r + 1] - cuts[r], &sp[r]));
      OK(vko_tensor_create(ctx, NULL, cuts[r + 1] - cuts[r], &sg[r]));
      OK(vko_optimizer_create_shard(ctx, VKO_RULE_ADAFACTOR, layout, r, &h, 1, sp[r], sg[r], &shard[r]));
    }
    size_t all = 0, mine_count = 0;
    OK(vko_shard_factor_sum_count(layout, &all));
    OK(vko_optimizer_factor_sum_count(shard[0], &mine_count));
    CHECK(all == 2 * (AR + AC) && mine_count == all, "factor sums: layout %zu, rank 0 %zu", all, mine_count);
    static float mine[2 * (AR + AC)], placed[2 * (AR + AC)], total[2 * (AR + AC)], back[2 * (AR + AC)];
    CHECK(vko_optimizer_step_factor_sums(shard[0], mine, all + 1) == VKO_INVALID_ARGUMENT, "a wrong count accepted");
    CHECK(vko_optimizer_step_factor_sums(ref, NULL, 0) == VKO_INVALID_STATE, "an unsharded factor part accepted");
    for (int t = 1; t <= 4; ++t) {
      for (int i = 0; i < AN; ++i) gr[i] = 0.1f * cosf((float)(i * (t + 2)));
      OK(vko_tensor_write(wg, gr, AN));
      OK(vko_optimizer_step(ref));
      memset(total, 0, sizeof total);
      for (uint32_t r = 0; r < 2; ++r) {
        OK(vko_tensor_write(sg[r], gr + cuts[r], cuts[r + 1] - cuts[r]));
        OK(vko_optimizer_step_factor_sums(shard[r], mine, all));
        OK(vko_shard_scatter_factor_sums(layout, r, mine, all, placed, all));
        for (size_t k = 0; k < all; ++k) total[k] += placed[k];
      }
      float sums[2][2], scattered[2], tensor_total[2] = {0, 0};
      for (uint32_t r = 0; r < 2; ++r) {
        OK(vko_shard_gather_factor_sums(layout, r, total, all, back, all));
        OK(vko_optimizer_set_factor_sums(shard[r], back, all));
        OK(vko_optimizer_step_tensor_sums(shard[r], sums[r], 2));
        OK(vko_shard_scatter_tensor_sums(layout, r, sums[r], 2, scattered, 2));
        tensor_total[0] += scattered[0], tensor_total[1] += scattered[1];
      }
      for (uint32_t r = 0; r < 2; ++r) OK(vko_optimizer_step_finish_tensor_sums(shard[r], tensor_total, 2));
    }
    OK(vko_tensor_read(wp, want, AN));
    for (uint32_t r = 0; r < 2; ++r) OK(vko_tensor_read(sp[r], got + cuts[r], cuts[r + 1] - cuts[r]));
    float worst = 0;
    for (int i = 0; i < AN; ++i) worst = fmaxf(worst, fabsf(got[i] - want[i]) / (fabsf(want[i]) + 1e-6f));
    CHECK(worst < 1e-5f, "split Adafactor differs from the unsharded run by %g (relative)", worst);
    CHECK(fabsf(got[5] - p0[5]) > 1e-4f, "the parameters did not move");
    float row_var[2][AR];
    for (uint32_t r = 0; r < 2; ++r) OK(vko_optimizer_read_state(shard[r], 0, "row_var", row_var[r], AR));
    CHECK(memcmp(row_var[0], row_var[1], sizeof row_var[0]) == 0, "the ranks' row_var differ");
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceSize offset = 0;
    OK(vko_optimizer_factor_sums_buffer(shard[1], &buffer, &offset));
    CHECK(buffer != VK_NULL_HANDLE && offset % 256 == 0, "factor sums buffer");
    for (uint32_t r = 0; r < 2; ++r) {
      vko_optimizer_destroy(shard[r]);
      vko_tensor_destroy(sp[r]);
      vko_tensor_destroy(sg[r]);
    }
    vko_optimizer_destroy(ref);
    vko_tensor_destroy(wp);
    vko_tensor_destroy(wg);
    vko_shard_layout_destroy(layout);
  }

  {
    /* Rank-1 4-bit Adam on a 24 x 50 matrix split between two ranks (cut at 512: inside row 10):
     * each rank finds its part of the new row and column maxima (factor part), the ranks' lists
     * are combined with MAX, and the finish encodes against them: the unsharded run's bits. */
    enum { RR = 24, RC = 50, RN = RR * RC };
    const vko_flat_tensor model[1] = {{"w", RN, RR, 0}};
    const uint64_t cuts[3] = {0, 512, RN};
    vko_shard_layout* layout = NULL;
    OK(vko_shard_layout_create(model, 1, 2, cuts, &layout));
    static float p0[RN], gr[RN], want[RN], got[RN];
    for (int i = 0; i < RN; ++i) p0[i] = 0.01f * (float)((i * 37) % 101) - 0.5f;
    vko_hyperparams h = vko_hyperparams_defaults(VKO_RULE_ADAM);
    h.lr = 1e-2;
    h.state_dtype = VKO_STATE_Q4;
    h.min_8bit_elements = 0;
    h.rank1_second_moment = 1;
    vko_tensor *wp, *wg, *sp[2], *sg[2];
    OK(vko_tensor_create(ctx, p0, RN, &wp));
    OK(vko_tensor_create(ctx, NULL, RN, &wg));
    OK(vko_tensor_set_rows(wp, RR));
    vko_param_group group = {h, &wp, &wg, 1};
    vko_optimizer *ref = NULL, *shard[2] = {NULL, NULL};
    OK(vko_optimizer_create(ctx, VKO_RULE_ADAM, &group, 1, &ref));
    for (uint32_t r = 0; r < 2; ++r) {
      OK(vko_tensor_create(ctx, p0 + cuts[r], cuts[r + 1] - cuts[r], &sp[r]));
      OK(vko_tensor_create(ctx, NULL, cuts[r + 1] - cuts[r], &sg[r]));
      OK(vko_optimizer_create_shard(ctx, VKO_RULE_ADAM, layout, r, &h, 1, sp[r], sg[r], &shard[r]));
    }
    size_t all = 0, mine_count = 0;
    OK(vko_shard_factor_maxima_count(layout, &all));
    OK(vko_optimizer_factor_sum_count(shard[1], &mine_count));
    CHECK(all == 3 * (RR + RC) && mine_count == all, "maxima: layout %zu, rank 1 %zu", all, mine_count);
    static float mine[3 * (RR + RC)], placed[3 * (RR + RC)], total[3 * (RR + RC)], back[3 * (RR + RC)];
    CHECK(vko_optimizer_step(shard[0]) == VKO_INVALID_STATE, "a split rank-1 shard stepped in one part");
    CHECK(vko_optimizer_step_finish_factors(shard[0]) == VKO_INVALID_STATE, "a finish without the factor part");
    CHECK(strstr(vko_last_error(), "every rank's maxima first") != NULL, "message: %s", vko_last_error());
    CHECK(vko_shard_scatter_factor_maxima(layout, 0, mine, all - 1, placed, all) == VKO_INVALID_ARGUMENT,
          "a wrong count accepted");
    for (int t = 1; t <= 6; ++t) {
      for (int i = 0; i < RN; ++i) gr[i] = 0.1f * cosf((float)(i * (t + 2)));
      OK(vko_tensor_write(wg, gr, RN));
      OK(vko_optimizer_step(ref));
      memset(total, 0, sizeof total);
      for (uint32_t r = 0; r < 2; ++r) {
        OK(vko_tensor_write(sg[r], gr + cuts[r], cuts[r + 1] - cuts[r]));
        OK(vko_optimizer_step_factor_sums(shard[r], mine, all));
        OK(vko_shard_scatter_factor_maxima(layout, r, mine, all, placed, all));
        for (size_t k = 0; k < all; ++k) total[k] = fmaxf(total[k], placed[k]);
      }
      for (uint32_t r = 0; r < 2; ++r) {
        OK(vko_shard_gather_factor_maxima(layout, r, total, all, back, all));
        OK(vko_optimizer_set_factor_sums(shard[r], back, all));
        OK(vko_optimizer_step_finish_factors(shard[r]));
      }
    }
    OK(vko_tensor_read(wp, want, RN));
    for (uint32_t r = 0; r < 2; ++r) OK(vko_tensor_read(sp[r], got + cuts[r], cuts[r + 1] - cuts[r]));
    CHECK(memcmp(got, want, sizeof want) == 0, "split rank-1 Adam differs from the unsharded run");
    CHECK(fabsf(got[5] - p0[5]) > 1e-4f, "the parameters did not move");
    for (uint32_t r = 0; r < 2; ++r) {
      vko_optimizer_destroy(shard[r]);
      vko_tensor_destroy(sp[r]);
      vko_tensor_destroy(sg[r]);
    }
    vko_optimizer_destroy(ref);
    vko_tensor_destroy(wp);
    vko_tensor_destroy(wg);
    vko_shard_layout_destroy(layout);
  }

  {
    /* Muon on a 24 x 50 matrix split between two ranks (cut at 512: inside row 10), AdamW on a
     * 7-element bias in group 1: each rank writes its part of the whole matrix's update (factor
     * part), the ranks' lists are added, the matrices' sums of U^2 come from the chunk lists, and
     * every rank runs Newton-Schulz on the whole matrix: the unsharded run's bits. */
    enum { MR = 24, MC = 50, MW = MR * MC, MB = 7, MN = MW + MB };
    const vko_flat_tensor model[2] = {{"w", MW, MR, 0}, {"b", MB, 0, 1}};
    const uint64_t cuts[3] = {0, 512, MN};
    vko_shard_layout* layout = NULL;
    OK(vko_shard_layout_create(model, 2, 2, cuts, &layout));
    static float p0[MN], gr[MN], want[MN], got[MN];
    for (int i = 0; i < MN; ++i) p0[i] = 0.01f * (float)((i * 37) % 101) - 0.5f;
    vko_hyperparams h[2] = {vko_hyperparams_defaults(VKO_RULE_MUON), vko_hyperparams_defaults(VKO_RULE_MUON)};
    h[0].lr = 2e-2;
    h[1].use_muon = 0;
    vko_tensor *wp, *wg, *bp, *bgr, *sp[2], *sg[2];
    OK(vko_tensor_create(ctx, p0, MW, &wp));
    OK(vko_tensor_create(ctx, NULL, MW, &wg));
    OK(vko_tensor_set_rows(wp, MR));
    OK(vko_tensor_create(ctx, p0 + MW, MB, &bp));
    OK(vko_tensor_create(ctx, NULL, MB, &bgr));
    vko_param_group groups[2] = {{h[0], &wp, &wg, 1}, {h[1], &bp, &bgr, 1}};
    vko_optimizer *ref = NULL, *shard[2] = {NULL, NULL};
    OK(vko_optimizer_create(ctx, VKO_RULE_MUON, groups, 2, &ref));
    for (uint32_t r = 0; r < 2; ++r) {
      OK(vko_tensor_create(ctx, p0 + cuts[r], cuts[r + 1] - cuts[r], &sp[r]));
      OK(vko_tensor_create(ctx, NULL, cuts[r + 1] - cuts[r], &sg[r]));
      OK(vko_optimizer_create_shard(ctx, VKO_RULE_MUON, layout, r, h, 2, sp[r], sg[r], &shard[r]));
    }
    size_t all = 0, mine_count = 0, chunk_all = 0;
    OK(vko_shard_matrix_update_count(layout, VKO_RULE_MUON, h, 2, &all));
    OK(vko_optimizer_factor_sum_count(shard[1], &mine_count));
    OK(vko_shard_grad_chunk_count(layout, &chunk_all));
    CHECK(all == MW && mine_count == MW, "matrix updates: layout %zu, rank 1 %zu", all, mine_count);
    static float mine[MW], placed[MW], total[MW], back[MW];
    float chunks[32], chunk_total[32], sums[4], combined[4];
    CHECK(2 * chunk_all <= 32, "%zu chunks", chunk_all);
    CHECK(vko_shard_scatter_matrix_updates(layout, VKO_RULE_MUON, h, 0, 0, mine, all, placed, all) ==
              VKO_INVALID_ARGUMENT,
          "matrix updates with a group missing accepted");
    for (int t = 1; t <= 4; ++t) {
      for (int i = 0; i < MN; ++i) gr[i] = 0.1f * cosf((float)(i * (t + 2)));
      OK(vko_tensor_write(wg, gr, MW));
      OK(vko_tensor_write(bgr, gr + MW, MB));
      OK(vko_optimizer_step(ref));
      memset(total, 0, sizeof total);
      for (uint32_t r = 0; r < 2; ++r) {
        OK(vko_tensor_write(sg[r], gr + cuts[r], cuts[r + 1] - cuts[r]));
        OK(vko_optimizer_step_factor_sums(shard[r], mine, all));
        OK(vko_shard_scatter_matrix_updates(layout, VKO_RULE_MUON, h, 2, r, mine, all, placed, all));
        for (size_t k = 0; k < all; ++k) total[k] += placed[k];
      }
      memset(chunk_total, 0, sizeof chunk_total);
      for (uint32_t r = 0; r < 2; ++r) {
        size_t count = 0;
        OK(vko_shard_gather_matrix_updates(layout, VKO_RULE_MUON, h, 2, r, total, all, back, all));
        OK(vko_optimizer_set_factor_sums(shard[r], back, all));
        OK(vko_optimizer_grad_chunk_count(shard[r], &count));
        OK(vko_optimizer_step_tensor_chunks(shard[r], chunks, 2 * count));
        OK(vko_shard_scatter_tensor_chunks(layout, r, chunks, 2 * count, placed, 2 * chunk_all));
        for (size_t k = 0; k < 2 * chunk_all; ++k) chunk_total[k] += placed[k];
      }
      OK(vko_reduce_tensor_chunks(layout, chunk_total, 2 * chunk_all, sums, 4));
      for (uint32_t r = 0; r < 2; ++r) {
        size_t count = 0;
        OK(vko_optimizer_tensor_count(shard[r], &count));
        OK(vko_shard_gather_tensor_sums(layout, r, sums, 4, combined, 2 * count));
        OK(vko_optimizer_step_finish_tensor_sums(shard[r], combined, 2 * count));
      }
    }
    OK(vko_tensor_read(wp, want, MW));
    OK(vko_tensor_read(bp, want + MW, MB));
    for (uint32_t r = 0; r < 2; ++r) OK(vko_tensor_read(sp[r], got + cuts[r], cuts[r + 1] - cuts[r]));
    CHECK(memcmp(got, want, sizeof want) == 0, "split Muon differs from the unsharded run");
    CHECK(fabsf(got[5] - p0[5]) > 1e-4f, "the parameters did not move");
    for (uint32_t r = 0; r < 2; ++r) {
      vko_optimizer_destroy(shard[r]);
      vko_tensor_destroy(sp[r]);
      vko_tensor_destroy(sg[r]);
    }
    vko_optimizer_destroy(ref);
    vko_tensor_destroy(wp);
    vko_tensor_destroy(wg);
    vko_tensor_destroy(bp);
    vko_tensor_destroy(bgr);
    vko_shard_layout_destroy(layout);
  }

  {
    /* Sharded state through the C API. */
    const vko_flat_tensor model[2] = {{"w", SW, 0, 0}, {"b", SB, 0, 1}};
    vko_shard_layout *two = NULL, *one = NULL, *bad = NULL, *again = NULL;
    OK(vko_shard_layout_create(model, 2, 2, NULL, &two));
    const uint64_t whole[2] = {0, SN};
    OK(vko_shard_layout_create(model, 2, 1, whole, &one));
    uint64_t begin = 0, end = 0;
    OK(vko_shard_layout_shard(two, 1, &begin, &end));
    CHECK(begin == 256 && end == SN, "shard 1 is [%llu, %llu)", (unsigned long long)begin, (unsigned long long)end);
    const uint64_t off_alignment[3] = {0, 300, SN};
    CHECK(vko_shard_layout_create(model, 2, 2, off_alignment, &bad) == VKO_INVALID_ARGUMENT && !bad,
          "a cut off the alignment accepted");
    CHECK(strstr(vko_last_error(), "not a multiple of 256") != NULL, "message: %s", vko_last_error());
    { /* Cuts between tensors only: "w" and "b" on a shard each; three shards of two tensors refused. */
      vko_shard_layout* between = NULL;
      OK(vko_shard_layout_create_whole_tensors(model, 2, 2, &between));
      OK(vko_shard_layout_shard(between, 1, &begin, &end));
      CHECK(begin == SW && end == SN, "whole-tensor shard 1 is [%llu, %llu)", (unsigned long long)begin,
            (unsigned long long)end);
      vko_shard_layout_destroy(between);
      CHECK(vko_shard_layout_create_whole_tensors(model, 2, 3, &bad) == VKO_INVALID_ARGUMENT && !bad,
            "three shards of two whole tensors accepted");
    }
    size_t json_size = 0;
    OK(vko_shard_layout_json(two, NULL, 0, &json_size));
    char* json = malloc(json_size);
    OK(vko_shard_layout_json(two, json, json_size, &json_size));
    OK(vko_shard_layout_from_json(json, &again));
    OK(vko_shard_layout_shard(again, 1, &begin, &end));
    CHECK(begin == 256 && end == SN, "the index did not round-trip");
    free(json);

    float p_ref[SN], p_sharded[SN];
    uint8_t* saved[2] = {NULL, NULL};
    size_t saved_sizes[2] = {0, 0};
    vko_hyperparams adamw = vko_hyperparams_defaults(VKO_RULE_ADAMW);
    adamw.lr = 0.01;
    vko_hyperparams lamb = vko_hyperparams_defaults(VKO_RULE_LAMB);
    lamb.lr = 0.01;
    vko_hyperparams sam = adamw;
    sam.sam_rho = 0.05;
    const struct {
      const char* name;
      vko_rule rule;
      const vko_hyperparams* h;
      int clip;
    } runs[4] = {{"AdamW clipped", VKO_RULE_ADAMW, &adamw, 1},
                 {"LAMB", VKO_RULE_LAMB, &lamb, 0},
                 {"LAMB clipped", VKO_RULE_LAMB, &lamb, 1},
                 {"AdamW with SAM", VKO_RULE_ADAMW, &sam, 0}};
    for (int k = 0; k < 4; ++k) {
      if (shard_run(ctx, two, runs[k].rule, runs[k].h, runs[k].clip, p_ref, p_sharded, k == 0 ? saved : NULL,
                    saved_sizes))
        return 1;
      int far = 0, moved = 0;
      for (int i = 0; i < SN; ++i) {
        far += fabsf(p_sharded[i] - p_ref[i]) > 1e-6f * fabsf(p_ref[i]) + 1e-7f;
        moved += p_ref[i] != 0.5f * sinf((float)i);
      }
      CHECK(far == 0, "%s: %d of %d parameters beyond float rounding of the unsharded run's", runs[k].name, far, SN);
      if (k <= 1) /* clipped AdamW and LAMB, their chunk sums exchanged whole: the unsharded run's bits */
        CHECK(memcmp(p_sharded, p_ref, sizeof p_ref) == 0, "%s: the shards differ from the unsharded run",
              runs[k].name);
      CHECK(moved > SN / 2, "%s: %d parameters moved", runs[k].name, moved);
    }
    /* The two ranks' checkpoints as one rank's: the state of "w" is the pieces' state joined. */
    const uint8_t* files[2] = {saved[0], saved[1]};
    size_t size = 0;
    OK(vko_reshard_checkpoint(two, files, saved_sizes, 2, one, 0, NULL, 0, &size));
    uint8_t* merged = malloc(size);
    OK(vko_reshard_checkpoint(two, files, saved_sizes, 2, one, 0, merged, size, &size));
    CHECK(vko_reshard_checkpoint(two, files, saved_sizes, 1, one, 0, NULL, 0, &size) == VKO_INVALID_ARGUMENT,
          "one file for two shards accepted");
    vko_tensor *fp = NULL, *fg = NULL;
    OK(vko_tensor_create(ctx, NULL, SN, &fp));
    OK(vko_tensor_create(ctx, NULL, SN, &fg));
    const vko_hyperparams hypers[2] = {adamw, adamw};
    vko_optimizer* joined = NULL;
    OK(vko_optimizer_create_shard(ctx, VKO_RULE_ADAMW, one, 0, hypers, 2, fp, fg, &joined));
    OK(vko_optimizer_load_from_memory(joined, merged, size, 0));
    float m_joined[SW], step = 0;
    OK(vko_optimizer_read_state(joined, 0, "exp_avg", m_joined, SW));
    OK(vko_optimizer_read_state(joined, 0, "step", &step, 1));
    CHECK(step == SSTEPS, "step %g after the reload", step);
    int nonzero = 0;
    for (int i = 0; i < SW; ++i) nonzero += m_joined[i] != 0;
    CHECK(nonzero > SW / 2, "exp_avg of the joined checkpoint: %d of %d nonzero", nonzero, SW);
    /* Bad input: a part that is not one (ignored past a shorter struct_size), counts that do not fit. */
    vko_record_options ro = vko_record_options_defaults();
    CHECK(ro.part == VKO_STEP_WHOLE, "default part %u", ro.part);
    ro.part = 7;
    CHECK(vko_optimizer_record(joined, VK_NULL_HANDLE, &ro) == VKO_INVALID_ARGUMENT &&
              strstr(vko_last_error(), "vko_step_part") != NULL,
          "part 7 accepted: %s", vko_last_error());
    ro.struct_size = (uint32_t)offsetof(vko_record_options, part); /* a caller built before `part`: not read */
    CHECK(vko_optimizer_record(joined, VK_NULL_HANDLE, &ro) == VKO_INVALID_ARGUMENT &&
              strstr(vko_last_error(), "VK_NULL_HANDLE") != NULL,
          "a shorter struct's part was read: %s", vko_last_error());
    float four[4];
    CHECK(vko_optimizer_sam_perturb_sums(joined, four, 4) == VKO_INVALID_ARGUMENT, "4 floats for 2 groups taken");
    CHECK(vko_optimizer_tensor_sums(joined, four, 4) == VKO_INVALID_STATE, "AdamW exchanged per-tensor sums");
    free(merged);
    free(saved[0]);
    free(saved[1]);
    vko_optimizer_destroy(joined);
    vko_tensor_destroy(fp);
    vko_tensor_destroy(fg);
    vko_shard_layout_destroy(two);
    vko_shard_layout_destroy(one);
    vko_shard_layout_destroy(again);
    CHECK(vko_shard_layout_shard(two, 0, &begin, &end) == VKO_INVALID_ARGUMENT, "a destroyed layout used");
  }

  CHECK(vko_context_validation_message_count(ctx) == 0, "%llu validation messages",
        (unsigned long long)vko_context_validation_message_count(ctx));
  vko_optimizer_destroy(opt);
  for (int k = 0; k < 2; ++k) {
    vko_tensor_destroy(p[k]);
    vko_tensor_destroy(g[k]);
  }
  vko_context_destroy(ctx);
  if (failures)
    fprintf(stderr, "%d check(s) failed\n", failures);
  else
    printf("C API test passed\n");
  return failures ? 1 : 0;
}
