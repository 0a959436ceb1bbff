// torch's float32 CPU arithmetic, for rules that reproduce torch.optim's rounding. Needs no
// other include.
#ifndef VKO_MATH_GLSL
#define VKO_MATH_GLSL

// torch's CPU arithmetic, so one step rounds as torch.optim's float32 CPU step does. x86-64
// builds of torch compile `a + b*c` in their kernels to one fused multiply-add (GCC contracts it
// under AVX2/AVX-512, and the vectorized kernels call fmadd), so:
//   t.add(o, alpha=a)            -> fma(a, o, t)
//   t.addcmul(t1, t2, value=c)   -> fma(c*t1, t2, t)
//   t.addcdiv(t1, t2, value=c)   -> t + c*t1/t2          (rounded after each operation)
//   t.lerp(end, w)               -> vko_lerp(t, end, w)  (aten/src/ATen/native/Lerp.h)
// Rules use `precise` so that no other product is fused into a sum.
vec4 vko_lerp(vec4 self, vec4 end, float w) {
  precise const vec4 d = end - self;
  precise vec4 r;
  if (abs(w) < 0.5)
    r = fma(vec4(w), d, self);
  else
    r = fma(-d, vec4(1.0 - w), end);  // torch: end - (end - self) * (1 - w), 1 - w in float
  return r;
}

#endif  // VKO_MATH_GLSL
