#include "worker/trainer_sync.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "proto/ps.pb.h"

namespace mim::worker {

PsDenseParams::PsDenseParams(ps::PsClient* client, std::string table,
                             std::vector<float> initial)
    : client_(client), table_(std::move(table)), initial_(std::move(initial)) {
  const int64_t chunks =
      (static_cast<int64_t>(initial_.size()) + kDenseChunk - 1) / kDenseChunk;
  keys_.resize(chunks);
  for (int64_t c = 0; c < chunks; ++c) keys_[c] = static_cast<uint64_t>(c);
  buffer_.assign(chunks * kDenseChunk, 0.0f);
}

absl::StatusOr<std::unique_ptr<PsDenseParams>> PsDenseParams::Create(
    ps::PsClient* client, const std::string& table, std::vector<float> initial,
    const AdamOptions& adam, uint64_t seed) {
  if (initial.empty()) {
    return absl::InvalidArgumentError("dense parameter vector is empty");
  }
  ps::TableConfig config;
  config.set_name(table);
  config.set_kind(ps::ID);
  config.set_dim(kDenseChunk);
  config.mutable_optimizer()->set_name("adam");
  config.mutable_optimizer()->set_learning_rate(adam.learning_rate);
  config.mutable_optimizer()->set_beta1(adam.beta1);
  config.mutable_optimizer()->set_beta2(adam.beta2);
  config.mutable_optimizer()->set_epsilon(adam.epsilon);
  config.mutable_initializer()->set_name("zeros");
  config.mutable_initializer()->set_seed(seed);
  absl::Status created = client->CreateTable(config, /*if_not_exists=*/true);
  if (!created.ok()) return created;
  return std::unique_ptr<PsDenseParams>(
      new PsDenseParams(client, table, std::move(initial)));
}

absl::Status PsDenseParams::Fetch(std::vector<float>* params) {
  absl::Status pulled =
      client_->PullInto(table_, keys_, absl::MakeSpan(buffer_), nullptr);
  if (!pulled.ok()) return pulled;
  params->resize(initial_.size());
  for (size_t i = 0; i < initial_.size(); ++i) {
    (*params)[i] = initial_[i] + buffer_[i];
  }
  return absl::OkStatus();
}

absl::Status PsDenseParams::PushGradient(absl::Span<const float> gradient) {
  if (gradient.size() != initial_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense gradient has ", gradient.size(),
                     " floats; expected ", initial_.size()));
  }
  std::copy(gradient.begin(), gradient.end(), buffer_.begin());
  std::fill(buffer_.begin() + gradient.size(), buffer_.end(), 0.0f);
  absl::StatusOr<uint64_t> pushed = client_->Push(table_, keys_, buffer_);
  return pushed.ok() ? absl::OkStatus() : pushed.status();
}

FinishBarrier::FinishBarrier(ps::PsClient* client, std::string table,
                             int num_workers, int worker_index,
                             std::vector<float> start)
    : client_(client),
      table_(std::move(table)),
      num_workers_(num_workers),
      worker_index_(worker_index),
      start_(std::move(start)) {}

absl::StatusOr<std::unique_ptr<FinishBarrier>> FinishBarrier::Create(
    ps::PsClient* client, const std::string& table, int num_workers,
    int worker_index) {
  ps::TableConfig config;
  config.set_name(table);
  config.set_kind(ps::ID);
  config.set_dim(1);
  config.mutable_optimizer()->set_name("sgd");
  config.mutable_optimizer()->set_learning_rate(1.0f);
  config.mutable_initializer()->set_name("zeros");
  absl::Status created = client->CreateTable(config, /*if_not_exists=*/true);
  if (!created.ok()) return created;
  std::vector<uint64_t> keys(2 * num_workers);
  for (size_t k = 0; k < keys.size(); ++k) keys[k] = k;
  absl::StatusOr<ps::PsClient::GetRowsResult> rows =
      client->GetRows(table, keys);
  if (!rows.ok()) return rows.status();
  if (rows->values.size() != keys.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "barrier table ", table, " has dim ", rows->dim, "; expected 1"));
  }
  for (int w = 0; w < num_workers; ++w) {
    if (rows->values[num_workers + w] > 0.5f) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", w, " of a data-parallel run over these tables failed ",
          "(barrier table ", table, "); the tables may be half-trained: ",
          "start over with a new --table_prefix"));
    }
  }
  return std::unique_ptr<FinishBarrier>(new FinishBarrier(
      client, table, num_workers, worker_index, std::move(rows->values)));
}

absl::Status FinishBarrier::Add(uint64_t key) {
  const float minus_one = -1.0f;
  absl::StatusOr<uint64_t> pushed = client_->Push(
      table_, absl::MakeConstSpan(&key, 1), absl::MakeConstSpan(&minus_one, 1));
  if (pushed.ok()) return absl::OkStatus();
  if (!ps::IsPushInDoubt(pushed.status())) return pushed.status();
  // No answer in time: the client kept the mark, and its resend is applied
  // exactly once (counted once by WaitAll) or fails here.
  absl::Status settled = client_->ResolvePushesInDoubt();
  if (settled.ok()) return settled;
  return absl::Status(settled.code(),
                      absl::StrCat("marking key ", key, " of barrier table ",
                                   table_, ": ", settled.message()));
}

absl::Status FinishBarrier::Arrive() {
  return Add(static_cast<uint64_t>(worker_index_));
}

absl::Status FinishBarrier::Fail() {
  return Add(static_cast<uint64_t>(num_workers_ + worker_index_));
}

absl::Status FinishBarrier::WaitAll(absl::Duration timeout,
                                    absl::Duration poll) {
  std::vector<uint64_t> keys(2 * num_workers_);
  for (size_t k = 0; k < keys.size(); ++k) keys[k] = k;
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<int> missing;
  while (true) {
    absl::StatusOr<ps::PsClient::GetRowsResult> rows =
        client_->GetRows(table_, keys);
    if (!rows.ok()) return rows.status();
    missing.clear();
    // Counts are small integers, exact in float; +0.5 guards rounding.
    for (int w = 0; w < num_workers_; ++w) {
      if (rows->values[num_workers_ + w] > 0.5f) {
        return absl::AbortedError(absl::StrCat(
            "worker ", w, " of ", num_workers_, " reported a failure"));
      }
      if (rows->values[w] < start_[worker_index_] + 0.5f) missing.push_back(w);
    }
    if (missing.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "workers [", absl::StrJoin(missing, ", "),
          "] did not finish within ", absl::FormatDuration(timeout)));
    }
    // The shards have no notification RPC, so the barrier polls.
    absl::SleepFor(poll);
  }
}

}  // namespace mim::worker
