#pragma once
// What the benches report of repeated runs: min, median and max.
#include <algorithm>
#include <vector>

struct Stats {
  double min = 0, median = 0, max = 0;
};
inline Stats summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}
