// Streaming reader and writer for sample files ("mim-samples v1",
// see sample.h and docs/DATA_FORMAT.md). A file is never loaded whole: the
// reader holds one line buffer and hands out batches of at most N samples.
#ifndef MIM_WORKER_DATA_SAMPLE_IO_H_
#define MIM_WORKER_DATA_SAMPLE_IO_H_

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/text_lines.h"
#include "worker/data/sample.h"

namespace mim::data {

// Reads a sample file front to back in batches.
// Not thread-safe: one reader per consumer thread.
class SampleReader {
 public:
  // Opens `path` and checks its header line.
  // Errors: NOT_FOUND if the file cannot be opened; INVALID_ARGUMENT if the
  // first line is not kSampleHeader (message names the file).
  static absl::StatusOr<std::unique_ptr<SampleReader>> Open(
      const std::string& path);

  // Replaces `*batch` with the next up-to-`max_samples` samples (max >= 1).
  // Returns the number read; 0 means end of file (and stays 0).
  // Errors: INVALID_ARGUMENT for a malformed row, message
  // "<file>:<line>: <field problem>"; DATA_LOSS on a read error. After an
  // error the reader should not be used again.
  absl::StatusOr<size_t> ReadBatch(size_t max_samples,
                                   std::vector<Sample>* batch);

  // 1-based line number of the last line read (the header is line 1).
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  SampleReader(std::string path, std::ifstream in);

  std::string path_;
  std::ifstream in_;
  std::string line_;
  int64_t line_number_ = 0;
};

// Writes a sample file: the header on Open, one row per Write.
// Not thread-safe.
class SampleWriter {
 public:
  // Writes the header to a temp file beside `path` (base::TempPathFor);
  // Close renames it over `path`, so `path` holds the old file (or none)
  // until a complete new one replaces it: a failed or abandoned write
  // (destroyed without Close) leaves it as it was. Errors: INTERNAL if the
  // file cannot be created or written.
  static absl::StatusOr<std::unique_ptr<SampleWriter>> Open(
      const std::string& path);

  // Appends one row. Errors: INTERNAL on a write failure.
  absl::Status Write(const Sample& s);

  // Flushes and closes; further writes fail. Errors: INTERNAL if the flush
  // fails (a full disk shows up here). Destruction without Close discards
  // errors, so call it.
  // Close in two steps, for a tool with several outputs that finishes them
  // all before it puts any in place: Finish flushes and closes the temp
  // file (errors as Close; no more writes), Commit renames it over the
  // path. Close does both. A writer destroyed before Commit removes its
  // temp file, leaving the old file.
  absl::Status Finish();
  absl::Status Commit();

  absl::Status Close();

  int64_t num_written() const { return num_written_; }

 private:
  explicit SampleWriter(std::string path);

  TempFile file_;
  int64_t num_written_ = 0;
};

// Streams `path` once and returns item_id -> smallest timestamp at which the
// item appears as a target. Errors as SampleReader.
absl::StatusOr<absl::flat_hash_map<int64_t, int64_t>> ItemFirstSeen(
    const std::string& path);

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_SAMPLE_IO_H_
