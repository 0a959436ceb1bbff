// Saves an AdamW optimizer's checkpoint over and over (a step between saves) until killed: the
// process CheckpointTest.KilledWhileSavingLeavesALoadableFile kills at random points.
//   checkpoint_writer <path> [--once]
#include <cstdio>
#include <vector>

#include "vkoptim/vkoptim.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: checkpoint_writer <path> [--once]\n");
    return 2;
  }
  auto ctx = vkoptim::Context::create();
  constexpr size_t kElements = size_t(1) << 20;
  auto p = ctx.create_tensor(std::vector<float>(kElements, 0.5f));
  auto g = ctx.create_tensor(std::vector<float>(kElements, 0.01f));
  vkoptim::Optimizer opt(ctx, {vkoptim::ParamGroup{vkoptim::adamw_options(), {{p.range(), g.range(), "w"}}}});
  do {
    opt.step();
    opt.save(argv[1]);
  } while (argc < 3);
  return 0;
}
