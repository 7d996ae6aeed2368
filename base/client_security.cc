#include "base/client_security.h"

#include <utility>

#include "base/grpc_auth.h"
#include "base/grpc_tls.h"
#include "gflags/gflags.h"
#include "grpcpp/security/credentials.h"

DEFINE_string(tls_ca, "",
              "PEM CA that signed the server's certificate: talk TLS (the "
              "server must run with --tls_cert).");
DEFINE_string(tls_client_cert, "",
              "PEM certificate this client presents (mutual TLS, for a "
              "server with --tls_client_ca); needs --tls_client_key.");
DEFINE_string(tls_client_key, "", "PEM private key of --tls_client_cert.");
DEFINE_string(auth_token_file, "",
              "File holding this client's bearer token, sent with every "
              "call (mode 600; for a server with --auth_tokens).");

namespace mim::base {

absl::StatusOr<ClientSecurity> ClientSecurityFromFlags() {
  ClientSecurity out;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFromFiles(
          {FLAGS_tls_ca, FLAGS_tls_client_cert, FLAGS_tls_client_key, ""});
  if (!credentials.ok()) return credentials.status();
  out.credentials = *std::move(credentials);
  if (!FLAGS_auth_token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(FLAGS_auth_token_file);
    if (!token.ok()) return token.status();
    out.auth_token = *std::move(token);
  }
  return out;
}

}  // namespace mim::base
