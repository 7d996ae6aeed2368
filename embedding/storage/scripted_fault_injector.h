// A StorageFaultInjector for tests: fails the chosen operation on the paths
// a matcher picks (Contains({"/db/", ".log"}) for the live WAL), from the
// n-th matching call on, until cleared.
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_EMBEDDING_STORAGE_SCRIPTED_FAULT_INJECTOR_H_
#define MIM_EMBEDDING_STORAGE_SCRIPTED_FAULT_INJECTOR_H_

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "embedding/storage/storage.h"

namespace mim::embedding {

class ScriptedFaultInjector : public StorageFaultInjector {
 public:
  using PathMatcher = std::function<bool(absl::string_view path)>;

  // Paths containing every one of `parts`.
  static PathMatcher Contains(std::vector<std::string> parts) {
    return [parts = std::move(parts)](absl::string_view path) {
      for (const std::string& part : parts) {
        if (!absl::StrContains(path, part)) return false;
      }
      return true;
    };
  }
  // Paths ending in `suffix`.
  static PathMatcher EndsWith(std::string suffix) {
    return [suffix = std::move(suffix)](absl::string_view path) {
      return absl::EndsWith(path, suffix);
    };
  }

  // From now on, calls of `op` on a path that `matches` fail once `skip` of
  // them have passed, until Clear(). A failed write first writes
  // `torn_bytes` of its data (0: nothing).
  void FailFrom(Op op, PathMatcher matches, int skip = 0,
                size_t torn_bytes = 0) {
    absl::MutexLock lock(&mu_);
    armed_ = true;
    op_ = op;
    matches_ = std::move(matches);
    skip_ = skip;
    torn_bytes_ = torn_bytes;
  }

  void Clear() {
    absl::MutexLock lock(&mu_);
    armed_ = false;
  }

  // Calls failed so far, and the path of the last one.
  int failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  std::string last_failed_path() const {
    absl::MutexLock lock(&mu_);
    return last_failed_path_;
  }

  absl::Status Check(Op op, absl::string_view path,
                     size_t* write_prefix) override {
    absl::MutexLock lock(&mu_);
    if (!armed_ || op != op_ || !matches_(path)) return absl::OkStatus();
    if (skip_ > 0) {
      --skip_;
      return absl::OkStatus();
    }
    ++failures_;
    last_failed_path_ = std::string(path);
    if (write_prefix != nullptr) {
      *write_prefix = std::min(*write_prefix, torn_bytes_);
    }
    return absl::InternalError(absl::StrCat("injected ", Name(op), " fault"));
  }

 private:
  static const char* Name(Op op) {
    switch (op) {
      case Op::kWrite:
        return "write";
      case Op::kSync:
        return "sync";
      case Op::kRename:
        return "rename";
    }
    return "?";
  }

  mutable absl::Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  Op op_ ABSL_GUARDED_BY(mu_) = Op::kWrite;
  PathMatcher matches_ ABSL_GUARDED_BY(mu_);
  int skip_ ABSL_GUARDED_BY(mu_) = 0;
  size_t torn_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_failed_path_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_SCRIPTED_FAULT_INJECTOR_H_
