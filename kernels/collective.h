// Collectives over float buffers in device memory across processes, one GPU
// each: NCCL under --config=cuda; UNIMPLEMENTED otherwise (the default
// build and the grid emulator, which has no NCCL). The group's unique id
// travels between processes out of band (the trainer uses the parameter
// server: worker/nccl_id_exchange.h).
#ifndef MIM_KERNELS_COLLECTIVE_H_
#define MIM_KERNELS_COLLECTIVE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mim::kernels {

// One rank's membership of a group. Not thread-safe; calls are collective:
// every rank makes the same calls in the same order.
class DeviceCollective {
 public:
  virtual ~DeviceCollective() = default;

  // In place: buf[i] = the mean over the ranks of their buf[i] (NCCL
  // ncclAvg, on the default stream, ordered after the work queued there).
  // Every rank ends with the same bits. Returns once the reduction has
  // completed on the device. INVALID_ARGUMENT for n < 0 or a null buffer
  // with n > 0; INTERNAL naming the NCCL error. Hang protection (the
  // group's timeout, JoinCollective): DEADLINE_EXCEEDED naming the op, the
  // rank and the timeout when it has not completed within it (a peer died
  // or hung), INTERNAL naming the NCCL error when NCCL reports one
  // asynchronously (a peer's connection broke); either way the
  // communicator is aborted and every later call returns
  // FAILED_PRECONDITION naming that first failure.
  virtual absl::Status AllReduceMean(float* buf, int64_t n) = 0;

  virtual int rank() const = 0;
  virtual int num_ranks() const = 0;
};

// Bytes of a unique id (NCCL_UNIQUE_ID_BYTES).
inline constexpr int kCollectiveIdBytes = 128;

// A new unique id (rank 0 makes it and hands it to the others).
// UNIMPLEMENTED in a build without NCCL; UNAVAILABLE when libnccl.so.2
// cannot be loaded (it is opened at the first call); INTERNAL naming the
// NCCL error.
absl::StatusOr<std::string> NewCollectiveId();

// Joins the group `id` as `rank` of `num_ranks` on the current device;
// returns once every rank has joined (ncclCommInitRankConfig, not
// blocking, polled). `timeout` (> 0) bounds the join and each later
// collective of the group (AllReduceMean). INVALID_ARGUMENT for an id of
// another size, a bad rank or timeout; UNIMPLEMENTED or UNAVAILABLE as
// NewCollectiveId; INTERNAL naming the NCCL error; DEADLINE_EXCEEDED
// naming the rank and the timeout when the other ranks have not all
// joined within it (the half-made communicator is aborted).
absl::StatusOr<std::unique_ptr<DeviceCollective>> JoinCollective(
    const std::string& id, int rank, int num_ranks, absl::Duration timeout);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_COLLECTIVE_H_
