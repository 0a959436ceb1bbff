// libFuzzer harness of the checkpoint loader (Optimizer::load_from_memory): each input is a
// checkpoint file. The optimizer (AdamW, tensors w0 of 5 and w1 of 3 elements in two groups, two
// steps taken) is made once per process (device creation is slow).
//
// The contract checked, beyond "no crash, no sanitizer report":
//  * a refused input throws vkoptim::Error with Status::invalid_argument (never another status,
//    never another exception) and leaves the optimizer exactly as it was: it saves the same bytes;
//  * an accepted input is a checkpoint of this optimizer: saving again and loading that gives the
//    same bytes.
//
// VKOPTIM_FUZZ_WRITE_SEEDS=<folder> writes the seed corpus (checkpoints of this optimizer after 0
// and 2 steps, and of 8-bit and bf16 variants, which load with other storage) and exits.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <vector>

#include "vkoptim/vkoptim.hpp"

namespace {

using namespace vkoptim;

struct Target {
  Context ctx;
  Tensor w0, w1, g0, g1;
  Optimizer opt;
  explicit Target(Context c, StateDType state = StateDType::f32, int steps = 2)
      : ctx(std::move(c)),
        w0(ctx.create_tensor(std::vector<float>{0.5f, -1.0f, 2.0f, 0.25f, 3.0f})),
        w1(ctx.create_tensor(std::vector<float>{1.0f, 2.0f, -3.0f})),
        g0(ctx.create_tensor(std::vector<float>{0.1f, -0.2f, 0.3f, 0.0f, 1.0f})),
        g1(ctx.create_tensor(std::vector<float>{-0.5f, 0.5f, 0.25f})),
        opt(ctx, groups(state)) {
    for (int i = 0; i < steps; ++i) opt.step();
  }
  std::vector<ParamGroup> groups(StateDType state) {
    PrecisionOptions p;
    p.state = state;
    p.min_8bit_elements = 0;
    ParamGroup a{adamw_options(), {{w0.range(), g0.range(), "w0"}}},
        b{adamw_options(), {{w1.range(), g1.range(), "w1"}}};
    a.precision = b.precision = p;
    return {a, b};
  }
};

Target* target = nullptr;

void write(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* folder = std::getenv("VKOPTIM_FUZZ_WRITE_SEEDS")) {
    const std::string f = folder;
    write(f + "/adamw-2-steps", Target(Context::create()).opt.save_to_memory());
    write(f + "/adamw-no-steps", Target(Context::create(), StateDType::f32, 0).opt.save_to_memory());
    write(f + "/adamw-8bit", Target(Context::create(), StateDType::q8).opt.save_to_memory());
    write(f + "/adamw-4bit", Target(Context::create(), StateDType::q4).opt.save_to_memory());
    write(f + "/adamw-bf16", Target(Context::create(), StateDType::bf16).opt.save_to_memory());
    std::exit(0);
  }
  target = new Target(Context::create());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Optimizer& opt = target->opt;
  const auto before = opt.save_to_memory();
  try {
    opt.load_from_memory({data, size});
  } catch (const Error& e) {
    if (e.status() != Status::invalid_argument) {
      std::fprintf(stderr, "refused with status %d, not invalid_argument: %s\n", int(e.status()), e.what());
      std::abort();
    }
    if (opt.save_to_memory() != before) {
      std::fprintf(stderr, "a refused load changed the optimizer: %s\n", e.what());
      std::abort();
    }
    return 0;
  }
  const auto saved = opt.save_to_memory();
  opt.load_from_memory(saved);
  if (opt.save_to_memory() != saved) {
    std::fprintf(stderr, "an accepted checkpoint does not round-trip\n");
    std::abort();
  }
  return 0;
}
