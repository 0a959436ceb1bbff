// Cautious steps (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085; timm's
// caution=True): the rule's update direction d is kept where it agrees in sign with the gradient
// g and rescaled by the share of the tensor kept:
//   mask = (d*g > 0) ; d <- d * mask / max(mean(mask), 1e-3)
// The mean needs the whole tensor, so a cautious step is three passes built from one rule body:
//   <rule>_cautious.comp        VKO_CAUTIOUS_COUNT: computes d, writes nothing and sums the mask
//                               per block (the rule stores the mask in the gradient's lanes,
//                               which the pass does not write back);
//   reduce.comp                 the per-tensor sums;
//   <rule>_cautious_apply.comp  VKO_CAUTIOUS_APPLY: the step, with d from vko_cautious.
// Both builds push VkoScratchPush after the header and define scratch_address() (and, counting,
// rule_partials_base()). Include after vko_elementwise.glsl; a build defines at most one of the two.
#ifndef VKO_CAUTIOUS_GLSL
#define VKO_CAUTIOUS_GLSL

#if defined(VKO_CAUTIOUS_COUNT) || defined(VKO_CAUTIOUS_APPLY)
#define VKO_CAUTIOUS
#include "vko_reduce.glsl"
#endif

// 1 where d agrees in sign with g (torch: (d*g > 0).to(g.dtype)).
vec4 vko_cautious_mask(vec4 d, vec4 g) {
  precise const vec4 product = d * g;
  return vec4(greaterThan(product, vec4(0.0)));
}

#ifdef VKO_CAUTIOUS_COUNT
// The mask the rule left in operand 1 (the gradient), over the lanes in range.
vec2 rule_contribution(vec4 x[VKO_MAX_OPS], vec4 lanes) { return vec2(dot(x[1], lanes), 0.0); }
#endif

#ifdef VKO_CAUTIOUS_APPLY
// d * mask / max(mean(mask), 1e-3), as torch: mask.div_(mean.clamp_(min=1e-3)) ; d * mask. The
// tensor's count is its sum from the count pass (exact below 2^24 elements).
vec4 vko_cautious(vec4 d, vec4 g, VkoScratchPush scratch) {
  const float kept = vko_scratch(scratch.sums_base + vko_segment_head.w).x;
  const float mean = kept / float(vko_segment_extra.z);
  const float scale = 1.0 / max(mean, 1e-3);
  return d * (vko_cautious_mask(d, g) * scale);
}
#endif

#endif  // VKO_CAUTIOUS_GLSL
