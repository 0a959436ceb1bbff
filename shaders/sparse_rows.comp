#version 450
#extension GL_GOOGLE_include_directive : require
// Row-sparse steps of embedding tables (runtime/sparse.cpp): one shader, a stage per
// specialization; each stage is a dispatch, separated from the next by a barrier.
//
// A table's gradient is `capacity` positions: position i names row indices[i] (or kSkipRow) and
// carries values[i*dim .. i*dim+dim). Coalescing (duplicates summed in position order, as torch's
// coalesce) without sorting the whole list, through a word per table row (row_slot, 0 between
// steps) and per-position scratch:
//   COUNT     arrival[i] = atomicAdd(row_slot[row], 1): positions of a row get 0..k-1 in an
//             order the device chooses; an out-of-range row is counted as bad instead.
//             (The first table's invocation 0 also computes the step's scalars from the
//             device's step counter, in double-float rounded once.)
//   ALLOCATE  the position that arrived first for a row takes a distinct-row slot u and a
//             segment of k list entries, and stores u in row_slot[row].
//   PLACE     list[base(u) + arrival[i]] = i (the row's positions, in arrival order).
//             (The first table's invocation 0 also writes the report and counts the step
//             unless an index was bad.)
//   ORDER     sorted[base(u) + rank] = i, rank = the row's positions below i (O(k) each): the
//             positions in increasing order, whatever the arrival order was. (Each table's
//             invocation 0 also hands APPLY its row count and clears the counters for the
//             next step.)
//   APPLY     per distinct row and 8 columns: g = the row's values summed in position order,
//             then the rule on each element; row_slot[row] back to 0. A step with a bad index
//             writes nothing (but still clears row_slot).
#include "vko_base.glsl"
#include "schedule.glsl"
#include "vko_push.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 3) const uint STAGE = 0u;
layout(constant_id = 4) const uint RULE = 0u;  // 0 SparseAdam, 1 Adagrad, 2 FTRL
layout(constant_id = 5) const bool MAXIMIZE = false;
layout(constant_id = 6) const bool POWER_HALF = true;  // FTRL learning_rate_power = -0.5
// How APPLY moves a row's 8 columns: 0 one float per access; 1 (every row 16-byte aligned in the
// parameters, values and slots: dim % 4 == 0 and aligned ranges) 4 floats per access; 2 (the
// VKO_WIDE build, rows 32-byte aligned: dim % 8 == 0) all 8 in one access of four 64-bit words,
// which CPU drivers move per lane and component.
layout(constant_id = 7) const uint ROW_ACCESS = 0u;

#define STAGE_COUNT 0u
#define STAGE_ALLOCATE 1u
#define STAGE_PLACE 2u
#define STAGE_ORDER 3u
#define STAGE_APPLY 4u

#define RULE_SPARSE_ADAM 0u
#define RULE_ADAGRAD 1u
#define RULE_FTRL 2u

#define SKIP_ROW 0xFFFFFFFFu

// Operands (BDA: addresses in the table's control record; descriptors: binding 1's ranges, in
// this order).
#define OP_PARAM 0
#define OP_VALUES 1
#define OP_SLOT0 2
#define OP_SLOT1 3
#define OP_INDICES 4
#define OP_ROW_SLOT 5
#define OP_SCRATCH 6
#define OP_CONTROL 7

layout(push_constant) uniform Push {
  VkoPushHeader header;  // (unused)
  uvec2 control;         // BDA: the control buffer's address
  uint capacity;         // positions of the table's gradient
  uint rows;             // rows of the table
  uint dim;              // elements per row
  uint table;            // the table's record in the control buffer
  uint tables;           // BEGIN, FINISH: how many tables
} pc;

#ifdef VKO_BDA
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats { float x[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Words { uint x[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4s { vec4 x[]; };
#ifdef VKO_WIDE
layout(buffer_reference, std430, buffer_reference_align = 32) buffer Wide8s { u64vec4 x[]; };
#define F8(k) Wide8s(addr[k]).x
#endif
uvec2 addr[8];  // the table's operands, read from its control record by main()
#define F(k) Floats(addr[k]).x
#define W(k) Words((k) == OP_CONTROL ? pc.control : addr[k]).x
#define F4(k) Vec4s(addr[k]).x
#else
layout(std430, set = 0, binding = 1) buffer OperandF { float x[]; } opf[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandU { uint x[]; } opu[VKO_MAX_OPS];
layout(std430, set = 0, binding = 1) buffer OperandV { vec4 x[]; } opv[VKO_MAX_OPS];
#ifdef VKO_WIDE
layout(std430, set = 0, binding = 1) buffer OperandW { u64vec4 x[]; } opw[VKO_MAX_OPS];
#define F8(k) opw[k].x
#endif
#define F(k) opf[k].x
#define W(k) opu[k].x
#define F4(k) opv[k].x
#endif

// The control buffer (runtime/sparse.cpp, SparseControl): words.
#define CTL_STEP 0u
#define CTL_SKIPPED 1u  // the report of the last step: skipped, bad indices, ...
#define CTL_BAD 2u
#define CTL_BAD_TABLE 3u
#define CTL_BAD_POSITION 4u
#define CTL_BAD_INDEX 5u
#define CTL_ROWS 6u
#define CTL_SCALARS 8u   // 8 floats: the step's scalars
#define CTL_HYPER 16u    // 8 double-floats (hi, lo): the options
#define CTL_TABLES 32u   // 32 words per table:
#define TABLE_WORDS 32u
#define TAB_UNIQUE 0u    //   distinct rows
#define TAB_ALLOC 1u     //   list entries handed out
#define TAB_BAD 2u       //   out-of-range indices
#define TAB_BAD_POSITION 3u
#define TAB_BAD_INDEX 4u
#define TAB_APPLY_ROWS 5u  //   distinct rows, for APPLY (the counters are cleared before it)
#define TAB_ADDRESSES 8u  //   BDA: the 8 operands' addresses (low, high)

uint ctl(uint w) { return W(OP_CONTROL)[w]; }
uint table_word(uint w) { return CTL_TABLES + pc.table * TABLE_WORDS + w; }
float scalar(uint k) { return uintBitsToFloat(ctl(CTL_SCALARS + k)); }
float S[5];  // APPLY: the step's scalars, loaded once
vec2 hyper(uint k) {
  return vec2(uintBitsToFloat(ctl(CTL_HYPER + 2u * k)), uintBitsToFloat(ctl(CTL_HYPER + 2u * k + 1u)));
}
void set_scalar(uint k, vec2 v) {
  precise float r = v.x + v.y;
  W(OP_CONTROL)[CTL_SCALARS + k] = floatBitsToUint(r);
}

// Position scratch: six arrays of `capacity` words.
uint arrival_at(uint i) { return i; }
uint list_at(uint i) { return pc.capacity + i; }
uint sorted_at(uint i) { return 2u * pc.capacity + i; }
uint unique_row_at(uint u) { return 3u * pc.capacity + u; }
uint unique_base_at(uint u) { return 4u * pc.capacity + u; }
uint unique_count_at(uint u) { return 5u * pc.capacity + u; }

uint invocation() { return gl_GlobalInvocationID.x; }
uint stride() { return gl_NumWorkGroups.x * gl_WorkGroupSize.x; }

// The step's scalars (first table's COUNT, invocation 0).
void compute_scalars() {
  const uint t = ctl(CTL_STEP) + 1u;
  if (RULE == RULE_SPARSE_ADAM) {  // hyper: lr, beta1, beta2, eps
    const vec2 lr = hyper(0u), b1 = hyper(1u), b2 = hyper(2u);
    const vec2 bc1 = vko_df_sub(VKO_DF_ONE, vko_df_pow_uint(b1, t));
    const vec2 bc2 = vko_df_sub(VKO_DF_ONE, vko_df_pow_uint(b2, t));
    set_scalar(0u, vko_df_sub(VKO_DF_ONE, b1));
    set_scalar(1u, vko_df_sub(VKO_DF_ONE, b2));
    set_scalar(2u, vko_df_div(vko_df_mul(lr, vko_df_sqrt(bc2)), bc1));  // lr*sqrt(bc2)/bc1
    set_scalar(3u, hyper(3u));
  } else if (RULE == RULE_ADAGRAD) {  // hyper: lr, lr_decay, eps
    const vec2 decay = vko_df_mul(vko_df_from_uint(t - 1u), hyper(1u));
    set_scalar(0u, vko_df_div(hyper(0u), vko_df_add(VKO_DF_ONE, decay)));  // clr
    set_scalar(1u, hyper(2u));
  } else {  // FTRL; hyper: lr, -learning_rate_power, l1, l2, l2_shrinkage, beta
    const vec2 lr = hyper(0u), l2 = hyper(3u), shrinkage = hyper(4u);
    set_scalar(0u, lr);
    set_scalar(1u, hyper(1u));
    set_scalar(2u, hyper(2u));
    set_scalar(3u, vko_df_add(vko_df_add(l2, l2), vko_df_div(hyper(5u), lr)));  // 2*l2 + beta/lr
    set_scalar(4u, vko_df_add(shrinkage, shrinkage));
  }
}

// The report, and the step counted unless skipped (first table's PLACE, invocation 0: the
// counters are final after ALLOCATE).
void report() {
  uint bad = 0u, rows = 0u;
  for (uint tab = 0u; tab < pc.tables; ++tab) {
    const uint base = CTL_TABLES + tab * TABLE_WORDS;
    rows += ctl(base + TAB_UNIQUE);
    const uint tab_bad = ctl(base + TAB_BAD);
    if (tab_bad != 0u && bad == 0u) {
      W(OP_CONTROL)[CTL_BAD_TABLE] = tab;
      W(OP_CONTROL)[CTL_BAD_POSITION] = ctl(base + TAB_BAD_POSITION);
      W(OP_CONTROL)[CTL_BAD_INDEX] = ctl(base + TAB_BAD_INDEX);
    }
    bad += tab_bad;
  }
  if (bad == 0u) {
    W(OP_CONTROL)[CTL_BAD_TABLE] = 0u;
    W(OP_CONTROL)[CTL_BAD_POSITION] = 0u;
    W(OP_CONTROL)[CTL_BAD_INDEX] = 0u;
  }
  W(OP_CONTROL)[CTL_ROWS] = bad != 0u ? 0u : rows;  // (a skipped step updates none)
  W(OP_CONTROL)[CTL_BAD] = bad;
  W(OP_CONTROL)[CTL_SKIPPED] = bad != 0u ? 1u : 0u;
  if (bad == 0u) W(OP_CONTROL)[CTL_STEP] = ctl(CTL_STEP) + 1u;
}

// Each table's ORDER, invocation 0: APPLY's row count, and the counters cleared for the next
// step (COUNT and ALLOCATE count from 0).
void clear_counters() {
  W(OP_CONTROL)[table_word(TAB_APPLY_ROWS)] = ctl(table_word(TAB_UNIQUE));
  W(OP_CONTROL)[table_word(TAB_UNIQUE)] = 0u;
  W(OP_CONTROL)[table_word(TAB_ALLOC)] = 0u;
  W(OP_CONTROL)[table_word(TAB_BAD)] = 0u;
  W(OP_CONTROL)[table_word(TAB_BAD_POSITION)] = 0xFFFFFFFFu;
  W(OP_CONTROL)[table_word(TAB_BAD_INDEX)] = 0u;
}

void count_positions() {
  if (pc.table == 0u && invocation() == 0u) compute_scalars();
  for (uint i = invocation(); i < pc.capacity; i += stride()) {
    const uint row = W(OP_INDICES)[i];
    uint arrival = SKIP_ROW;
    if (row < pc.rows) {
      arrival = atomicAdd(W(OP_ROW_SLOT)[row], 1u);
    } else if (row != SKIP_ROW) {
      atomicAdd(W(OP_CONTROL)[table_word(TAB_BAD)], 1u);
      atomicMin(W(OP_CONTROL)[table_word(TAB_BAD_POSITION)], i);
    }
    W(OP_SCRATCH)[arrival_at(i)] = arrival;
  }
}

void allocate_rows() {
  for (uint i = invocation(); i < pc.capacity; i += stride()) {
    if (i == ctl(table_word(TAB_BAD_POSITION))) W(OP_CONTROL)[table_word(TAB_BAD_INDEX)] = W(OP_INDICES)[i];
    if (W(OP_SCRATCH)[arrival_at(i)] != 0u) continue;
    const uint row = W(OP_INDICES)[i];
    const uint k = W(OP_ROW_SLOT)[row];
    const uint u = atomicAdd(W(OP_CONTROL)[table_word(TAB_UNIQUE)], 1u);
    W(OP_SCRATCH)[unique_row_at(u)] = row;
    W(OP_SCRATCH)[unique_base_at(u)] = atomicAdd(W(OP_CONTROL)[table_word(TAB_ALLOC)], k);
    W(OP_SCRATCH)[unique_count_at(u)] = k;
    W(OP_ROW_SLOT)[row] = u;
  }
}

void place_positions() {
  if (pc.table == 0u && invocation() == 0u) report();
  for (uint i = invocation(); i < pc.capacity; i += stride()) {
    const uint arrival = W(OP_SCRATCH)[arrival_at(i)];
    if (arrival == SKIP_ROW) continue;
    const uint u = W(OP_ROW_SLOT)[W(OP_INDICES)[i]];
    W(OP_SCRATCH)[list_at(W(OP_SCRATCH)[unique_base_at(u)] + arrival)] = i;
  }
}

void order_positions() {
  if (invocation() == 0u) clear_counters();
  for (uint i = invocation(); i < pc.capacity; i += stride()) {
    if (W(OP_SCRATCH)[arrival_at(i)] == SKIP_ROW) continue;
    const uint u = W(OP_ROW_SLOT)[W(OP_INDICES)[i]];
    const uint base = W(OP_SCRATCH)[unique_base_at(u)], k = W(OP_SCRATCH)[unique_count_at(u)];
    uint rank = 0u;
    for (uint q = 0u; q < k; ++q) rank += W(OP_SCRATCH)[list_at(base + q)] < i ? 1u : 0u;
    W(OP_SCRATCH)[sorted_at(base + rank)] = i;
  }
}

// The rule on one element: p, slots s0 and s1, coalesced gradient g.
void update(inout float p, inout float s0, inout float s1, float g_in) {
  precise float g = MAXIMIZE ? -g_in : g_in;
  if (RULE == RULE_SPARSE_ADAM) {
    // torch: exp_avg_update = (g - m)*(1-b1); m += it; likewise v with g^2; numer = update + m
    precise const float m_update = (g - s0) * S[0u];
    precise const float v_update = (g * g - s1) * S[1u];
    precise const float m = s0 + m_update, v = s1 + v_update;
    precise const float denom = sqrt(v) + S[3u];
    precise const float p_new = p + (-S[2u]) * (m / denom);
    p = p_new;
    s0 = m;
    s1 = v;
  } else if (RULE == RULE_ADAGRAD) {
    precise const float sum = s0 + g * g;  // state_sum.add_(grad^2)
    precise const float std_ = sqrt(sum) + S[1u];
    precise const float p_new = p + (-S[0u]) * (g / std_);  // param.add_(grad / std, alpha=-clr)
    p = p_new;
    s0 = sum;
  } else {  // FTRL (shaders/ftrl.comp's element update)
    const float lr = S[0u], l1 = S[2u];
    if (!(lr > 0.0)) return;
    const float n = s0;
    precise const float n_new = fma(g, g, n);
    const float root_new = POWER_HALF ? sqrt(n_new) : pow(n_new, S[1u]);
    const float root_old = POWER_HALF ? sqrt(n) : pow(n, S[1u]);
    precise const float shrunk = fma(S[4u], p, g);
    precise const float sigma = (root_new - root_old) / lr;
    precise const float linear = s1 + (shrunk - sigma * p);
    precise const float quadratic = root_new / lr + S[3u];
    const float shrink = clamp(linear, -l1, l1) - linear;
    p = abs(linear) <= l1 ? 0.0 : shrink / quadratic;
    s1 = linear;
    s0 = n_new;
  }
}

// Each invocation takes COLUMNS consecutive columns of one distinct row: the row's bookkeeping
// (and, by address, the operands' addresses) is loaded once for all of them.
#define COLUMNS 8u
void update_element(uint at, float g) {
  float p = F(OP_PARAM)[at];
  float s0 = F(OP_SLOT0)[at];
  float s1 = RULE == RULE_ADAGRAD ? 0.0 : F(OP_SLOT1)[at];
  update(p, s0, s1, g);
  F(OP_PARAM)[at] = p;
  F(OP_SLOT0)[at] = s0;
  if (RULE != RULE_ADAGRAD) F(OP_SLOT1)[at] = s1;
}
void update_vec4(uint at4, vec4 g) {
  vec4 p = F4(OP_PARAM)[at4];
  vec4 s0 = F4(OP_SLOT0)[at4];
  vec4 s1 = RULE == RULE_ADAGRAD ? vec4(0.0) : F4(OP_SLOT1)[at4];
  [[unroll]] for (uint c = 0u; c < 4u; ++c) update(p[c], s0[c], s1[c], g[c]);
  F4(OP_PARAM)[at4] = p;
  F4(OP_SLOT0)[at4] = s0;
  if (RULE != RULE_ADAGRAD) F4(OP_SLOT1)[at4] = s1;
}

#ifdef VKO_WIDE
void unpack8(u64vec4 w, out vec4 lo, out vec4 hi) {
  lo = uintBitsToFloat(uvec4(unpackUint2x32(w.x), unpackUint2x32(w.y)));
  hi = uintBitsToFloat(uvec4(unpackUint2x32(w.z), unpackUint2x32(w.w)));
}
u64vec4 pack8(vec4 lo, vec4 hi) {
  const uvec4 a = floatBitsToUint(lo), b = floatBitsToUint(hi);
  return u64vec4(packUint2x32(a.xy), packUint2x32(a.zw), packUint2x32(b.xy), packUint2x32(b.zw));
}
// Eight columns at 8-float index at8 of every operand, g their gradient.
void update_wide(uint at8, vec4 g_lo, vec4 g_hi) {
  vec4 p[2], s0[2], s1[2];
  unpack8(F8(OP_PARAM)[at8], p[0], p[1]);
  unpack8(F8(OP_SLOT0)[at8], s0[0], s0[1]);
  if (RULE != RULE_ADAGRAD) unpack8(F8(OP_SLOT1)[at8], s1[0], s1[1]);
  [[unroll]] for (uint c = 0u; c < 4u; ++c) {
    update(p[0][c], s0[0][c], s1[0][c], g_lo[c]);
    update(p[1][c], s0[1][c], s1[1][c], g_hi[c]);
  }
  F8(OP_PARAM)[at8] = pack8(p[0], p[1]);
  F8(OP_SLOT0)[at8] = pack8(s0[0], s0[1]);
  if (RULE != RULE_ADAGRAD) F8(OP_SLOT1)[at8] = pack8(s1[0], s1[1]);
}
#endif

void apply_rows() {
  const uint unique = ctl(table_word(TAB_APPLY_ROWS));
  const bool skip = ctl(CTL_SKIPPED) != 0u;  // (this step's: PLACE wrote it)
  const uint chunks = (pc.dim + COLUMNS - 1u) / COLUMNS;
  [[unroll]] for (uint k = 0u; k < 5u; ++k) S[k] = scalar(k);
  for (uint e = invocation(); e < unique * chunks; e += stride()) {
    const uint u = e / chunks, first = (e - u * chunks) * COLUMNS;
    const uint columns = min(COLUMNS, pc.dim - first);
    const uint row = W(OP_SCRATCH)[unique_row_at(u)];
    if (first == 0u) W(OP_ROW_SLOT)[row] = 0u;  // (no stage reads it now)
    if (skip) continue;
    const uint base = W(OP_SCRATCH)[unique_base_at(u)], k = W(OP_SCRATCH)[unique_count_at(u)];
#ifdef VKO_WIDE
    if (ROW_ACCESS == 2u) {  // columns is 8
      precise vec4 lo = vec4(0.0), hi = vec4(0.0);
      for (uint q = 0u; q < k; ++q) {  // in position order
        vec4 v_lo, v_hi;
        unpack8(F8(OP_VALUES)[(W(OP_SCRATCH)[sorted_at(base + q)] * pc.dim + first) / 8u], v_lo, v_hi);
        lo += v_lo;
        hi += v_hi;
      }
      update_wide((row * pc.dim + first) / 8u, lo, hi);
      continue;
    }
#endif
    if (ROW_ACCESS == 1u) {  // columns is 4 or 8
      precise vec4 lo = vec4(0.0), hi = vec4(0.0);
      for (uint q = 0u; q < k; ++q) {  // in position order
        const uint from4 = (W(OP_SCRATCH)[sorted_at(base + q)] * pc.dim + first) / 4u;
        lo += F4(OP_VALUES)[from4];
        if (columns > 4u) hi += F4(OP_VALUES)[from4 + 1u];
      }
      const uint at4 = (row * pc.dim + first) / 4u;
      update_vec4(at4, lo);
      if (columns > 4u) update_vec4(at4 + 1u, hi);
      continue;
    }
    precise float g[COLUMNS];
    [[unroll]] for (uint c = 0u; c < COLUMNS; ++c) g[c] = 0.0;
    for (uint q = 0u; q < k; ++q) {  // in position order
      const uint from = W(OP_SCRATCH)[sorted_at(base + q)] * pc.dim + first;
      [[unroll]] for (uint c = 0u; c < COLUMNS; ++c)
        if (c < columns) g[c] += F(OP_VALUES)[from + c];
    }
    [[unroll]] for (uint c = 0u; c < COLUMNS; ++c)
      if (c < columns) update_element(row * pc.dim + first + c, g[c]);
  }
}

void main() {
#ifdef VKO_BDA
  [[unroll]] for (uint k = 0u; k < 8u; ++k)
    addr[k] = uvec2(ctl(table_word(TAB_ADDRESSES + 2u * k)), ctl(table_word(TAB_ADDRESSES + 2u * k + 1u)));
#endif
  if (STAGE == STAGE_COUNT) count_positions();
  if (STAGE == STAGE_ALLOCATE) allocate_rows();
  if (STAGE == STAGE_PLACE) place_positions();
  if (STAGE == STAGE_ORDER) order_positions();
  if (STAGE == STAGE_APPLY) apply_rows();
}
