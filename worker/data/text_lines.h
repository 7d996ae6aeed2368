// What the line-oriented readers of mim's text files (samples, content
// vectors) say about a last line that ends without a newline, how long a
// line they read, and how their writers put a finished file in place.
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
#include <istream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/atomic_file.h"

namespace mim::data {

// One output written as base::TempPathFor(path) (`path`.<host>-<pid>.tmp)
// and put in place by a rename once whole, so that readers and a failed run see the
// old file (or none) or the complete new one. A tool with several outputs
// finishes them all before it commits any. Finish fsyncs the temp file and
// Commit the directory after the rename, so a committed file survives a
// crash or power loss whole. Destroyed before Commit, it removes the temp
// file and the old file stays. Two runs writing the same path at once each
// write a temp file of their own, so the path ends up holding one run's
// whole file (the last to commit). Not thread-safe.
class TempFile {
 public:
  // Creates (truncates) the temp file; `what` names the file in errors.
  // Check Opened before writing.
  TempFile(std::string path, std::string what)
      : path_(std::move(path)),
        tmp_(base::TempPathFor(path_)),
        what_(std::move(what)),
        out_(tmp_, std::ios::out | std::ios::trunc) {}
  ~TempFile() {
    if (out_.is_open()) out_.close();
    if (!committed_) std::remove(tmp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  // INTERNAL naming the temp file if it could not be created.
  absl::Status Opened() const {
    if (out_.is_open()) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("cannot create ", what_, " ", tmp_));
  }
  std::ofstream& out() { return out_; }
  const std::string& path() const { return path_; }
  // Where the file is written until Commit.
  const std::string& temp_path() const { return tmp_; }
  // Flushes, closes and fsyncs the temp file (OK if already done).
  // INTERNAL naming it if that fails; the temp file is then removed.
  absl::Status Finish() {
    if (!out_.is_open()) return absl::OkStatus();
    out_.flush();
    const bool ok = static_cast<bool>(out_);
    out_.close();
    if (!ok || out_.fail()) {
      std::remove(tmp_.c_str());
      return absl::InternalError(
          absl::StrCat("flush/close failed on ", what_, " ", tmp_));
    }
    if (absl::Status s = base::SyncFile(tmp_); !s.ok()) {
      std::remove(tmp_.c_str());
      return absl::InternalError(absl::StrCat(what_, ": ", s.message()));
    }
    return absl::OkStatus();
  }
  // Renames the temp file over the path and fsyncs the directory (OK if
  // already done); FAILED_PRECONDITION before Finish; INTERNAL naming both
  // if the rename fails (the temp file is then removed, the path
  // unchanged), or naming the directory if its fsync fails (the new file is
  // then in place but may not survive a crash).
  absl::Status Commit() {
    if (committed_) return absl::OkStatus();
    if (out_.is_open()) {
      return absl::FailedPreconditionError(
          absl::StrCat("commit of ", what_, " ", path_, " before Finish"));
    }
    committed_ = true;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      std::remove(tmp_.c_str());
      return absl::InternalError(absl::StrCat("cannot rename ", tmp_, " to ",
                                              path_, ": ", std::strerror(err)));
    }
    if (absl::Status s = base::SyncParentDirectory(path_); !s.ok()) {
      return absl::InternalError(absl::StrCat(what_, ": ", s.message()));
    }
    return absl::OkStatus();
  }

 private:
  const std::string path_;
  const std::string tmp_;
  const std::string what_;
  std::ofstream out_;
  bool committed_ = false;
};

// The longest line the readers take, in bytes without the newline: far
// above any sample (a behaviour sequence of 100,000 ids) or content vector
// (kMaxContentVectorDim floats) line, and a bound on what one line holds
// in memory when a file has no newlines (a binary file, or another
// format).
inline constexpr size_t kMaxLineBytes = size_t{16} << 20;

enum class LineRead { kLine, kEnd, kTooLong };

// std::getline with a bound: reads the next line into *line (newline
// dropped). kEnd at the end of the input or on a read error (in.bad()
// tells); kTooLong once the line passes `max` bytes (the stream is then
// left failed). After kLine, in.eof() is true when the line ended without
// a newline, as with std::getline.
inline LineRead ReadLine(std::istream& in, std::string* line,
                         size_t max = kMaxLineBytes) {
  line->clear();
  const auto too_long = [&] {
    line->clear();
    in.setstate(std::ios::failbit);
    return LineRead::kTooLong;
  };
  char chunk[1 << 12];
  for (;;) {
    // istream::getline stores up to sizeof(chunk) - 1 bytes; it sets
    // failbit when it stored that many and no newline followed, or when it
    // read nothing at all.
    in.getline(chunk, sizeof(chunk));
    const size_t got = static_cast<size_t>(in.gcount());
    if (in.eof()) {
      line->append(chunk, got);
      if (line->empty()) return LineRead::kEnd;
      in.clear(std::ios::eofbit);  // a last line without a newline
      return line->size() > max ? too_long() : LineRead::kLine;
    }
    if (!in.fail()) {  // ended by a newline, counted in gcount
      line->append(chunk, got - 1);
      return line->size() > max ? too_long() : LineRead::kLine;
    }
    if (in.bad() || got == 0) return LineRead::kEnd;
    line->append(chunk, got);  // the chunk is full: the line goes on
    if (line->size() > max) return too_long();
    in.clear();
  }
}

// The error text for ReadLine's kTooLong.
inline std::string LineTooLong(size_t max = kMaxLineBytes) {
  return absl::StrCat("the line is longer than ", max,
                      " bytes: is this a text file of this format with a "
                      "newline after every line?");
}

inline const char* UnterminatedLine() {
  return "the last line ends without a newline: the file looks cut short, "
         "and a number at its end may be truncated; every line mim writes "
         "ends with a newline, so if this line is complete, add one";
}

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_TEXT_LINES_H_
