// What the line-oriented readers of mim's text files (samples, content
// vectors) say about a last line that ends without a newline, and how their
// writers put a finished file in place.
//
// Every line mim writes ends with a newline, so a last line without one is
// what a file cut short leaves, and a number at its end may be truncated
// ("1234" cut to "12" still parses): the readers refuse it, naming the line,
// instead of reading a shortened id or value.
//
// Thread-safety: reentrant.
#ifndef MIM_WORKER_DATA_TEXT_LINES_H_
#define MIM_WORKER_DATA_TEXT_LINES_H_

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mim::data {

// The writers write `path` + ".tmp"; once it is whole, FinishTemp flushes
// and closes it and CommitTemp renames it over `path`, so readers and a
// failed run see the old file (or none) or the complete new one. A tool
// with several outputs finishes them all before it commits any. Not crash
// durable (no fsync): it guards against failed and abandoned runs.

// Flushes and closes `out` (OK if already closed). INTERNAL naming the temp
// file if that fails; the temp file is then removed.
inline absl::Status FinishTemp(std::ofstream* out, const std::string& path,
                               absl::string_view what) {
  if (!out->is_open()) return absl::OkStatus();
  out->flush();
  const bool ok = static_cast<bool>(*out);
  out->close();
  if (!ok || out->fail()) {
    std::remove((path + ".tmp").c_str());
    return absl::InternalError(
        absl::StrCat("flush/close failed on ", what, " ", path, ".tmp"));
  }
  return absl::OkStatus();
}

// Renames `path` + ".tmp" over `path`. INTERNAL naming both on failure (the
// temp file is then removed, `path` unchanged).
inline absl::Status CommitTemp(const std::string& path) {
  const std::string tmp = path + ".tmp";
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ",
                                            path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// FinishTemp, then CommitTemp.
inline absl::Status CloseAndRename(std::ofstream* out, const std::string& path,
                                   absl::string_view what) {
  if (absl::Status st = FinishTemp(out, path, what); !st.ok()) return st;
  return CommitTemp(path);
}

// One output written as `path` + ".tmp": out() takes the writes, Finish
// and Commit as FinishTemp and CommitTemp (Commit before Finish is
// FAILED_PRECONDITION; both are no-ops once done). Destroyed before Commit,
// it removes the temp file and the old file stays. Not thread-safe.
class TempFile {
 public:
  // `out` is open on path + ".tmp"; `what` names the file in errors.
  TempFile(std::string path, std::ofstream out, std::string what)
      : path_(std::move(path)), what_(std::move(what)), out_(std::move(out)) {}
  ~TempFile() {
    if (out_.is_open()) out_.close();
    if (!committed_) std::remove((path_ + ".tmp").c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  std::ofstream& out() { return out_; }
  const std::string& path() const { return path_; }
  absl::Status Finish() { return FinishTemp(&out_, path_, what_); }
  absl::Status Commit() {
    if (committed_) return absl::OkStatus();
    if (out_.is_open()) {
      return absl::FailedPreconditionError(
          absl::StrCat("commit of ", what_, " ", path_, " before Finish"));
    }
    committed_ = true;
    return CommitTemp(path_);
  }

 private:
  const std::string path_;
  const std::string what_;
  std::ofstream out_;
  bool committed_ = false;
};

inline const char* UnterminatedLine() {
  return "the last line ends without a newline: the file looks cut short, "
         "and a number at its end may be truncated; every line mim writes "
         "ends with a newline, so if this line is complete, add one";
}

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_TEXT_LINES_H_
