#pragma once
// Double-precision reference for cautious steps (Liang et al. 2024, "Cautious Optimizers";
// timm's caution=True), over one tensor:
//   mask = (d*g > 0) ; d <- d * mask / max(mean(mask), 1e-3)
// A float kernel decides d*g > 0 on rounded values: where d (or g) is within rounding of 0 (`tie`)
// it may decide the other way, which changes that element and the tensor's mean. `slack` gets,
// per element, how far the kernel's masked direction could then be from this one.
#include <algorithm>
#include <cmath>
#include <vector>

namespace reference {

inline std::vector<double> cautious(const std::vector<double>& d, const std::vector<double>& g,
                                    const std::vector<bool>& tie, std::vector<double>& slack) {
  const double n = double(d.size());
  size_t kept = 0, ties = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    kept += d[i] * g[i] > 0;
    ties += tie[i];
  }
  auto scale_at = [&](double count) { return 1 / std::max(count / n, 1e-3); };
  const double scale = scale_at(double(kept));
  const double fewest = double(kept) - double(std::min(ties, kept)), most = double(kept + ties);
  const double scale_spread = std::max(scale_at(fewest) - scale, scale - scale_at(most));
  std::vector<double> out(d.size());
  slack.assign(d.size(), 0.0);
  for (size_t i = 0; i < d.size(); ++i) {
    const bool keep = d[i] * g[i] > 0;
    out[i] = keep ? d[i] * scale : 0.0;
    slack[i] = (keep ? std::abs(d[i]) * scale_spread : 0.0) + (tie[i] ? std::abs(d[i]) * scale_at(fewest) : 0.0);
  }
  return out;
}

}  // namespace reference
