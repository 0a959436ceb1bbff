// Sharded state (include/vkoptim/shard.hpp): layouts, a shard's pieces and parameter groups, the
// layout's JSON index, and resharding of checkpoints. Host code only.
#include "vkoptim/shard.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "checkpoint_file.hpp"
#include "rules/rule.hpp"
#include "safetensors.hpp"
#include "vkoptim/error.hpp"

namespace vkoptim {
namespace {

using nlohmann::json;
namespace st = detail::safetensors;

[[noreturn]] void refuse(const std::string& what) {
  throw Error(Status::invalid_argument, what);
}

// The first element of each tensor in the flat space.
std::vector<uint64_t> tensor_starts(const ShardLayout& layout) {
  std::vector<uint64_t> starts;
  uint64_t at = 0;
  for (const auto& t : layout.tensors) {
    starts.push_back(at);
    at += t.count;
  }
  return starts;
}

std::string piece_name(const FlatTensor& t, uint64_t begin, uint64_t count) {
  if (begin == 0 && count == t.count) return t.name;
  return t.name + "[" + std::to_string(begin) + ":" + std::to_string(begin + count) + "]";
}

}  // namespace

uint64_t ShardLayout::total() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.count;
  return n;
}

ShardLayout ShardLayout::even(std::vector<FlatTensor> tensors, uint32_t ranks) {
  ShardLayout layout;
  layout.tensors = std::move(tensors);
  if (ranks == 0) refuse("shard layout: ranks = 0");
  const uint64_t total = layout.total();
  const auto starts = tensor_starts(layout);
  uint64_t begin = 0;
  for (uint32_t r = 1; r <= ranks; ++r) {
    uint64_t cut = total;
    if (r < ranks) {
      const uint64_t target = uint64_t((unsigned __int128)total * r / ranks);
      // the tensor holding the target element; the cut moves down to its alignment there
      const size_t t = size_t(std::upper_bound(starts.begin(), starts.end(), target) - starts.begin()) - 1;
      cut = starts[t] + (target - starts[t]) / kShardAlignment * kShardAlignment;
    }
    if (cut <= begin)
      refuse("shard layout: " + std::to_string(ranks) + " even shards of " + std::to_string(total) +
             " elements would leave shard " + std::to_string(r - 1) +
             " empty (cuts inside a tensor are at multiples of " + std::to_string(kShardAlignment) + " elements)");
    layout.shards.push_back({begin, cut});
    begin = cut;
  }
  layout.validate();
  return layout;
}

ShardLayout ShardLayout::whole_tensors(std::vector<FlatTensor> tensors, uint32_t ranks) {
  ShardLayout layout;
  layout.tensors = std::move(tensors);
  if (ranks == 0) refuse("shard layout: ranks = 0");
  const uint64_t total = layout.total();
  auto bounds = tensor_starts(layout);  // the possible cuts: tensor boundaries, then the end
  bounds.push_back(total);
  if (layout.tensors.size() < ranks)
    refuse("shard layout: " + std::to_string(ranks) + " shards of whole tensors, but the layout has " +
           std::to_string(layout.tensors.size()) + " tensors");
  size_t at = 0;  // index in bounds of the current shard's first element
  for (uint32_t r = 1; r <= ranks; ++r) {
    size_t cut = bounds.size() - 1;
    if (r < ranks) {
      // The boundary nearest total * r / ranks, leaving a tensor for each shard on either side.
      const uint64_t target = uint64_t((unsigned __int128)total * r / ranks);
      const size_t lowest = at + 1, highest = bounds.size() - 1 - (ranks - r);
      cut = size_t(std::lower_bound(bounds.begin(), bounds.end(), target) - bounds.begin());
      if (cut > lowest && target - bounds[cut - 1] <= (cut < bounds.size() ? bounds[cut] - target : UINT64_MAX)) --cut;
      cut = std::clamp(cut, lowest, highest);
    }
    layout.shards.push_back({bounds[at], bounds[cut]});
    at = cut;
  }
  layout.validate();
  return layout;
}

void ShardLayout::validate() const {
  if (tensors.empty()) refuse("shard layout: no tensors");
  if (shards.empty()) refuse("shard layout: no shards");
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const std::string what = "shard layout: tensor " + std::to_string(i) + " (\"" + t.name + "\")";
    if (t.name.empty()) refuse(what + " has no name");
    if (!names.insert(t.name).second) refuse(what + ": the name is used twice");
    if (t.count == 0) refuse(what + " has no elements");
    if (t.rows != 0 && t.count % t.rows != 0)
      refuse(what + ": rows = " + std::to_string(t.rows) + " does not divide count = " + std::to_string(t.count));
  }
  const auto starts = tensor_starts(*this);
  uint64_t expected = 0;
  for (size_t r = 0; r < shards.size(); ++r) {
    const Shard& s = shards[r];
    const std::string what = "shard layout: shard " + std::to_string(r) + " [" + std::to_string(s.begin) + ", " +
                             std::to_string(s.end) + ")";
    if (s.end <= s.begin) refuse(what + " is empty");
    if (s.begin < expected)
      refuse(what + " overlaps shard " + std::to_string(r - 1) + ", which ends at " + std::to_string(expected));
    if (s.begin > expected)
      refuse(what + " leaves elements [" + std::to_string(expected) + ", " + std::to_string(s.begin) + ") in no shard");
    for (uint64_t cut : {s.begin, s.end}) {
      if (cut > total()) refuse(what + " ends past the flat space's " + std::to_string(total()) + " elements");
      const size_t t = size_t(std::upper_bound(starts.begin(), starts.end(), cut) - starts.begin()) - 1;
      if (cut < total() && (cut - starts[t]) % kShardAlignment != 0)
        refuse(what + " cuts tensor \"" + tensors[t].name + "\" at its element " + std::to_string(cut - starts[t]) +
               ", not a multiple of " + std::to_string(kShardAlignment) +
               " (8-bit and 4-bit blocks must not straddle a cut)");
    }
    expected = s.end;
  }
  if (expected != total())
    refuse("shard layout: the shards end at " + std::to_string(expected) + ", but the flat space has " +
           std::to_string(total()) + " elements");
}

std::vector<ShardPiece> shard_pieces(const ShardLayout& layout, uint32_t rank) {
  layout.validate();
  if (rank >= layout.ranks())
    refuse("shard layout: rank " + std::to_string(rank) + ", but the layout has " + std::to_string(layout.ranks()) +
           " shards");
  const Shard& s = layout.shards[rank];
  const auto starts = tensor_starts(layout);
  std::vector<ShardPiece> pieces;
  for (size_t t = 0; t < layout.tensors.size(); ++t) {
    const uint64_t lo = std::max(s.begin, starts[t]), hi = std::min(s.end, starts[t] + layout.tensors[t].count);
    if (lo >= hi) continue;
    pieces.push_back(
        {t, lo - starts[t], hi - lo, lo - s.begin, piece_name(layout.tensors[t], lo - starts[t], hi - lo)});
  }
  return pieces;
}

std::vector<ParamGroup> shard_groups(const ShardLayout& layout, uint32_t rank, std::vector<ParamGroup> groups,
                                     const BufferRange& param, const BufferRange& grad) {
  const auto pieces = shard_pieces(layout, rank);
  const Shard& s = layout.shards[rank];
  for (size_t g = 0; g < groups.size(); ++g)
    if (!groups[g].tensors.empty())
      refuse("shard_groups: groups[" + std::to_string(g) + "] has tensors; the layout gives them");
  for (const auto& t : layout.tensors)
    if (t.group >= groups.size())
      refuse("shard_groups: tensor \"" + t.name + "\" is in group " + std::to_string(t.group) + ", but " +
             std::to_string(groups.size()) + " groups were given");
  for (const auto* range : {&param, &grad})
    if (range->count < s.end - s.begin)
      refuse(std::string("shard_groups: the shard's flat ") + (range == &param ? "param" : "grad") + " range has " +
             std::to_string(range->count) + " elements, shard " + std::to_string(rank) + " has " +
             std::to_string(s.end - s.begin));
  auto part = [](BufferRange r, uint64_t offset, uint64_t count) {
    r.offset += VkDeviceSize(offset) * dtype_size(r.dtype);
    r.count = size_t(count);
    return r;
  };
  for (const auto& p : pieces) {
    const FlatTensor& t = layout.tensors[p.tensor];
    ParamTensor pt;
    pt.param = part(param, p.offset, p.count);
    pt.grad = part(grad, p.offset, p.count);
    pt.name = p.name;
    pt.rows = p.count == t.count ? t.rows : 0;
    pt.whole_rows = p.count == t.count ? 0 : t.rows;  // (a split 2-D tensor)
    pt.whole_count = t.count;
    pt.whole_offset = p.begin;
    pt.whole_index = uint32_t(p.tensor);
    groups[t.group].tensors.push_back(std::move(pt));
  }
  return groups;
}

namespace {
// The layout tensor of each of shard `rank`'s optimizer's tensors, in the optimizer's order
// (shard_groups: by group, then flat order).
std::vector<size_t> optimizer_tensor_order(const ShardLayout& layout, uint32_t rank) {
  auto pieces = shard_pieces(layout, rank);
  std::stable_sort(pieces.begin(), pieces.end(), [&](const ShardPiece& a, const ShardPiece& b) {
    return layout.tensors[a.tensor].group < layout.tensors[b.tensor].group;
  });
  std::vector<size_t> order;
  for (const auto& p : pieces) order.push_back(p.tensor);
  return order;
}
}  // namespace

std::vector<float> scatter_tensor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> local) {
  const auto order = optimizer_tensor_order(layout, rank);
  if (local.size() != 2 * order.size())
    refuse("scatter_tensor_sums: " + std::to_string(local.size()) + " floats, shard " + std::to_string(rank) + " has " +
           std::to_string(order.size()) + " tensors (two floats each)");
  std::vector<float> out(2 * layout.tensors.size(), 0.0f);
  for (size_t i = 0; i < order.size(); ++i) {
    out[2 * order[i]] = local[2 * i];
    out[2 * order[i] + 1] = local[2 * i + 1];
  }
  return out;
}

std::vector<float> gather_tensor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> combined) {
  const auto order = optimizer_tensor_order(layout, rank);
  if (combined.size() != 2 * layout.tensors.size())
    refuse("gather_tensor_sums: " + std::to_string(combined.size()) + " floats, the layout has " +
           std::to_string(layout.tensors.size()) + " tensors (two floats each)");
  std::vector<float> out;
  for (size_t t : order) out.insert(out.end(), {combined[2 * t], combined[2 * t + 1]});
  return out;
}

namespace {
// Floats per row and column of each 2-D layout tensor that a cut falls inside (its pieces'
// optimizers exchange its row and column sums or maxima, StepPart::factor_sums): per layout tensor, where
// its floats start in the layout's list and how many (0 for the others); and the list's length.
struct FactorPlace {
  size_t first = 0, floats = 0;
};
// `per_line` floats per row and column: Adafactor's sums 2 (sum, 0), rank-1 maxima 3 (sets); 0:
// the whole matrix of each split 2-D tensor whose group multiplies whole matrices (`groups`:
// Muon's updates).
std::vector<FactorPlace> layout_factor_places(const ShardLayout& layout, size_t& total, size_t per_line,
                                              std::span<const ParamGroup> groups = {}) {
  layout.validate();
  const auto starts = tensor_starts(layout);
  std::vector<FactorPlace> places(layout.tensors.size());
  total = 0;
  size_t shard = 1;  // the next cut: shards[shard].begin
  for (size_t t = 0; t < layout.tensors.size(); ++t) {
    const FlatTensor& tensor = layout.tensors[t];
    while (shard < layout.shards.size() && layout.shards[shard].begin <= starts[t]) ++shard;
    const bool cut = shard < layout.shards.size() && layout.shards[shard].begin < starts[t] + tensor.count;
    if (cut && tensor.rows != 0 && per_line == 0) {
      if (tensor.group >= groups.size())
        refuse("matrix updates: tensor \"" + tensor.name + "\" is in group " + std::to_string(tensor.group) + ", but " +
               std::to_string(groups.size()) + " groups were given");
      const RuleOptions& o = groups[tensor.group].options;
      if (detail::rule_for(o).matrix_dispatches(o) > 0) places[t] = {total, size_t(tensor.count)};
      total += places[t].floats;
    } else if (cut && tensor.rows != 0) {
      places[t] = {total, size_t(per_line * (tensor.rows + tensor.count / tensor.rows))};
      total += places[t].floats;
    }
  }
  return places;
}

// The factor part's list between a shard's order and the layout's (StepPart::factor_sums):
// Adafactor's row and column sums (two floats per row and column) or rank-1 maxima (three sets).
struct FactorList {
  const char* scatter;
  const char* gather;
  size_t per_line;
  const char* unit;
  std::span<const ParamGroup> groups = {};
};
constexpr FactorList kFactorSums{"scatter_factor_sums", "gather_factor_sums", 2, "two per row and column"};
constexpr FactorList kFactorMaxima{"scatter_factor_maxima", "gather_factor_maxima", 3,
                                   "three sets of maxima per row and column"};

std::vector<float> scatter_factor_list(const FactorList& list, const ShardLayout& layout, uint32_t rank,
                                       std::span<const float> local) {
  size_t total = 0;
  const auto places = layout_factor_places(layout, total, list.per_line, list.groups);
  const auto order = optimizer_tensor_order(layout, rank);
  size_t expected = 0;
  for (size_t t : order) expected += places[t].floats;
  if (local.size() != expected)
    refuse(std::string(list.scatter) + ": " + std::to_string(local.size()) + " floats, but shard " +
           std::to_string(rank) + "'s pieces of split 2-D tensors have " + std::to_string(expected) + " (" + list.unit +
           " of each whole tensor)");
  std::vector<float> out(total, 0.0f);
  auto from = local.begin();
  for (size_t t : order) {
    std::copy(from, from + std::ptrdiff_t(places[t].floats), out.begin() + std::ptrdiff_t(places[t].first));
    from += std::ptrdiff_t(places[t].floats);
  }
  return out;
}

std::vector<float> gather_factor_list(const FactorList& list, const ShardLayout& layout, uint32_t rank,
                                      std::span<const float> combined) {
  size_t total = 0;
  const auto places = layout_factor_places(layout, total, list.per_line, list.groups);
  if (combined.size() != total)
    refuse(std::string(list.gather) + ": " + std::to_string(combined.size()) +
           " floats, the layout's split 2-D tensors have " + std::to_string(total) + " (" + list.unit + ")");
  std::vector<float> out;
  for (size_t t : optimizer_tensor_order(layout, rank)) {
    const auto first = combined.begin() + std::ptrdiff_t(places[t].first);
    out.insert(out.end(), first, first + std::ptrdiff_t(places[t].floats));
  }
  return out;
}
}  // namespace

std::vector<float> scatter_factor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> local) {
  return scatter_factor_list(kFactorSums, layout, rank, local);
}
size_t factor_sum_count(const ShardLayout& layout) {
  size_t floats = 0;
  layout_factor_places(layout, floats, kFactorSums.per_line);
  return floats;
}
std::vector<float> gather_factor_sums(const ShardLayout& layout, uint32_t rank, std::span<const float> combined) {
  return gather_factor_list(kFactorSums, layout, rank, combined);
}

std::vector<float> scatter_factor_maxima(const ShardLayout& layout, uint32_t rank, std::span<const float> local) {
  return scatter_factor_list(kFactorMaxima, layout, rank, local);
}
size_t factor_maxima_count(const ShardLayout& layout) {
  size_t floats = 0;
  layout_factor_places(layout, floats, kFactorMaxima.per_line);
  return floats;
}
std::vector<float> gather_factor_maxima(const ShardLayout& layout, uint32_t rank, std::span<const float> combined) {
  return gather_factor_list(kFactorMaxima, layout, rank, combined);
}

namespace {
FactorList matrix_updates(std::span<const ParamGroup> groups) {
  return {"scatter_matrix_updates", "gather_matrix_updates", 0, "the whole matrix of each", groups};
}
}  // namespace
std::vector<float> scatter_matrix_updates(const ShardLayout& layout, std::span<const ParamGroup> groups, uint32_t rank,
                                          std::span<const float> local) {
  return scatter_factor_list(matrix_updates(groups), layout, rank, local);
}
size_t matrix_update_count(const ShardLayout& layout, std::span<const ParamGroup> groups) {
  size_t floats = 0;
  layout_factor_places(layout, floats, 0, groups);
  return floats;
}
std::vector<float> gather_matrix_updates(const ShardLayout& layout, std::span<const ParamGroup> groups, uint32_t rank,
                                         std::span<const float> combined) {
  return gather_factor_list(matrix_updates(groups), layout, rank, combined);
}

namespace {
// Each layout tensor's first chunk in the layout's chunk list (tensors by group, then flat
// order, as one shard holding everything orders them), and the list's length.
std::vector<uint64_t> layout_first_chunks(const ShardLayout& layout, uint64_t& chunks) {
  std::vector<size_t> order(layout.tensors.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return layout.tensors[a].group < layout.tensors[b].group; });
  std::vector<uint64_t> first_chunk(layout.tensors.size());
  chunks = 0;
  for (size_t t : order) {
    first_chunk[t] = chunks;
    chunks += (layout.tensors[t].count + 255) / 256;
  }
  return first_chunk;
}

// The place in the layout's chunk list of each chunk of shard `rank` (its pieces by group, then
// flat order: its optimizer's tensor order), and the list's length.
std::vector<uint64_t> shard_chunk_places(const ShardLayout& layout, uint32_t rank, uint64_t& chunks) {
  const auto first_chunk = layout_first_chunks(layout, chunks);
  auto pieces = shard_pieces(layout, rank);
  std::stable_sort(pieces.begin(), pieces.end(), [&](const ShardPiece& a, const ShardPiece& b) {
    return layout.tensors[a.tensor].group < layout.tensors[b.tensor].group;
  });
  std::vector<uint64_t> places;
  for (const auto& p : pieces)  // (pieces start at multiples of 256 within their tensor: kShardAlignment)
    for (uint64_t c = 0; c < (p.count + 255) / 256; ++c) places.push_back(first_chunk[p.tensor] + p.begin / 256 + c);
  return places;
}
}  // namespace

std::vector<GradSums> scatter_grad_chunks(const ShardLayout& layout, uint32_t rank, std::span<const GradSums> local) {
  uint64_t chunks = 0;
  const auto places = shard_chunk_places(layout, rank, chunks);
  if (local.size() != places.size())
    refuse("scatter_grad_chunks: " + std::to_string(local.size()) + " chunk sums, shard " + std::to_string(rank) +
           " has " + std::to_string(places.size()) + " chunks of 256 elements");
  std::vector<GradSums> out(chunks);
  for (size_t i = 0; i < places.size(); ++i) out[places[i]] = local[i];
  return out;
}

std::vector<float> scatter_tensor_chunks(const ShardLayout& layout, uint32_t rank, std::span<const float> local) {
  uint64_t chunks = 0;
  const auto places = shard_chunk_places(layout, rank, chunks);
  if (local.size() != 2 * places.size())
    refuse("scatter_tensor_chunks: " + std::to_string(local.size()) + " floats, shard " + std::to_string(rank) +
           " has " + std::to_string(places.size()) + " chunks of 256 elements (two floats each)");
  std::vector<float> out(2 * chunks, 0.0f);
  for (size_t i = 0; i < places.size(); ++i) {
    out[2 * places[i]] = local[2 * i];
    out[2 * places[i] + 1] = local[2 * i + 1];
  }
  return out;
}

std::vector<float> reduce_tensor_chunks(const ShardLayout& layout, std::span<const float> chunks) {
  uint64_t count = 0;
  const auto first_chunk = layout_first_chunks(layout, count);
  if (chunks.size() != 2 * count)
    refuse("reduce_tensor_chunks: " + std::to_string(chunks.size()) + " floats, the layout has " +
           std::to_string(count) + " chunks of 256 elements (two floats each)");
  // shaders/reduce.comp over one tensor's chunks: column k adds chunks k, k + 256, ... in order,
  // then runs of 16 columns in order, then the 16 runs in order.
  std::vector<float> out(2 * layout.tensors.size());
  for (size_t t = 0; t < layout.tensors.size(); ++t) {
    const uint64_t n = (layout.tensors[t].count + 255) / 256;
    std::array<std::array<float, 2>, 256> columns{};
    for (uint64_t i = 0; i < n; ++i)
      for (int k = 0; k < 2; ++k) columns[i % 256][k] += chunks[2 * (first_chunk[t] + i) + k];
    for (int k = 0; k < 2; ++k) {
      float total = 0;
      for (int r = 0; r < 16; ++r) {
        float run = columns[16 * r][k];
        for (int i = 1; i < 16; ++i) run += columns[16 * r + i][k];
        total = r == 0 ? run : total + run;
      }
      out[2 * t + k] = total;
    }
  }
  return out;
}

GradSums reduce_grad_chunks(const GradClip& clip, std::span<const GradSums> chunks) {
  // shaders/grad_reduce.comp: each run of 256 combined in order into the next level while more
  // than 256 remain, then the last level in order.
  std::vector<GradSums> level(chunks.begin(), chunks.end());
  if (level.empty()) return {};
  auto reduce_run = [&](size_t first, size_t end) {
    GradSums sum = level[first];
    for (size_t i = first + 1; i < end; ++i) sum = combine_grad_sums(clip, sum, level[i]);
    return sum;
  };
  while (level.size() > 256) {
    std::vector<GradSums> next;
    for (size_t first = 0; first < level.size(); first += 256)
      next.push_back(reduce_run(first, std::min(level.size(), first + 256)));
    level = std::move(next);
  }
  return reduce_run(0, level.size());
}

std::string shard_index_json(const ShardLayout& layout) {
  layout.validate();
  json tensors = json::array(), shards = json::array();
  for (const auto& t : layout.tensors)
    tensors.push_back({{"name", t.name}, {"count", t.count}, {"rows", t.rows}, {"group", t.group}});
  for (const auto& s : layout.shards) shards.push_back(json::array({s.begin, s.end}));
  return json{{"format", "vkoptim.shards"}, {"format_version", "1"}, {"tensors", tensors}, {"shards", shards}}.dump(1);
}

ShardLayout shard_layout_from_json(std::string_view text) {
  ShardLayout layout;
  try {
    const json j = json::parse(text);
    if (j.at("format") != "vkoptim.shards" || j.at("format_version") != "1")
      refuse("shard index: not a vkoptim.shards index of format_version 1");
    for (const auto& t : j.at("tensors"))
      layout.tensors.push_back({t.at("name").get<std::string>(), t.at("count").get<uint64_t>(),
                                t.at("rows").get<uint64_t>(), t.at("group").get<uint32_t>()});
    for (const auto& s : j.at("shards")) layout.shards.push_back({s.at(0).get<uint64_t>(), s.at(1).get<uint64_t>()});
  } catch (const json::exception& e) {
    refuse(std::string("shard index: ") + e.what());
  }
  layout.validate();
  return layout;
}

// ---- Resharding -------------------------------------------------------------------------------
namespace {

// The state of one saved piece in its file: its keys' suffixes (after "state.<piece>.").
struct SavedPiece {
  const st::File* file = nullptr;
  ShardPiece piece;
  std::map<std::string, const st::TensorView*> keys;  // suffix -> tensor
};

// Bytes per element of a per-element state tensor, in 1/2 bytes (4-bit codes, blockwise or
// rank-1: 1).
uint64_t half_bytes(const SavedPiece& s, const std::string& suffix, const st::TensorView& v) {
  if (v.dtype != st::DType::U8) return 2 * st::dtype_bytes(v.dtype);
  return s.keys.count(suffix + ".absmax128") || s.keys.count(suffix + ".rank1_rows") ? 1 : 2;
}

}  // namespace

std::vector<uint8_t> reshard_checkpoint(const ShardLayout& saved, const std::vector<std::span<const uint8_t>>& files,
                                        const ShardLayout& target, uint32_t rank) {
  saved.validate();
  const auto pieces = shard_pieces(target, rank);
  if (saved.tensors.size() != target.tensors.size())
    refuse("reshard: the layouts have " + std::to_string(saved.tensors.size()) + " and " +
           std::to_string(target.tensors.size()) + " tensors");
  for (size_t i = 0; i < saved.tensors.size(); ++i) {
    const auto &a = saved.tensors[i], &b = target.tensors[i];
    if (a.name != b.name || a.count != b.count || a.rows != b.rows || a.group != b.group)
      refuse("reshard: tensor " + std::to_string(i) + " is \"" + a.name + "\" of " + std::to_string(a.count) +
             " elements in the saved layout, \"" + b.name + "\" of " + std::to_string(b.count) + " in the target");
  }
  if (files.size() != saved.ranks())
    refuse("reshard: " + std::to_string(files.size()) + " files for " + std::to_string(saved.ranks()) +
           " saved shards");

  // Each saved rank's file, and its pieces' keys (a key belongs to the longest piece name it
  // starts with: names may contain dots).
  std::vector<st::File> parsed;
  parsed.reserve(files.size());
  std::vector<SavedPiece> saved_pieces;
  std::map<std::string, std::string> metadata;
  for (uint32_t r = 0; r < saved.ranks(); ++r) {
    parsed.push_back(st::parse(files[r]));
    const st::File& f = parsed.back();
    const auto meta = f.metadata.find("param_groups");
    if (meta == f.metadata.end()) refuse("reshard: file " + std::to_string(r) + " is not a vkoptim checkpoint");
    std::vector<std::string> listed;
    try {
      for (const auto& g : json::parse(meta->second))
        for (const auto& p : g.at("params")) listed.push_back(p.get<std::string>());
    } catch (const json::exception& e) {
      refuse("reshard: file " + std::to_string(r) + "'s param_groups: " + e.what());
    }
    const auto mine = shard_pieces(saved, r);
    std::vector<std::string> names;
    for (const auto& p : mine) names.push_back(p.name);
    std::sort(names.begin(), names.end());
    std::sort(listed.begin(), listed.end());
    if (names != listed)
      refuse("reshard: file " + std::to_string(r) + " does not hold the pieces of saved shard " + std::to_string(r));
    if (r == 0) metadata = f.metadata;
    const size_t first = saved_pieces.size();
    for (const auto& p : mine) saved_pieces.push_back({&f, p, {}});
    for (const auto& [key, view] : f.tensors) {
      size_t best = SIZE_MAX;
      for (size_t i = first; i < saved_pieces.size(); ++i) {
        const std::string prefix = "state." + saved_pieces[i].piece.name + ".";
        if (key.compare(0, prefix.size(), prefix) == 0 &&
            (best == SIZE_MAX || saved_pieces[i].piece.name.size() > saved_pieces[best].piece.name.size()))
          best = i;
      }
      if (best == SIZE_MAX)
        refuse("reshard: file " + std::to_string(r) + " has \"" + key + "\", of no piece of its shard");
      saved_pieces[best].keys[key.substr(std::string("state.").size() + saved_pieces[best].piece.name.size() + 1)] =
          &view;
    }
  }

  // The state each group's rule keeps per tensor (Adafactor's row_var and col_var: its whole
  // matrix's statistics, kept whole by every piece of it).
  std::vector<std::set<std::string>> per_tensor_slots;
  try {
    for (const auto& g : json::parse(metadata.at("param_groups"))) {
      std::set<std::string> slots;
      for (const auto& info : registered_rules()) {
        const detail::Rule& rule = detail::rule_for(info.defaults);
        if (g.contains("rule") && g["rule"] == rule.name()) {
          const auto names = rule.slot_names();
          for (size_t k = 0; k < names.size(); ++k)
            if (rule.slot_per_tensor(k)) slots.insert(names[k]);
        }
      }
      per_tensor_slots.push_back(std::move(slots));
    }
  } catch (const json::exception& e) {
    refuse(std::string("reshard: the saved param_groups: ") + e.what());
  }

  // The target's pieces, each from the saved pieces that cover it, in order.
  std::vector<st::TensorSpec> specs;
  std::vector<std::vector<uint8_t>> contents;
  auto add = [&](std::string name, st::DType dtype, std::vector<uint64_t> shape, std::vector<uint8_t> bytes) {
    specs.push_back({std::move(name), dtype, std::move(shape)});
    contents.push_back(std::move(bytes));
  };
  for (const auto& p : pieces) {
    const FlatTensor& t = target.tensors[p.tensor];
    std::vector<const SavedPiece*> covering;
    for (const auto& s : saved_pieces)
      if (s.piece.tensor == p.tensor && s.piece.begin < p.begin + p.count && p.begin < s.piece.begin + s.piece.count)
        covering.push_back(&s);
    const SavedPiece& first = *covering.front();
    for (const SavedPiece* s : covering) {
      bool same = s->keys.size() == first.keys.size();
      for (const auto& [suffix, v] : first.keys) {
        const auto it = s->keys.find(suffix);
        same = same && it != s->keys.end() && it->second->dtype == v->dtype &&
               (v->shape.empty() == it->second->shape.empty());
        if (same && v->shape.empty()) same = std::equal(v->data.begin(), v->data.end(), it->second->data.begin());
      }
      if (!same)
        refuse("reshard: the saved pieces \"" + first.piece.name + "\" and \"" + s->piece.name +
               "\" keep different state (names, storage or steps)");
    }
    const bool whole = p.count == t.count;
    if (whole && covering.size() == 1 && first.piece.count == t.count) {
      // A whole tensor saved whole: every key as saved (per-tensor state too, such as Adafactor's
      // row_var and col_var, and rank-1 maxima).
      for (const auto& [suffix, v] : first.keys)
        add("state." + p.name + "." + suffix, v->dtype, v->shape, std::vector<uint8_t>(v->data.begin(), v->data.end()));
      continue;
    }
    for (const auto& [suffix, v] : first.keys) {
      const std::string key = "state." + p.name + "." + suffix;
      if (v->shape.empty()) {  // the step and the rule's scalars: the same in every piece
        add(key, v->dtype, {}, std::vector<uint8_t>(v->data.begin(), v->data.end()));
        continue;
      }
      if (t.group < per_tensor_slots.size() && per_tensor_slots[t.group].count(suffix)) {
        // The whole tensor's statistics, which every saved piece keeps whole; shaped as the
        // target's optimizer saves them (a whole 1 x N tensor's col_var as [1, N], as its state).
        uint64_t elements = 1;
        for (uint64_t d : v->shape) elements *= d;
        std::vector<uint64_t> shape = {elements};
        if (whole && t.rows > 0 && elements == t.count) shape = {t.rows, t.count / t.rows};
        add(key, v->dtype, std::move(shape), std::vector<uint8_t>(v->data.begin(), v->data.end()));
        continue;
      }
      if (suffix.ends_with(".rank1_rows") || suffix.ends_with(".rank1_cols")) {
        // A second moment's row and column maxima over the whole tensor, which every saved piece
        // keeps whole (the ranks combined them each step): every target piece takes them.
        for (const SavedPiece* s : covering) {
          const st::TensorView& sv = *s->keys.at(suffix);
          if (sv.shape != v->shape || !std::equal(sv.data.begin(), sv.data.end(), v->data.begin()))
            refuse("reshard: the saved pieces \"" + first.piece.name + "\" and \"" + s->piece.name +
                   "\" hold different rank-1 maxima (\"" + suffix + "\") of their tensor");
        }
        add(key, v->dtype, v->shape, std::vector<uint8_t>(v->data.begin(), v->data.end()));
        continue;
      }
      const bool absmax = suffix.size() > 7 && (suffix.ends_with(".absmax") || suffix.ends_with(".absmax128"));
      const uint64_t block = suffix.ends_with(".absmax128") ? 128 : 256;
      std::vector<uint8_t> bytes;
      uint64_t per = 0;  // half bytes per element (absmax: per block)
      if (!absmax) per = half_bytes(first, suffix, *v);
      for (const SavedPiece* s : covering) {
        const st::TensorView& sv = *s->keys.at(suffix);
        const uint64_t lo = std::max(p.begin, s->piece.begin) - s->piece.begin;
        const uint64_t hi = std::min(p.begin + p.count, s->piece.begin + s->piece.count) - s->piece.begin;
        uint64_t from, to;  // bytes of the saved tensor
        if (absmax) {
          from = lo / block * 4, to = (hi + block - 1) / block * 4;
        } else {
          from = lo * per / 2, to = (hi * per + 1) / 2;
        }
        if (to > sv.data.size())
          refuse("reshard: \"state." + s->piece.name + "." + suffix + "\" holds fewer values than its piece's " +
                 std::to_string(s->piece.count) + " elements");
        bytes.insert(bytes.end(), sv.data.begin() + std::ptrdiff_t(from), sv.data.begin() + std::ptrdiff_t(to));
      }
      std::vector<uint64_t> shape;
      if (absmax)
        shape = {(p.count + block - 1) / block};
      else if (per == 1)
        shape = {(p.count + 1) / 2};
      else if (whole && t.rows > 0)
        shape = {t.rows, t.count / t.rows};
      else
        shape = {p.count};
      add(key, v->dtype, std::move(shape), std::move(bytes));
    }
  }

  // The saved optimizer's groups, listing the target's pieces.
  json groups;
  try {
    groups = json::parse(metadata.at("param_groups"));
    for (auto& g : groups) g["params"] = json::array();
    for (const auto& p : pieces) groups.at(target.tensors[p.tensor].group)["params"].push_back(p.name);
  } catch (const json::exception& e) {
    refuse(std::string("reshard: the saved param_groups do not fit the target's groups: ") + e.what());
  }
  metadata["param_groups"] = groups.dump();
  const uint64_t size = st::layout(specs);
  std::vector<uint8_t> data(size);
  for (size_t i = 0; i < specs.size(); ++i) {
    if (contents[i].size() != specs[i].bytes())
      refuse("reshard: \"" + specs[i].name + "\" came to " + std::to_string(contents[i].size()) + " bytes, not " +
             std::to_string(specs[i].bytes()));
    std::copy(contents[i].begin(), contents[i].end(), data.begin() + std::ptrdiff_t(specs[i].offset));
  }
  return detail::checkpoint_file(specs, data, metadata);
}

}  // namespace vkoptim
