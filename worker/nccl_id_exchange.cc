#include "worker/nccl_id_exchange.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/ps.pb.h"

namespace mim::worker {
namespace {

constexpr uint64_t kIdKey = 0;
uint64_t CountKey(int worker) { return 1 + static_cast<uint64_t>(worker); }

// Version of `key` (0 when the row does not exist) and its bytes.
absl::Status ReadRow(ps::PsClient* client, const std::string& table,
                     uint64_t key, uint64_t* version, std::string* bytes) {
  MIM_ASSIGN_OR_RETURN(ps::PsClient::GetRowsResult rows,
                       client->GetRows(table, absl::MakeConstSpan(&key, 1)));
  if (rows.values.size() != static_cast<size_t>(kNcclIdBytes) ||
      rows.meta.size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NCCL id table ", table, " has dim ", rows.values.size(),
        "; expected ", kNcclIdBytes));
  }
  *version = rows.meta[0].version();
  if (bytes != nullptr) {
    bytes->resize(kNcclIdBytes);
    for (int i = 0; i < kNcclIdBytes; ++i) {
      const float v = rows.values[i];
      if (!(v >= 0.0f && v <= 255.0f)) {
        return absl::DataLossError(absl::StrCat(
            "NCCL id table ", table, ": byte ", i, " reads ", v,
            "; expected 0..255"));
      }
      (*bytes)[i] = static_cast<char>(static_cast<uint8_t>(v));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteRow(ps::PsClient* client, const std::string& table,
                      uint64_t key, const std::string& bytes,
                      uint64_t version) {
  std::vector<float> values(kNcclIdBytes, 0.0f);
  for (size_t i = 0; i < bytes.size(); ++i) {
    values[i] = static_cast<float>(static_cast<uint8_t>(bytes[i]));
  }
  return client->Upsert(table, absl::MakeConstSpan(&key, 1), values, version)
      .status();
}

}  // namespace

absl::StatusOr<std::string> ExchangeNcclId(
    ps::PsClient* client, const std::string& table, int num_workers,
    int worker_index, const std::function<absl::StatusOr<std::string>()>& make_id,
    const NcclIdExchangeOptions& options) {
  if (num_workers < 1 || worker_index < 0 || worker_index >= num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NCCL id exchange: worker ", worker_index, " of ", num_workers,
        "; expected 0 <= worker < num_workers"));
  }
  ps::TableConfig config;
  config.set_name(table);
  config.set_kind(ps::CONTENT);
  config.set_dim(kNcclIdBytes);
  MIM_RETURN_IF_ERROR(client->CreateTable(config, /*if_not_exists=*/true));

  uint64_t count = 0;
  MIM_RETURN_IF_ERROR(
      ReadRow(client, table, CountKey(worker_index), &count, nullptr));
  const uint64_t generation = count + 1;
  // Count this exchange first: a worker that fails below has still taken
  // part, as its peers have.
  MIM_RETURN_IF_ERROR(WriteRow(client, table, CountKey(worker_index),
                               std::string(), generation));
  if (worker_index == 0) {
    MIM_ASSIGN_OR_RETURN(std::string id, make_id());
    if (id.size() != static_cast<size_t>(kNcclIdBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NCCL unique id of ", id.size(), " bytes; expected ", kNcclIdBytes));
    }
    uint64_t published = 0;
    MIM_RETURN_IF_ERROR(ReadRow(client, table, kIdKey, &published, nullptr));
    if (published >= generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "NCCL id table ", table, " already holds generation ", published,
          " but worker 0 is at generation ", generation,
          ": earlier runs over this table did not all reach the exchange; "
          "start over with a new --table_prefix"));
    }
    MIM_RETURN_IF_ERROR(WriteRow(client, table, kIdKey, id, generation));
    return id;
  }
  const absl::Time deadline = absl::Now() + options.timeout;
  std::string id;
  while (true) {
    uint64_t published = 0;
    MIM_RETURN_IF_ERROR(ReadRow(client, table, kIdKey, &published, &id));
    if (published == generation) return id;
    if (published > generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "NCCL id table ", table, " holds generation ", published,
          " but worker ", worker_index, " is at generation ", generation,
          ": earlier runs over this table did not all reach the exchange; "
          "start over with a new --table_prefix"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "worker ", worker_index, ": worker 0 did not publish the NCCL id "
          "of generation ", generation, " in table ", table, " within ",
          absl::FormatDuration(options.timeout), " (it holds generation ",
          published, ")"));
    }
    // The shards have no notification RPC, so the wait polls (as
    // FinishBarrier::WaitAll does).
    absl::SleepFor(options.poll);
  }
}

}  // namespace mim::worker
