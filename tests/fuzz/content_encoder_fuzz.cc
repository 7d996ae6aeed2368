// Fuzz target: loading a content encoder directory
// (serving/content_encoder.h: model.bin, mean.txt, encoder.txt), as the
// serving tier does for a model whose manifest names one.
//
// Two kinds of input:
//  - One that starts with '#': encoder.txt and mean.txt, separated by the
//    first NUL byte, beside a small valid model.bin (dim 2).
//  - Anything else: model.bin itself (fastText's binary format, which
//    ContentEncoder::Load walks before fastText reads it). The harness
//    writes a zero mean.txt of the dim at model.bin's dim offset (1 when
//    that is not in 1..64) and an encoder.txt whose id is the files' hash,
//    so that most inputs reach the model checks and fastText's loader.
//
// Invariants: a refusal is NOT_FOUND, DATA_LOSS or ABORTED (the contract in
// content_encoder.h); an encoder that loads encodes text to dim() finite
// values, of unit norm when it reports kEncoded.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "serving/content_encoder.h"
#include "tests/fuzz/fasttext_bin.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using mim::fuzz::Require;
using mim::serving::ContentEncoder;
using mim::serving::EncodeOutcome;

uint64_t Fnv1a64(uint64_t h, absl::string_view bytes) {
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

std::string ZeroMean(int dim) {
  std::string out = absl::StrCat("#mim-encoder-mean v1\tdim=", dim, "\n");
  for (int i = 0; i < dim; ++i) out += "0\n";
  return out;
}

std::string Descriptor(int dim, absl::string_view model_bin,
                       absl::string_view mean) {
  const uint64_t id =
      Fnv1a64(Fnv1a64(14695981039346656037ull, model_bin), mean);
  return absl::StrCat("#mim-content-encoder v1\nkind=fasttext\ndim=", dim,
                      "\nid=", absl::StrFormat("%016x", id), "\n");
}

void CheckEncodes(const ContentEncoder& encoder) {
  for (const char* text :
       {"hello world", "Hello, World!", "", "unknownword", "héllo wörld"}) {
    std::vector<float> out;
    absl::StatusOr<EncodeOutcome> outcome = encoder.Encode(text, &out);
    if (!outcome.ok()) {
      // Non-finite model values are DATA_LOSS; fastText throwing INTERNAL.
      Require(outcome.status().code() == absl::StatusCode::kDataLoss ||
                  outcome.status().code() == absl::StatusCode::kInternal,
              "Encode failed with an undocumented code");
      continue;
    }
    Require(static_cast<int>(out.size()) == encoder.dim(),
            "Encode did not return dim() values");
    double sq = 0;
    for (float x : out) {
      Require(std::isfinite(x), "Encode returned a non-finite value");
      sq += double{x} * x;
    }
    if (*outcome == EncodeOutcome::kEncoded) {
      Require(std::abs(sq - 1.0) < 1e-3, "kEncoded vector is not unit norm");
    } else {
      Require(sq == 0, "kNoKnownWord/kZeroVector vector is not zero");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input = mim::fuzz::AsStringView(data, size);
  const std::string dir = mim::fuzz::ScratchDir() + "/encoder";
  std::string model_bin, mean, descriptor;
  if (!input.empty() && input[0] == '#') {
    const size_t nul = input.find('\0');
    descriptor = std::string(input.substr(0, nul));
    mean = nul == absl::string_view::npos ? ""
                                          : std::string(input.substr(nul + 1));
    model_bin = mim::fuzz::FastTextBin(mim::fuzz::FastTextBinSpec());
  } else {
    model_bin = std::string(input);
    int32_t dim = 0;
    if (model_bin.size() >= 12) std::memcpy(&dim, model_bin.data() + 8, 4);
    if (dim < 1 || dim > 64) dim = 1;
    mean = ZeroMean(dim);
    descriptor = Descriptor(dim, model_bin, mean);
  }
  static const bool made = [&] {
    mim::fuzz::FreshScratchDir("encoder");
    return true;
  }();
  (void)made;
  mim::fuzz::WriteScratchFile("encoder/model.bin", model_bin);
  mim::fuzz::WriteScratchFile("encoder/mean.txt", mean);
  mim::fuzz::WriteScratchFile("encoder/encoder.txt", descriptor);

  absl::StatusOr<std::unique_ptr<ContentEncoder>> encoder =
      ContentEncoder::Load(dir);
  if (!encoder.ok()) {
    const absl::StatusCode code = encoder.status().code();
    Require(code == absl::StatusCode::kNotFound ||
                code == absl::StatusCode::kDataLoss ||
                code == absl::StatusCode::kAborted,
            absl::StrCat("Load failed with an undocumented code: ",
                         encoder.status().ToString()));
    return 0;
  }
  CheckEncodes(**encoder);
  return 0;
}
