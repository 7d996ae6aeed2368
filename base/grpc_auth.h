// Bearer-token authentication of gRPC calls, shared by the shards and the
// serving tier (server side) and by every client binary (client side).
//
// A server started with --auth_tokens=FILE holds an Authorizer built from
// that file: one "ROLE TOKEN" per line, ROLE `read` or `admin`, blank lines
// and lines starting with '#' ignored. Each RPC needs a role (the shard's
// and the serving tier's tables are in docs/OPERATIONS.md, "Security");
// `admin` allows everything `read` does. A client sends its token as the
// call metadata "authorization: Bearer TOKEN" (AddBearerToken), read from
// a file that holds just the token (ReadTokenFile). Tokens are never taken
// from the command line, where other users of the host could read them.
//
// Both kinds of file must not be readable or writable by group or others
// (chmod 600): a file that is is refused, naming the file and the fix.
//
// Check works the same over TLS and over insecure channels (a gRPC
// AuthMetadataProcessor would need secure server credentials), so tokens
// work on loopback without TLS too; on a network, use TLS as well, or the
// token travels in clear text.
#ifndef MIM_BASE_GRPC_AUTH_H_
#define MIM_BASE_GRPC_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ClientContext;
class ServerBuilderOption;
class ServerContextBase;
}  // namespace grpc

namespace mim::base {

// What a call may do. kAdmin allows everything kRead does.
enum class Role { kRead = 0, kAdmin = 1 };

// "read" or "admin".
const char* RoleName(Role role);

// The metadata key a token travels in (gRPC metadata keys are lower case).
inline constexpr char kAuthorizationKey[] = "authorization";

// Tokens are 16..4096 characters of RFC 6750's b64token alphabet
// ([A-Za-z0-9-._~+/], '=' only at the end), so they fit in HTTP/2 metadata
// unchanged (e.g. `openssl rand -hex 32`).
inline constexpr size_t kMinTokenLength = 16;
inline constexpr size_t kMaxTokenLength = 4096;

// OK when `path` exists and has no permission bits for group or others;
// FAILED_PRECONDITION naming `flag`, the file, its mode and the fix
// (chmod 600) otherwise; NOT_FOUND when it cannot be stat'ed.
absl::Status CheckPrivateFile(const std::string& path, absl::string_view flag);

// Whether `secret` equals `presented`, in time that depends only on
// secret.size() (not on where they differ, nor on presented's content).
bool ConstantTimeEquals(absl::string_view secret, absl::string_view presented);

// The server side: which tokens exist and which role each has.
//
// Thread-safety: const methods are safe; the object is immutable after
// construction.
class Authorizer {
 public:
  struct Entry {
    Role role;
    std::string token;
  };

  // Reads the token file at `path` (after CheckPrivateFile). Errors name
  // the file and the line (never the token): INVALID_ARGUMENT for an
  // unknown role, a malformed or repeated token, or no token at all.
  static absl::StatusOr<std::unique_ptr<Authorizer>> FromFile(
      const std::string& path);
  // As FromFile, from the file's text; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<Authorizer>> FromText(
      absl::string_view text, absl::string_view source);

  // OK when the call's "authorization" metadata holds "Bearer TOKEN" for a
  // token whose role allows `needed`. UNAUTHENTICATED when the metadata is
  // missing, not a bearer token, or names no known token; PERMISSION_DENIED
  // when the token's role is read and `needed` is admin. Messages name
  // `method` and the role needed, never the token.
  absl::Status Check(const grpc::ServerContextBase& context, Role needed,
                     absl::string_view method) const;
  // The same check on the metadata values themselves (every
  // "authorization" value the call carried; a call with more than one is
  // refused).
  absl::Status CheckValues(const std::vector<absl::string_view>& values,
                           Role needed, absl::string_view method) const;

  // Tokens with exactly this role.
  int count(Role role) const;

 private:
  explicit Authorizer(std::vector<Entry> entries)
      : entries_(std::move(entries)) {}
  const std::vector<Entry> entries_;
};

// The client side: the token in the file at `path` (after
// CheckPrivateFile): its one non-empty line that is not a '#' comment,
// surrounding white space removed. INVALID_ARGUMENT naming `flag` and the
// file when there is not exactly one such line or it is not a valid token.
absl::StatusOr<std::string> ReadTokenFile(
    const std::string& path, absl::string_view flag = "--auth_token_file");

// Adds "authorization: Bearer `token`" to the call; nothing when `token`
// is empty (authentication off).
void AddBearerToken(const std::string& token, grpc::ClientContext* context);

// A ServerBuilder option that drops gRPC server reflection from the server
// (ServerBuilder::SetOption). Reflection cannot check a token, and its
// plugin registers itself in every server of a process that links it, so a
// server with an Authorizer drops it this way.
std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection();

}  // namespace mim::base

#endif  // MIM_BASE_GRPC_AUTH_H_
