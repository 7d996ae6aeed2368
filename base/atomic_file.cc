#include "base/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace mim::base {
namespace {

absl::Status Errno(absl::string_view what, const std::string& path, int err) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

// Opens `path` with `flags` and fsyncs it; errors name the step and the
// OS error.
absl::Status OpenAndSync(const std::string& path, int flags,
                         absl::string_view open_step,
                         absl::string_view sync_step) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return Errno(open_step, path, errno);
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced) return Errno(sync_step, path, err);
  return absl::OkStatus();
}

}  // namespace

std::string TempPathFor(const std::string& path) {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::strcpy(host, "host");
  }
  // Only what a file name may hold ('/' cannot be in a host name, but the
  // name comes from the system, not from this code).
  for (char* c = host; *c != '\0'; ++c) {
    if (*c == '/') *c = '_';
  }
  return absl::StrCat(path, ".", host, "-", ::getpid(), ".tmp");
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string tmp = TempPathFor(path);
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp, errno);
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n =
        ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      std::remove(tmp.c_str());
      return Errno("write", tmp, err);
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_err = errno;
  if (::close(fd) != 0 || !synced) {
    std::remove(tmp.c_str());
    return Errno("fsync", tmp, sync_err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return Errno(absl::StrCat("rename to ", path, ":"), tmp, err);
  }
  return SyncParentDirectory(path);
}

absl::Status SyncFile(const std::string& path) {
  return OpenAndSync(path, O_RDONLY | O_CLOEXEC, "open for fsync", "fsync");
}

absl::Status SyncParentDirectory(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  return OpenAndSync(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                     "open directory", "fsync directory");
}

absl::Status ReadFileToString(const std::string& path, std::string* contents) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  contents->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) contents->append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InternalError(absl::StrCat("read error on ", path));
  return absl::OkStatus();
}

}  // namespace mim::base
