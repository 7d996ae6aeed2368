// Turns MovieLens in RecBole atomic layout (ml-100k.inter/.user/.item) plus
// MeLU's movies_extrainfos.dat into mim-samples v1 train/test files and an
// item text file. The construction is documented in docs/DATA_FORMAT.md
// ("MovieLens samples"); tests pin it exactly.
#ifndef MIM_TOOLS_PREPARE_MOVIELENS_LIB_H_
#define MIM_TOOLS_PREPARE_MOVIELENS_LIB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mim::tools {

struct MovieLensPrepOptions {
  std::string input_dir;   // Holds ml-100k.{inter,user,item}; the plot file
                           // movies_extrainfos.dat is optional.
  std::string output_dir;  // Must exist; gets train.tsv, test.tsv,
                           // item_text.tsv.
  int64_t test_start = 0;  // Samples with ts >= test_start go to test.
  std::string prefix = "ml-100k";  // Base name of the atomic files.
};

struct MovieLensPrepStats {
  int64_t samples = 0;
  int64_t positives = 0;
  int64_t train_samples = 0;
  int64_t test_samples = 0;
  int64_t users = 0;            // Distinct users in the interactions.
  int64_t items = 0;            // Distinct items in the interactions.
  int64_t test_items = 0;       // Distinct items with a test sample.
  int64_t cold_test_items = 0;  // Test items with no train sample.
  int64_t cold_test_samples = 0;
  int64_t catalogue_items = 0;  // Rows in the .item file.
  int64_t plot_matches = 0;     // Catalogue items given a plot.
  int64_t plot_matches_exact = 0;  // ... of which on the first, strict key.
};

// Builds the outputs. Not thread-safe with respect to the output files.
// Errors: NOT_FOUND for a missing input file; INVALID_ARGUMENT naming file,
// line and column for a malformed row or a header lacking a needed column;
// INTERNAL for write failures.
absl::StatusOr<MovieLensPrepStats> PrepareMovieLens(
    const MovieLensPrepOptions& options);

// Title key used to join the .item file with movies_extrainfos.dat:
// lower-cased, trimmed, and a trailing ", the" / ", a" / ", an" moved to the
// front ("Usual Suspects, The" -> "the usual suspects"). Exposed for tests.
std::string NormalizeTitle(absl::string_view title);

// Age -> bucket: 0 unknown (< 1), 1 (<18), 2 (18-24), 3 (25-34), 4 (35-44),
// 5 (45-49), 6 (50-55), 7 (56+), the MovieLens-1M buckets.
int32_t AgeBucket(int64_t age);

}  // namespace mim::tools

#endif  // MIM_TOOLS_PREPARE_MOVIELENS_LIB_H_
