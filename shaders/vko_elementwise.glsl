// The elementwise skeleton: main() of every elementwise pass. Each workgroup finds its segment,
// loads an item of every operand the rule reads, calls the rule's update on it, stores what the
// rule writes, reduces the absmax of quantized (8-bit, 4-bit) blocks and (VKO_PARTIALS) writes per-chunk partial
// sums. Includes vko_base.glsl, vko_push.glsl, vko_addressing.glsl, vko_operands.glsl (with
// vko_codec16.glsl and vko_quant.glsl) and, with VKO_PARTIALS, vko_reduce.glsl.
//
// Two kinds of segments, two pipelines (specialization constant VKO_CAREFUL):
//   fast     - whole blocks of aligned data: no bounds checks, VKO_ITEMS wide accesses per
//              invocation and operand;
//   careful  - the rest (tails, unaligned tensors): one wide item per invocation, bounds-checked,
//              element by element where the item is partial or the operands unaligned.
// Math is float32; per-step scalars arrive as push constants.
//
// ---- The contract: what a rule shader provides ------------------------------------------------
// Options, #defined (or not) before including this file:
//   VKO_PARTIALS     the pass writes per-chunk partial sums: the rule defines rule_contribution
//                    and rule_partials_base below, and scratch_address (vko_reduce.glsl)
//   VKO_NEEDS_EXTRA  true: the rule reads vko_segment_extra and vko_round_at (default false)
//   VKO_MASTER_INIT  true: the pass initialises masters: it reads the parameter and writes only
//                    its master (default false)
// Functions, declared here and defined by the rule shader (anywhere in it; each is inlined and,
// called with constant operands, folds to a constant where the rule's answer is one):
//   VkoPushHeader rule_header();   the push header of the dispatch (the rule's pc.header)
//   uint rule_operands();          operands the rule uses, 0 .. n-1 (0 parameter, 1 gradient,
//                                  2-5 state slots): n <= 6
//   bool rule_reads(uint op);      whether the pass reads operand op < rule_operands()
//   bool rule_writes(uint op);     whether it writes it
//   void rule_update(inout vec4 x[VKO_MAX_OPS]);
//                                  four lanes of an item: x[k] holds operand k's values (float32)
//                                  on entry, the values to store on return; lane 0 is element
//                                  vko_lane_base of the segment (x[k] of operands the pass does
//                                  not read are 0 on entry, and may serve as scratch lanes)
// and with VKO_PARTIALS:
//   vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask);
//                                  two sums over the lanes where mask is 1, after the update,
//                                  computed `precise` (no fused operations: the same bits in
//                                  the fast and the careful pipeline on every driver);
//                                  the sums of each 256-element chunk of a tensor go to
//                                  scratch entry rule_partials_base() + the chunk's
//                                  grad-chunk entry (SegmentRecord::first_chunk + chunk)
//   uint rule_partials_base();
// A rule shader's push block embeds the header and keeps its own scalars in a struct:
//   layout(push_constant) uniform Push { VkoPushHeader header; AdamScalars s; } pc;
// and declares them with VKO_RULE_SCALARS(AdamScalars) (vko_step.glsl): the rule reads S, which
// holds pc.s, or in a replayable recording the step's scalars computed on the device by
// rule_device_scalars. Passes without scalars: VKO_NO_RULE_SCALARS.
#ifndef VKO_ELEMENTWISE_GLSL
#define VKO_ELEMENTWISE_GLSL

#include "vko_base.glsl"
#include "vko_push.glsl"
#include "vko_addressing.glsl"
#include "vko_operands.glsl"
#include "vko_step.glsl"
#include "vko_math.glsl"
#ifdef VKO_PARTIALS
#include "vko_reduce.glsl"
#endif

#ifndef VKO_NEEDS_EXTRA
#define VKO_NEEDS_EXTRA false
#endif
// A master copy, when the segment's parameter has one, stands in for the parameter: it is read
// instead, and written along with the rounded parameter. A pass that initialises masters reads
// the parameter and writes only the master.
#ifndef VKO_MASTER_INIT
#define VKO_MASTER_INIT false
#endif
// A pass that sets the parameter rather than stepping it (Lookahead's synchronisation): with a
// Kahan compensation it reads p + c and splits what it writes into the rounded p and the rest.
#ifndef VKO_KAHAN_ABSOLUTE
#define VKO_KAHAN_ABSOLUTE false
#endif

VkoPushHeader rule_header();
uint rule_operands();
bool rule_reads(uint op);
bool rule_writes(uint op);
void rule_update(inout vec4 x[VKO_MAX_OPS]);
#ifdef VKO_PARTIALS
vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 mask);
uint rule_partials_base();
#endif

// ---- One item ---------------------------------------------------------------------------------
// Per-operand steps of an item, expanded for each operand k (a constant: the load and store
// functions are per operand) inside vko_item and vko_item_quant, over their locals lo, hi (an
// item's lanes 0-3 and 4-7 of every operand), item, first, lanes, whole and j.
#define VKO_FOR_EACH_OP(X) X(0) X(1) X(2) X(3) X(4) X(5)
// Operand 6 (VKO_OP_MASTER): an fp32 master, or in the 16-bit parameter's own dtype its Kahan
// compensation (PrecisionOptions::kahan_summation).
#define VKO_HAS_MASTER (vko_dtype(VKO_OP_MASTER) == VKO_F32)
#define VKO_HAS_KAHAN (vko_dtype(VKO_OP_MASTER) == VKO_F16 || vko_dtype(VKO_OP_MASTER) == VKO_BF16)
#define VKO_LOAD_ITEM(k)                                         \
  if (k < rule_operands() && rule_reads(k)) {                    \
    if (k == 0 && VKO_HAS_MASTER && !VKO_MASTER_INIT)            \
      vko_load_master(lo[k], hi[k], item);                       \
    else                                                         \
      vko_load##k(lo[k], hi[k], item, first, lanes, whole);      \
  }
#define VKO_IS_QUANT_OP(k) (VKO_ANY_QUANT && k >= 2 && vko_is_quantized(vko_dtype(k)))
#define VKO_STORE_ITEM(k)                                              \
  if (k < rule_operands() && rule_writes(k) && !VKO_IS_QUANT_OP(k)) {     \
    if (k == 0 && VKO_HAS_MASTER) vko_store_master(lo[k], hi[k], item); \
    if (k != 0 || !VKO_MASTER_INIT) vko_store##k(lo[k], hi[k], item, first, lanes, whole); \
  }

vec4 vko_lane_mask(uint lanes) { return vec4(lessThan(uvec4(0, 1, 2, 3), uvec4(lanes))); }

// The new absmax of each written quantized operand's block, from this item's `lanes` lanes; the
// block's first invocation stores it. Uniform control flow (every invocation calls it).
// (Lanes out of range are selected away, not multiplied: they may hold anything.)
vec4 vko_abs_in_range(vec4 x, uint lanes) { return mix(vec4(0), abs(x), lessThan(uvec4(0, 1, 2, 3), uvec4(lanes))); }
#ifdef VKO_WIDE
#define VKO_ITEM_ABS(k) max(vko_abs_in_range(lo[k], lanes), vko_abs_in_range(hi[k], lanes > 4u ? lanes - 4u : 0u))
#else
#define VKO_ITEM_ABS(k) vko_abs_in_range(lo[k], lanes)
#endif
// After the update: keep a written quantized operand's values and its item's absmax.
#define VKO_QUANT_KEEP(k)                                                                   \
  if (k < rule_operands() && rule_writes(k) && VKO_IS_QUANT_OP(k)) {                        \
    const uint c = vko_quant_column(k);                                                     \
    vko_quant_keep[j][c][0] = lo[k];                                                        \
    vko_quant_keep[j][c][1] = hi[k];                                                        \
    const vec4 a = VKO_ITEM_ABS(k);                                                      \
    vko_local_absmax[j][c] = max(max(a.x, a.y), max(a.z, a.w));                          \
  }
// After the block reduction: the codes, and (the block's first invocation) the absmax.
#define VKO_QUANT_STORE(k)                                                                  \
  if (k < rule_operands() && rule_writes(k) && VKO_IS_QUANT_OP(k)) {                        \
    const uint c = vko_quant_column(k);                                                     \
    vko_store_quant##k(vko_quant_keep[j][c][0], vko_quant_keep[j][c][1], item, vko_new_absmax[j][c]); \
  }

// Partial sums (VKO_PARTIALS), per 256-element chunk of each tensor, counted from its first
// element (segments start at multiples of 256 of their tensor, and the host makes a block a
// whole number of chunks): each item's contribution goes to its place in the block, then one
// invocation per chunk adds the chunk's items in order. A chunk's sum is then the same bits
// whichever path, block or shard runs it (tensor_table.hpp: SegmentRecord::first_chunk).
#ifdef VKO_PARTIALS
shared vec2 vko_item_sums[(VKO_CAREFUL ? 1u : VKO_ITEMS) * gl_WorkGroupSize.x];
uint vko_item_place;  // the current item's place in its block
#endif

// ---- Rank-1 maxima (vko_operands.glsl) ---------------------------------------------------------
// The pass that finds them runs the rule's update and, instead of storing anything, posts the
// new second moment's bits to its row's and column's maxima (consecutive lanes of one row first
// combined). Segments of tensors that keep blocks return at once.
layout(constant_id = 31) const bool VKO_RANK1_MAXIMA = false;
// A maximum as posted so far (a relaxed atomic load). The maxima only grow during the pass, so a
// value not above it cannot raise it: only the others take an atomic, which on CPU drivers is
// the cost of this pass (2048 x 2048 Adam on lavapipe: 19x fp32 Adam's time posting every
// element's, 5.8x skipping). The maxima are the same either way: max is exact and order-free.
#define VKO_RANK1_SEEN(i) \
  atomicLoad(VKO_WORD_AT(VKO_OP_ABSMAX, i), gl_ScopeDevice, gl_StorageSemanticsNone, gl_SemanticsRelaxed)
void vko_rank1_post(vec4 a, vec4 b, uint item, uint lanes) {
  uint row = (vko_rank1_first + item * VKO_WIDTH) / vko_rank1_cols;
  uint col = vko_rank1_first + item * VKO_WIDTH - row * vko_rank1_cols, row_max = 0u;
  for (uint l = 0u; l < lanes; ++l) {
    const uint bits = floatBitsToUint(vko_lane(a, b, l));
    if (bits > VKO_RANK1_SEEN(vko_rank1_new + vko_rank1_rows + col))
      atomicMax(VKO_WORD_AT(VKO_OP_ABSMAX, vko_rank1_new + vko_rank1_rows + col), bits);
    row_max = max(row_max, bits);
    if (++col == vko_rank1_cols || l + 1u == lanes) {
      if (row_max > VKO_RANK1_SEEN(vko_rank1_new + row)) atomicMax(VKO_WORD_AT(VKO_OP_ABSMAX, vko_rank1_new + row), row_max);
      row_max = 0u;
    }
    if (col == vko_rank1_cols) {
      col = 0u;
      ++row;
    }
  }
}
// The rule's pass clears the set the next step finds its maxima into (rows + cols floats): element
// e of the tensor clears floats e, e + count, ... (a whole matrix has more elements than floats; a
// piece of a split one, which keeps the whole one's maxima, may have fewer).
void vko_rank1_clear_set(uint item, uint lanes) {
  const uint e = vko_rank1_local + item * VKO_WIDTH, size = vko_rank1_rows + vko_rank1_cols;
  for (uint l = 0u; l < lanes; ++l)
    for (uint f = e + l; f < size; f += vko_rank1_stride) VKO_STORE1(VKO_OP_ABSMAX, vko_rank1_clear + f, 0.0);
}
#define VKO_RANK1_POST(k)                                             \
  if (k >= 2 && k < rule_operands() && rule_writes(k) && vko_is_rank1(vko_dtype(k))) \
    vko_rank1_post(lo[k], hi[k], item, lanes);

// ---- The EMA of the parameters (vkoptim::EmaOptions) ------------------------------------------
// Its operand (a state slot, 2-5) in the pass that updates it, else 0; and 1 - its decay this
// step: pushed, or (VKO_REPLAY) from the tensor's step and the group's record.
layout(constant_id = 30) const uint VKO_EMA_OP = 0u;
float vko_ema_weight = 0.0;
float vko_device_ema_weight(uint tensor, uint group) {
  const uint rec = vko_group_record(group);
  const uint t = vko_step_word(vko_tensor_record(tensor)) + 1u;
  const uint after = vko_step_word(rec + VKO_GROUP_EMA_AFTER);
  if (t <= after + 1u) return 1.0;  // s <= 0: the average copies the parameter
  const vec2 s = vko_df_from_uint(t - after - 1u);
  const vec2 decay = vec2(uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_DECAY)),
                          uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_DECAY + 1u)));
  const uint warmup = vko_step_word(rec + VKO_GROUP_EMA_WARMUP);
  if (warmup == 0u) return vko_df_float(vko_df_sub(VKO_DF_ONE, decay));
  vec2 one_minus;  // 1 - the warmup's decay, in double-float
  if (warmup == 1u) {  // ratio: 1 - (1 + s)/(10 + s) = 9/(10 + s)
    one_minus = vko_df_div(vec2(9.0, 0.0), vko_df_add(vec2(10.0, 0.0), s));
  } else {  // power: (1 + s/inv_gamma)^-power
    const vec2 inv_gamma = vec2(uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_INV_GAMMA)),
                                uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_INV_GAMMA + 1u)));
    const vec2 power = vec2(uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_POWER)),
                            uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_POWER + 1u)));
    one_minus = vko_df_div(VKO_DF_ONE, vko_df_pow(vko_df_add(VKO_DF_ONE, vko_df_div(s, inv_gamma)), power));
  }
  const vec2 min_decay = vec2(uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_MIN_DECAY)),
                              uintBitsToFloat(vko_step_word(rec + VKO_GROUP_EMA_MIN_DECAY + 1u)));
  // decay' = max(min(decay, warmup's), min_decay): 1 - decay' = min(max(1 - decay, one_minus), 1 - min_decay)
  vec2 w = vko_df_sub(VKO_DF_ONE, decay);
  if (vko_df_le(w, one_minus)) w = one_minus;
  const vec2 ceiling = vko_df_sub(VKO_DF_ONE, min_decay);
  if (vko_df_le(ceiling, w)) w = ceiling;
  return vko_df_float(w);
}
// The EMA's operand, by the constant VKO_EMA_OP (the load and store functions are per operand).
void vko_ema_load(inout vec4 a, inout vec4 b, uint item) {
  if (VKO_EMA_OP == 2u) vko_load2(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 3u) vko_load3(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 4u) vko_load4(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 5u) vko_load5(a, b, item, 0u, VKO_WIDTH, true);
}
void vko_ema_store(vec4 a, vec4 b, uint item) {
  if (VKO_EMA_OP == 2u) vko_store2(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 3u) vko_store3(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 4u) vko_store4(a, b, item, 0u, VKO_WIDTH, true);
  if (VKO_EMA_OP == 5u) vko_store5(a, b, item, 0u, VKO_WIDTH, true);
}

// x rounded to the 16-bit dtype dt (to nearest even: Kahan groups never round stochastically).
vec4 vko_round_to(vec4 x, uint dt) {
  return vec4(vko_unpack16(vko_round16(x.x, dt, 0u) | (vko_round16(x.y, dt, 0u) << 16), dt),
              vko_unpack16(vko_round16(x.z, dt, 0u) | (vko_round16(x.w, dt, 0u) << 16), dt));
}
// optimi's Kahan summation (kahan_sum) of the pass's update of a 16-bit parameter: p was
// loaded, p_new is what the rule made of it, c the compensation; each step rounded to the
// parameter's dtype as torch's 16-bit tensor operations are:
//   c <- c + (p_new - p) ; p_new <- p + c ; c <- c + (p - p_new)
void vko_kahan(inout vec4 p_new, vec4 p, inout vec4 c, uint dt) {
  precise const vec4 u = p_new - p;
  c = vko_round_to(c + u, dt);
  p_new = vko_round_to(p + c, dt);
  c = vko_round_to(c + vko_round_to(p - p_new, dt), dt);
}
// VKO_KAHAN_ABSOLUTE: the value v the pass set, as the rounded parameter and the remainder.
void vko_kahan_split(inout vec4 v, out vec4 c, uint dt) {
  const vec4 p = vko_round_to(v, dt);
  precise const vec4 rest = v - p;
  c = vko_round_to(rest, dt);
  v = p;
}

// One item (item j of this invocation): load, update, store all but quantized operands, whose values
// and absmax are kept for the block reduction. `lanes` of its VKO_WIDTH elements are in range
// (0: the invocation only takes part in the block reduction); `whole`: all of them, with every
// operand aligned.
void vko_item(uint item, uint first, uint lanes, bool whole, uint j) {
  vec4 lo[VKO_MAX_OPS], hi[VKO_MAX_OPS];
  [[unroll]] for (uint k = 0; k < VKO_MAX_OPS; ++k) lo[k] = hi[k] = vec4(0);  // partial items
  if (VKO_ANY_QUANT) vko_local_absmax[j] = vec2(0);
#ifdef VKO_PARTIALS
  if (lanes == 0u) vko_item_sums[vko_item_place] = vec2(0);
#endif
  if (lanes == 0u) return;
  VKO_FOR_EACH_OP(VKO_LOAD_ITEM)
  const bool kahan = VKO_HAS_KAHAN && !VKO_MASTER_INIT && rule_operands() > 0u && rule_reads(0u);
  vec4 kahan_p[2] = {lo[0], hi[0]}, kahan_c[2] = {vec4(0), vec4(0)};
  if (kahan) {
    vko_load6(kahan_c[0], kahan_c[1], item, first, lanes, whole);
    if (VKO_KAHAN_ABSOLUTE) {
      precise const vec4 lo_sum = lo[0] + kahan_c[0], hi_sum = hi[0] + kahan_c[1];
      lo[0] = lo_sum;
      hi[0] = hi_sum;
    }
  }
  if (VKO_GRADS && rule_operands() > 1u && rule_reads(1u)) {  // gradient control (vko_grads.glsl)
    lo[1] = vko_grad_transform(lo[1]);
    hi[1] = vko_grad_transform(hi[1]);
  }
  vko_lane_base = item * VKO_WIDTH;
  rule_update(lo);
#ifdef VKO_WIDE
  vko_lane_base += 4;
  rule_update(hi);
#endif
  if (VKO_RANK1_MAXIMA) {
    VKO_FOR_EACH_OP(VKO_RANK1_POST)
    return;
  }
  if (VKO_RANK1 && vko_rank1 != 0u) vko_rank1_clear_set(item, lanes);
#ifdef VKO_PARTIALS
#ifdef VKO_WIDE
  precise const vec2 item_sums = rule_contribution(lo, vko_lane_mask(min(lanes, 4u))) +
                                 rule_contribution(hi, vko_lane_mask(lanes > 4u ? lanes - 4u : 0u));
  vko_item_sums[vko_item_place] = item_sums;
#else
  vko_item_sums[vko_item_place] = rule_contribution(lo, vko_lane_mask(lanes));
#endif
#endif
  if (kahan && rule_writes(0u)) {
    if (VKO_KAHAN_ABSOLUTE) {
      vko_kahan_split(lo[0], kahan_c[0], vko_dtype(0u));
#ifdef VKO_WIDE
      vko_kahan_split(hi[0], kahan_c[1], vko_dtype(0u));
#endif
    } else {
      vko_kahan(lo[0], kahan_p[0], kahan_c[0], vko_dtype(0u));
#ifdef VKO_WIDE
      vko_kahan(hi[0], kahan_p[1], kahan_c[1], vko_dtype(0u));
#endif
    }
    vko_store6(kahan_c[0], kahan_c[1], item, first, lanes, whole);
  }
  if (VKO_EMA_OP != 0u && rule_writes(0u)) {  // ema <- lerp(ema, p, 1 - decay), p as the step left it
    vec4 ema_lo = vec4(0), ema_hi = vec4(0);
    vko_ema_load(ema_lo, ema_hi, item);
    precise const vec4 p_lo = kahan ? lo[0] + kahan_c[0] : lo[0], p_hi = kahan ? hi[0] + kahan_c[1] : hi[0];
    vko_ema_store(vko_lerp(ema_lo, p_lo, vko_ema_weight), vko_lerp(ema_hi, p_hi, vko_ema_weight), item);
  }
  VKO_FOR_EACH_OP(VKO_STORE_ITEM)
  if (VKO_ANY_QUANT) {
    VKO_FOR_EACH_OP(VKO_QUANT_KEEP)
  }
}

// After the block reduction: the quantized operands' codes of item j, and the blocks' absmax.
void vko_item_quant(uint item, uint lanes, uint j) {
  if (lanes == 0u) return;
  VKO_FOR_EACH_OP(VKO_QUANT_STORE)
  if ((item * VKO_WIDTH) % VKO_QBLOCK == 0u) {
    const uint base = vko_quant_block * vko_quant_count;
    if ((vko_quant_written & 1u) != 0u) VKO_STORE1(VKO_OP_ABSMAX, base, vko_new_absmax[j].x);
    if ((vko_quant_written & 2u) != 0u) VKO_STORE1(VKO_OP_ABSMAX, base + 1u, vko_new_absmax[j].y);
  }
}

// ---- Fast segments ----------------------------------------------------------------------------
// An invocation's items are vko_fast_stride() apart from its first, the workgroup's first item
// + vko_fast_lane() (consecutive lanes, consecutive items).
uint vko_fast_lane() {
#ifdef VKO_SUBGROUP_BLOCKS
  return VKO_SUBGROUP != 0u ? gl_SubgroupID * VKO_SUBGROUP * VKO_ITEMS + gl_SubgroupInvocationID
                            : gl_LocalInvocationID.x;
#else
  return gl_LocalInvocationID.x;
#endif
}
uint vko_fast_stride() {
#ifdef VKO_SUBGROUP_BLOCKS
  return VKO_SUBGROUP != 0u ? VKO_SUBGROUP : gl_WorkGroupSize.x;
#else
  return gl_WorkGroupSize.x;
#endif
}
// The quantization block of item j, `item`, of this invocation; `group_item` is the workgroup's
// first item. (A subgroup's lanes span less than a block: the block of lane 0's item is theirs.)
uint vko_fast_quant_block(uint item, uint j, uint group_item) {
#ifdef VKO_SUBGROUP_BLOCKS
  return VKO_SUBGROUP != 0u
             ? (group_item + gl_SubgroupID * VKO_SUBGROUP * VKO_ITEMS + j * VKO_SUBGROUP) * VKO_WIDTH / VKO_QBLOCK
             : item * VKO_WIDTH / VKO_QBLOCK;
#else
  return item * VKO_WIDTH / VKO_QBLOCK;
#endif
}
void vko_fast_blocks_absmax() {
#ifdef VKO_SUBGROUP_BLOCKS
  if (VKO_SUBGROUP != 0u)
    vko_subgroup_blocks_absmax();
  else
    vko_blocks_absmax(VKO_ITEMS);
#else
  vko_blocks_absmax(VKO_ITEMS);
#endif
}

// Stochastic rounding's key in a replayable step: the host's round_key(seed, t)
// (runtime/precision.cpp) from the group's seed and the tensor's step t on the device.
uint vko_device_round_key(uint tensor, uint group) {
  const uint t = vko_step_word(vko_tensor_record(tensor)) + 1u, g = vko_group_record(group);
  return vko_hash(vko_step_word(g + VKO_GROUP_SEED) ^ vko_hash(vko_step_word(g + VKO_GROUP_SEED + 1u) ^ vko_hash(t)));
}

// ---- The pass ---------------------------------------------------------------------------------
void main() {
  if (VKO_PROLOGUE) {
    vko_prologue_main();
    return;
  }
  const VkoPushHeader h = rule_header();
  const uint block = h.block_base + gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (block >= h.block_end) return;
  if (VKO_GRADS) {  // the step's gradient control (vko_grads.glsl): a skipped step writes nothing
    vko_load_grads(h.step_group);
    if (vko_grads.skip) return;
  }
  const uint si = vko_block_segment(h, block) - h.seg_base;
  const uvec4 head = vko_table_head(h, si);
  vko_segment_head = head;
  rule_load_scalars(head.w);  // this tensor's scalars: pushed, or (VKO_REPLAY) its step's entry
  if (VKO_EMA_OP != 0u) vko_ema_weight = VKO_REPLAY ? vko_device_ema_weight(head.w, h.step_group) : h.ema_weight;
  vko_segment_extra = VKO_NEEDS_EXTRA || VKO_MIXED || VKO_RANK1 ? vko_table_extra(h, si) : uvec4(0);
  vko_rank1 = VKO_RANK1 ? vko_table_pad(h, si).w : 0u;
  if (VKO_RANK1_MAXIMA && vko_rank1 == 0u) return;  // (the whole workgroup: one segment)
  if (VKO_RANK1 && vko_rank1 != 0u) {
    vko_rank1_first = vko_table_pad(h, si).z;  // (a piece's place in its whole matrix)
    vko_rank1_local = vko_segment_extra.x;
    vko_rank1_stride = vko_table_rank1_stride(h, si);
    vko_rank1_cols = vko_segment_extra.y;
    vko_rank1_rows = vko_segment_extra.z / vko_segment_extra.y;
    // (Rank-1 steps are replayable only: t is the device's, whatever recording runs.)
    const uint t = vko_step_word(vko_tensor_record(head.w)) + 1u;
    const uint size = vko_rank1_rows + vko_rank1_cols;
    vko_rank1_new = vko_rank1 + (t % 3u) * size;
    vko_rank1_old = vko_rank1 + ((t + 2u) % 3u) * size;
    vko_rank1_clear = vko_rank1 + ((t + 1u) % 3u) * size;
  }
  vko_dtypes = VKO_MIXED ? vko_segment_extra.w : VKO_DTYPES;
  vko_round_key = VKO_STOCHASTIC ? vko_hash(VKO_REPLAY ? vko_device_round_key(head.w, h.step_group) : h.round_key) : 0u;
  vko_round_at = VKO_STOCHASTIC || VKO_NEEDS_EXTRA ? vko_table_pad(h, si).yz : uvec2(0);
  const uint ops = vko_dtype(VKO_OP_MASTER) != VKO_ABSENT || vko_dtype(VKO_OP_ABSMAX) != VKO_ABSENT
                       ? VKO_MAX_OPS
                       : max(rule_operands(), VKO_EMA_OP + 1u);
  [[unroll]] for (uint r = 0; r < 4; ++r)
    vko_refs[r] = r == 0 || ops > r * VKO_OPS_PER_REF ? vko_table_ref(h, si, r) : uvec4(0);
  vko_quant_slots = 0;
  vko_quant_count = 0;
  vko_quant_written = 0;
  if (VKO_ANY_QUANT)
    [[unroll]] for (uint k = 2; k < 6; ++k)
      if (vko_is_quantized(vko_dtype(k))) {
        if (k < rule_operands() && rule_writes(k)) vko_quant_written |= 1u << vko_quant_count;
        vko_quant_slots |= (vko_quant_count++) << (2u * k);
      }
  const uint wg = gl_WorkGroupSize.x;
  if (VKO_CAREFUL) {
    const uint item = (block - head.x) * wg + gl_LocalInvocationID.x;
    const uint first = item * VKO_WIDTH;
    const uint lanes = first < head.y ? min(uint(VKO_WIDTH), head.y - first) : 0u;
    vko_quant_block = first / VKO_QBLOCK;
#ifdef VKO_PARTIALS
    vko_item_place = gl_LocalInvocationID.x;
#endif
    vko_item(item, first, lanes, head.z != 0 && lanes == VKO_WIDTH, 0u);
    if (VKO_ANY_QUANT && vko_quant_written != 0u && !VKO_RANK1_MAXIMA) {
      vko_blocks_absmax(1u);
      vko_item_quant(item, lanes, 0u);
    }
  } else {
    // whole blocks: every item is in range and aligned
    const uint group_item = (block - head.x) * wg * VKO_ITEMS;
    const uint first_item = group_item + vko_fast_lane();
    [[unroll]] for (uint j = 0; j < VKO_ITEMS; ++j) {
      const uint item = first_item + j * vko_fast_stride();
      vko_quant_block = vko_fast_quant_block(item, j, group_item);
#ifdef VKO_PARTIALS
      vko_item_place = item - group_item;
#endif
      vko_item(item, item * VKO_WIDTH, VKO_WIDTH, true, j);
    }
    if (VKO_ANY_QUANT && vko_quant_written != 0u && !VKO_RANK1_MAXIMA) {
      vko_fast_blocks_absmax();
      for (uint j = 0; j < VKO_ITEMS; ++j) {
        const uint item = first_item + j * vko_fast_stride();
        vko_quant_block = vko_fast_quant_block(item, j, group_item);
        vko_item_quant(item, VKO_WIDTH, j);
      }
    }
  }
#ifdef VKO_PARTIALS
  if (!VKO_RANK1_MAXIMA) {
    barrier();
    const uint per_chunk = 256u / VKO_WIDTH;  // items
    const uint chunks = (VKO_CAREFUL ? 1u : VKO_ITEMS) * wg / per_chunk, c = gl_LocalInvocationID.x;
    const uint first = ((block - head.x) * chunks + c) * 256u;  // the chunk's first element in the segment
    // The loop's length is 0 for invocations without a chunk, so CPU drivers (which run a loop
    // while any lane of a subgroup needs it) skip it for those subgroups. (0 + x is x.)
    const bool mine = c < chunks && first < head.y;
    const uint count = mine ? per_chunk : 0u;
    vec2 sum = vec2(0);
    for (uint i = 0u; i < count; ++i) sum += vko_item_sums[c * per_chunk + i];
    if (mine)
      vko_scratch_store(rule_partials_base() + vko_table_pad(h, si).x + (vko_table_extra(h, si).x + first) / 256u, sum);
  }
#endif
}

#endif  // VKO_ELEMENTWISE_GLSL
