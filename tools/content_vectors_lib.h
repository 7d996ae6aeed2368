// Representation centre v1 for text: trains a fastText model on a domain's
// item texts and writes one L2-normalised vector per item in the
// mim-vectors v1 format (worker/data/content_vectors.h). With encoder_out it
// also saves the encoder (the fastText model and the centring mean,
// serving/content_encoder.h), so that items added later (the serving tier's
// UpsertItem) are encoded into the same space: ContentEncoder::Encode on an
// item's text returns exactly the floats this tool hands the writer for it
// (which prints them with %.9g, so the file holds them exactly).
#ifndef MIM_TOOLS_CONTENT_VECTORS_LIB_H_
#define MIM_TOOLS_CONTENT_VECTORS_LIB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace mim::tools {

struct ContentVectorOptions {
  // Item text file: optional '#' header line, then
  // "<item_id><TAB><text column><TAB>..."; all text columns are joined
  // (mim-item-text v1 written by prepare_movielens / gen_synthetic fits).
  std::string item_text;
  std::string output;        // mim-vectors v1 file.
  // If not empty: the encoder directory to write (ContentEncoder::Save;
  // created if missing, an earlier encoder in it is replaced).
  std::string encoder_out;
  // The member initialisers are the one home of the defaults
  // (//tools:content_vectors' flags read them). epoch was chosen on a
  // MovieLens validation tail (docs/RESULTS.md: 10 epochs put every _mim
  // model below its backbone); dim, model, min_count and center were not
  // varied there.
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
                              // centred vector was zero: no vector written.
  int64_t vocabulary = 0;     // Words in the fastText dictionary.
  std::string encoder_id;     // ContentEncoder::id() of encoder_out, or "".
};

// Trains and writes; texts are normalised with
// serving::NormalizeTextForFastText. Not thread-safe with respect to the
// files it writes; it also writes and then deletes "<output>.corpus.tmp".
// Errors: NOT_FOUND if item_text cannot be opened; INVALID_ARGUMENT naming
// file and line for a row without an integer item id or a duplicated id, or
// for bad options; INTERNAL if fastText fails (its message is kept) or the
// encoder cannot be saved (naming the file).
absl::StatusOr<ContentVectorStats> BuildContentVectors(
    const ContentVectorOptions& options);

}  // namespace mim::tools

#endif  // MIM_TOOLS_CONTENT_VECTORS_LIB_H_
