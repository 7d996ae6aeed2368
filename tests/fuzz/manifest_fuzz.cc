// Fuzz target: model manifests (manifest.json, worker/model/manifest.h), as
// the serving tier and a warm-started trainer read them.
//
// The input is the JSON text. Invariants: an accepted manifest validates,
// and formatting it gives text that parses to a manifest that formats the
// same (the trainer's writer and the readers agree).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "worker/model/manifest.h"

using mim::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<mim::model::ModelManifest> m =
      mim::model::ParseManifest(mim::fuzz::AsStringView(data, size));
  if (!m.ok()) return 0;
  Require(mim::model::ValidateManifest(*m).ok(),
          "ParseManifest accepted a manifest that does not validate");
  const std::string text = mim::model::FormatManifest(*m);
  absl::StatusOr<mim::model::ModelManifest> again =
      mim::model::ParseManifest(text);
  Require(again.ok(), "FormatManifest of an accepted manifest does not parse");
  Require(mim::model::FormatManifest(*again) == text,
          "FormatManifest/ParseManifest round trip changed the manifest");
  return 0;
}
