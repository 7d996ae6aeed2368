// Fuzz target: sample files ("mim-samples v1", worker/data/sample_io.h).
//
// The input is a whole sample file. It is read the way the trainer reads
// one (SampleReader, small batches, to the end or the first error), and
// every row is also given to ParseSample directly. Invariants: a parsed
// sample formats to a row that parses back to the same sample, and a batch
// holds as many samples as ReadBatch says.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

namespace {

using mim::data::ParseSample;
using mim::data::Sample;
using mim::fuzz::Require;

void CheckRoundTrip(const Sample& s) {
  Sample again;
  Require(ParseSample(mim::data::FormatSample(s), &again).ok(),
          "FormatSample of a parsed sample does not parse");
  Require(again == s, "FormatSample/ParseSample round trip changed a sample");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text = mim::fuzz::AsStringView(data, size);

  // Every line on its own, as ParseSample sees a row.
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    Sample s;
    if (ParseSample(line, &s).ok()) CheckRoundTrip(s);
  }

  // The whole file through the streaming reader.
  const std::string path = mim::fuzz::WriteScratchFile("samples.tsv", text);
  auto reader = mim::data::SampleReader::Open(path);
  if (!reader.ok()) return 0;
  std::vector<Sample> batch;
  for (;;) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(3, &batch);
    if (!n.ok() || *n == 0) break;
    Require(batch.size() == *n, "ReadBatch count differs from batch size");
    for (const Sample& s : batch) CheckRoundTrip(s);
  }
  return 0;
}
