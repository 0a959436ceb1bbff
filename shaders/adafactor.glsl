// Adafactor's update direction, shared by its two elementwise passes so both compute the same
// float values (torch.optim.Adafactor):
//   1-D:  v <- lerp(v, g^2, w) (first pass only) ; estimate = v
//   2-D:  estimate = row_var[r] * col_var[c] / max(mean(row_var), eps1)
//   U = rsqrt(max(estimate, eps1^2)) * g,  eps1^2 from the host in double
// Operands: 0 p, 1 g, 2 row_var, 3 col_var (per tensor), 4 variance (per element, 1-D only).
// Includes vko_elementwise.glsl (segment state, operand access) and vko_reduce.glsl (scratch);
// the passes define VKO_NEEDS_EXTRA.
#include "vko_elementwise.glsl"
#include "vko_reduce.glsl"

#define OP_P 0
#define OP_G 1
#define OP_ROW 2
#define OP_COL 3
#define OP_VAR 4
#define OP_U 5  // scratch lane in x[]: the update direction, not stored
#define ADAFACTOR_FACTORED (vko_segment_extra.y != 0)

// factor_base: scratch entry of tensor 0's row mean (per-tensor row means follow).
vec4 adafactor_direction(vec4 g, vec4 variance, uint factor_base, float eps1, float eps1_sq) {
  vec4 estimate = variance;
  if (ADAFACTOR_FACTORED) {
    const uint cols = vko_segment_extra.y;
    const float row_mean = max(vko_scratch(factor_base + vko_segment_head.w).x, eps1);
    // (The element's place in the whole tensor: a shard's piece of it keeps the whole factors.)
    const uint e0 = vko_round_at.y + vko_lane_base, row0 = e0 / cols, col0 = e0 - row0 * cols;
    if (col0 + 3 < cols && vko_lane_base + 3 < vko_segment_head.y) {
      // The four lanes share a row: one load of its factor.
      const float row = VKO_LOAD1(OP_ROW, row0) / row_mean;
      for (uint l = 0; l < 4; ++l) estimate[l] = row * VKO_LOAD1(OP_COL, col0 + l);
    } else {
      for (uint l = 0; l < 4; ++l) {
        const uint local = vko_lane_base + l;
        if (local >= vko_segment_head.y) break;  // lanes past the segment: nothing to read
        const uint e = e0 + l;
        estimate[l] = VKO_LOAD1(OP_ROW, e / cols) / row_mean * VKO_LOAD1(OP_COL, e % cols);
      }
    }
  }
  // clamp_(min=eps1*eps1).rsqrt_() (torch: 1/sqrt, each rounded), then mul_(grad)
  precise const vec4 u = (1.0 / sqrt(max(estimate, vec4(eps1_sq)))) * g;
  return u;
}
