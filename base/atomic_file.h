// Writing a whole file so that readers and crashes see either the old file
// (or none) or the complete new one.
#ifndef MIM_BASE_ATOMIC_FILE_H_
#define MIM_BASE_ATOMIC_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mim::base {

// The temp file a writer of `path` in this process puts beside it before
// the rename: `path` + "." + the host name + "-" + the process id +
// ".tmp". Two processes writing one path at once (two runs given the same
// output directory, on one machine or on two containers sharing a volume,
// whose process ids often coincide) therefore never write into the same
// temp file: each renames a whole file of its own over `path`, and the
// last rename wins. (With one shared name, both wrote into one file, and
// whatever they left there was renamed into place.) A crash leaves its
// temp file behind, named by host and process; nothing removes it.
std::string TempPathFor(const std::string& path);

// Writes `contents` to TempPathFor(path), fsyncs it, renames it over `path`
// and fsyncs the directory. On success `path` holds exactly `contents`; on
// failure `path` is unchanged, the temp file is removed and the status is
// INTERNAL naming the step and the OS error. Safe for concurrent access to
// distinct paths, and from several processes to one path; two threads of
// one process writing one path race on the temp file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// fsyncs the file at `path` (already written and closed). INTERNAL naming
// it and the OS error on failure.
absl::Status SyncFile(const std::string& path);

// fsyncs the directory that holds `path` (after a rename into it, so the
// new name survives a crash). INTERNAL naming the directory on failure.
absl::Status SyncParentDirectory(const std::string& path);

// Reads the whole file. NOT_FOUND if it cannot be opened, INTERNAL on a read
// error.
absl::Status ReadFileToString(const std::string& path, std::string* contents);

}  // namespace mim::base

#endif  // MIM_BASE_ATOMIC_FILE_H_
