#pragma once
// Reference storage types, written independently of the runtime: 16-bit rounding by comparing
// the two neighbours in double (f16 also through the compiler's _Float16), and bitsandbytes'
// dynamic 8-bit maps as create_dynamic_map builds them (linspace means, sorted).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace reference {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bf16 round to nearest even: the two bf16 neighbours of x, the nearer one (ties: even code).
inline float round_bf16(float x) {
  if (std::isnan(x) || std::isinf(x)) return x;
  const uint32_t u = float_bits(x);
  const uint32_t down = u & 0xFFFF0000u, up = down + 0x10000u;  // toward zero, away from zero
  // Past the largest finite value the next one up is 2^128 (which rounds to infinity).
  const double up_value = std::isinf(bits_float(up)) ? std::copysign(std::ldexp(1.0, 128), x) : double(bits_float(up));
  const double dd = std::fabs(double(x) - double(bits_float(down)));
  const double du = std::fabs(up_value - double(x));
  if (dd < du) return bits_float(down);
  if (du < dd) return bits_float(up);
  return ((down >> 16) & 1u) ? bits_float(up) : bits_float(down);
}

inline float round_f16(float x) {
  return float(static_cast<_Float16>(x));  // the compiler's conversion rounds to nearest even
}

// Spacing of the 16-bit format around |x| (one unit in the last place).
inline double ulp16(double x, bool bf16) {
  const int mant = bf16 ? 7 : 10;
  if (x == 0) return bf16 ? 0 : std::ldexp(1.0, -24);
  int e;
  std::frexp(std::fabs(x), &e);
  const int min_exp = bf16 ? -126 : -14;
  return std::ldexp(1.0, std::max(e - 1, min_exp) - mant);
}

// bitsandbytes' create_dynamic_map(signed), sorted.
inline std::vector<double> dynamic_map(bool is_signed) {
  std::vector<double> data;
  for (int i = 0; i < 7; ++i) {
    const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    for (int j = 0; j + 1 < items; ++j) {
      const double lo = 0.1 + 0.9 * j / (items - 1), hi = 0.1 + 0.9 * (j + 1) / (items - 1);
      const double v = std::pow(10.0, -6 + i) * (lo + hi) / 2;
      data.push_back(v);
      if (is_signed) data.push_back(-v);
    }
  }
  data.push_back(0);
  data.push_back(1);
  std::sort(data.begin(), data.end());
  return data;
}

// The 4-bit maps of torchao's 4-bit optimizers: create_dynamic_map(signed, 3 exponent bits,
// 4 bits) for first moments, and the linear map without zero, linspace(0, 1, 17)[1:], for second
// moments; sorted.
inline std::vector<double> four_bit_map(bool is_signed) {
  std::vector<double> data;
  if (!is_signed) {
    for (int c = 1; c <= 16; ++c) data.push_back(c / 16.0);
    return data;
  }
  for (int i = 0; i < 3; ++i) {  // decades 10^-2, 10^-1, 1 with 1, 2, 4 linspace means
    const int items = (1 << i) + 1;
    for (int j = 0; j + 1 < items; ++j) {
      const double lo = 0.1 + 0.9 * j / (items - 1), hi = 0.1 + 0.9 * (j + 1) / (items - 1);
      data.push_back(std::pow(10.0, -2 + i) * (lo + hi) / 2);
      data.push_back(-data.back());
    }
  }
  data.push_back(0);
  data.push_back(1);
  std::sort(data.begin(), data.end());
  return data;
}

// Half the gap between the map values around y (the worst error of nearest rounding there).
inline double half_gap(const std::vector<double>& map, double y) {
  auto hi = std::lower_bound(map.begin(), map.end(), y);
  if (hi == map.end()) return std::fabs(y - map.back());
  if (hi == map.begin()) return std::fabs(map.front() - y);
  return (*hi - *(hi - 1)) / 2;
}

// Distance from y to the nearest map value.
inline double distance_to_map(const std::vector<double>& map, double y) {
  auto hi = std::lower_bound(map.begin(), map.end(), y);
  double d = hi == map.end() ? INFINITY : *hi - y;
  if (hi != map.begin()) d = std::min(d, y - *(hi - 1));
  return d;
}

}  // namespace reference
