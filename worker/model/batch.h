// The model-side view of a training/evaluation batch, and the builder that
// turns samples into it.
//
// A batch carries no keys: only row blocks pulled from the parameter server
// plus int32 indices into them. BatchBuilder produces, from samples, the
// unique key lists to pull and the index arrays; the trainer pulls the keys
// (one call per table) and copies the rows into Batch::id_rows /
// Batch::content_rows in key order.
//
// Key conventions (see worker/data/feature_key.h):
//   ID table:      FeatureKey(kUser, user_id), FeatureKey(kAgeBucket, age),
//                  FeatureKey(kGender, g), FeatureKey(kOccupation, o),
//                  FeatureKey(kGenre, genre), FeatureKey(kItem, item_id)
//                  (target and behaviour items share kItem keys).
//   Content table: the RAW ITEM ID as uint64 (ingestion writes content
//                  vectors by item id), for target and behaviour items.
// Items with no content vector must get an all-zero row in content_rows
// (the model handles zero vectors: cosine similarity is then 0).
#ifndef MIM_WORKER_MODEL_BATCH_H_
#define MIM_WORKER_MODEL_BATCH_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "worker/data/sample.h"

namespace mim::model {

class InputSlot;  // ciubm_model.cc

// Where an InputStager (ciubm_model.h) put a batch's inputs in the model's
// backend memory ahead of its compute. Plain value type.
struct StagedInputs {
  std::shared_ptr<InputSlot> slot;  // null: not staged
  uint64_t sequence = 0;            // which staging of that slot
};

// Plain value type; not thread-safe (no shared state). All vectors are
// row-major. Index arrays may hold -1, which reads as an all-zero row and
// receives no gradient (used for padding); padding positions (i >= lens[b])
// may hold any index in range, they are masked by `lens`.
struct Batch {
  int32_t batch_size = 0;  // B
  int32_t max_len = 0;     // L: behaviour positions per row (>= max lens)
  std::vector<int32_t> lens;  // [B], 0 <= lens[b] <= L

  // ID side: U unique rows, U x id_dim.
  int64_t num_id_rows = 0;     // U
  std::vector<float> id_rows;  // [U * id_dim]
  std::vector<int32_t> user_idx, age_idx, gender_idx, occ_idx;  // [B] each
  std::vector<int32_t> target_idx;                              // [B]
  // Target genres as CSR: genres of row b are
  // genre_rows[genre_offsets[b] .. genre_offsets[b+1]); mean-pooled (an empty
  // list gives a zero vector).
  std::vector<int32_t> genre_offsets;  // [B + 1], genre_offsets[0] == 0
  std::vector<int32_t> genre_rows;
  std::vector<int32_t> behavior_idx;  // [B * L]

  // Content side: Uc unique rows, Uc x content_dim (frozen, never trained).
  // Only read by models with content (*_ct, *_mim); others may leave the
  // content fields empty.
  int64_t num_content_rows = 0;     // Uc
  std::vector<float> content_rows;  // [Uc * content_dim]
  std::vector<int32_t> content_target_idx;    // [B]
  std::vector<int32_t> content_behavior_idx;  // [B * L]

  std::vector<float> labels;  // [B], 0 or 1 (unused by Forward)

  // Set by InputStager::Stage only: the model then reads these instead of
  // copying the fields above in itself (which must not change after Stage).
  StagedInputs staged;
};

// One example as the model sees it: user features, the behaviour sequence
// and the candidate (target) item with its features. A view: the spans
// point into memory the caller keeps alive while the row is used. The
// trainer fills rows from data::Sample (FeatureRowOf); the serving tier
// fills one per candidate from a request, all sharing the user's spans.
// Plain value type.
struct FeatureRow {
  int64_t user_id = 0;
  int32_t age_bucket = 0;  // 0 = unknown, as in data::Sample
  int32_t gender = 0;
  int32_t occupation = 0;
  absl::Span<const int64_t> behavior;  // most recent last
  int64_t item_id = 0;                 // the candidate
  absl::Span<const int32_t> genres;    // the candidate's genres
  int32_t label = 0;                   // 0 when unknown (serving)
};

// The row view of a sample (spans into `s`).
FeatureRow FeatureRowOf(const data::Sample& s);

// Checks every shape and index of `b` against id_dim / content_dim
// (content_dim <= 0: the content side is not checked). OK when the batch is
// well-formed, else INVALID_ARGUMENT naming the field, the offending value
// and the expected range.
absl::Status ValidateBatch(const Batch& b, int64_t id_dim,
                           int64_t content_dim);

// Builds Batch index arrays and unique key lists from samples. Reuses its
// internal hash maps and the Batch's vectors across calls, so steady-state
// building does not allocate. Not thread-safe.
class BatchBuilder {
 public:
  // max_behavior: positions kept per row (the most recent win); clamped to
  // [0, data::kMaxBehaviorLength].
  explicit BatchBuilder(int max_behavior = data::kMaxBehaviorLength);

  // Fills every index field, lens, labels, batch_size and max_len
  // (= longest kept behaviour in these samples) of `*batch`, and sets
  // num_id_rows / num_content_rows to the key counts; resizes id_rows and
  // content_rows to match (filled with zeros) given the dims. Padding
  // positions hold -1. Writes the unique ID keys (first-seen order; row r
  // of id_rows must hold the embedding of id_keys[r]) and content keys (raw
  // item ids, same rule). INVALID_ARGUMENT if `samples` is empty or dims
  // are not positive.
  absl::Status Build(absl::Span<const FeatureRow> rows, int64_t id_dim,
                     int64_t content_dim, Batch* batch,
                     std::vector<uint64_t>* id_keys,
                     std::vector<uint64_t>* content_keys);
  // The same for samples (through FeatureRowOf).
  absl::Status Build(absl::Span<const data::Sample> samples, int64_t id_dim,
                     int64_t content_dim, Batch* batch,
                     std::vector<uint64_t>* id_keys,
                     std::vector<uint64_t>* content_keys);

 private:
  int32_t IdRow(uint64_t key, std::vector<uint64_t>* keys);
  int32_t ContentRow(uint64_t key, std::vector<uint64_t>* keys);

  int max_behavior_;
  std::vector<FeatureRow> rows_;  // Build(samples) scratch
  absl::flat_hash_map<uint64_t, int32_t> id_rows_;
  absl::flat_hash_map<uint64_t, int32_t> content_rows_;
};

}  // namespace mim::model

#endif  // MIM_WORKER_MODEL_BATCH_H_
