// Sharded optimizer state over MPI (ZeRO stages 1-2; include/vkoptim/shard.hpp): every rank runs
// its own vkoptim context on the default device and keeps only its shard's optimizer state.
//
// The model is a linear least-squares problem over a flat parameter vector made of tensors of odd
// sizes; its data is cut into kWorkers partitions, rank r computing the gradients of partitions
// r, r + N, ... on the host. A step:
//   1. reduce-scatter: each rank sends every other rank that rank's shard slice of each of its
//      partitions' gradients (MPI_Alltoallv), and sums the kWorkers slices it receives in
//      partition order: the gradient's bits do not depend on the rank count;
//   2. the shard's optimizer step on the device; with --clip MAX_NORM (global clip_grad_norm_
//      over every rank's gradients) in two parts: each rank's sums of its 256-element gradient
//      chunks, placed in the layout's chunk list (scatter_grad_chunks) and added over the ranks
//      (MPI_Allreduce: each chunk comes from one rank, so the list is exact), reduced in the
//      fixed order an unsharded step uses (reduce_grad_chunks), then the step from that total;
//      LAMB's trust ratios need each whole tensor's norms: its step runs in parts around them
//      too (after the clip's part, if any): each rank's partial sums of its 256-element chunks
//      (step_tensor_chunks), placed in the layout's chunk list (scatter_tensor_chunks), added
//      over the ranks (MPI_Allreduce, exact as above), each tensor's chunks reduced in the
//      device's fixed order (reduce_tensor_chunks), then the rest of the step;
//   3. all-gather: the shards' parameters (MPI_Allgatherv), so every rank has the whole vector.
// So the run's parameters are the same bits on 1, 2, 3 or 4 ranks, and the same as after a
// checkpoint saved at one rank count and reloaded at another (--save-at, --resume), clipped runs
// included, LAMB's too (Adafactor's to float rounding where a matrix is cut inside a row).
// Muon (--rule muon: on the matrices, AdamW on the rest) completes each split matrix's update
// from every rank's piece (step_factor_sums, scatter_matrix_updates, MPI_Allreduce, exact), then
// exchanges the matrices' sums of U^2 as LAMB's norms, and every rank holding a piece of a matrix
// runs Newton-Schulz on all of it: the same bits as one rank.
// 4-bit AdamW with rank-1 normalised second moments (--rule adamw_q4_rank1) keeps each matrix's
// row and column maxima in every piece of it; where a cut splits a matrix, each step runs in parts
// around them: each rank's part of the new maxima (step_factor_sums), placed in the layout's list
// (scatter_factor_maxima) and combined over the ranks with MPI_MAX (exact), then the step's
// finish encodes against them: the same bits as one rank.
//
//   mpirun -np 4 vkoptim-mpi-zero --rule adamw --steps 30 --out params.bin
//   mpirun -np 4 vkoptim-mpi-zero --steps 30 --save-at 15 --save-dir ckpt --out a.bin
//   mpirun -np 2 vkoptim-mpi-zero --steps 30 --resume ckpt --out b.bin   # b.bin == a.bin
// --rule: adamw (fp32 state), adamw_q8 (8-bit), adamw_q4 (4-bit), adamw_q4_rank1 (4-bit, rank-1
// normalised second moments), lion, lamb, muon, adafactor (on 4 ranks
// "w1" is cut inside a row: its pieces exchange their row and column sums each step, so runs on
// other rank counts agree to float rounding). --validate: the Khronos validation layer on, and
// any message fails the run. --expect FILE --tolerance T: fail unless every parameter is within
// T of FILE's (an --out of another run). Prints the loss and the state bytes each rank keeps.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "vkoptim/vkoptim.hpp"

namespace {

constexpr int kWorkers = 4;    // data partitions, whatever the rank count
constexpr int kRowsPer = 48;   // rows of each partition
constexpr uint64_t kSeed = 7;  // data and initial parameters

// Group 0: weights, group 1: biases (and, for Muon, the 1-D "embed": Muon takes matrices only).
std::vector<vkoptim::FlatTensor> model(const std::string& rule) {
  const uint32_t embed_group = rule == "muon" ? 1 : 0;
  return {
      {"embed", 9001, 0, embed_group}, {"w0", 40 * 65, 40, 0}, {"b0", 65, 0, 1}, {"w1", 5000, 50, 0}, {"b1", 3, 0, 1}};
}

struct Partition {
  std::vector<float> a;  // rows x n
  std::vector<float> b;
};

Partition make_partition(int w, uint64_t n) {
  std::mt19937_64 rng(kSeed * 1000 + uint64_t(w));
  std::normal_distribution<double> normal(0, 1);
  Partition p;
  p.a.resize(kRowsPer * n);
  p.b.resize(kRowsPer);
  for (auto& v : p.a) v = float(normal(rng) / std::sqrt(double(n)));
  for (auto& v : p.b) v = float(normal(rng));
  return p;
}

// Loss |A x - b|^2 / rows of a partition, and its gradient (in double, rounded once).
double loss_and_grad(const Partition& p, const std::vector<float>& x, std::vector<float>* g) {
  const size_t n = x.size();
  std::vector<double> res(kRowsPer);
  double loss = 0;
  for (int r = 0; r < kRowsPer; ++r) {
    double s = -double(p.b[r]);
    for (size_t j = 0; j < n; ++j) s += double(p.a[r * n + j]) * x[j];
    res[r] = s;
    loss += s * s / kRowsPer;
  }
  if (g) {
    g->assign(n, 0.0f);
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (int r = 0; r < kRowsPer; ++r) s += double(p.a[r * n + j]) * res[r];
      (*g)[j] = float(2 * s / kRowsPer);
    }
  }
  return loss;
}

std::vector<vkoptim::ParamGroup> group_templates(const std::string& rule) {
  std::vector<vkoptim::ParamGroup> groups(2);  // 0: weights, 1: biases (no weight decay)
  for (size_t g = 0; g < 2; ++g) {
    if (rule == "adafactor") {
      groups[g].options = vkoptim::AdafactorOptions{};
    } else if (rule == "muon") {
      vkoptim::MuonOptions o;  // group 1: AdamW (use_muon = false)
      o.lr = 2e-2;
      o.use_muon = g == 0;
      o.weight_decay = g == 0 ? 0.01 : 0.0;
      groups[g].options = o;
    } else if (rule == "lamb") {
      vkoptim::LambOptions o;
      o.lr = 1e-2;
      o.weight_decay = g == 0 ? 0.01 : 0.0;
      groups[g].options = o;
    } else if (rule == "lion") {
      vkoptim::LionOptions o;
      o.lr = 1e-3;
      o.weight_decay = g == 0 ? 0.1 : 0.0;
      groups[g].options = o;
    } else {
      vkoptim::AdamOptions o;
      o.lr = 1e-2;
      o.weight_decay = g == 0 ? 0.01 : 0.0;
      o.decoupled_weight_decay = true;
      groups[g].options = o;
    }
  }
  if (rule == "adamw_q8") groups[0].precision.state = vkoptim::StateDType::q8;
  if (rule == "adamw_q4" || rule == "adamw_q4_rank1") groups[0].precision.state = vkoptim::StateDType::q4;
  groups[0].precision.rank1_second_moment = rule == "adamw_q4_rank1";
  groups[0].precision.min_8bit_elements = 0;
  return groups;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}
void write_file(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), std::streamsize(bytes));
  if (!out) throw std::runtime_error("cannot write " + path);
}

int run(int argc, char** argv) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  std::string rule = "adamw", out, save_dir, resume, expect;
  int steps = 30, save_at = -1;
  double clip = 0, tolerance = 0;
  bool validate = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--rule")
      rule = next();
    else if (a == "--steps")
      steps = std::stoi(next());
    else if (a == "--out")
      out = next();
    else if (a == "--save-at")
      save_at = std::stoi(next());
    else if (a == "--save-dir")
      save_dir = next();
    else if (a == "--resume")
      resume = next();
    else if (a == "--validate")
      validate = true;
    else if (a == "--clip")
      clip = std::stod(next());
    else if (a == "--expect")
      expect = next();
    else if (a == "--tolerance")
      tolerance = std::stod(next());
    else
      throw std::runtime_error("unknown argument " + a);
  }
  if (rule != "adamw" && rule != "adamw_q8" && rule != "adamw_q4" && rule != "adamw_q4_rank1" && rule != "lion" &&
      rule != "lamb" && rule != "adafactor" && rule != "muon")
    throw std::runtime_error("--rule: adamw, adamw_q8, adamw_q4, adamw_q4_rank1, lion, lamb, adafactor or muon");
  // Rules whose steps take every rank's sums of whole tensors (and Adafactor's of rows and columns,
  // Muon's updates of split matrices).
  const bool per_tensor = rule == "lamb" || rule == "adafactor" || rule == "muon";
  // Steps that take every rank's row and column maxima of split matrices.
  const bool maxima = rule == "adamw_q4_rank1";

  const vkoptim::ShardLayout layout = vkoptim::ShardLayout::even(model(rule), uint32_t(ranks));
  const uint64_t n = layout.total();
  const vkoptim::Shard mine = layout.shards[size_t(rank)];
  const uint64_t shard_n = mine.end - mine.begin;
  const size_t nr = size_t(ranks);
  std::vector<int> counts(nr), displs(nr);  // each rank's shard: elements, first element
  for (size_t q = 0; q < nr; ++q) {
    counts[q] = int(layout.shards[q].end - layout.shards[q].begin);
    displs[q] = int(layout.shards[q].begin);
  }
  std::vector<Partition> partitions;  // this rank's: r, r + N, ...
  std::vector<int> my_workers;
  for (int w = rank; w < kWorkers; w += ranks) {
    partitions.push_back(make_partition(w, n));
    my_workers.push_back(w);
  }

  std::vector<float> x(n);
  int first_step = 1;
  vkoptim::ContextOptions options;
  int messages = 0;
  options.enable_validation = validate;
  options.validation_callback = [&](std::string_view m) {
    ++messages;
    std::fprintf(stderr, "rank %d: validation: %.*s\n", rank, int(m.size()), m.data());
  };
  auto ctx = vkoptim::Context::create(options);
  auto param = ctx.create_tensor(size_t(shard_n)), grad = ctx.create_tensor(size_t(shard_n));
  vkoptim::Optimizer opt(
      ctx, vkoptim::shard_groups(layout, uint32_t(rank), group_templates(rule), param.range(), grad.range()));
  if (clip > 0) {
    vkoptim::GradClip c;
    c.max_norm = clip;
    opt.set_grad_clip(c);
  }
  if (resume.empty()) {
    std::mt19937_64 rng(kSeed);
    std::normal_distribution<double> normal(0, 0.1);
    for (auto& v : x) v = float(normal(rng));
  } else {
    // The saved layout, its ranks' files, the parameters; this rank's state resharded.
    const auto index_bytes = read_file(resume + "/index.json");
    const vkoptim::ShardLayout saved =
        vkoptim::shard_layout_from_json(std::string(index_bytes.begin(), index_bytes.end()));
    std::vector<std::vector<uint8_t>> files;
    for (uint32_t r = 0; r < saved.ranks(); ++r)
      files.push_back(read_file(resume + "/rank" + std::to_string(r) + ".safetensors"));
    const std::vector<std::span<const uint8_t>> spans(files.begin(), files.end());
    opt.load_from_memory(vkoptim::reshard_checkpoint(saved, spans, layout, uint32_t(rank)));
    const auto p = read_file(resume + "/params.bin");
    if (p.size() != n * 4) throw std::runtime_error(resume + "/params.bin has the wrong size");
    std::memcpy(x.data(), p.data(), p.size());
    first_step = int(opt.step_count(0)) + 1;
  }
  param.upload(std::vector<float>(x.begin() + std::ptrdiff_t(mine.begin), x.begin() + std::ptrdiff_t(mine.end)));

  // Alltoallv layout: to rank q, my partitions' slices of q's shard (in partition order).
  std::vector<int> send_counts(nr), send_displs(nr), recv_counts(nr), recv_displs(nr);
  int send_total = 0, recv_total = 0;
  for (int q = 0; q < ranks; ++q) {
    send_counts[size_t(q)] = counts[size_t(q)] * int(my_workers.size());
    send_displs[size_t(q)] = send_total;
    send_total += send_counts[size_t(q)];
    int from_q = 0;
    for (int w = q; w < kWorkers; w += ranks) ++from_q;
    recv_counts[size_t(q)] = int(shard_n) * from_q;
    recv_displs[size_t(q)] = recv_total;
    recv_total += recv_counts[size_t(q)];
  }
  std::vector<float> send(static_cast<size_t>(send_total)), recv(static_cast<size_t>(recv_total)), g;
  for (int t = first_step; t <= steps; ++t) {
    double loss = 0;
    for (size_t k = 0; k < partitions.size(); ++k) {
      loss += loss_and_grad(partitions[k], x, &g);
      for (int q = 0; q < ranks; ++q)
        std::memcpy(&send[size_t(send_displs[size_t(q)]) + k * size_t(counts[size_t(q)])],
                    &g[size_t(displs[size_t(q)])], size_t(counts[size_t(q)]) * 4);
    }
    MPI_Alltoallv(send.data(), send_counts.data(), send_displs.data(), MPI_FLOAT, recv.data(), recv_counts.data(),
                  recv_displs.data(), MPI_FLOAT, MPI_COMM_WORLD);
    // Partition w came from rank w % N, as its (w / N)-th slice: summed in partition order.
    std::vector<float> shard_grad(size_t(shard_n), 0.0f);
    for (int w = 0; w < kWorkers; ++w) {
      const float* slice = &recv[size_t(recv_displs[size_t(w % ranks)]) + size_t(w / ranks) * size_t(shard_n)];
      for (uint64_t i = 0; i < shard_n; ++i) shard_grad[i] = w == 0 ? slice[i] : shard_grad[i] + slice[i];
    }
    grad.upload(shard_grad);
    if (clip > 0) {
      // Every chunk's sums, each from the rank that holds it: the same total on every rank, and
      // for every rank count.
      auto chunks = vkoptim::scatter_grad_chunks(layout, uint32_t(rank), opt.step_grad_chunks());
      MPI_Allreduce(MPI_IN_PLACE, chunks.data(), int(2 * chunks.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const vkoptim::GradSums total = vkoptim::reduce_grad_chunks(opt.grad_clip(), chunks);
      if (per_tensor || maxima)
        opt.set_grad_sums(total);  // the next part starts from it
      else
        opt.step_finish(total);
    }
    if (rule == "adafactor") {
      // Each row's and column's sum of g^2 over the whole matrix: the ranks' pieces' sums added.
      auto sums = vkoptim::scatter_factor_sums(layout, uint32_t(rank), opt.step_factor_sums());
      MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      opt.set_factor_sums(vkoptim::gather_factor_sums(layout, uint32_t(rank), sums));
    }
    if (rule == "muon") {
      // Each split matrix's momentum update U: the ranks' pieces' parts added (exact: each element
      // comes from one rank); every rank holding a piece then runs Newton-Schulz on the whole U.
      const auto groups = group_templates(rule);
      auto u = vkoptim::scatter_matrix_updates(layout, groups, uint32_t(rank), opt.step_factor_sums());
      MPI_Allreduce(MPI_IN_PLACE, u.data(), int(u.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      opt.set_factor_sums(vkoptim::gather_matrix_updates(layout, groups, uint32_t(rank), u));
    }
    if (maxima) {
      // Each row's and column's maximum of the new second moment over the whole matrix: the ranks'
      // pieces' maxima combined with MAX (exact).
      auto found = vkoptim::scatter_factor_maxima(layout, uint32_t(rank), opt.step_factor_sums());
      MPI_Allreduce(MPI_IN_PLACE, found.data(), int(found.size()), MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
      opt.set_factor_sums(vkoptim::gather_factor_maxima(layout, uint32_t(rank), found));
      opt.step_finish();
    } else if (per_tensor) {
      // Every whole tensor's sums from its chunks', each chunk from the rank that holds it: the
      // same sums on every rank, and for every rank count.
      auto chunks = vkoptim::scatter_tensor_chunks(layout, uint32_t(rank), opt.step_tensor_chunks());
      MPI_Allreduce(MPI_IN_PLACE, chunks.data(), int(chunks.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const auto sums = vkoptim::reduce_tensor_chunks(layout, chunks);
      opt.step_finish(vkoptim::gather_tensor_sums(layout, uint32_t(rank), sums));
    } else if (clip <= 0) {
      opt.step();
    }
    const auto p = param.download();
    MPI_Allgatherv(p.data(), int(shard_n), MPI_FLOAT, x.data(), counts.data(), displs.data(), MPI_FLOAT,
                   MPI_COMM_WORLD);
    double total_loss = 0;
    MPI_Reduce(&loss, &total_loss, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0 && (t == first_step || t % 10 == 0 || t == steps)) {
      std::printf("step %3d  loss %.6f (before the step)", t, total_loss / kWorkers);
      if (clip > 0) {
        const auto report = opt.step_reports().back();
        std::printf("  total norm %.5f  clip coefficient %.5f", report.total_norm, report.clip_coef);
      }
      std::printf("\n");
    }
    if (t == save_at && !save_dir.empty()) {
      std::filesystem::create_directories(save_dir);
      opt.save(save_dir + "/rank" + std::to_string(rank) + ".safetensors");
      if (rank == 0) {
        const std::string index = vkoptim::shard_index_json(layout);
        write_file(save_dir + "/index.json", index.data(), index.size());
        write_file(save_dir + "/params.bin", x.data(), x.size() * 4);
      }
      MPI_Barrier(MPI_COMM_WORLD);
    }
  }
  if (messages) throw std::runtime_error(std::to_string(messages) + " validation messages");
  const uint64_t bytes = opt.memory().state_bytes;
  std::vector<uint64_t> all(nr);
  MPI_Gather(&bytes, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("%s on %d rank%s (%s): state bytes per rank", rule.c_str(), ranks, ranks == 1 ? "" : "s",
                ctx.caps().device_name.c_str());
    for (uint64_t b : all) std::printf(" %llu", (unsigned long long)b);
    std::printf(" (of %llu parameters)\n", (unsigned long long)n);
    if (rule == "adafactor")
      std::printf("row and column sums exchanged per step: %zu floats\n", vkoptim::factor_sum_count(layout));
    if (maxima)
      std::printf("row and column maxima exchanged per step: %zu floats\n", vkoptim::factor_maxima_count(layout));
    if (rule == "muon")
      std::printf("matrix updates exchanged per step: %zu floats\n",
                  vkoptim::matrix_update_count(layout, group_templates(rule)));
    if (!out.empty()) write_file(out, x.data(), x.size() * 4);
    if (!expect.empty()) {
      const auto want = read_file(expect);
      if (want.size() != n * 4) throw std::runtime_error(expect + " has the wrong size");
      double worst = 0;
      for (uint64_t i = 0; i < n; ++i) {
        float w;
        std::memcpy(&w, &want[i * 4], 4);
        worst = std::max(worst, std::fabs(double(x[i]) - double(w)));
      }
      std::printf("largest difference from %s: %g (tolerance %g)\n", expect.c_str(), worst, tolerance);
      if (!(worst <= tolerance)) return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    status = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkoptim-mpi-zero: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
