// Fuzz target: content vector files ("mim-vectors v1",
// worker/data/content_vectors.h), as tools/ingest_content and the trainer
// read them.
//
// The input is a whole vector file, read with ReadAllContentVectors (the
// streaming reader underneath). Invariants: on success every row has the
// header's dim of finite values and a distinct non-negative id; rows
// written back with ContentVectorWriter read back with the same ids.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/content_vectors.h"

using mim::data::ItemVector;
using mim::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mim::fuzz::WriteScratchFile(
      "vectors.tsv", mim::fuzz::AsStringView(data, size));
  auto reader = mim::data::ContentVectorReader::Open(path);
  if (!reader.ok()) return 0;
  const int dim = (*reader)->dim();
  Require(dim >= 1, "Open accepted a dim below 1");

  absl::StatusOr<std::vector<ItemVector>> rows =
      mim::data::ReadAllContentVectors(path, dim);
  if (!rows.ok()) return 0;
  absl::flat_hash_set<int64_t> ids;
  for (const ItemVector& v : *rows) {
    Require(v.item_id >= 0, "negative item id accepted");
    Require(ids.insert(v.item_id).second, "duplicated item id accepted");
    Require(static_cast<int>(v.values.size()) == dim,
            "row with a wrong number of values accepted");
    for (float x : v.values) Require(std::isfinite(x), "non-finite value");
  }

  // What the writer makes of them reads back (rows whose norm is zero or
  // overflows are refused by the writer, and left out).
  const std::string out_path = mim::fuzz::ScratchDir() + "/vectors-out.tsv";
  auto writer = mim::data::ContentVectorWriter::Open(out_path, dim, "fuzz");
  Require(writer.ok(), "ContentVectorWriter::Open failed on a scratch file");
  std::vector<int64_t> written;
  for (const ItemVector& v : *rows) {
    if ((*writer)->Write(v.item_id, v.values).ok()) {
      written.push_back(v.item_id);
    }
  }
  Require((*writer)->Close().ok(), "ContentVectorWriter::Close failed");
  absl::StatusOr<std::vector<ItemVector>> back =
      mim::data::ReadAllContentVectors(out_path, dim);
  Require(back.ok(), "a file ContentVectorWriter wrote does not read back");
  Require(back->size() == written.size(), "rows lost in a write/read");
  for (size_t i = 0; i < written.size(); ++i) {
    Require((*back)[i].item_id == written[i], "ids changed in a write/read");
  }
  return 0;
}
