#include "worker/data/sample_io.h"

#include <cstdio>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "worker/data/text_lines.h"

namespace mim::data {

SampleReader::SampleReader(std::string path, std::ifstream in)
    : path_(std::move(path)), in_(std::move(in)) {}

absl::StatusOr<std::unique_ptr<SampleReader>> SampleReader::Open(
    const std::string& path) {
  std::ifstream in(path);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open sample file ", path));
  }
  std::string header;
  const LineRead read = ReadLine(in, &header);
  if (read == LineRead::kTooLong) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ":1: ", LineTooLong(), " (expected header '", kSampleHeader,
        "')"));
  }
  if (read == LineRead::kEnd) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ":1: empty file, expected header '", kSampleHeader, "'"));
  }
  if (!header.empty() && header.back() == '\r') header.pop_back();
  if (header != kSampleHeader) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: header is '", header.substr(0, 80),
                     "', expected '", kSampleHeader, "'"));
  }
  auto reader = absl::WrapUnique(new SampleReader(path, std::move(in)));
  reader->line_number_ = 1;
  return reader;
}

absl::StatusOr<size_t> SampleReader::ReadBatch(size_t max_samples,
                                               std::vector<Sample>* batch) {
  if (max_samples == 0) {
    return absl::InvalidArgumentError("ReadBatch: max_samples must be >= 1");
  }
  // Reuse the Sample objects (and their vectors' capacity) across batches.
  size_t n = 0;
  batch->resize(max_samples);
  while (n < max_samples) {
    const LineRead read = ReadLine(in_, &line_);
    if (read == LineRead::kEnd) break;
    ++line_number_;
    if (read == LineRead::kTooLong) {
      batch->resize(n);
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number_, ": ", LineTooLong()));
    }
    // getline stops at the end of the file without a newline only on the
    // last line: one that was cut short (an id may be truncated).
    const bool unterminated = in_.eof();
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) continue;  // Tolerate a blank trailing line.
    if (unterminated) {
      batch->resize(n);
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number_, ": ", UnterminatedLine()));
    }
    absl::Status st = ParseSample(line_, &(*batch)[n]);
    if (!st.ok()) {
      batch->resize(n);
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", line_number_, ": ", st.message()));
    }
    ++n;
  }
  batch->resize(n);
  if (n < max_samples && in_.bad()) {
    return absl::DataLossError(absl::StrCat(
        path_, ":", line_number_ + 1, ": read error"));
  }
  return n;
}

SampleWriter::SampleWriter(std::string path)
    : file_(std::move(path), "sample file") {}

absl::StatusOr<std::unique_ptr<SampleWriter>> SampleWriter::Open(
    const std::string& path) {
  // Dropped on an error: the temp file goes with it.
  auto writer = absl::WrapUnique(new SampleWriter(path));
  MIM_RETURN_IF_ERROR(writer->file_.Opened());
  writer->file_.out() << kSampleHeader << '\n';
  if (!writer->file_.out()) {
    return absl::InternalError(
        absl::StrCat("cannot write header to ", writer->file_.temp_path()));
  }
  return writer;
}

absl::Status SampleWriter::Write(const Sample& s) {
  if (!file_.out().is_open()) {
    return absl::FailedPreconditionError(
        absl::StrCat("write to closed sample file ", file_.path()));
  }
  file_.out() << FormatSample(s) << '\n';
  if (!file_.out()) {
    return absl::InternalError(
        absl::StrCat("write failed on ", file_.temp_path()));
  }
  ++num_written_;
  return absl::OkStatus();
}

absl::Status SampleWriter::Finish() { return file_.Finish(); }

absl::Status SampleWriter::Commit() { return file_.Commit(); }

absl::Status SampleWriter::Close() {
  MIM_RETURN_IF_ERROR(Finish());
  return Commit();
}

absl::StatusOr<absl::flat_hash_map<int64_t, int64_t>> ItemFirstSeen(
    const std::string& path) {
  auto reader = SampleReader::Open(path);
  if (!reader.ok()) return reader.status();
  absl::flat_hash_map<int64_t, int64_t> first;
  std::vector<Sample> batch;
  while (true) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(4096, &batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    for (const Sample& s : batch) {
      auto [it, inserted] = first.emplace(s.item_id, s.timestamp);
      if (!inserted && s.timestamp < it->second) it->second = s.timestamp;
    }
  }
  return first;
}

}  // namespace mim::data
