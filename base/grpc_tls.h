// TLS credentials from PEM files, with gRPC's own SSL credentials, shared
// by the shards and the serving tier (servers) and every client binary.
//
// Servers: --tls_cert and --tls_key (the server's certificate chain and
// private key) turn TLS on; --tls_client_ca additionally requires every
// client to present a certificate signed by that CA (mutual TLS) and
// refuses the handshake otherwise. Clients: --tls_ca (the CA that signed
// the server's certificate) turns TLS on; --tls_client_cert and
// --tls_client_key add the client's own certificate for mutual TLS. The
// server certificate must name the address clients dial (subjectAltName
// IP:127.0.0.1, DNS:localhost, ...); tools/make_test_certs.sh makes a test
// CA and such certificates.
//
// No file given: insecure credentials (plain HTTP/2), as before TLS existed.
#ifndef MIM_BASE_GRPC_TLS_H_
#define MIM_BASE_GRPC_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace mim::base {

struct TlsServerFiles {
  std::string cert;       // --tls_cert: PEM certificate chain
  std::string key;        // --tls_key: PEM private key
  std::string client_ca;  // --tls_client_ca: PEM CA of client certificates
  bool enabled() const { return !cert.empty() || !key.empty(); }
};

struct TlsClientFiles {
  std::string ca;    // --tls_ca: PEM CA of the server's certificate
  std::string cert;  // --tls_client_cert: PEM certificate chain (mTLS)
  std::string key;   // --tls_client_key: PEM private key (mTLS)
  // Put before the flag names in errors: "ps_" for a binary whose shard
  // client takes --ps_tls_ca etc. (the serving tier).
  std::string flag_prefix;
  bool enabled() const { return !ca.empty(); }
};

// SSL server credentials from the files; insecure credentials when
// !files.enabled(). INVALID_ARGUMENT naming the flag when only one of
// cert/key is given, --tls_client_ca comes without them, or a file does not
// hold the PEM block it should; NOT_FOUND naming the flag and file when one
// cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
ServerCredentialsFromFiles(const TlsServerFiles& files);

// SSL channel credentials from the files; insecure credentials when
// !files.enabled(). Errors as for ServerCredentialsFromFiles (a client
// certificate or key without --tls_ca, or one without the other, is
// INVALID_ARGUMENT).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
ChannelCredentialsFromFiles(const TlsClientFiles& files);

}  // namespace mim::base

#endif  // MIM_BASE_GRPC_TLS_H_
