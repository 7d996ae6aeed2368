#include "bench/bench_util.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mim::bench {

uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

void ExpectedRow(uint64_t id, uint32_t dim, float* out) {
  for (uint32_t j = 0; j < dim; ++j) {
    const uint64_t h = Mix(id * 131 + j);
    out[j] = static_cast<float>(static_cast<int32_t>(h >> 44) - (1 << 19)) /
             1024.0f;
  }
}

absl::StatusOr<ProcUsage> UsageOf(pid_t pid) {
  ProcUsage u;
  if (pid <= 0) return u;
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  std::ifstream in(path);
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name, which may hold spaces: "pid (comm) S ...".
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 > stat.size()) {
    return absl::InternalError(absl::StrCat("cannot read ", path));
  }
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
  // f[0] is field 3 (state): minflt is field 10, utime 14, stime 15.
  uint64_t minflt = 0, utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[7], &minflt) ||
      !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) {
    return absl::InternalError(absl::StrCat("cannot parse ", path));
  }
  u.minflt = minflt;
  u.cpu_seconds = static_cast<double>(utime + stime) /
                  static_cast<double>(sysconf(_SC_CLK_TCK));
  return u;
}

ProcUsage SelfUsage() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  ProcUsage u;
  u.minflt = static_cast<uint64_t>(r.ru_minflt);
  u.cpu_seconds = r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 +
                  r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
  return u;
}

}  // namespace mim::bench
