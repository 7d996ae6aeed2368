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
// Thread-safety: call from main before the server starts.
#ifndef MIM_BASE_SERVER_CONNECTIONS_H_
#define MIM_BASE_SERVER_CONNECTIONS_H_

#include "absl/status/status.h"

namespace grpc {
class ServerBuilder;
}  // namespace grpc

namespace mim::base {

// Sets the flags above on `builder`. INVALID_ARGUMENT naming the flag when
// one is negative, or a timeout is 0.
absl::Status ApplyConnectionFlags(grpc::ServerBuilder* builder);

}  // namespace mim::base

#endif  // MIM_BASE_SERVER_CONNECTIONS_H_
