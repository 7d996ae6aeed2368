// One parameter-server shard:
//   server --port=P --shard_index=I --num_shards=N --data_dir=DIR
// Opens (and so recovers) the EmbeddingStore in --data_dir, serves the
// ParameterServer service, grpc.health.v1 and server reflection (not with
// --auth_tokens: reflection cannot check a token), prints
// "ps shard I/N listening on HOST:PORT" on stdout once accepting calls, and
// shuts down cleanly on SIGTERM or SIGINT. With --metrics_port >= 0 it also
// serves Prometheus metrics on http://ADDRESS:PORT/metrics (names in
// docs/OPERATIONS.md) and prints "metrics listening on ADDRESS:PORT" as the
// next line.
//
// Listens on 127.0.0.1 unless --host says otherwise. --tls_cert/--tls_key
// turn TLS on, --tls_client_ca requires client certificates (base/grpc_tls.h);
// --auth_tokens=FILE checks a bearer token on every call (base/grpc_auth.h,
// roles in ps/service.h). docs/OPERATIONS.md, "Security".
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/grpc_auth.h"
#include "base/grpc_tls.h"
#include "base/metrics.h"
#include "base/server_security.h"
#include "embedding/embedding_store.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "base/executor.h"
#include "base/server_connections.h"
#include "ps/callback_service.h"
#include "ps/health_service.h"
#include "ps/limits.h"
#include "ps/service.h"

DEFINE_string(host, "127.0.0.1",
              "Address to listen on (loopback by default; 0.0.0.0 or a "
              "host's address opens the shard to the network: use TLS and "
              "--auth_tokens there).");
DEFINE_int32(port, 0, "TCP port; 0 picks a free one (printed on stdout).");
DEFINE_uint32(shard_index, 0, "This shard's index in [0, num_shards).");
DEFINE_uint32(num_shards, 1, "Number of shards in the cluster.");
DEFINE_string(data_dir, "", "Directory of this shard's tables (required).");
DEFINE_bool(sync_writes, false,
            "fsync the write-ahead log on every acknowledged write.");
DEFINE_int32(memtable_mb, 64,
             "MiB of one RocksDB memtable (up to two are held): larger ones "
             "take less flush and compaction CPU per pushed key for that "
             "much more memory (docs/BENCHMARKS.md, 'a larger memtable').");
DEFINE_bool(accept_data_loss,
            mim::embedding::EmbeddingStore::Options().accept_data_loss,
            "Start even when --data_dir's write-ahead log is damaged or cut "
            "short, or its database is missing, dropping the acknowledged "
            "writes that are lost (a start without it refuses, exit 2, "
            "naming them); what was dropped is logged and reported in "
            "TableStats and /metrics. See docs/OPERATIONS.md, Recovery.");
DEFINE_uint32(keep_checkpoints,
              mim::embedding::EmbeddingStore::Options().keep_checkpoints,
              "Checkpoints kept: after each Checkpoint the oldest beyond "
              "this many (by creation order) are deleted. 0: keep all.");
DEFINE_uint64(max_push_clients,
              mim::embedding::EmbeddingStore::Options().max_push_clients,
              "Clients whose applied pushes the shard remembers, so that a "
              "resent push is not applied twice; beyond it the least "
              "recently used client is forgotten.");
DEFINE_uint64(test_crash_after_apply_before_ack, 0,
              "Tests only: abort() right after the N-th tagged push is "
              "applied and durable, before it is answered (0: never).");
DEFINE_uint32(test_delay_first_drop_answer_ms, 0,
              "Tests only: answer the first successful DropTable this many "
              "ms after the table is dropped (0: at once).");
DEFINE_uint64(max_keys_per_request, mim::ps::kDefaultMaxKeysPerRequest,
              "Requests with more keys are refused (RESOURCE_EXHAUSTED). "
              "PsClient splits its calls to at most its max_keys_per_rpc, "
              "by default the same number.");
DEFINE_int32(threads, 16,
             "Threads running calls (the executor of the callback service): "
             "calls beyond it wait in a queue within their deadline.");
DEFINE_int32(inline_pull_keys, 1024,
             "Pulls of at most this many keys run on gRPC's own thread "
             "rather than the executor (--threads): they only read rows in "
             "memory, and the hop costs more than the work. 0: every call "
             "goes through the executor.");
DEFINE_int32(max_queue, 4096,
             "Calls that may wait for a thread; one that finds the queue "
             "full is refused (RESOURCE_EXHAUSTED naming this flag).");
DEFINE_int32(max_message_mb,
             static_cast<int>(mim::ps::kDefaultMaxMessageBytes >> 20),
             "Largest request or answer in MiB, 1..1024: gRPC refuses a "
             "larger request (RESOURCE_EXHAUSTED 'Received message larger "
             "than max'), Pull and GetRows an answer that could exceed it. "
             "PsClient splits its calls to fit its max_message_bytes, by "
             "default the same size.");
DEFINE_int32(max_inflight_mb,
             static_cast<int>(mim::ps::kDefaultMaxInflightBytes >> 20),
             "Requests and answers of the Pull, GetRows, Push and Upsert "
             "calls in progress, in MiB: a call that would take them past "
             "this while others run is refused (RESOURCE_EXHAUSTED naming "
             "this flag). 0: no limit.");
DEFINE_int32(grpc_memory_mb,
             static_cast<int>(mim::ps::kDefaultGrpcMemoryBytes >> 20),
             "Memory quota of gRPC's own buffers (connections, messages "
             "being received), in MiB: past it gRPC stops accepting "
             "connections and cancels calls to get back under it.");
DEFINE_int32(metrics_port, mim::base::Metrics::Options().port,
             "HTTP port of Prometheus /metrics; -1 disables it, 0 picks a "
             "free one (printed on stdout as 'metrics listening on ...').");
DEFINE_string(metrics_address, mim::base::Metrics::Options().address,
              "Numeric IPv4 address the /metrics endpoint binds to.");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "ps server: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "server --port=P --shard_index=I --num_shards=N --data_dir=DIR");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  // Debian's Abseil is built with Mutex deadlock detection on, which records
  // a lock graph on every acquisition; the store takes a stripe lock per
  // batch and shard, so it showed in profiles. Lock order is covered by the
  // store's tests, not checked again in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FLAGS_logtostderr = true;

  if (FLAGS_num_shards < 1) return Fail("--num_shards must be >= 1");
  if (FLAGS_shard_index >= FLAGS_num_shards) {
    return Fail(absl::StrCat("--shard_index=", FLAGS_shard_index,
                             " must be < --num_shards=", FLAGS_num_shards));
  }
  if (FLAGS_data_dir.empty()) return Fail("--data_dir is required");
  if (FLAGS_port < 0 || FLAGS_port > 65535) return Fail("--port out of range");
  if (FLAGS_threads < 2) return Fail("--threads must be >= 2");
  if (FLAGS_max_queue < 1) return Fail("--max_queue must be >= 1");
  if (FLAGS_max_keys_per_request < 1) {
    return Fail("--max_keys_per_request must be >= 1");
  }
  if (FLAGS_inline_pull_keys < 0 ||
      FLAGS_inline_pull_keys > static_cast<int>(mim::ps::kDefaultMaxKeysPerRequest)) {
    return Fail(absl::StrCat("--inline_pull_keys must be in [0, ",
                             mim::ps::kDefaultMaxKeysPerRequest, "], got ",
                             FLAGS_inline_pull_keys));
  }
  if (FLAGS_max_message_mb < 1 || FLAGS_max_message_mb > 1024) {
    return Fail(absl::StrCat("--max_message_mb must be in [1, 1024], got ",
                             FLAGS_max_message_mb));
  }
  if (FLAGS_max_inflight_mb < 0 || FLAGS_max_inflight_mb > (1 << 20)) {
    return Fail(absl::StrCat("--max_inflight_mb must be in [0, 1048576], got ",
                             FLAGS_max_inflight_mb));
  }
  if (FLAGS_grpc_memory_mb < 2 * FLAGS_max_message_mb ||
      FLAGS_grpc_memory_mb > (1 << 20)) {
    return Fail(absl::StrCat(
        "--grpc_memory_mb must be at least twice --max_message_mb (",
        2 * FLAGS_max_message_mb, ") and at most 1048576, got ",
        FLAGS_grpc_memory_mb));
  }

  // Block the shutdown signals before gRPC starts threads, so that they are
  // delivered only to the waiter thread below.
  const sigset_t signals = mim::base::BlockShutdownSignals();

  // Credentials and tokens before the store is opened, so that a bad file
  // fails at once.
  absl::StatusOr<mim::base::ServerSecurity> security =
      mim::base::ServerSecurityFromFlags("read and write every table");
  if (!security.ok()) return Fail(security.status().ToString());
  const std::unique_ptr<mim::base::Authorizer>& authorizer =
      security->authorizer;

  // Before the store is opened (recovery can take a while), so that a
  // taken port fails at once.
  mim::base::Metrics::Options metrics_options;
  metrics_options.address = FLAGS_metrics_address;
  metrics_options.port = FLAGS_metrics_port;
  absl::StatusOr<std::unique_ptr<mim::base::Metrics>> metrics =
      mim::base::Metrics::Create(metrics_options);
  if (!metrics.ok()) {
    return Fail(absl::StrCat("--metrics_address/--metrics_port: ",
                             metrics.status().ToString()));
  }

  mim::embedding::EmbeddingStore::Options store_options;
  store_options.data_dir = FLAGS_data_dir;
  store_options.sync_writes = FLAGS_sync_writes;
  if (FLAGS_memtable_mb < 1 || FLAGS_memtable_mb > 65536) {
    return Fail(absl::StrCat("--memtable_mb=", FLAGS_memtable_mb,
                             ": expected 1 to 65536"));
  }
  store_options.memtable_mb = FLAGS_memtable_mb;
  store_options.max_keys_per_request = FLAGS_max_keys_per_request;
  store_options.accept_data_loss = FLAGS_accept_data_loss;
  store_options.keep_checkpoints = FLAGS_keep_checkpoints;
  if (FLAGS_max_push_clients < 1) return Fail("--max_push_clients must be >= 1");
  store_options.max_push_clients = FLAGS_max_push_clients;
  const absl::Time open_start = absl::Now();
  auto store = mim::embedding::EmbeddingStore::Open(store_options);
  if (!store.ok()) {
    return Fail(absl::StrCat("cannot open data_dir ", FLAGS_data_dir, ": ",
                             store.status().ToString()));
  }
  size_t tables = (*store)->ListTables().size();
  LOG(INFO) << "opened " << FLAGS_data_dir << " with " << tables
            << " tables in " << absl::Now() - open_start;
  if (const auto recovery = (*store)->Recovery(); recovery.data_loss_accepted) {
    LOG(WARNING) << "--accept_data_loss: " << recovery.detail;
  }

  mim::ps::ParameterServerService::Options service_options;
  service_options.shard_index = FLAGS_shard_index;
  service_options.num_shards = FLAGS_num_shards;
  service_options.max_keys_per_request = FLAGS_max_keys_per_request;
  service_options.max_response_bytes =
      static_cast<size_t>(FLAGS_max_message_mb) << 20;
  service_options.max_inflight_bytes =
      static_cast<size_t>(FLAGS_max_inflight_mb) << 20;
  service_options.test_crash_after_push_applied =
      FLAGS_test_crash_after_apply_before_ack;
  if (FLAGS_test_crash_after_apply_before_ack > 0) {
    LOG(WARNING) << "--test_crash_after_apply_before_ack="
                 << FLAGS_test_crash_after_apply_before_ack
                 << ": this shard aborts on purpose (tests only)";
  }
  service_options.test_delay_first_drop_answer_ms =
      FLAGS_test_delay_first_drop_answer_ms;
  service_options.metrics = metrics->get();
  service_options.authorizer = authorizer.get();
  service_options.data_dir = FLAGS_data_dir;
  auto service = std::make_unique<mim::ps::ParameterServerService>(
      store->get(), service_options);
  // Outlives the server: a call still queued at shutdown is answered.
  auto executor = std::make_unique<mim::base::Executor>(
      FLAGS_threads, FLAGS_max_queue,
      absl::StrCat("shard ", FLAGS_shard_index, "/", FLAGS_num_shards));
  mim::ps::ShardCallbackService callback_service(
      service.get(), executor.get(),
      static_cast<size_t>(FLAGS_inline_pull_keys));

  // Our own health service, which checks tokens, instead of gRPC's
  // built-in one (EnableDefaultHealthCheckService), which answers anyone.
  mim::ps::HealthService health({mim::ps::ParameterServer::service_full_name()},
                                authorizer.get());
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  mim::base::ServerSpec spec;
  spec.address = absl::StrCat(FLAGS_host, ":", FLAGS_port);
  spec.credentials = security->credentials;
  spec.tls = !FLAGS_tls_cert.empty();
  spec.services = {&callback_service, &health};
  if (authorizer != nullptr) {
    spec.options.push_back(mim::base::WithoutReflection());
  }
  spec.max_message_bytes = static_cast<size_t>(FLAGS_max_message_mb) << 20;
  spec.memory_bytes = static_cast<size_t>(FLAGS_grpc_memory_mb) << 20;
  spec.quota_name = "ps_server";
  absl::StatusOr<mim::base::StartedServer> started =
      mim::base::StartServer(std::move(spec));
  if (!started.ok()) {
    return Fail(mim::base::StartFailureText(started.status()));
  }
  std::unique_ptr<grpc::Server> server = std::move(started->server);
  const int port = started->port;

  std::printf("ps shard %u/%u listening on %s:%d\n", FLAGS_shard_index,
              FLAGS_num_shards, FLAGS_host.c_str(), port);
  // Second, so that readers of the first line see the gRPC address there.
  if ((*metrics)->port() >= 0) {
    std::printf("metrics listening on %s\n", (*metrics)->endpoint().c_str());
  }
  std::fflush(stdout);

  // In-flight calls get a few seconds to finish, then are cancelled.
  mim::base::ServeUntilSignal(
      server.get(), signals, [&health] { health.SetServing(false); },
      absl::Seconds(5));
  server.reset();  // waits for every call to be answered
  executor.reset();
  service.reset();  // no scrape reads the store after this
  store->reset();  // closes the storage after the last call has finished
  LOG(INFO) << "shard " << FLAGS_shard_index << " stopped";
  return 0;
}
