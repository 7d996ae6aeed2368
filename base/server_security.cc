#include "base/server_security.h"

#include <string>
#include <utility>

#include "base/grpc_tls.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "grpcpp/security/server_credentials.h"

DEFINE_string(tls_cert, "",
              "PEM certificate chain of this server; with --tls_key, serve "
              "TLS only.");
DEFINE_string(tls_key, "", "PEM private key of --tls_cert.");
DEFINE_string(tls_client_ca, "",
              "PEM CA: clients must present a certificate it signed "
              "(mutual TLS); needs --tls_cert.");
DEFINE_string(auth_tokens, "",
              "File of 'ROLE TOKEN' lines (ROLE read or admin; mode 600): "
              "every call needs a token with its method's role "
              "(docs/OPERATIONS.md). Empty: no authentication.");

namespace mim::base {

absl::StatusOr<ServerSecurity> ServerSecurityFromFlags(
    absl::string_view open_access) {
  ServerSecurity security;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentialsFromFiles(
          {FLAGS_tls_cert, FLAGS_tls_key, FLAGS_tls_client_ca});
  if (!credentials.ok()) return credentials.status();
  security.credentials = *std::move(credentials);
  if (!FLAGS_auth_tokens.empty()) {
    absl::StatusOr<std::unique_ptr<Authorizer>> loaded =
        Authorizer::FromFile(FLAGS_auth_tokens);
    if (!loaded.ok()) return loaded.status();
    security.authorizer = *std::move(loaded);
    LOG(INFO) << "authentication on: "
              << security.authorizer->count(Role::kRead) << " read and "
              << security.authorizer->count(Role::kAdmin)
              << " admin token(s) from " << FLAGS_auth_tokens;
  } else {
    LOG(WARNING) << "authentication off (no --auth_tokens): any client that "
                    "reaches the port may "
                 << open_access;
  }
  LOG(INFO) << (FLAGS_tls_cert.empty()
                    ? "TLS off (no --tls_cert)"
                    : FLAGS_tls_client_ca.empty()
                          ? "TLS on"
                          : "TLS on, client certificates required");
  return security;
}

}  // namespace mim::base
