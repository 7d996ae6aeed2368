#include "base/server_connections.h"

#include <pthread.h>

#include <climits>
#include <cstdint>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "grpc/grpc.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

DEFINE_int64(max_connection_idle_ms, 10 * 60 * 1000,
             "Close a client connection that had no call for this long "
             "(0: never).");
DEFINE_int64(max_connection_age_ms, 2 * 60 * 60 * 1000,
             "Close any client connection this old, +-10% (0: never); calls "
             "in flight get --max_connection_age_grace_ms.");
DEFINE_int64(max_connection_age_grace_ms, 5 * 60 * 1000,
             "How long calls in flight on a connection closed for its age "
             "may still run.");
DEFINE_int64(keepalive_time_ms, 60 * 1000,
             "Ping a client after this long without activity.");
DEFINE_int64(keepalive_timeout_ms, 20 * 1000,
             "Close the connection when a keepalive ping is not answered "
             "within this.");
DEFINE_int64(min_client_ping_interval_ms, 10 * 1000,
             "Shortest interval between a client's pings without calls that "
             "is tolerated (more often: GOAWAY too_many_pings).");

namespace mim::base {
namespace {

// `value` of flag `name` as a channel argument: >= minimum and fits an int.
absl::Status Check(const char* name, int64_t value, int64_t minimum) {
  if (value >= minimum && value <= INT_MAX) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--", name, " must be in [", minimum, ", ", INT_MAX, "] ms, got ",
      value));
}

}  // namespace

absl::Status ApplyConnectionFlags(grpc::ServerBuilder* builder) {
  struct Arg {
    const char* flag;
    int64_t value;
    int64_t minimum;
    const char* arg;
  };
  const Arg args[] = {
      {"max_connection_idle_ms", FLAGS_max_connection_idle_ms, 0,
       GRPC_ARG_MAX_CONNECTION_IDLE_MS},
      {"max_connection_age_ms", FLAGS_max_connection_age_ms, 0,
       GRPC_ARG_MAX_CONNECTION_AGE_MS},
      {"max_connection_age_grace_ms", FLAGS_max_connection_age_grace_ms, 0,
       GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS},
      {"keepalive_time_ms", FLAGS_keepalive_time_ms, 1,
       GRPC_ARG_KEEPALIVE_TIME_MS},
      {"keepalive_timeout_ms", FLAGS_keepalive_timeout_ms, 1,
       GRPC_ARG_KEEPALIVE_TIMEOUT_MS},
      {"min_client_ping_interval_ms", FLAGS_min_client_ping_interval_ms, 0,
       GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS},
  };
  for (const Arg& a : args) {
    if (absl::Status s = Check(a.flag, a.value, a.minimum); !s.ok()) return s;
  }
  for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); ++i) {
    int value = static_cast<int>(args[i].value);
    // The idle and age limits (the first two): the flags' 0 is "never",
    // which gRPC spells INT_MAX.
    if (i < 2 && value == 0) value = INT_MAX;
    builder->AddChannelArgument(args[i].arg, value);
  }
  return absl::OkStatus();
}

absl::StatusOr<StartedServer> StartServer(ServerSpec spec) {
  if (spec.max_message_bytes == 0 || spec.max_message_bytes > INT_MAX ||
      spec.memory_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server ", spec.address, ": message limit ", spec.max_message_bytes,
        " bytes (1..", INT_MAX, ") and memory quota ", spec.memory_bytes,
        " bytes (> 0) must both be set"));
  }
  grpc::ServerBuilder builder;
  for (auto& option : spec.options) builder.SetOption(std::move(option));
  StartedServer started;
  builder.AddListeningPort(spec.address, spec.credentials, &started.port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (absl::Status s = ApplyConnectionFlags(&builder); !s.ok()) return s;
  for (grpc::Service* service : spec.services) {
    builder.RegisterService(service);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(spec.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(spec.max_message_bytes));
  grpc::ResourceQuota quota(spec.quota_name);
  quota.Resize(spec.memory_bytes);
  builder.SetResourceQuota(quota);
  started.server = builder.BuildAndStart();
  if (started.server == nullptr || started.port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", spec.address,
        spec.tls ? " (or gRPC refused --tls_cert/--tls_key: are they a "
                   "matching PEM certificate and key?)"
                 : ""));
  }
  return started;
}

std::string StartFailureText(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable
             ? std::string(status.message())
             : status.ToString();
}

sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

void ServeUntilSignal(grpc::Server* server, const sigset_t& signals,
                      const std::function<void()>& on_signal,
                      absl::Duration grace) {
  std::thread waiter([server, &signals, &on_signal, grace] {
    int signal = 0;
    sigwait(&signals, &signal);
    LOG(INFO) << "signal " << signal << ": shutting down";
    if (on_signal) on_signal();
    server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  });
  server->Wait();
  waiter.join();
}

}  // namespace mim::base
