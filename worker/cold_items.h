// ColdItemImputer: an ID row for items the ID table has never seen, made
// from the rows of the trained items whose content is nearest.
//
// An item training never saw reads as a zero ID row (GetRows), so DIN's
// attention, the fusion module and the MLP's target slot get nothing for
// it: only its content vector and genres speak for it. The imputer gives
// such an item the similarity-weighted mean of the ID rows of its k
// nearest trained items by content (cosine of the content vectors, only
// neighbours with positive similarity), so the collaborative signal of
// similar items (a sequel's, a same-author book's) carries over. Used on
// the evaluation path (`--cold_item_neighbors=K`, BatchPipeline::Options::
// after_pull); the model and training are unchanged.
//
// Thread-safety: immutable after Build; Fill may be called concurrently.
#ifndef MIM_WORKER_COLD_ITEMS_H_
#define MIM_WORKER_COLD_ITEMS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ps/client.h"
#include "worker/trainer_pipeline.h"

namespace mim::worker {

class ColdItemImputer {
 public:
  // The trained side: `items` (raw item ids) with their content rows
  // (items.size() x content_dim) and ID rows (items.size() x id_dim).
  // Items whose content row is all zeros (no content) are left out.
  // INVALID_ARGUMENT for k < 1, dims < 1 or sizes that do not match.
  static absl::StatusOr<std::unique_ptr<ColdItemImputer>> FromRows(
      int k, int content_dim, int id_dim, absl::Span<const int64_t> items,
      absl::Span<const float> content_rows, absl::Span<const float> id_rows);

  // Reads the rows of `items` from the shards: content rows from
  // content_table (Pull: missing ones are zeros), ID rows of their kItem
  // keys from id_table (GetRows: items without a row are left out).
  static absl::StatusOr<std::unique_ptr<ColdItemImputer>> Build(
      ps::PsClient* client, int k, const std::string& content_table,
      int content_dim, const std::string& id_table, int id_dim,
      std::vector<int64_t> items);

  // For every missing ID row of `batch` (PreparedBatch::missing_id_rows)
  // that is an item's kItem key and whose item has a non-zero content row
  // in the batch: writes the imputed row. Other rows are untouched; an
  // item with no neighbour of positive similarity keeps its zero row.
  absl::Status Fill(PreparedBatch* batch) const;

  // The imputed row of one content vector (content_dim floats) into `out`
  // (id_dim floats); false (out untouched) when no neighbour qualifies.
  bool Impute(const float* content, float* out) const;

  int trained_items() const { return static_cast<int>(items_.size()); }

 private:
  ColdItemImputer(int k, int content_dim, int id_dim)
      : k_(k), content_dim_(content_dim), id_dim_(id_dim) {}

  const int k_, content_dim_, id_dim_;
  std::vector<int64_t> items_;
  std::vector<float> unit_content_;  // L2-normalised, items_ x content_dim
  std::vector<float> id_rows_;       // items_ x id_dim
};

}  // namespace mim::worker

#endif  // MIM_WORKER_COLD_ITEMS_H_
