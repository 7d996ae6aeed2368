// State shared by data-parallel trainer processes through the parameter
// server: the dense parameters (an Adam-optimised ID table) and an
// end-of-training barrier (a counter table).
//
// Dense scheme: the flat dense vector is cut into chunks of kDenseChunk
// floats; chunk c is row c of an ID table of zeros-initialised rows whose
// optimizer is Adam. Every worker builds the same seed-deterministic initial
// vector locally, so params = initial + row values on the shard. Each step a
// worker pulls the rows, computes its gradient and pushes it; the shard's
// Adam applies each push as it arrives (asynchronous data parallelism, like
// the sparse rows). Pushes from several workers are serialised per row by
// the shard, so no update is lost; a worker may compute on parameters one
// or a few pushes old.
#ifndef MIM_WORKER_TRAINER_SYNC_H_
#define MIM_WORKER_TRAINER_SYNC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ps/client.h"

namespace mim::worker {

inline constexpr int kDenseChunk = 64;

// Not thread-safe (owned by the training loop; the client is shared).
class PsDenseParams {
 public:
  struct AdamOptions {
    float learning_rate = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float epsilon = 1e-8f;
  };

  // Creates the table `table` (if_not_exists; every worker passes the same
  // config) on the shards. Errors as PsClient::CreateTable, e.g.
  // ALREADY_EXISTS when a table of that name has another config.
  static absl::StatusOr<std::unique_ptr<PsDenseParams>> Create(
      ps::PsClient* client, const std::string& table,
      std::vector<float> initial, const AdamOptions& adam, uint64_t seed);

  // *params = initial + the shard rows (resized to initial's size).
  absl::Status Fetch(std::vector<float>* params);

  // Pushes `gradient` (one float per parameter); INVALID_ARGUMENT when the
  // size differs from the parameter count.
  absl::Status PushGradient(absl::Span<const float> gradient);

  const std::string& table() const { return table_; }
  int64_t num_chunks() const { return static_cast<int64_t>(keys_.size()); }

 private:
  PsDenseParams(ps::PsClient* client, std::string table,
                std::vector<float> initial);

  ps::PsClient* client_;
  std::string table_;
  std::vector<float> initial_;
  std::vector<uint64_t> keys_;
  std::vector<float> buffer_;  // num_chunks * kDenseChunk
};

// Counts finished workers: worker i adds 1 to row i of an SGD table (lr 1,
// zero init) with a gradient of -1. A run's workers all start with equal
// counts, since every earlier run over the same table finished on every
// worker; so "done" means every row exceeds the count worker 0 saw at
// start. A failing worker adds 1 to row num_workers + i instead; such a
// mark fails worker 0's wait and every later Create over the same table
// (the tables are then half-trained). Not thread-safe.
class FinishBarrier {
 public:
  // Creates the table if needed and reads the starting count.
  // FAILED_PRECONDITION if a worker of an earlier run over this table
  // reported a failure.
  static absl::StatusOr<std::unique_ptr<FinishBarrier>> Create(
      ps::PsClient* client, const std::string& table, int num_workers,
      int worker_index);

  // Marks this worker finished.
  absl::Status Arrive();

  // Marks this worker failed.
  absl::Status Fail();

  // Returns once every worker has arrived (polling the shards every
  // `poll`); ABORTED naming a worker that reported failure;
  // DEADLINE_EXCEEDED naming the workers still missing after
  // `timeout`.
  absl::Status WaitAll(absl::Duration timeout,
                       absl::Duration poll = absl::Milliseconds(100));

 private:
  FinishBarrier(ps::PsClient* client, std::string table, int num_workers,
                int worker_index, std::vector<float> start);

  absl::Status Add(uint64_t key);

  ps::PsClient* client_;
  std::string table_;
  int num_workers_;
  int worker_index_;
  // Rows 0 .. 2 * num_workers - 1 as read at Create (the arrival counts
  // 0 .. num_workers - 1 are used).
  std::vector<float> start_;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_TRAINER_SYNC_H_
