#pragma once
// Sharded optimizer state, as DeepSpeed ZeRO stages 1 and 2 and torch's ZeroRedundancyOptimizer
// keep it: the model's parameters are one flat space (the concatenation of its tensors, in an
// order the engine chooses), cut into one contiguous shard per rank. Each rank's optimizer keeps
// and updates only its shard's state; the engine reduce-scatters the gradients into each rank's
// shard before the step and all-gathers the parameters after it, with its own communication
// (MPI, NCCL/RCCL, Gloo). vkoptim does not communicate.
//
// A shard's optimizer sees each tensor the shard touches as one ParamTensor (a "piece"), named
// after the tensor ("w", or "w[256:1024]" for a part), with ParamTensor::whole_count set. Pieces
// run the same shaders as whole tensors, so for elementwise rules a sharded step equals the
// unsharded one bit for bit, 8-bit and 4-bit state included: cuts inside a tensor lie at
// multiples of kShardAlignment elements from its first element, so quantization blocks (256 or
// 128 elements, counted from the tensor's start) never straddle a cut.
//
// Global gradient clipping and the loss scaler need every rank's gradient sums: a shard's step
// with them runs in two parts around the engine's combination of those sums (StepPart in
// optimizer.hpp: step_grad_sums, combine_grad_sums in rank order, step_finish; or, for the same
// bits on any number of ranks, step_grad_chunks, scatter_grad_chunks, the ranks' lists added,
// reduce_grad_chunks, step_finish); a one-part step is refused. Rules that sum over whole tensors (LAMB's norms,
// StableAdamW's RMS, Cautious's mask count) step in parts around the ranks' per-tensor sums too (StepPart::tensor_sums:
// step_tensor_sums, scatter_tensor_sums, the engine's sum over ranks, gather_tensor_sums,
// step_finish: a tensor's sum is its pieces' sums added, within float rounding of the unsharded
// step's; or step_tensor_chunks, scatter_tensor_chunks, the ranks' lists added,
// reduce_tensor_chunks, gather_tensor_sums, step_finish: the unsharded step's bits). SAM's norm is over a group's
// gradients on every rank: a shard perturbs in two parts around the ranks' per-group sums (sam_perturb_sums, the
// engine's sum over ranks, sam_perturb_finish). Stochastic rounding keys its random bits by the whole tensor
// (ParamTensor::whole_index and whole_offset), so shards round as an unsharded optimizer whose
// tensors carry the same whole_index (their place in the layout) does. Adafactor's pieces of a
// 2-D tensor split between ranks (ParamTensor::whole_rows) keep the whole tensor's row and
// column statistics and complete them from every rank's sums: the step has a part more before
// tensor_sums (StepPart::factor_sums: step_factor_sums, scatter_factor_sums, the ranks' vectors
// added, gather_factor_sums, set_factor_sums, then step_tensor_sums as above; on ranks without
// such pieces the part is empty, and every rank may run it). Rank-1 normalised 4-bit second
// moments of split 2-D tensors keep the whole tensor's row and column maxima in every piece and
// combine them in the same part with MAX (scatter_factor_maxima, gather_factor_maxima; the
// parts: [grad_sums,] factor_sums, finish), bit for bit as unsharded. Muon's pieces of split
// matrices (ParamTensor::whole_rows) complete their whole matrix's update from every rank in the
// same part (scatter_matrix_updates, gather_matrix_updates; the parts: [grad_sums,] factor_sums,
// tensor_sums, finish), and every rank holding a piece runs Newton-Schulz on the whole matrix.
//
// Checkpoints: each rank saves its optimizer (save / save_to_memory) as usual; its keys name its
// pieces. shard_index_json records the layout; reshard_checkpoint rewrites the files saved under
// one layout into the checkpoint of a rank of another (a different rank count), which that
// rank's optimizer loads.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vkoptim/optimizer.hpp"

namespace vkoptim {

// Cuts inside a tensor lie at multiples of this many elements from the tensor's first element
// (a multiple of 8-bit blocks of 256 and 4-bit blocks of 128).
constexpr uint64_t kShardAlignment = 256;

// One tensor of the flat parameter space.
struct FlatTensor {
  std::string name;    // unique; pieces and checkpoint keys are named after it
  uint64_t count = 0;  // elements
  uint64_t rows = 0;   // 2-D (rows x count/rows), kept by pieces that hold the whole tensor; 0: 1-D
  uint32_t group = 0;  // its parameter group
};

// Elements [begin, end) of the flat space.
struct Shard {
  uint64_t begin = 0, end = 0;
};

struct ShardLayout {
  std::vector<FlatTensor> tensors;  // the flat space is their concatenation, in this order
  std::vector<Shard> shards;        // one per rank, in rank order

  uint64_t total() const;  // elements of the flat space
  uint32_t ranks() const { return uint32_t(shards.size()); }
  // `ranks` shards of about equal size: each cut at total * r / ranks, moved down to the
  // alignment within its tensor (or to the tensor's start). Throws when a shard would be empty.
  static ShardLayout even(std::vector<FlatTensor> tensors, uint32_t ranks);
  // `ranks` shards cut only between tensors, as torch's ZeroRedundancyOptimizer assigns whole
  // parameters to ranks: each cut at the tensor boundary nearest total * r / ranks (every shard
  // keeps at least one tensor): each rank then runs Newton-Schulz on its own matrices only, with
  // no update exchange (Muon), and the shards are as even as the tensors' sizes allow. Throws
  // when there are fewer tensors than ranks.
  static ShardLayout whole_tensors(std::vector<FlatTensor> tensors, uint32_t ranks);
  // Throws Error(invalid_argument) naming the problem: no tensors or shards, an empty or unnamed
  // tensor, a name used twice, rows that do not divide a count, shards that are empty, overlap,
  // leave a gap, do not start at 0 or end at total(), or cut a tensor off the alignment.
  void validate() const;
};

// A tensor's part in a shard.
struct ShardPiece {
  size_t tensor = 0;    // index in ShardLayout::tensors
  uint64_t begin = 0;   // first element within the tensor
  uint64_t count = 0;   // elements
  uint64_t offset = 0;  // first element within the shard
  std::string name;     // the tensor's name, or "name[begin:end]" for a part
};
// The pieces of shard `rank`, in flat order (validates the layout).
std::vector<ShardPiece> shard_pieces(const ShardLayout& layout, uint32_t rank);

// The parameter groups of shard `rank`'s optimizer: `groups` (options, wrappers, precision,
// schedule; one per FlatTensor::group, their tensors empty) with the shard's pieces of each as
// tensors, reached within the shard's flat parameter and gradient ranges (element 0 of each is
// the shard's first element; count at least the shard's size). A group may end up with no
// pieces on a rank; it is still there, so every rank's optimizer has the same groups.
std::vector<ParamGroup> shard_groups(const ShardLayout& layout, uint32_t rank, std::vector<ParamGroup> groups,
                                     const BufferRange& param, const BufferRange& grad);

// Per-tensor sums between the parts of a sharded step (StepPart::tensor_sums): `local` is what
// shard `rank`'s optimizer returned (two floats per piece, in its tensor order: by group, then
// flat order); scatter_tensor_sums places them at their whole tensor's index in a vector of two
// floats per layout tensor (zeros for tensors the shard has no piece of). Summing the ranks'
// vectors element by element (in rank order for the same bits on every run, e.g. after
// MPI_Allgather) gives every whole tensor's sums; gather_tensor_sums picks the shard's tensors'
// from that, for Optimizer::step_finish.
std::vector<float> scatter_tensor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> local);
std::vector<float> gather_tensor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> combined);

// Per-tensor sums that are the same bits on any number of ranks: exchange the chunks' partial
// sums whole. `local` is what shard `rank`'s Optimizer::step_tensor_chunks() returned;
// scatter_tensor_chunks places each chunk's two floats at its place in the layout's chunk list
// (as scatter_grad_chunks), zeros elsewhere; the ranks' vectors added element by element in any
// order (MPI_Allreduce with MPI_SUM) give the list exactly. reduce_tensor_chunks then sums each
// layout tensor's chunks in the order the device sums an unsharded tensor's (shaders/reduce.comp:
// 256 columns, runs of 16, the runs), giving two floats per layout tensor, as the ranks' added
// scatter_tensor_sums vectors would: pick the shard's with gather_tensor_sums for step_finish.
// Costs two floats per 256 elements of the model.
std::vector<float> scatter_tensor_chunks(const ShardLayout& layout, uint32_t rank, std::span<const float> local);
std::vector<float> reduce_tensor_chunks(const ShardLayout& layout, std::span<const float> chunks);

// Adafactor's row and column sums of 2-D tensors split between ranks (StepPart::factor_sums):
// `local` is what shard `rank`'s Optimizer::step_factor_sums() returned (two floats per row, then
// per column, of the whole tensor of each of its split pieces, in its tensor order);
// scatter_factor_sums places them in the layout's list (two floats per row and column of each
// split 2-D layout tensor, in layout order; zeros for what the shard has none of). The ranks'
// vectors added element by element (MPI_Allreduce with MPI_SUM; in rank order for the same bits
// on every run) give each row's and column's sum over the whole tensor; gather_factor_sums picks
// the shard's from that for Optimizer::set_factor_sums. A row whole on one rank gets the
// unsharded step's sum bit for bit; rows cut between ranks and the columns add the ranks' partial
// sums, within float rounding of it.
std::vector<float> scatter_factor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> local);
size_t factor_sum_count(const ShardLayout& layout);  // floats of the layout's list
std::vector<float> gather_factor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> combined);

// Rank-1 normalised 4-bit second moments (PrecisionOptions::rank1_second_moment) of 2-D tensors
// split between ranks (StepPart::factor_sums): `local` is what shard `rank`'s
// Optimizer::step_factor_sums() returned (for each of its pieces of split 2-D tensors, in its
// tensor order, three sets of the whole tensor's row maxima then column maxima: the step's set
// holds this rank's part of the new maxima, the others the earlier steps', the same on every
// rank; zeros for pieces kept blockwise); scatter_factor_maxima places them in the layout's list
// (three sets per row and column of each split 2-D layout tensor, in layout order; zeros for
// what the shard has none of). The ranks' vectors combined element by element with MAX
// (MPI_Allreduce with MPI_MAX; exact, so any order) give each row's and column's maximum over
// the whole tensor; gather_factor_maxima picks the shard's from that for
// Optimizer::set_factor_sums, and step_finish() encodes the moment against them: the same bits
// as one optimizer over the whole tensors.
std::vector<float> scatter_factor_maxima(const ShardLayout& layout, uint32_t rank, std::span<const float> local);
size_t factor_maxima_count(const ShardLayout& layout);  // floats of the layout's list
std::vector<float> gather_factor_maxima(const ShardLayout& layout, uint32_t rank, std::span<const float> combined);

// Muon's matrices split between ranks (StepPart::factor_sums): `local` is what shard `rank`'s
// Optimizer::step_factor_sums() returned (for each of its pieces of a split matrix in a Muon
// group, in its tensor order, the whole matrix's momentum update U, row-major: its piece's
// elements at their places, zeros elsewhere); scatter_matrix_updates places them in the layout's
// list (the whole matrix of each split 2-D layout tensor whose group in `groups`, the templates
// given to shard_groups, runs Muon; zeros for what the shard has none of). The ranks' vectors
// added element by element (MPI_Allreduce with MPI_SUM; exact: each element comes from one rank)
// give every split matrix's whole U; gather_matrix_updates picks the shard's from that for
// Optimizer::set_factor_sums. The tensor_sums part then takes each matrix's sum of U^2 from the
// ranks as usual (exchanged as chunks for the unsharded step's bits), and the finish runs
// Newton-Schulz on the whole matrix on every rank holding a piece of it, each applying its part.
std::vector<float> scatter_matrix_updates(const ShardLayout& layout, std::span<const ParamGroup> groups, uint32_t rank,
                                          std::span<const float> local);
size_t matrix_update_count(const ShardLayout& layout, std::span<const ParamGroup> groups);
std::vector<float> gather_matrix_updates(const ShardLayout& layout, std::span<const ParamGroup> groups, uint32_t rank,
                                         std::span<const float> combined);

// Gradient chunk sums between the parts of a clipped (or loss-scaled) sharded step, for a total
// that is the same bits on any number of ranks: `local` is what shard `rank`'s
// Optimizer::step_grad_chunks() returned; scatter_grad_chunks places each at its chunk's place
// in the layout's chunk list (its tensors by group, then flat order, as one shard holding
// everything orders them; each tensor's 256-element chunks from its first element), zeros
// elsewhere. Every chunk comes from one rank, so the ranks' vectors added element by element in
// any order (MPI_Allreduce with MPI_SUM) give the list exactly; reduce_grad_chunks then reduces
// it as an unsharded optimizer's step does on the device (runs of 256 in order, level by level)
// to the total for Optimizer::step_finish. Costs two floats per 256 elements of the model.
std::vector<GradSums> scatter_grad_chunks(const ShardLayout& layout, uint32_t rank, std::span<const GradSums> local);
GradSums reduce_grad_chunks(const GradClip& clip, std::span<const GradSums> chunks);

// The layout as JSON (the sharded checkpoint's index: save it next to the ranks' files), and back
// (validated).
std::string shard_index_json(const ShardLayout& layout);
ShardLayout shard_layout_from_json(std::string_view text);

// The checkpoint of shard `rank` of `target`, from the checkpoints `files[r]` that the ranks of
// `saved` wrote (same tensors, another cut): every piece's state assembled from the saved pieces
// that cover it, bit for bit (8-bit and 4-bit codes and their block absmax included; state the
// saved group's rule keeps per tensor, Adafactor's row_var and col_var, whole to every piece of
// the tensor), with the saved optimizer's options. Throws Error(invalid_argument) when the layouts describe different
// tensors, a file is missing or is not the checkpoint of its rank, or saved pieces of one tensor
// disagree (storage, steps). Host only.
std::vector<uint8_t> reshard_checkpoint(const ShardLayout& saved, const std::vector<std::span<const uint8_t>>& files,
                                        const ShardLayout& target, uint32_t rank);

}  // namespace vkoptim
