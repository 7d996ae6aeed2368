// The security flags of every client binary of the shards or the serving
// tier (ps_admin, the trainer, ingest_content, load_test), defined once
// here: linking this target defines them.
//
//   --tls_ca=FILE           PEM CA of the server's certificate: use TLS
//   --tls_client_cert=FILE  PEM certificate for mutual TLS (with the key)
//   --tls_client_key=FILE   PEM private key of --tls_client_cert
//   --auth_token_file=FILE  file holding this client's bearer token (600)
//
// docs/OPERATIONS.md, "Security", says which role each call needs.
#ifndef MIM_BASE_CLIENT_SECURITY_H_
#define MIM_BASE_CLIENT_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace mim::base {

struct ClientSecurity {
  // Insecure credentials without --tls_ca (never null).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Empty without --auth_token_file.
  std::string auth_token;
};

// Credentials and token from the flags above. Errors as
// ChannelCredentialsFromFiles and ReadTokenFile, naming the flag.
absl::StatusOr<ClientSecurity> ClientSecurityFromFlags();

}  // namespace mim::base

#endif  // MIM_BASE_CLIENT_SECURITY_H_
