// The text encoder behind the content table: turns an item's text into the
// unit content vector tools/content_vectors would have written for it, so
// that items added after the table was filled (UpsertItem) land in the same
// space as the rest.
//
// Encode(text) = L2-normalise(SentenceVector(Normalize(text)) - mean), where
// Normalize is NormalizeTextForFastText below, SentenceVector is fastText's
// getSentenceVector (the mean of the L2-normalised word+subword vectors of
// the words) and mean is the average SentenceVector of the training items
// (zero when content_vectors ran with --center=false).
//
// On disk an encoder is a directory written by ContentEncoder::Save
// (tools/content_vectors --encoder_out=DIR): model.bin (fastText), mean.txt
// and encoder.txt, whose `id` is the FNV-1a 64 of model.bin's bytes followed
// by mean.txt's. docs/DATA_FORMAT.md ("Content encoder directory") gives
// the formats.
#ifndef MIM_SERVING_CONTENT_ENCODER_H_
#define MIM_SERVING_CONTENT_ENCODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fasttext {
class FastText;
}  // namespace fasttext

namespace mim::serving {

inline constexpr char kEncoderDescriptorFileName[] = "encoder.txt";
inline constexpr char kEncoderModelFileName[] = "model.bin";
inline constexpr char kEncoderMeanFileName[] = "mean.txt";

// Lower-cases ASCII letters, keeps digits and non-ASCII (UTF-8) bytes, and
// turns every other run of bytes into one space, with none leading or
// trailing: "Children's Sci-Fi" -> "children s sci fi". Idempotent.
std::string NormalizeTextForFastText(absl::string_view text);

// What Encode / EncodeCentred produced.
enum class EncodeOutcome {
  // A vector: unit L2 norm from Encode.
  kEncoded,
  // The normalised text has no word with a fastText vector (it is empty,
  // e.g. only punctuation; or, for a model without subwords, every word is
  // out of vocabulary). The output is all zeros.
  kNoKnownWord,
  // The text has words but its centred vector is exactly zero (its sentence
  // vector equals the mean, e.g. the only item the model was trained on).
  // The output is all zeros.
  kZeroVector,
};

// A fastText model plus its centring mean. Immutable once built.
// Safe for concurrent access (every method is const): fastText 0.9.2's
// getSentenceVector for the unsupervised models accepted here only reads
// the model (see the .cc), so Encode takes no lock.
class ContentEncoder {
 public:
  // Loads the directory Save wrote. Errors (each message names the file):
  // NOT_FOUND if `dir` or one of its three files cannot be opened;
  // DATA_LOSS if a file is not what Save writes: a bad header or value in
  // encoder.txt / mean.txt, a model.bin that is truncated, garbage, not an
  // unquantised fastText 0.9 skipgram/cbow model, or whose matrices
  // disagree with its header; dims that disagree between the three files;
  // or an `id` in encoder.txt that is not the hash of the files (a partial
  // copy, files from two saves, or a Save to `dir` in progress). ABORTED if
  // model.bin was replaced while it was loading (a concurrent Save): retry.
  static absl::StatusOr<std::unique_ptr<ContentEncoder>> Load(
      const std::string& dir);

  // Wraps a model tools/content_vectors has just trained. With `center`,
  // the mean is the average sentence vector, accumulated in double, over
  // the `item_texts` (normalised here) that have a known word; else zeros.
  // id() stays empty (Save returns the id). INVALID_ARGUMENT if `model` is
  // null, untrained, supervised or quantised, or the mean is not finite;
  // INTERNAL if fastText throws.
  static absl::StatusOr<std::unique_ptr<ContentEncoder>> FromTrainedModel(
      std::unique_ptr<fasttext::FastText> model,
      absl::Span<const std::string> item_texts, bool center);

  ContentEncoder(const ContentEncoder&) = delete;
  ContentEncoder& operator=(const ContentEncoder&) = delete;
  ~ContentEncoder();

  int dim() const { return dim_; }

  // 16 lower-case hex digits: FNV-1a 64 of model.bin then mean.txt, as
  // written by Save (the same for the loaded encoder). Empty for an
  // encoder from FromTrainedModel that was never saved.
  const std::string& id() const { return id_; }

  // The centring mean (dim() values; zeros when not centred).
  const std::vector<double>& mean() const { return mean_; }

  // Replaces `*out` with dim() floats. kEncoded: the unit vector described
  // at the top of this file; kNoKnownWord / kZeroVector: all zeros.
  // DATA_LOSS if the model produced a non-finite value (names the id);
  // INTERNAL if fastText throws. `*out` is all zeros after an error.
  absl::StatusOr<EncodeOutcome> Encode(absl::string_view text,
                                       std::vector<float>* out) const;

  // As Encode, but for kEncoded leaves `*out` centred and not normalised.
  // For writers that normalise themselves: ContentVectorWriter applies the
  // same arithmetic as Encode's last step (double sum of squares, each
  // value divided by the norm in double), so content_vectors' file holds
  // exactly the floats Encode returns.
  absl::StatusOr<EncodeOutcome> EncodeCentred(absl::string_view text,
                                              std::vector<float>* out) const;

  // Writes the encoder to `dir` (created if missing) and returns its id:
  // model.bin first (fastText's saveModel to a temp file, checked, fsynced,
  // renamed), then mean.txt, then encoder.txt, each atomically, so a Load
  // that sees the new encoder.txt sees the files it describes. Files of an
  // earlier encoder in `dir` are replaced. INTERNAL naming the file on an
  // I/O or fastText error. Two Saves to one directory race.
  absl::StatusOr<std::string> Save(const std::string& dir) const;

 private:
  ContentEncoder(std::unique_ptr<fasttext::FastText> model,
                 std::vector<double> mean, std::string id);

  // The model is only read after construction (see the class comment).
  const std::unique_ptr<fasttext::FastText> model_;
  const int dim_;
  const std::vector<double> mean_;
  const std::string id_;
};

}  // namespace mim::serving

#endif  // MIM_SERVING_CONTENT_ENCODER_H_
