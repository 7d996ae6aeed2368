// Per-item content vectors ("mim-vectors v1", see docs/DATA_FORMAT.md):
// the output of tools/content_vectors and the format in which users bring
// their own foundation-model vectors, one file per modality.
//
//   #mim-vectors v1<TAB>dim=<D><TAB>modality=<name>
//   <item_id><TAB><v1> <v2> ... <vD>
//
// Values are decimal floats; each row has exactly D finite values. Files
// written by ContentVectorWriter are L2-normalised; user files need not be.
#ifndef MIM_WORKER_DATA_CONTENT_VECTORS_H_
#define MIM_WORKER_DATA_CONTENT_VECTORS_H_

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/data/text_lines.h"

namespace mim::data {

// Largest dim a vector file may declare. The reader sizes each row's
// buffer from the header, so an unchecked dim (a damaged or hostile header)
// would have it allocate gigabytes per row; no content table holds more
// than 4096 anyway (embedding/table_config.h).
inline constexpr int kMaxContentVectorDim = 1 << 16;

// Plain value type; not thread-safe.
struct ItemVector {
  int64_t item_id = 0;
  std::vector<float> values;
};

// Streams a vector file in batches. Not thread-safe.
class ContentVectorReader {
 public:
  // Opens `path` and parses its header. If `expected_dim` > 0 the header's
  // dim must equal it. Errors: NOT_FOUND if it cannot be opened;
  // INVALID_ARGUMENT for a bad header, a dim outside
  // 1..kMaxContentVectorDim or a dim mismatch (message names the file and
  // the dims).
  static absl::StatusOr<std::unique_ptr<ContentVectorReader>> Open(
      const std::string& path, int expected_dim = 0);

  // Replaces `*batch` with the next up-to-`max_items` rows; returns how many,
  // 0 at end of file. Errors: INVALID_ARGUMENT "<file>:<line>: ..." for a
  // bad id, a wrong number of values, or a non-finite value.
  absl::StatusOr<size_t> ReadBatch(size_t max_items,
                                   std::vector<ItemVector>* batch);

  int dim() const { return dim_; }
  const std::string& modality() const { return modality_; }

 private:
  ContentVectorReader(std::string path, std::ifstream in, int dim,
                      std::string modality);

  std::string path_;
  std::ifstream in_;
  int dim_;
  std::string modality_;
  std::string line_;
  int64_t line_number_ = 1;
};

// Reads a whole vector file (convenient for small catalogues; large ones
// should stream with ContentVectorReader). Errors as the reader, plus
// INVALID_ARGUMENT for a duplicated item id.
absl::StatusOr<std::vector<ItemVector>> ReadAllContentVectors(
    const std::string& path, int expected_dim = 0);

// Writes a vector file. Not thread-safe.
class ContentVectorWriter {
 public:
  // Writes the header to a temp file beside `path` (base::TempPathFor);
  // Close renames it over `path`, so `path` holds the old file (or none)
  // until a complete new one replaces it: a failed or abandoned write
  // (destroyed without Close) leaves it as it was. dim must be in
  // 1..kMaxContentVectorDim and modality a non-empty token without
  // whitespace (INVALID_ARGUMENT otherwise);
  // INTERNAL if the file cannot be created.
  static absl::StatusOr<std::unique_ptr<ContentVectorWriter>> Open(
      const std::string& path, int dim, const std::string& modality);

  // Writes `values` L2-normalised. INVALID_ARGUMENT if the size is not dim
  // or a value is non-finite or the norm is zero; INTERNAL on write failure.
  // `written`, when not null, gets the floats the line holds (what reading
  // the file gives, bit for bit), e.g. to put the same rows in a table.
  absl::Status Write(int64_t item_id, absl::Span<const float> values,
                     std::vector<float>* written = nullptr);

  // Flushes and closes. INTERNAL if the flush fails.
  // Close in two steps, for a tool with several outputs that finishes them
  // all before it puts any in place: Finish flushes and closes the temp
  // file (errors as Close; no more writes), Commit renames it over the
  // path. Close does both. A writer destroyed before Commit removes its
  // temp file, leaving the old file.
  absl::Status Finish();
  absl::Status Commit();

  absl::Status Close();

 private:
  ContentVectorWriter(std::string path, int dim);

  TempFile file_;
  int dim_;
};

// Scales `v` to unit L2 norm. Returns false (v unchanged) if the norm is 0
// or not finite.
bool L2Normalize(std::vector<float>* v);

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_CONTENT_VECTORS_H_
