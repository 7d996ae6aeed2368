// Small helpers shared by the libFuzzer targets in tests/fuzz (built by
// tools/fuzz.sh with clang, outside Bazel; see tests/fuzz/README.md).
//
// Not thread-safe: a fuzz target runs one input at a time on one thread.
#ifndef MIM_TESTS_FUZZ_FUZZ_UTIL_H_
#define MIM_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mim::fuzz {

// This process's scratch directory, "$TMPDIR/mim-fuzz-<pid>" (or under
// /tmp), created on first use and removed when the process exits normally.
// A crashing input leaves it behind; tools/fuzz.sh runs each target in its
// own TMPDIR and removes that.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* d = new std::string(absl::StrCat(
        tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/mim-fuzz-", getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

// Writes `bytes` to ScratchDir()/name (replacing it) and returns the path.
// Aborts if the file cannot be written: the harness, not the input, is
// broken then.
inline std::string WriteScratchFile(absl::string_view name,
                                    absl::string_view bytes) {
  std::string path = absl::StrCat(ScratchDir(), "/", name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

// A fresh empty directory ScratchDir()/name (removed first if present).
inline std::string FreshScratchDir(absl::string_view name) {
  std::string path = absl::StrCat(ScratchDir(), "/", name);
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  std::filesystem::create_directories(path);
  return path;
}

// Aborts with `what` when `ok` is false: a broken invariant in a target is
// a finding like a crash (libFuzzer saves the input).
inline void Require(bool ok, absl::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz invariant broken: %.*s\n",
               static_cast<int>(what.size()), what.data());
  std::abort();
}

// libFuzzer's (data, size) input as text.
inline absl::string_view AsStringView(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace mim::fuzz

#endif  // MIM_TESTS_FUZZ_FUZZ_UTIL_H_
