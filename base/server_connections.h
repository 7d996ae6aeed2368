// Connection limits of every gRPC server in the project (the shards and the
// serving tier), as flags defined once here: linking this target defines
// them.
//
//   --max_connection_idle_ms   close a connection with no call for this long
//                              (GOAWAY; the client reconnects on its next
//                              call). Default 10 min.
//   --max_connection_age_ms    close any connection this old (+-10% jitter),
//                              so clients re-resolve and rebalance and no
//                              connection lives forever. Default 2 h.
//   --max_connection_age_grace_ms  calls in flight on such a connection get
//                              this long to finish. Default 5 min.
//   --keepalive_time_ms        ping a client after this long without
//                              activity, to find dead peers. Default 1 min.
//   --keepalive_timeout_ms     close the connection when a ping is not
//                              answered within this. Default 20 s.
//   --min_client_ping_interval_ms  the shortest interval between a client's
//                              pings without calls that the server tolerates
//                              (more often: GOAWAY "too_many_pings").
//                              Default 10 s.
//
// 0 turns the idle and age limits off. docs/OPERATIONS.md, "Connections".
//
// StartServer builds and starts a server the way every binary of the
// project does (one listening socket, the flags above, message limits, a
// memory quota), so the shard and the serving tier cannot drift apart.
//
// Thread-safety: call from main before the server starts.
#ifndef MIM_BASE_SERVER_CONNECTIONS_H_
#define MIM_BASE_SERVER_CONNECTIONS_H_

#include <signal.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/impl/server_builder_option.h"

namespace grpc {
class Server;
class ServerBuilder;
class ServerCredentials;
class Service;
}  // namespace grpc

namespace mim::base {

// Sets the flags above on `builder`. INVALID_ARGUMENT naming the flag when
// one is negative, or a timeout is 0.
absl::Status ApplyConnectionFlags(grpc::ServerBuilder* builder);

struct ServerSpec {
  std::string address;  // "host:port"; port 0 picks a free one
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Only for the error message: whether credentials came from --tls_cert.
  bool tls = false;
  std::vector<grpc::Service*> services;  // not owned; outlive the server
  std::vector<std::unique_ptr<grpc::ServerBuilderOption>> options;
  size_t max_message_bytes = 0;  // each way; must be > 0
  // gRPC's own buffers (connections, messages being read), a
  // grpc::ResourceQuota named `quota_name`; must be > 0.
  size_t memory_bytes = 0;
  std::string quota_name;
};

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the port bound
};

// Builds and starts the server of `spec` with ApplyConnectionFlags and
// without SO_REUSEPORT: gRPC would otherwise open one more listening
// socket per polling queue, each bound to its own ephemeral port when the
// port is 0 (an unprinted second port serving the whole API). Errors:
// INVALID_ARGUMENT for a bad flag or spec, UNAVAILABLE "cannot listen on
// ADDRESS" (with a TLS hint when `tls`).
absl::StatusOr<StartedServer> StartServer(ServerSpec spec);

// What a server binary prints when StartServer fails: UNAVAILABLE's
// message alone (it names the address and the hint), else the status.
std::string StartFailureText(const absl::Status& status);

// Blocks SIGTERM and SIGINT in the calling thread and returns them. Call it
// before any thread starts (gRPC's included), so that the signals reach
// only ServeUntilSignal's waiter.
sigset_t BlockShutdownSignals();

// Returns once `server` has stopped: a thread waits for one of `signals`,
// logs it, runs `on_signal` (e.g. health answers NOT_SERVING) and shuts
// the server down, giving calls in flight `grace` before they are
// cancelled.
void ServeUntilSignal(grpc::Server* server, const sigset_t& signals,
                      const std::function<void()>& on_signal,
                      absl::Duration grace);

}  // namespace mim::base

#endif  // MIM_BASE_SERVER_CONNECTIONS_H_
