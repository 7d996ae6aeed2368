// The serving tier:
//   server --port=P --ps=HOST:PORT,... --model_dir=DIR
// Loads the model version in --model_dir (written by //worker:trainer),
// serves mim.serving.PredictionService (proto/serving.proto),
// grpc.health.v1 and server reflection (not with --auth_tokens: reflection
// cannot check a token), and prints "serving listening on
// HOST:PORT" on stdout once accepting calls (then "metrics listening on
// ADDRESS:PORT" with --metrics_port >= 0). A new version saved into
// --model_dir is picked up within --reload_interval_ms without failing a
// request. Shuts down cleanly on SIGTERM or SIGINT.
//
// Security (docs/OPERATIONS.md, "Security"): as a server, --tls_cert,
// --tls_key, --tls_client_ca and --auth_tokens as on the shards; as a
// client of the shards, --ps_tls_ca, --ps_tls_client_cert,
// --ps_tls_client_key and --ps_auth_token_file (an admin token when
// UpsertItem is used: it writes to the content table).
#include <signal.h>

#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/grpc_auth.h"
#include "base/grpc_tls.h"
#include "base/metrics.h"
#include "base/server_security.h"
#include "base/server_connections.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "kernels/common.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "ps/client.h"
#include "ps/health_service.h"
#include "serving/model_manager.h"
#include "serving/predictor.h"
#include "serving/row_cache.h"
#include "serving/service.h"

namespace {
const mim::serving::Predictor::Options kPredictorDefaults;
const mim::serving::RowCache::Options kCacheDefaults;
}  // namespace

DEFINE_string(host, "127.0.0.1",
              "Address to listen on (loopback by default; 0.0.0.0 opens it "
              "to the network).");
DEFINE_int32(port, 0, "TCP port; 0 picks a free one (printed on stdout).");
DEFINE_string(ps, "", "Shard addresses host:port, comma-separated, in shard order");
DEFINE_string(model_dir, "", "Directory with manifest.json and the model file");
DEFINE_int32(max_candidates, kPredictorDefaults.max_candidates,
             "Most candidates one Predict may score");
DEFINE_int32(max_behaviors, kPredictorDefaults.max_behaviors,
             "Most behaviour ids one Predict may carry (the model keeps 50)");
DEFINE_int64(cache_mb, kCacheDefaults.capacity_bytes >> 20,
             "Row cache size in MiB (0: no cache)");
DEFINE_int64(cache_ttl_ms, absl::ToInt64Milliseconds(kCacheDefaults.ttl),
             "A cached row is used without asking the shards for this long");
DEFINE_int64(cache_max_stale_ms,
             absl::ToInt64Milliseconds(kCacheDefaults.max_stale),
             "Past the TTL, a cached row is still served (marked stale) "
             "while its shard is unreachable, for up to this long");
DEFINE_int64(reload_interval_ms, 1000,
             "How often --model_dir is checked for a new model version "
             "(0: never)");
DEFINE_int64(content_poll_ms,
             absl::ToInt64Milliseconds(kPredictorDefaults.content_poll_interval),
             "How often the content table's version is checked (a version "
             "written elsewhere flushes the cached content rows; 0: never)");
DEFINE_int64(ps_timeout_ms, 2000,
             "Deadline of one shard call (a request's own deadline, when "
             "shorter, wins)");
DEFINE_bool(degraded_reads, kPredictorDefaults.degraded_reads,
            "A shard that cannot be reached does not fail the requests that "
            "need its rows: rows without a cached copy are read as missing "
            "(counted in the answer's rows_unavailable and in "
            "mim_serving_rows_unavailable_total), and the shard is left out "
            "of pulls for --shard_down_ms. Off: such requests fail "
            "UNAVAILABLE");
DEFINE_int64(shard_down_ms,
             absl::ToInt64Milliseconds(kPredictorDefaults.shard_down_interval),
             "With --degraded_reads: how long a shard found unreachable is "
             "left out of pulls before a request tries it again");
DEFINE_int32(threads, 8,
             "Threads that run requests (pulls from the shards, scoring)");
DEFINE_int32(cpu_threads, 1,
             "Threads the model's kernels (and OpenBLAS) use per request; "
             "requests already run in parallel on --threads");
DEFINE_int32(fetch_threads, mim::serving::Predictor::Options().fetch_threads,
             "Threads that pull a request's uncached content rows while its "
             "own thread pulls the uncached ID rows; 0: one after the other");
DEFINE_int32(max_queue, 4096,
             "Requests that may wait for a thread; beyond, RESOURCE_EXHAUSTED "
             "(a waiting request still ends by its deadline)");
DEFINE_int32(max_message_kb, 1024, "Max request/response size in KiB");
DEFINE_int32(grpc_memory_mb, 64,
             "Memory quota of gRPC's own buffers (connections, messages "
             "being received), in MiB, at least twice --max_message_kb: "
             "past it gRPC stops accepting connections and cancels calls to "
             "get back under it.");
DEFINE_int32(metrics_port, mim::base::Metrics::Options().port,
             "Prometheus /metrics port; -1: none; 0: a free one (printed as "
             "'metrics listening on ...').");
DEFINE_string(metrics_address, mim::base::Metrics::Options().address,
              "Address of the /metrics endpoint");
DEFINE_string(ps_tls_ca, "",
              "PEM CA of the shards' certificates: talk TLS to the shards.");
DEFINE_string(ps_tls_client_cert, "",
              "PEM certificate this server presents to the shards (mutual "
              "TLS).");
DEFINE_string(ps_tls_client_key, "", "PEM private key of --ps_tls_client_cert.");
DEFINE_string(ps_auth_token_file, "",
              "File holding the token sent to the shards (mode 600).");

namespace {

int Fail(const std::string& message) {
  LOG(ERROR) << message;
  std::fprintf(stderr, "serving: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("server --port=P --ps=HOST:PORT,... --model_dir=DIR");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  if (FLAGS_ps.empty()) return Fail("--ps is required (shard addresses)");
  if (FLAGS_model_dir.empty()) return Fail("--model_dir is required");
  if (FLAGS_port < 0 || FLAGS_port > 65535) return Fail("--port out of range");
  if (FLAGS_max_candidates < 1) return Fail("--max_candidates must be >= 1");
  if (FLAGS_max_behaviors < 0) return Fail("--max_behaviors must be >= 0");
  if (FLAGS_shard_down_ms < 1) {
    return Fail("--shard_down_ms must be >= 1");
  }
  if (FLAGS_reload_interval_ms < 0 || FLAGS_content_poll_ms < 0) {
    return Fail("--reload_interval_ms and --content_poll_ms must be >= 0 "
                "(0: off)");
  }
  if (FLAGS_cache_mb > (int64_t{1} << 20) || FLAGS_max_message_kb > (1 << 20)) {
    return Fail("--cache_mb and --max_message_kb must be at most 1048576");
  }
  if (FLAGS_cache_mb < 0 || FLAGS_cache_ttl_ms < 0 ||
      FLAGS_cache_max_stale_ms < FLAGS_cache_ttl_ms) {
    return Fail("--cache_mb and --cache_ttl_ms must be >= 0 and "
                "--cache_max_stale_ms >= --cache_ttl_ms");
  }
  if (FLAGS_ps_timeout_ms < 1) return Fail("--ps_timeout_ms must be >= 1");
  if (FLAGS_threads < 1) return Fail("--threads must be >= 1");
  if (FLAGS_fetch_threads < 0 || FLAGS_fetch_threads > 1024) {
    return Fail(absl::StrCat("--fetch_threads must be in [0, 1024], got ",
                             FLAGS_fetch_threads));
  }
  if (FLAGS_max_queue < 1) return Fail("--max_queue must be >= 1");
  if (FLAGS_cpu_threads < 1) return Fail("--cpu_threads must be >= 1");
  // Without this OpenBLAS keeps its own thread pool, whose workers
  // busy-wait after every matrix product: 2-5x the CPU per request
  // (docs/BENCHMARKS.md, "Serving").
  mim::kernels::SetCpuThreads(FLAGS_cpu_threads);
  if (FLAGS_max_message_kb < 1) return Fail("--max_message_kb must be >= 1");
  if (FLAGS_grpc_memory_mb < 1 || FLAGS_grpc_memory_mb > (1 << 20) ||
      (int64_t{FLAGS_grpc_memory_mb} << 20) <
          2 * (int64_t{FLAGS_max_message_kb} << 10)) {
    return Fail(absl::StrCat(
        "--grpc_memory_mb must be at least twice --max_message_kb (",
        FLAGS_max_message_kb, " KiB) and at most 1048576, got ",
        FLAGS_grpc_memory_mb));
  }

  const sigset_t signals = mim::base::BlockShutdownSignals();

  mim::base::Metrics::Options metrics_options;
  metrics_options.address = FLAGS_metrics_address;
  metrics_options.port = FLAGS_metrics_port;
  absl::StatusOr<std::unique_ptr<mim::base::Metrics>> metrics =
      mim::base::Metrics::Create(metrics_options);
  if (!metrics.ok()) {
    return Fail(absl::StrCat("--metrics_address/--metrics_port: ",
                             metrics.status().ToString()));
  }

  absl::StatusOr<mim::base::ServerSecurity> security =
      mim::base::ServerSecurityFromFlags("call Predict and UpsertItem");
  if (!security.ok()) return Fail(security.status().ToString());
  const std::unique_ptr<mim::base::Authorizer>& authorizer =
      security->authorizer;
  mim::base::TlsClientFiles ps_tls{FLAGS_ps_tls_ca, FLAGS_ps_tls_client_cert,
                                   FLAGS_ps_tls_client_key, "ps_"};
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ps_credentials =
      mim::base::ChannelCredentialsFromFiles(ps_tls);
  if (!ps_credentials.ok()) return Fail(ps_credentials.status().ToString());

  mim::ps::PsClient::Options client_options;
  client_options.credentials = *ps_credentials;
  if (!FLAGS_ps_auth_token_file.empty()) {
    absl::StatusOr<std::string> token = mim::base::ReadTokenFile(
        FLAGS_ps_auth_token_file, "--ps_auth_token_file");
    if (!token.ok()) return Fail(token.status().ToString());
    client_options.auth_token = *std::move(token);
  }
  client_options.timeout = absl::Milliseconds(FLAGS_ps_timeout_ms);
  // Retries only within the request's deadline (ScopedDeadline) and this
  // client timeout: a request never waits long for a shard that is down.
  client_options.max_attempts = 3;
  client_options.retry_budget = absl::Milliseconds(FLAGS_ps_timeout_ms);
  client_options.initial_backoff = absl::Milliseconds(20);
  client_options.max_backoff = absl::Milliseconds(500);
  client_options.channels_per_shard = 2;
  absl::StatusOr<std::unique_ptr<mim::ps::PsClient>> ps =
      mim::ps::PsClient::Create(absl::StrSplit(FLAGS_ps, ','), client_options);
  if (!ps.ok()) return Fail(absl::StrCat("--ps: ", ps.status().ToString()));

  mim::serving::ModelManager::Options model_options;
  model_options.model_dir = FLAGS_model_dir;
  model_options.poll_interval = absl::Milliseconds(FLAGS_reload_interval_ms);
  model_options.check = [client = ps->get()](
                            const mim::serving::ServableModel& model) {
    return mim::serving::CheckModelTables(client, model);
  };
  absl::StatusOr<std::unique_ptr<mim::serving::ModelManager>> models =
      mim::serving::ModelManager::Create(model_options);
  if (!models.ok()) {
    return Fail(absl::StrCat("--model_dir: ", models.status().ToString()));
  }
  // Copied out, so that the first version is not kept alive after reloads.
  const mim::model::ModelManifest first_manifest =
      (*models)->Current()->manifest();
  if (static_cast<int>((*ps)->num_shards()) != first_manifest.num_shards) {
    LOG(WARNING) << "the model was trained with "
                 << first_manifest.num_shards << " shards, --ps names "
                 << (*ps)->num_shards()
                 << "; rows are looked up by key on the shards given";
  }

  mim::serving::RowCache::Options cache_options;
  cache_options.capacity_bytes = FLAGS_cache_mb << 20;
  cache_options.ttl = absl::Milliseconds(FLAGS_cache_ttl_ms);
  cache_options.max_stale = absl::Milliseconds(FLAGS_cache_max_stale_ms);
  mim::serving::RowCache cache(cache_options);

  mim::serving::Predictor::Options predictor_options;
  predictor_options.max_candidates = FLAGS_max_candidates;
  predictor_options.max_behaviors = FLAGS_max_behaviors;
  predictor_options.content_poll_interval =
      absl::Milliseconds(FLAGS_content_poll_ms);
  predictor_options.metrics = metrics->get();
  predictor_options.fetch_threads = FLAGS_fetch_threads;
  predictor_options.degraded_reads = FLAGS_degraded_reads;
  predictor_options.shard_down_interval =
      absl::Milliseconds(FLAGS_shard_down_ms);
  mim::serving::Predictor predictor(models->get(), ps->get(), &cache,
                                    predictor_options);
  mim::base::Executor executor(FLAGS_threads, FLAGS_max_queue, "serving");
  mim::serving::PredictionServiceImpl service(&predictor, models->get(), &cache,
                                              &executor, metrics->get(),
                                              authorizer.get());
  // Our own health service, which checks tokens, instead of gRPC's
  // built-in one (EnableDefaultHealthCheckService), which answers anyone.
  mim::ps::HealthService health(
      {mim::serving::PredictionService::service_full_name()},
      authorizer.get());

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  mim::base::ServerSpec spec;
  spec.address = absl::StrCat(FLAGS_host, ":", FLAGS_port);
  spec.credentials = security->credentials;
  spec.tls = !FLAGS_tls_cert.empty();
  spec.services = {&service, &health};
  if (authorizer != nullptr) {
    spec.options.push_back(mim::base::WithoutReflection());
  }
  spec.max_message_bytes = static_cast<size_t>(FLAGS_max_message_kb) << 10;
  spec.memory_bytes = static_cast<size_t>(FLAGS_grpc_memory_mb) << 20;
  spec.quota_name = "serving";
  absl::StatusOr<mim::base::StartedServer> started =
      mim::base::StartServer(std::move(spec));
  if (!started.ok()) {
    return Fail(mim::base::StartFailureText(started.status()));
  }
  std::unique_ptr<grpc::Server> server = std::move(started->server);
  const int port = started->port;
  LOG(INFO) << "serving model " << first_manifest.model_version << " ("
            << first_manifest.model_name << ") from " << FLAGS_model_dir;
  std::printf("serving listening on %s:%d\n", FLAGS_host.c_str(), port);
  if ((*metrics)->port() >= 0) {
    std::printf("metrics listening on %s\n", (*metrics)->endpoint().c_str());
  }
  std::fflush(stdout);

  mim::base::ServeUntilSignal(
      server.get(), signals, [&health] { health.SetServing(false); },
      absl::Seconds(5));
  server.reset();
  return 0;
}
