// Fuzz target: a shard's request handling (ps/service.h), every RPC.
//
// The input is a serialized mim.fuzz.PsSession (ps_session.proto): the
// shard's place in the cluster and up to kMaxCalls requests. Each input
// gets a fresh EmbeddingStore (memory backend, or RocksDB in a scratch
// directory when on_disk) holding four tables, and a ParameterServerService
// over it recording metrics; the requests go to the handlers (Handle*, what
// both gRPC APIs call) in order, as the server would call them after
// parsing the same bytes.
//
// Invariants (ps/service.h and embedding/embedding_store.h):
//  - a refused call changes no row, row metadata or table;
//  - every error message is at most kMaxErrorMessageBytes and never names
//    the data directory;
//  - an OK Pull / GetRows answers dim floats per key, and `missing` lists
//    request indices in increasing order;
//  - on disk, reopening the data directory succeeds and holds every row
//    that was written (pushed or upserted) exactly as it was;
//  - a metrics scrape afterwards lists the calls.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/metrics.h"
#include "embedding/embedding_store.h"
#include "embedding/storage/storage.h"
#include "embedding/store_with_storage.h"
#include "grpcpp/server_context.h"
#include "proto/ps.pb.h"
#include "ps/service.h"
#include "ps/status_convert.h"
#include "ps/table_config_convert.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/ps_session.pb.h"

namespace {

using mim::embedding::EmbeddingStore;
using mim::fuzz::Require;
using mim::ps::ParameterServerService;

constexpr int kMaxCalls = 64;
constexpr int kMaxShards = 4;
// Low, so that a short input can reach the RESOURCE_EXHAUSTED branch.
constexpr size_t kMaxKeysPerRequest = 64;

// (table, key) -> the row's bytes (meta, values, optimizer state); tables
// as ("", 0)-prefixed entries keyed by name. Only rows with a write
// (update_count > 0) when `written_only`: rows that an ID-table Pull
// created are not persisted (embedding_store.h, Pull).
using State = std::map<std::pair<std::string, uint64_t>, std::string>;

State StateOf(const EmbeddingStore& store, bool written_only) {
  State state;
  for (const mim::embedding::TableConfig& t : store.ListTables()) {
    state[{"#table " + t.name, 0}] = mim::ps::ToProto(t).SerializeAsString();
    absl::Status st = store.ExportRows(
        t.name,
        [&](uint64_t key, const mim::embedding::RowMeta& meta,
            absl::Span<const float> values, absl::Span<const float> opt_state) {
          if (written_only && meta.update_count == 0) return;
          std::string row =
              absl::StrCat(meta.last_update_micros, ",", meta.update_count, ",",
                           meta.version, ":");
          row.append(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(float));
          row.append(reinterpret_cast<const char*>(opt_state.data()),
                     opt_state.size() * sizeof(float));
          state[{t.name, key}] = std::move(row);
        });
    Require(st.ok(), "ExportRows failed on a table ListTables named");
  }
  return state;
}

void CreateTable(ParameterServerService* service, const std::string& name,
                 mim::ps::TableKind kind, uint32_t dim,
                 const std::string& optimizer, const std::string& init) {
  mim::ps::CreateTableRequest req;
  mim::ps::TableConfig* c = req.mutable_config();
  c->set_name(name);
  c->set_kind(kind);
  c->set_dim(dim);
  c->mutable_optimizer()->set_name(optimizer);
  c->mutable_initializer()->set_name(init);
  c->mutable_initializer()->set_seed(3);
  mim::ps::CreateTableResponse resp;
  grpc::ServerContext context;
  Require(service->HandleCreateTable(&context, &req, &resp).ok(),
          "the harness could not create its tables");
}

// Runs one call; returns its status and checks what an OK answer says.
grpc::Status Run(ParameterServerService* service, const EmbeddingStore& store,
                 const mim::fuzz::PsCall& call) {
  grpc::ServerContext context;
  switch (call.request_case()) {
    case mim::fuzz::PsCall::kPull: {
      mim::ps::PullResponse resp;
      grpc::Status s = service->HandlePull(&context, &call.pull(), &resp);
      if (s.ok()) {
        absl::StatusOr<uint32_t> dim = store.Dim(call.pull().table());
        Require(dim.ok() && resp.dim() == *dim, "Pull answered a wrong dim");
        Require(resp.values().size() ==
                    sizeof(float) * size_t{*dim} * call.pull().keys_size(),
                "Pull answered a wrong number of values");
        int last = -1;
        for (uint32_t i : resp.missing()) {
          Require(static_cast<int>(i) > last &&
                      static_cast<int>(i) < call.pull().keys_size(),
                  "Pull's missing indices are not increasing request indices");
          last = static_cast<int>(i);
        }
      }
      return s;
    }
    case mim::fuzz::PsCall::kPush: {
      mim::ps::PushResponse resp;
      return service->HandlePush(&context, &call.push(), &resp);
    }
    case mim::fuzz::PsCall::kUpsert: {
      mim::ps::UpsertResponse resp;
      grpc::Status s = service->HandleUpsert(&context, &call.upsert(), &resp);
      if (s.ok()) {
        Require(resp.rows_written() + resp.rows_stale() <=
                    static_cast<uint64_t>(call.upsert().keys_size()),
                "Upsert counted more rows than keys");
      }
      return s;
    }
    case mim::fuzz::PsCall::kCreateTable: {
      mim::ps::CreateTableResponse resp;
      return service->HandleCreateTable(&context, &call.create_table(), &resp);
    }
    case mim::fuzz::PsCall::kListTables: {
      mim::ps::ListTablesResponse resp;
      return service->HandleListTables(&context, &call.list_tables(), &resp);
    }
    case mim::fuzz::PsCall::kTableStats: {
      mim::ps::TableStatsResponse resp;
      return service->HandleTableStats(&context, &call.table_stats(), &resp);
    }
    case mim::fuzz::PsCall::kGetRows: {
      mim::ps::GetRowsResponse resp;
      grpc::Status s =
          service->HandleGetRows(&context, &call.get_rows(), &resp);
      if (s.ok()) {
        const int keys = call.get_rows().keys_size();
        Require(resp.meta_size() == keys, "GetRows: one meta per key expected");
        Require(
            resp.values().size() == sizeof(float) * size_t{resp.dim()} * keys,
            "GetRows answered a wrong number of values");
      }
      return s;
    }
    case mim::fuzz::PsCall::kCheckpoint: {
      mim::ps::CheckpointResponse resp;
      grpc::Status s =
          service->HandleCheckpoint(&context, &call.checkpoint(), &resp);
      if (s.ok()) {
        Require(!absl::StartsWith(resp.path(), "/"),
                "Checkpoint sent an absolute path");
      }
      return s;
    }
    case mim::fuzz::PsCall::kRestore: {
      mim::ps::RestoreResponse resp;
      return service->HandleRestore(&context, &call.restore(), &resp);
    }
    case mim::fuzz::PsCall::kListCheckpoints: {
      mim::ps::ListCheckpointsResponse resp;
      grpc::Status s = service->HandleListCheckpoints(
          &context, &call.list_checkpoints(), &resp);
      for (const mim::ps::CheckpointEntry& e : resp.checkpoints()) {
        Require(!absl::StartsWith(e.path(), "/"),
                "ListCheckpoints sent an absolute path");
      }
      return s;
    }
    case mim::fuzz::PsCall::kDeleteCheckpoint: {
      mim::ps::DeleteCheckpointResponse resp;
      return service->HandleDeleteCheckpoint(&context,
                                             &call.delete_checkpoint(), &resp);
    }
    case mim::fuzz::PsCall::kDropTable: {
      mim::ps::DropTableResponse resp;
      grpc::Status s =
          service->HandleDropTable(&context, &call.drop_table(), &resp);
      if (s.ok()) {
        Require(!store.Dim(call.drop_table().table()).ok(),
                "a table is still there after DropTable answered OK");
        Require(resp.dropped() || resp.rows() == 0,
                "DropTable counted rows of a table it did not drop");
      }
      return s;
    }
    case mim::fuzz::PsCall::REQUEST_NOT_SET:
      break;
  }
  return grpc::Status::OK;
}

std::unique_ptr<EmbeddingStore> OpenStore(bool on_disk,
                                          const std::string& data_dir) {
  EmbeddingStore::Options options;
  options.data_dir = data_dir;
  options.keep_checkpoints = 3;  // retention runs after the 4th checkpoint
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> store =
      on_disk ? EmbeddingStore::Open(options)
              : mim::embedding::OpenEmbeddingStoreWithStorage(
                    mim::embedding::NewMemoryStorage(), options);
  Require(store.ok(),
          absl::StrCat("cannot open the store: ", store.status().ToString()));
  return std::move(*store);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mim::fuzz::PsSession session;
  if (!session.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (session.calls_size() > kMaxCalls) return 0;

  const bool on_disk = session.on_disk();
  const std::string data_dir = on_disk
                                   ? mim::fuzz::FreshScratchDir("shard")
                                   : mim::fuzz::ScratchDir() + "/memory-shard";
  std::unique_ptr<EmbeddingStore> store = OpenStore(on_disk, data_dir);

  ParameterServerService::Options options;
  options.num_shards = session.num_shards() == 0
                           ? 1
                           : 1 + (session.num_shards() - 1) % kMaxShards;
  options.shard_index = session.shard_index() % options.num_shards;
  options.max_keys_per_request = kMaxKeysPerRequest;
  options.data_dir = data_dir;
  absl::StatusOr<std::unique_ptr<mim::base::Metrics>> metrics =
      mim::base::Metrics::Create(mim::base::Metrics::Options());
  Require(metrics.ok(), "cannot create the metrics registry");
  options.metrics = metrics->get();
  {
    ParameterServerService service(store.get(), options);
    CreateTable(&service, "ids", mim::ps::ID, 4, "adagrad", "normal");
    CreateTable(&service, "adam", mim::ps::ID, 2, "adam", "uniform");
    CreateTable(&service, "ftrl", mim::ps::ID, 3, "ftrl", "zeros");
    CreateTable(&service, "content", mim::ps::CONTENT, 3, "", "");

    for (const mim::fuzz::PsCall& call : session.calls()) {
      const State before = StateOf(*store, /*written_only=*/false);
      const grpc::Status s = Run(&service, *store, call);
      if (s.ok()) continue;
      Require(s.error_message().size() <= mim::ps::kMaxErrorMessageBytes,
              "an error message is longer than kMaxErrorMessageBytes");
      Require(!absl::StrContains(s.error_message(), mim::fuzz::ScratchDir()),
              absl::StrCat("an error message names the data directory: ",
                           s.error_message()));
      Require(StateOf(*store, /*written_only=*/false) == before,
              absl::StrCat("a refused call changed the store: ",
                           s.error_message()));
    }
    Require(absl::StrContains((*metrics)->Scrape(), "mim_ps_requests_total"),
            "a scrape does not list the calls");
  }
  if (on_disk) {
    const State written = StateOf(*store, /*written_only=*/true);
    store.reset();
    store = OpenStore(/*on_disk=*/true, data_dir);
    Require(StateOf(*store, /*written_only=*/true) == written,
            "reopening the data directory changed the written rows");
  }
  return 0;
}
