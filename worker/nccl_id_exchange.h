// Hands the NCCL unique id of a data-parallel run from worker 0 to every
// other worker through the parameter server, which all of them already
// reach (NCCL needs the 128-byte id out of band before any GPU talks).
//
// Scheme: a CONTENT table of dim 128 (one float per id byte, 0..255, exact
// in float). Row 0 holds the id, its row version the run's generation;
// row 1 + w counts worker w's exchanges (as its version). A worker's
// generation is its own count + 1: workers of one run over the same table
// have taken part in the same earlier exchanges, so they agree on it
// without talking, and an id left by an earlier run (an older version) is
// never taken for this run's. Worker 0 publishes its id with that version;
// the others wait for exactly that version.
#ifndef MIM_WORKER_NCCL_ID_EXCHANGE_H_
#define MIM_WORKER_NCCL_ID_EXCHANGE_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ps/client.h"

namespace mim::worker {

inline constexpr int kNcclIdBytes = 128;

struct NcclIdExchangeOptions {
  absl::Duration timeout = absl::Minutes(5);  // waiting for worker 0
  absl::Duration poll = absl::Milliseconds(50);
};

// Worker `worker_index` of `num_workers`: worker 0 calls `make_id` (e.g.
// ncclGetUniqueId) and publishes the bytes (exactly kNcclIdBytes); every
// worker returns the id of this run. Creates `table` if needed (CONTENT,
// dim kNcclIdBytes). Errors: INVALID_ARGUMENT for a bad index or an id of
// another size; DEADLINE_EXCEEDED naming the generation when worker 0 has
// not published within options.timeout; FAILED_PRECONDITION when the table
// already holds a later generation than this worker's (the workers of
// earlier runs over the table did not all get this far: start over with a
// new --table_prefix); the client's errors otherwise. Thread-safe as the
// client is; one call per worker and run.
absl::StatusOr<std::string> ExchangeNcclId(
    ps::PsClient* client, const std::string& table, int num_workers,
    int worker_index, const std::function<absl::StatusOr<std::string>()>& make_id,
    const NcclIdExchangeOptions& options = {});

}  // namespace mim::worker

#endif  // MIM_WORKER_NCCL_ID_EXCHANGE_H_
