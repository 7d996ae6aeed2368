// The hang protection of a collective (collective_nccl.cu): NCCL has no
// blocking wait with a deadline, and a collective whose peer died waits on
// the device forever, so the host polls the operation's state and aborts
// the communicator once a deadline passes or an asynchronous error shows.
// Plain C++ without NCCL, so its contract is tested on any machine
// (collective_watchdog_test.cc); the NCCL calls it drives are built only
// under --config=cuda.
#ifndef MIM_KERNELS_COLLECTIVE_WATCHDOG_H_
#define MIM_KERNELS_COLLECTIVE_WATCHDOG_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace mim::kernels {

// Polls `poll` until the operation `what` (e.g. "ncclAllReduce of 1200
// floats, rank 1 of 2") is done, backing off from 50 us to 10 ms between
// polls (the first poll is at once). `poll` returns true when done, false
// while running, or an error (an asynchronous failure).
// Outcomes:
//  - done: OK; `abort` is not called.
//  - `poll` fails: `abort` is called once, and the error is returned.
//  - not done `timeout` after the call: `abort` is called once, and
//    DEADLINE_EXCEEDED "<what> did not complete within <timeout>; ..." is
//    returned (the operation may still be queued; after `abort` it must
//    not be waited for).
// Thread-safety: reentrant; `poll` and `abort` run on the calling thread.
absl::Status AwaitWithWatchdog(absl::string_view what, absl::Duration timeout,
                               const std::function<absl::StatusOr<bool>()>& poll,
                               const std::function<void()>& abort);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_COLLECTIVE_WATCHDOG_H_
