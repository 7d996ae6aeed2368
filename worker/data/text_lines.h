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

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mim::data {

// The writers write `path` + ".tmp" and, once it is whole, this flushes and
// closes `out` and renames the temp file over `path`: readers and a failed
// run see the old file (or none) or the complete new one. INTERNAL naming
// the file if the flush, close or rename fails (the temp file is removed,
// `path` unchanged). OK if `out` is already closed.
inline absl::Status CloseAndRename(std::ofstream* out, const std::string& path,
                                   absl::string_view what) {
  if (!out->is_open()) return absl::OkStatus();
  out->flush();
  const bool ok = static_cast<bool>(*out);
  out->close();
  const std::string tmp = path + ".tmp";
  if (!ok || out->fail()) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("flush/close failed on ", what, " ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ",
                                            path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

inline const char* UnterminatedLine() {
  return "the last line ends without a newline: the file looks cut short, "
         "and a number at its end may be truncated; every line mim writes "
         "ends with a newline, so if this line is complete, add one";
}

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_TEXT_LINES_H_
