// Pieces the parameter-server benches share (ps_bench, grpc_ceiling): the
// deterministic rows every answer is checked against, and a process's CPU
// time and page faults.
#ifndef MIM_BENCH_BENCH_UTIL_H_
#define MIM_BENCH_BENCH_UTIL_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace mim::bench {

// splitmix64's finalizer: a bijection, so distinct inputs stay distinct.
uint64_t Mix(uint64_t x);

// The row for `id` (a key in ps_bench, a row index in grpc_ceiling):
// multiples of 1/1024 in [-512, 512), exact in float32 (so Push of -value
// onto zeros stores it bit for bit), and neither constant nor trivially
// compressible.
void ExpectedRow(uint64_t id, uint32_t dim, float* out);

// CPU seconds (user + system) and minor page faults of a process.
struct ProcUsage {
  double cpu_seconds = 0;
  uint64_t minflt = 0;
};

// Of process `pid`, from /proc/<pid>/stat; zeros when pid <= 0 (a server
// the bench did not start). INTERNAL when the file cannot be read or parsed.
absl::StatusOr<ProcUsage> UsageOf(pid_t pid);

// Of the calling process (all its threads).
ProcUsage SelfUsage();

}  // namespace mim::bench

#endif  // MIM_BENCH_BENCH_UTIL_H_
