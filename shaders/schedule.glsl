// Learning-rate schedules on the device, float32 only (no float64: many GPUs lack it).
//
// Usage: the including shader defines
//   uint vko_schedule_word(uint i)
// returning word i of a group's record (runtime/schedule.hpp, EncodedSchedule: 64 uints, layout
// there), straight from its buffer (a local copy indexed by variables costs drivers that lower
// such arrays to selects a large program), and calls
//   vec2 vko_schedule_df(uint s, out float momentum, out bool cycled)
// with s = steps already taken (the t-th step uses s = t - 1), s < 2^32. It gives the lr
// (double-float; vko_schedule_lr(s) rounds it to float) and the momentum (beta1) of schedules
// that cycle it (cycled), else 0.
// No other names of the including shader are used; every name here starts with vko_ or VKO_.
//
// Accuracy. Vulkan only bounds sin/cos to 2^-11 absolute and pow/exp/log loosely, far too coarse
// for learning rates, so none of them is used: values are carried as double-float pairs
// vec2(hi, lo) (value hi + lo, about 48 bits) built from error-free transformations of correctly
// rounded float adds and products (Vulkan requires those), with Veltkamp splitting instead of fma
// (fma may be unfused, lavapipe's is) and `precise` so that nothing is reassociated or contracted.
//   - step counts and ratios of them are exact or 2^-47 relative;
//   - gamma^k: repeated squaring, relative error about (k + 64)·2^-48;
//   - (1 + cos πx)/2 as sin²(π·r) with r in [0, 1/4] the exact distance to the nearer endpoint,
//     sin by a degree-11 odd polynomial whose float tail costs at most ~0.5 ulp of the sine;
//   - x^p (PolynomialLR) = 2^(p·log2 x) with log2 by atanh series and 2^r by Taylor series,
//     relative error ~1e-9;
//   - sqrt (WSD 1-sqrt) refined by one Newton step in double-float.
// The result is rounded to float once. Bound against the double host path: relative error of
// the lr <= 4e-7 (about 7 float ulps) for s <= 10^7 while the lr stays above ~1e-30 (below that
// the lo halves become subnormal or flush to zero and only the hi half is left); an lr beyond
// float's range is +inf. Measured on lavapipe over every kind: at most 1.4e-7 (1.2 ulps), see
// tests/test_schedules.cpp. Momentum: absolute error <= 2e-7 (its endpoints are single floats).

#ifndef VKO_SCHEDULE_GLSL
#define VKO_SCHEDULE_GLSL

#define VKO_SCHEDULE_WORDS 64
#define VKO_SCHEDULE_HEADER_WORDS 8u
#define VKO_SCHEDULE_PIECE_WORDS 14u

// vkoptim::ScheduleKind
#define VKO_SCHED_CONSTANT 0u
#define VKO_SCHED_INVERSE_TIME 1u
#define VKO_SCHED_EXPONENTIAL 2u
#define VKO_SCHED_INVERSE_TIME_SQUARED 3u
#define VKO_SCHED_STEP 4u
#define VKO_SCHED_MULTI_STEP 5u
#define VKO_SCHED_CONSTANT_FACTOR 6u
#define VKO_SCHED_LINEAR 7u
#define VKO_SCHED_POLYNOMIAL 8u
#define VKO_SCHED_COSINE_ANNEALING 9u
#define VKO_SCHED_COSINE_WARM_RESTARTS 10u
#define VKO_SCHED_ONE_CYCLE 11u
#define VKO_SCHED_CYCLIC 12u
#define VKO_SCHED_COSINE_WITH_WARMUP 13u
#define VKO_SCHED_WARMUP_STABLE_DECAY 14u

// vkoptim::detail::ScheduleComposition
#define VKO_SCHED_SINGLE 0u
#define VKO_SCHED_SEQUENTIAL 1u
#define VKO_SCHED_CHAINED 2u

// vkoptim::WsdShape, vkoptim::CyclicMode
#define VKO_WSD_LINEAR 0u
#define VKO_WSD_COSINE 1u
#define VKO_WSD_ONE_MINUS_SQRT 2u
#define VKO_CYCLIC_TRIANGULAR2 1u
#define VKO_CYCLIC_EXP_RANGE 2u

uint vko_schedule_word(uint i);

#define VKO_REC_F(i) uintBitsToFloat(vko_schedule_word(i))
#define VKO_REC_DF(i) vec2(uintBitsToFloat(vko_schedule_word(i)), uintBitsToFloat(vko_schedule_word((i) + 1u)))

// ---- double-float arithmetic --------------------------------------------------------------
// A value is vec2(hi, lo) with hi = round(hi + lo).

// Constants as exact float bit patterns: hi = round(c), lo = round(c - hi).
#define VKO_DF_PI vec2(uintBitsToFloat(0x40490fdbu), uintBitsToFloat(0xb3bbbd2eu))
#define VKO_DF_LN2 vec2(uintBitsToFloat(0x3f317218u), uintBitsToFloat(0xb102e308u))
#define VKO_DF_TWO_OVER_LN2 vec2(uintBitsToFloat(0x4038aa3bu), uintBitsToFloat(0x33257060u))
#define VKO_DF_THIRD vec2(uintBitsToFloat(0x3eaaaaabu), uintBitsToFloat(0xb22aaaabu))
#define VKO_DF_ONE vec2(1.0, 0.0)

// a + b exactly, given |a| >= |b| (or a == 0).
vec2 vko_quick_two_sum(float a, float b) {
  precise float s = a + b;
  precise float e = b - (s - a);
  return vec2(s, e);
}

// a + b exactly.
vec2 vko_two_sum(float a, float b) {
  precise float s = a + b;
  precise float v = s - a;
  precise float e = (a - (s - v)) + (b - v);
  return vec2(s, e);
}

// Veltkamp: a = hi + lo with 12-bit halves, so products of halves are exact without fma. Large
// values are scaled by 2^-28 first so that 4097·a cannot overflow.
vec2 vko_split(float a) {
  bool big = abs(a) > 1.0e30;
  precise float x = big ? a * 3.7252902984619141e-09 : a;
  precise float t = 4097.0 * x;
  precise float hi = t - (t - x);
  precise float lo = x - hi;
  return big ? vec2(hi, lo) * 268435456.0 : vec2(hi, lo);
}

// a * b exactly (barring underflow).
vec2 vko_two_prod(float a, float b) {
  precise float p = a * b;
  vec2 as = vko_split(a);
  vec2 bs = vko_split(b);
  precise float e = ((as.x * bs.x - p) + as.x * bs.y + as.y * bs.x) + as.y * bs.y;
  return vec2(p, e);
}

vec2 vko_df_add(vec2 a, vec2 b) {
  vec2 s = vko_two_sum(a.x, b.x);
  vec2 t = vko_two_sum(a.y, b.y);
  precise float c = s.y + t.x;
  s = vko_quick_two_sum(s.x, c);
  precise float d = s.y + t.y;
  return vko_quick_two_sum(s.x, d);
}

vec2 vko_df_sub(vec2 a, vec2 b) { return vko_df_add(a, -b); }

vec2 vko_df_mul(vec2 a, vec2 b) {
  vec2 p = vko_two_prod(a.x, b.x);
  precise float c = p.y + (a.x * b.y + a.y * b.x);
  return vko_quick_two_sum(p.x, c);
}

// a / b by three quotient digits; each remainder is exact, so the float division's own error
// (2.5 ulp in Vulkan) is corrected by the next digit.
vec2 vko_df_div(vec2 a, vec2 b) {
  float q1 = a.x / b.x;
  vec2 r = vko_df_sub(a, vko_df_mul(b, vec2(q1, 0.0)));
  float q2 = r.x / b.x;
  r = vko_df_sub(r, vko_df_mul(b, vec2(q2, 0.0)));
  float q3 = r.x / b.x;
  return vko_df_add(vko_quick_two_sum(q1, q2), vec2(q3, 0.0));
}

// n exactly: the top 24 and the low 8 bits are each exact floats.
vec2 vko_df_from_uint(uint n) { return vko_quick_two_sum(float(n & 0xffffff00u), float(n & 0xffu)); }

vec2 vko_df_ratio(uint a, uint b) { return vko_df_div(vko_df_from_uint(a), vko_df_from_uint(b)); }

bool vko_df_le(vec2 a, vec2 b) { return vko_df_sub(a, b).x <= 0.0; }

vec2 vko_df_ldexp(vec2 a, int e) { return vec2(ldexp(a.x, e), ldexp(a.y, e)); }

// sqrt(a), a >= 0: the float root refined by one Newton step on the exact residual a - y².
vec2 vko_df_sqrt(vec2 a) {
  if (a.x <= 0.0) return vec2(0.0);
  float y = sqrt(a.x);
  vec2 r = vko_df_sub(a, vko_two_prod(y, y));
  precise float c = r.x / (2.0 * y);
  return vko_quick_two_sum(y, c);
}

// x^n by repeated squaring.
vec2 vko_df_pow_uint(vec2 x, uint n) {
  vec2 result = VKO_DF_ONE;
  vec2 b = x;
  while (n != 0u) {
    if ((n & 1u) != 0u) result = vko_df_mul(result, b);
    n >>= 1u;
    if (n != 0u) b = vko_df_mul(b, b);
  }
  return result;
}

// log2(x), x > 0: x = m·2^e with m in [0.707, 1.414), log2 m = (2/ln2)·atanh((m-1)/(m+1)),
// |f| <= 0.172 so the series f + f³/3 + ... + f^13/13 leaves < 1e-12; f²/3 in double-float,
// the smaller terms in float.
vec2 vko_df_log2(vec2 x) {
  int e;
  float m = frexp(x.x, e);
  if (m < 0.70710678) e -= 1;
  vec2 mx = vko_df_ldexp(x, -e);
  vec2 f = vko_df_div(vko_df_add(mx, vec2(-1.0, 0.0)), vko_df_add(mx, VKO_DF_ONE));
  float t = f.x * f.x;
  precise float tail = t * t * (1.0 / 5.0 + t * (1.0 / 7.0 + t * (1.0 / 9.0 + t * (1.0 / 11.0 + t * (1.0 / 13.0)))));
  vec2 g = vko_df_add(vko_df_mul(vko_df_mul(f, f), VKO_DF_THIRD), vec2(tail, 0.0));
  vec2 atanh_f = vko_df_add(f, vko_df_mul(f, g));
  return vko_df_add(vec2(float(e), 0.0), vko_df_mul(atanh_f, VKO_DF_TWO_OVER_LN2));
}

// 2^y: y = n + r with |r| <= 1/2, 2^r = e^z with z = r·ln2, |z| <= 0.35; Taylor to z^9 leaves
// < 1e-11; 1 + z in double-float, z²/2 + ... in float.
vec2 vko_df_exp2(vec2 y) {
  if (y.x < -200.0) return vec2(0.0);
  float n = floor(y.x + 0.5);
  vec2 z = vko_df_mul(vko_df_sub(y, vec2(n, 0.0)), VKO_DF_LN2);
  float q = z.x;
  precise float tail =
      q * q *
      (1.0 / 2.0 +
       q * (1.0 / 6.0 +
            q * (1.0 / 24.0 +
                 q * (1.0 / 120.0 + q * (1.0 / 720.0 + q * (1.0 / 5040.0 + q * (1.0 / 40320.0 + q / 362880.0)))))));
  vec2 e = vko_df_add(vko_df_add(VKO_DF_ONE, z), vec2(tail, 0.0));
  return vko_df_ldexp(e, int(n));
}

// x^p for x >= 0, p > 0.
vec2 vko_df_pow(vec2 x, vec2 p) {
  if (x.x <= 0.0) return vec2(0.0);
  return vko_df_exp2(vko_df_mul(p, vko_df_log2(x)));
}

// ---- trigonometry through sin(π·r) on [0, 1/4] ---------------------------------------------

// sin(π·r) for r in [0, 1/4] (a little beyond is fine): θ = π·r in double-float, then
// θ + θ·(-θ²/3! + θ⁴/5! - ... - θ^10/11!), the bracket (|.| <= 0.103) in float.
vec2 vko_sinpi_quarter(vec2 r) {
  vec2 x = vko_df_mul(VKO_DF_PI, r);
  float t = x.x * x.x;
  precise float p =
      t * (-1.0 / 6.0 +
           t * (1.0 / 120.0 + t * (-1.0 / 5040.0 + t * (1.0 / 362880.0 + t * (-1.0 / 39916800.0)))));
  return vko_df_add(x, vec2(x.x * p, 0.0));
}

// torch's cosine anneal from `start` to `end` at pct in [0, 1]:
//   end + (start - end)·(1 + cos(π·pct))/2
// evaluated as near + (far - near)·sin²(π·r/2) around the endpoint nearer pct (r <= 1/2 the
// exact distance to it), so that for start, end >= 0 the relative error stays that of sin².
vec2 vko_anneal_cos(vec2 start, vec2 end, vec2 pct) {
  bool first_half = pct.x <= 0.5;
  vec2 near = first_half ? start : end;
  vec2 far = first_half ? end : start;
  vec2 r = (first_half ? pct : vko_df_sub(VKO_DF_ONE, pct)) * 0.5;
  vec2 h = vko_sinpi_quarter(r);
  return vko_df_add(near, vko_df_mul(vko_df_sub(far, near), vko_df_mul(h, h)));
}

vec2 vko_anneal_linear(vec2 start, vec2 end, vec2 pct) {
  return vko_df_add(start, vko_df_mul(vko_df_sub(end, start), pct));
}

// (1 + cos(π·x))/2 has period 2 and is even: the y in [0, 1] with the same value, x >= 0.
vec2 vko_fold_cosine_argument(vec2 x) {
  float k = 2.0 * floor(x.x * 0.5);
  vec2 y = vko_df_sub(x, vec2(k, 0.0));
  if (y.x < 0.0) y = vko_df_add(y, vec2(2.0, 0.0));
  if (y.x > 1.0) y = vko_df_sub(vec2(2.0, 0.0), y);
  return y;
}

// Hugging Face: r + (1 - r)·(1 + cos(2π·num_cycles·progress))/2.
vec2 vko_hf_cosine_factor(vec2 num_cycles, vec2 min_ratio, vec2 progress) {
  vec2 x = vko_df_mul(num_cycles, progress) * 2.0;
  return vko_anneal_cos(VKO_DF_ONE, min_ratio, vko_fold_cosine_argument(x));
}

// ---- the kinds -----------------------------------------------------------------------------

// OneCycleLR at s (held at total_steps - 1 past the end); piece at word o.
void vko_one_cycle(uint o, uint s, out vec2 lr, out float momentum) {
  vec2 initial = VKO_REC_DF(o + 1u);
  vec2 max_lr = VKO_REC_DF(o + 3u);
  vec2 min_lr = VKO_REC_DF(o + 5u);
  vec2 rise_end = VKO_REC_DF(o + 7u);
  uint total = vko_schedule_word(o + 9u);
  uint flags = vko_schedule_word(o + 10u);
  float base_m = VKO_REC_F(o + 11u);
  float max_m = VKO_REC_F(o + 12u);
  bool three_phase = (flags & 1u) != 0u;

  vec2 x = vko_df_from_uint(min(s, total - 1u));
  vec2 last = vko_df_from_uint(total - 1u);
  vec2 fall_end = rise_end * 2.0;  // three phase: 2·pct_start·total_steps - 2
  vec2 from_step, to_step, lr0, lr1;
  float m0, m1;
  if (vko_df_le(x, rise_end)) {
    from_step = vec2(0.0);
    to_step = rise_end;
    lr0 = initial;
    lr1 = max_lr;
    m0 = max_m;
    m1 = base_m;
  } else if (three_phase && vko_df_le(x, fall_end)) {
    from_step = rise_end;
    to_step = fall_end;
    lr0 = max_lr;
    lr1 = initial;
    m0 = base_m;
    m1 = max_m;
  } else if (three_phase) {
    from_step = fall_end;
    to_step = last;
    lr0 = initial;
    lr1 = min_lr;
    m0 = max_m;
    m1 = max_m;
  } else {
    from_step = rise_end;
    to_step = last;
    lr0 = max_lr;
    lr1 = min_lr;
    m0 = base_m;
    m1 = max_m;
  }
  vec2 pct = vko_df_div(vko_df_sub(x, from_step), vko_df_sub(to_step, from_step));
  vec2 m;
  if ((flags & 2u) != 0u) {
    lr = vko_anneal_linear(lr0, lr1, pct);
    m = vko_anneal_linear(vec2(m0, 0.0), vec2(m1, 0.0), pct);
  } else {
    lr = vko_anneal_cos(lr0, lr1, pct);
    m = vko_anneal_cos(vec2(m0, 0.0), vec2(m1, 0.0), pct);
  }
  momentum = m.x + m.y;
}

// CyclicLR at s; piece at word o.
void vko_cyclic(uint o, uint s, out vec2 lr, out float momentum) {
  vec2 base_lr = VKO_REC_DF(o + 1u);
  vec2 max_lr = VKO_REC_DF(o + 3u);
  uint up = vko_schedule_word(o + 7u);
  uint down = vko_schedule_word(o + 8u);
  uint mode = vko_schedule_word(o + 9u);
  vec2 base_m = vec2(VKO_REC_F(o + 11u), 0.0);
  vec2 max_m = vec2(VKO_REC_F(o + 12u), 0.0);
  uint total = up + down;
  uint cycle = s / total;  // torch's cycle is this + 1
  uint r = s - cycle * total;
  vec2 rise = r <= up ? vko_df_ratio(r, up) : vko_df_ratio(total - r, down);
  vec2 scale = VKO_DF_ONE;
  if (mode == VKO_CYCLIC_TRIANGULAR2)
    scale = vec2(cycle < 150u ? ldexp(1.0, -int(cycle)) : 0.0, 0.0);
  else if (mode == VKO_CYCLIC_EXP_RANGE)
    scale = vko_df_pow_uint(VKO_REC_DF(o + 5u), s);
  vec2 height = vko_df_mul(rise, scale);
  lr = vko_df_add(base_lr, vko_df_mul(vko_df_sub(max_lr, base_lr), height));
  vec2 m = vko_df_sub(max_m, vko_df_mul(vko_df_sub(max_m, base_m), height));
  momentum = m.x + m.y;
}

// T_cur / T_i of CosineAnnealingWarmRestarts.
vec2 vko_warm_restart_phase(uint t0, uint t_mult, uint s) {
  uint cur = s;
  uint len = t0;
  if (t_mult == 1u) {
    cur = s % t0;
  } else {
    // At most 32 cycles fit in 32 bits; past 2^32 / t_mult the length saturates.
    for (int i = 0; i < 33 && cur >= len; ++i) {
      cur -= len;
      len = len > 0xffffffffu / t_mult ? 0xffffffffu : len * t_mult;
    }
  }
  return vko_df_ratio(cur, len);
}

// Hugging Face warmup-stable-decay factor (times base outside).
vec2 vko_wsd_factor(uint o, uint s) {
  vec2 num_cycles = VKO_REC_DF(o + 1u);
  vec2 r = VKO_REC_DF(o + 3u);
  uint w = vko_schedule_word(o + 5u);
  uint st = vko_schedule_word(o + 6u);
  uint d = vko_schedule_word(o + 7u);
  uint warmup_shape = vko_schedule_word(o + 8u);
  uint decay_shape = vko_schedule_word(o + 9u);
  vec2 span = vko_df_sub(VKO_DF_ONE, r);
  if (s < w) {
    vec2 p = vko_df_ratio(s, w);
    vec2 q = vko_df_ratio(w - s, w);  // 1 - p
    if (warmup_shape == VKO_WSD_COSINE) return vko_anneal_cos(r, VKO_DF_ONE, p);
    // 1 - sqrt(1 - p) = p / (1 + sqrt(q)), without cancellation
    vec2 rise = warmup_shape == VKO_WSD_LINEAR ? p : vko_df_div(p, vko_df_add(VKO_DF_ONE, vko_df_sqrt(q)));
    return vko_df_add(r, vko_df_mul(span, rise));
  }
  if (s - w < st) return VKO_DF_ONE;
  if (s - w - st < d) {
    uint k = s - w - st;
    vec2 p = vko_df_ratio(k, d);
    vec2 q = vko_df_ratio(d - k, d);  // 1 - p
    if (decay_shape == VKO_WSD_COSINE) return vko_hf_cosine_factor(num_cycles, r, p);
    // 1 - sqrt(p) = q / (1 + sqrt(p))
    vec2 left = decay_shape == VKO_WSD_LINEAR ? q : vko_df_div(q, vko_df_add(VKO_DF_ONE, vko_df_sqrt(p)));
    return vko_df_add(r, vko_df_mul(span, left));
  }
  return r;
}

// The lr of the piece at word o for a base lr, s steps into the piece.
// The piece at word o applied to `base` at s; the kinds that cycle momentum also set it.
vec2 vko_schedule_piece_lr(uint o, vec2 base, uint s, inout float momentum) {
  uint kind = vko_schedule_word(o);
  if (kind == VKO_SCHED_INVERSE_TIME || kind == VKO_SCHED_INVERSE_TIME_SQUARED) {
    vec2 d = vko_df_add(VKO_DF_ONE, vko_df_mul(VKO_REC_DF(o + 1u), vko_df_from_uint(s)));
    if (kind == VKO_SCHED_INVERSE_TIME_SQUARED) d = vko_df_mul(d, d);
    return vko_df_div(base, d);
  }
  if (kind == VKO_SCHED_EXPONENTIAL) return vko_df_mul(base, vko_df_pow_uint(VKO_REC_DF(o + 1u), s));
  if (kind == VKO_SCHED_STEP) return vko_df_mul(base, vko_df_pow_uint(VKO_REC_DF(o + 1u), s / vko_schedule_word(o + 3u)));
  if (kind == VKO_SCHED_MULTI_STEP) {
    uint count = vko_schedule_word(o + 3u);
    uint passed = 0u;
    for (uint i = 0u; i < count; ++i)
      if (vko_schedule_word(o + 4u + i) <= s) ++passed;
    return vko_df_mul(base, vko_df_pow_uint(VKO_REC_DF(o + 1u), passed));
  }
  if (kind == VKO_SCHED_CONSTANT_FACTOR) return s < vko_schedule_word(o + 3u) ? vko_df_mul(base, VKO_REC_DF(o + 1u)) : base;
  if (kind == VKO_SCHED_LINEAR) {
    uint total = vko_schedule_word(o + 5u);
    vec2 f = vko_anneal_linear(VKO_REC_DF(o + 1u), VKO_REC_DF(o + 3u), vko_df_ratio(min(s, total), total));
    return vko_df_mul(base, f);
  }
  if (kind == VKO_SCHED_POLYNOMIAL) {
    uint total = vko_schedule_word(o + 3u);
    vec2 left = vko_df_ratio(total - min(s, total), total);
    return vko_df_mul(base, vko_df_pow(left, VKO_REC_DF(o + 1u)));
  }
  if (kind == VKO_SCHED_COSINE_ANNEALING) {
    // Period 2·t_max, even: fold s into [0, t_max] exactly (t_max <= 2^30).
    uint t = vko_schedule_word(o + 3u);
    uint y = s % (2u * t);
    if (y > t) y = 2u * t - y;
    return vko_anneal_cos(base, VKO_REC_DF(o + 1u), vko_df_ratio(y, t));
  }
  if (kind == VKO_SCHED_COSINE_WARM_RESTARTS)
    return vko_anneal_cos(base, VKO_REC_DF(o + 1u), vko_warm_restart_phase(vko_schedule_word(o + 3u), vko_schedule_word(o + 4u), s));
  if (kind == VKO_SCHED_ONE_CYCLE || kind == VKO_SCHED_CYCLIC) {
    vec2 lr;
    if (kind == VKO_SCHED_ONE_CYCLE)
      vko_one_cycle(o, s, lr, momentum);
    else
      vko_cyclic(o, s, lr, momentum);
    return lr;
  }
  if (kind == VKO_SCHED_COSINE_WITH_WARMUP) {
    uint w = vko_schedule_word(o + 5u);
    uint n = vko_schedule_word(o + 6u);
    if (s < w) return vko_df_mul(base, vko_df_ratio(s, w));
    vec2 progress = vko_df_ratio(s - w, n > w ? n - w : 1u);  // / max(1, n - w)
    return vko_df_mul(base, vko_hf_cosine_factor(VKO_REC_DF(o + 1u), VKO_REC_DF(o + 3u), progress));
  }
  if (kind == VKO_SCHED_WARMUP_STABLE_DECAY) return vko_df_mul(base, vko_wsd_factor(o, s));
  return base;  // constant
}

// The lr at s in double-float, and the momentum (beta1) at s of a schedule that cycles it
// (`cycled`; only a lone one_cycle or cyclic schedule does, compositions refuse both), else 0.
// One piece evaluation in a loop, not one per composition: its code is inlined once.
vec2 vko_schedule_df(uint s, out float momentum, out bool cycled) {
  uint composition = vko_schedule_word(0u);
  uint pieces = vko_schedule_word(1u);
  uint first = 0u;  // sequential: the current piece, at s - its start; chained: every piece at s
  uint count = composition == VKO_SCHED_CHAINED ? pieces : 1u;
  uint at = s;
  if (composition == VKO_SCHED_SEQUENTIAL) {
    for (uint i = 0u; i + 1u < pieces; ++i) {
      if (vko_schedule_word(4u + i) <= s) {
        first = i + 1u;
        at = s - vko_schedule_word(4u + i);
      }
    }
  }
  momentum = 0.0;
  vec2 lr = VKO_REC_DF(2u);
  for (uint i = first; i < first + count; ++i)
    lr = vko_schedule_piece_lr(VKO_SCHEDULE_HEADER_WORDS + i * VKO_SCHEDULE_PIECE_WORDS, lr, at, momentum);
  uint o = VKO_SCHEDULE_HEADER_WORDS;
  uint kind = vko_schedule_word(o);
  cycled = composition == VKO_SCHED_SINGLE &&
           ((kind == VKO_SCHED_ONE_CYCLE && (vko_schedule_word(o + 10u) & 4u) != 0u) ||
            (kind == VKO_SCHED_CYCLIC && vko_schedule_word(o + 10u) != 0u));
  if (!cycled) momentum = 0.0;
  return lr;
}

// The lr at s rounded to float.
float vko_schedule_lr(uint s) {
  float momentum;
  bool cycled;
  vec2 v = vko_schedule_df(s, momentum, cycled);
  precise float lr = v.x + v.y;
  // Past float's range (only a growing ExponentialLR gets there) the pair holds inf - inf = NaN:
  // report +inf, as rounding the double lr to float would.
  return abs(lr) <= 3.40282347e38 ? lr : uintBitsToFloat(0x7f800000u);
}

#endif  // VKO_SCHEDULE_GLSL
