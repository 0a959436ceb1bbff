#pragma once
// Row-sparse steps for embedding tables: the gradient of a table is a list of row indices with a
// row of values for each (torch's uncoalesced sparse gradient of nn.Embedding(sparse=True)), and
// a step touches only those rows: its cost follows the number of indices, not the table's size.
#include <vulkan/vulkan_core.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "vkoptim/context.hpp"
#include "vkoptim/optimizer.hpp"
#include "vkoptim/rules.hpp"
#include "vkoptim/tensor.hpp"

namespace vkoptim {

// torch.optim.SparseAdam. State: exp_avg, exp_avg_sq. With t the optimizer's step (1 on the
// first), on every row the gradient touches (every element of the row, zeros included):
//   g <- maximize ? -g : g ; m <- m + (1-b1)*(g - m) ; v <- v + (1-b2)*(g^2 - v)
//   p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
// Untouched rows keep p, m and v (the moments of a row decay only on the steps that touch it).
struct SparseAdamOptions {
  double lr = 1e-3;  // > 0
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;  // > 0
  bool maximize = false;
};

// The rules a SparseOptimizer runs on the touched rows:
//   SparseAdamOptions  torch.optim.SparseAdam
//   AdagradOptions     torch.optim.Adagrad with a sparse gradient: sum <- sum + g^2,
//                      p <- p - clr*g/(sqrt(sum) + eps) on the touched rows, clr = lr/(1 + (t-1)*lr_decay);
//                      weight_decay must be 0 (torch refuses it with sparse gradients). State: sum.
//   FtrlOptions        TensorFlow's SparseApplyFtrlV2 (Keras Ftrl's sparse update): the dense
//                      FTRL-Proximal step on the touched rows. State: accumulator, linear.
using SparseRuleOptions = std::variant<SparseAdamOptions, AdagradOptions, FtrlOptions>;

// An index of this value is padding: the position is skipped (a fixed-size index buffer can carry
// fewer rows on some steps).
inline constexpr uint32_t kSkipRow = 0xFFFFFFFFu;

// One embedding table and its gradient, all borrowed (the buffers must outlive the optimizer).
struct SparseTable {
  BufferRange param;    // rows x dim, row-major, f32
  uint32_t dim = 0;     // elements per row; rows = param.count / dim
  BufferRange indices;  // u32 (DType::u32): the row of each gradient position, or kSkipRow
  BufferRange values;   // f32, indices.count x dim: position i's row of gradient values
  std::string name;     // optional; names the table in messages and state access
};

// What the last step found (SparseOptimizer::last_report). Indices outside [0, rows) (other than
// kSkipRow) are never written: a step that finds one skips entirely (parameters, state and the
// step counter as they were) and reports the first bad position of the first table that has one.
struct SparseStepReport {
  uint64_t step = 0;                // steps taken (skipped steps do not count)
  bool skipped = false;             // the last step found out-of-range indices and changed nothing
  uint32_t bad_indices = 0;         // out-of-range indices in the last step (all tables)
  uint32_t bad_table = 0;           // the first table with one,
  uint32_t first_bad_position = 0;  // its lowest such position
  uint32_t first_bad_index = 0;     // and the index found there
  uint32_t rows_updated = 0;        // distinct rows the last step updated (all tables; 0 if skipped)
};

namespace detail {
struct SparseOptimizerState;
}

// An optimizer over embedding tables that all use one sparse rule. Each step:
//   1. coalesces each table's gradient: duplicate indices are summed as torch's coalesce does,
//      in the order of their positions (the lowest first), so the result has the same bits for
//      any order in which the device's invocations run and any workgroup size;
//   2. runs the rule on each distinct row, with the coalesced gradient.
// The step's scalars (bias corrections) are computed on the device from its step counter and the
// options (kept in host-visible memory), so a recorded step is replayable: record it once and
// submit it once per step; set_options reaches recorded command buffers (between submissions).
// Cost: O(capacity) for the positions plus O(k^2) for a row with k duplicates (their ordering),
// plus the touched rows' elements; the table's size only costs its state's memory and a 4-byte
// word per row of scratch. f32 tables, gradients and state; buffer device addresses or
// descriptors (ContextOptions::addressing; automatic takes addresses when every buffer has one).
// Same threading and lifetime rules as Optimizer.
class SparseOptimizer {
 public:
  SparseOptimizer(Context& context, std::vector<SparseTable> tables, SparseRuleOptions options);
  SparseOptimizer(SparseOptimizer&&) noexcept;
  SparseOptimizer& operator=(SparseOptimizer&&) noexcept;
  ~SparseOptimizer();

  size_t table_count() const;
  size_t table_index(std::string_view name) const;  // or throws not_found
  const SparseRuleOptions& options() const;
  // Validated (nothing changes on error); the rule cannot change. Reaches recorded steps.
  void set_options(const SparseRuleOptions& options);

  // Allocates and initialises the state (one submission, waited for). The first record() on a
  // Context vkoptim created and step() call it; on an adopted device call it before record().
  void initialize();
  // Records one step (Optimizer::record's contract: `cmd` recording, bind state changed, entry
  // and exit barriers and timestamps as `options` says; options.replay is implied).
  void record(VkCommandBuffer cmd, const RecordOptions& options = {});
  // Records into the Context's command buffer, submits and waits; throws invalid_argument naming
  // the table, position and index when the step found an out-of-range index (and skipped).
  void step();

  // The last step's report, read from host-visible memory without waiting: complete once the
  // submission that ran the step has completed.
  SparseStepReport last_report() const;
  uint64_t step_count();  // steps taken (waits for the queue)

  std::vector<std::string> state_names() const;  // e.g. {"exp_avg", "exp_avg_sq"}; "step" too
  // A table's whole state slot (rows x dim floats; waits for the queue), or {step} for "step".
  // "step" is the optimizer's one counter, the same for every table (torch's SparseAdam steps all
  // its parameters together, so their counters agree): writing it through any table sets it for
  // all, to a whole number below 2^32 - 1.
  std::vector<float> read_state(size_t table, std::string_view name);
  void write_state(size_t table, std::string_view name, std::span<const float> values);

  MemoryReport memory() const;           // slot_bytes: the state; state_bytes: it plus the coalescing scratch
  uint32_t last_dispatch_count() const;  // dispatches of the last record()
  bool uses_device_addresses() const;

 private:
  std::unique_ptr<detail::SparseOptimizerState> state_;
};

}  // namespace vkoptim
