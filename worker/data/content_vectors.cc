#include "worker/data/content_vectors.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/memory/memory.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "worker/data/text_lines.h"

namespace mim::data {
namespace {

constexpr absl::string_view kMagic = "#mim-vectors v1";

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return false;
  }
  return true;
}

}  // namespace

bool L2Normalize(std::vector<float>* v) {
  double sq = 0;
  for (float x : *v) sq += static_cast<double>(x) * x;
  const double norm = std::sqrt(sq);
  if (!(norm > 0) || !std::isfinite(norm)) return false;
  for (float& x : *v) x = static_cast<float>(x / norm);
  return true;
}

ContentVectorReader::ContentVectorReader(std::string path, std::ifstream in,
                                         int dim, std::string modality)
    : path_(std::move(path)),
      in_(std::move(in)),
      dim_(dim),
      modality_(std::move(modality)) {}

absl::StatusOr<std::unique_ptr<ContentVectorReader>> ContentVectorReader::Open(
    const std::string& path, int expected_dim) {
  std::ifstream in(path);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open vector file ", path));
  }
  std::string header;
  if (ReadLine(in, &header) == LineRead::kTooLong) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: ", LineTooLong()));
  }
  if (!header.empty() && header.back() == '\r') header.pop_back();
  const std::string expected_form =
      absl::StrCat("'", kMagic, "<TAB>dim=<D><TAB>modality=<name>'");
  std::vector<absl::string_view> cols = absl::StrSplit(header, '\t');
  int dim = 0;
  if (cols.size() != 3 || cols[0] != kMagic ||
      !absl::ConsumePrefix(&cols[1], "dim=") ||
      !absl::SimpleAtoi(cols[1], &dim) || dim < 1 ||
      !absl::ConsumePrefix(&cols[2], "modality=") || !IsToken(cols[2])) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: header is '", header.substr(0, 80),
                     "', expected ", expected_form));
  }
  if (dim > kMaxContentVectorDim) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: dim=", dim, " is above the largest vector "
                     "file dim, ", kMaxContentVectorDim));
  }
  if (expected_dim > 0 && dim != expected_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: dim=", dim, " but the caller expects dim=",
                     expected_dim));
  }
  return absl::WrapUnique(new ContentVectorReader(
      path, std::move(in), dim, std::string(cols[2])));
}

absl::StatusOr<size_t> ContentVectorReader::ReadBatch(
    size_t max_items, std::vector<ItemVector>* batch) {
  if (max_items == 0) {
    return absl::InvalidArgumentError("ReadBatch: max_items must be >= 1");
  }
  size_t n = 0;
  batch->resize(max_items);
  while (n < max_items) {
    const LineRead read = ReadLine(in_, &line_);
    if (read == LineRead::kEnd) break;
    ++line_number_;
    if (read == LineRead::kTooLong) {
      batch->resize(n);
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number_, ": ", LineTooLong()));
    }
    // Only the last line can end without a newline: one that was cut short.
    const bool unterminated = in_.eof();
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) continue;
    auto error = [&](absl::string_view what) {
      batch->resize(n);
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number_, ": ", what));
    };
    if (unterminated) return error(UnterminatedLine());
    const size_t tab = line_.find('\t');
    if (tab == std::string::npos) {
      return error("expected '<item_id><TAB><values>'");
    }
    ItemVector& row = (*batch)[n];
    const absl::string_view id_text(line_.data(), tab);
    if (!absl::SimpleAtoi(id_text, &row.item_id) || row.item_id < 0) {
      return error(absl::StrCat("item id '", id_text,
                                "' is not a non-negative integer"));
    }
    row.values.clear();
    row.values.reserve(dim_);
    const absl::string_view rest(line_.data() + tab + 1,
                                 line_.size() - tab - 1);
    for (absl::string_view tok : absl::StrSplit(rest, ' ', absl::SkipEmpty())) {
      float x;
      if (!absl::SimpleAtof(tok, &x) || !std::isfinite(x)) {
        return error(absl::StrCat("value ", row.values.size() + 1, " '", tok,
                                  "' is not a finite float"));
      }
      row.values.push_back(x);
    }
    if (static_cast<int>(row.values.size()) != dim_) {
      return error(absl::StrCat("item ", row.item_id, " has ",
                                row.values.size(), " values, expected dim=",
                                dim_));
    }
    ++n;
  }
  batch->resize(n);
  if (n < max_items && in_.bad()) {
    return absl::DataLossError(absl::StrCat(path_, ": read error"));
  }
  return n;
}

absl::StatusOr<std::vector<ItemVector>> ReadAllContentVectors(
    const std::string& path, int expected_dim) {
  auto reader = ContentVectorReader::Open(path, expected_dim);
  if (!reader.ok()) return reader.status();
  std::vector<ItemVector> all;
  absl::flat_hash_set<int64_t> seen;
  std::vector<ItemVector> batch;
  while (true) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(1024, &batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    for (ItemVector& v : batch) {
      if (!seen.insert(v.item_id).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": item id ", v.item_id, " appears more than once"));
      }
      all.push_back(std::move(v));
    }
  }
  return all;
}

ContentVectorWriter::ContentVectorWriter(std::string path, int dim)
    : file_(std::move(path), "vector file"), dim_(dim) {}

absl::StatusOr<std::unique_ptr<ContentVectorWriter>> ContentVectorWriter::Open(
    const std::string& path, int dim, const std::string& modality) {
  if (dim < 1 || dim > kMaxContentVectorDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dim=", dim, ", need 1..", kMaxContentVectorDim));
  }
  if (!IsToken(modality)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "modality '", modality, "' must be non-empty without whitespace"));
  }
  auto writer = absl::WrapUnique(new ContentVectorWriter(path, dim));
  MIM_RETURN_IF_ERROR(writer->file_.Opened());
  writer->file_.out() << kMagic << "\tdim=" << dim << "\tmodality="
                      << modality << '\n';
  return writer;
}

absl::Status ContentVectorWriter::Write(int64_t item_id,
                                        absl::Span<const float> values,
                                        std::vector<float>* written) {
  if (static_cast<int>(values.size()) != dim_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "item ", item_id, ": ", values.size(), " values, expected ", dim_));
  }
  std::vector<float> v(values.begin(), values.end());
  for (float x : v) {
    if (!std::isfinite(x)) {
      return absl::InvalidArgumentError(
          absl::StrCat("item ", item_id, ": non-finite value"));
    }
  }
  if (!L2Normalize(&v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("item ", item_id, ": zero vector cannot be normalised"));
  }
  std::string line = absl::StrCat(item_id, "\t");
  for (int i = 0; i < dim_; ++i) {
    // %.9g (FLT_DECIMAL_DIG digits): reading the text back gives the very
    // float written, so a table filled from the file holds what the writer
    // was handed, bit for bit (%.7g was within about one ulp).
    if (i > 0) line.push_back(' ');
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", v[i]);
    line += buf;
  }
  line.push_back('\n');
  file_.out() << line;
  if (!file_.out()) {
    return absl::InternalError(
        absl::StrCat("write failed on ", file_.temp_path()));
  }
  if (written != nullptr) *written = std::move(v);
  return absl::OkStatus();
}

absl::Status ContentVectorWriter::Finish() { return file_.Finish(); }

absl::Status ContentVectorWriter::Commit() { return file_.Commit(); }

absl::Status ContentVectorWriter::Close() {
  MIM_RETURN_IF_ERROR(Finish());
  return Commit();
}

}  // namespace mim::data
