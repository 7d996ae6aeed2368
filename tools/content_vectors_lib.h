// Representation centre v1 for text: trains a fastText model on a domain's
// item texts and writes one L2-normalised vector per item in the
// mim-vectors v1 format (worker/data/content_vectors.h).
#ifndef MIM_TOOLS_CONTENT_VECTORS_LIB_H_
#define MIM_TOOLS_CONTENT_VECTORS_LIB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mim::tools {

struct ContentVectorOptions {
  // Item text file: optional '#' header line, then
  // "<item_id><TAB><text column><TAB>..."; all text columns are joined
  // (mim-item-text v1 written by prepare_movielens / gen_synthetic fits).
  std::string item_text;
  std::string output;        // mim-vectors v1 file.
  int dim = 64;
  std::string model = "skipgram";  // or "cbow".
  int epoch = 25;
  int min_count = 1;
  int threads = 1;           // 1 keeps the result deterministic by seed.
  int seed = 1;
  std::string modality = "text";
  // Subtract the mean item vector before L2-normalising (see the .cc).
  bool center = true;
};

struct ContentVectorStats {
  int64_t items = 0;          // Rows in the item text file.
  int64_t written = 0;        // Vectors written.
  int64_t skipped_empty = 0;  // Items whose text had no word, or whose
                              // vector was zero: no vector written.
  int64_t vocabulary = 0;     // Words in the fastText dictionary.
};

// Trains and writes. Not thread-safe with respect to the files it writes; it
// also writes and then deletes "<output>.corpus.tmp".
// Errors: NOT_FOUND if item_text cannot be opened; INVALID_ARGUMENT naming
// file and line for a row without an integer item id or a duplicated id, or
// for bad options; INTERNAL if fastText fails (its message is kept).
absl::StatusOr<ContentVectorStats> BuildContentVectors(
    const ContentVectorOptions& options);

// Lower-cases ASCII letters, keeps digits and non-ASCII (UTF-8) bytes, and
// turns everything else into single spaces: "Children's Sci-Fi" ->
// "children s sci fi". Exposed for tests.
std::string NormalizeTextForFastText(absl::string_view text);

}  // namespace mim::tools

#endif  // MIM_TOOLS_CONTENT_VECTORS_LIB_H_
