// The security flags of every gRPC server (the shards and the serving
// tier), defined once here: linking this target defines them.
//
//   --tls_cert=FILE       PEM certificate chain; with --tls_key, TLS only
//   --tls_key=FILE        PEM private key of --tls_cert
//   --tls_client_ca=FILE  PEM CA: clients must present a certificate it
//                         signed (mutual TLS); needs --tls_cert
//   --auth_tokens=FILE    'ROLE TOKEN' lines (ROLE read or admin; mode 600):
//                         every call needs a token with its method's role.
//                         Empty: no authentication.
//
// docs/OPERATIONS.md, "Security", says which role each call needs. The
// client side is base/client_security.h.
#ifndef MIM_BASE_SERVER_SECURITY_H_
#define MIM_BASE_SERVER_SECURITY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/grpc_auth.h"
#include "gflags/gflags_declare.h"

DECLARE_string(tls_cert);  // read by servers for their bind-failure hint

namespace grpc {
class ServerCredentials;
}  // namespace grpc

namespace mim::base {

struct ServerSecurity {
  // Insecure credentials without --tls_cert (never null).
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Null without --auth_tokens: authentication off.
  std::unique_ptr<Authorizer> authorizer;
};

// Credentials and tokens from the flags above, with one log line each
// saying what is on; `open_access` completes the warning logged when
// authentication is off ("any client that reaches the port may ...").
// Errors as ServerCredentialsFromFiles and Authorizer::FromFile.
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags(
    absl::string_view open_access);

}  // namespace mim::base

#endif  // MIM_BASE_SERVER_SECURITY_H_
