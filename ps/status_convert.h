// Conversion between absl::Status and grpc::Status, used only at the RPC edge
// (the service handlers and the client adapter). The canonical codes are the
// same numbers in both libraries, so the code travels unchanged; a message
// sent to a client is capped at kMaxErrorMessageBytes (it travels in HTTP/2
// trailers, whose size is limited: a longer one would reach the client as
// a metadata-size error instead of the real one). The status's payloads
// travel too, as the details of a google.rpc.Status (WireStatus in
// proto/ps.proto): that is how a shard tells a client it may retry.
#ifndef MIM_PS_STATUS_CONVERT_H_
#define MIM_PS_STATUS_CONVERT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace mim::ps {

inline constexpr size_t kMaxErrorMessageBytes = 1024;
// Payload bytes (type URLs and values) a status carries to a client; the
// payloads beyond are dropped, whole.
inline constexpr size_t kMaxErrorDetailBytes = 1024;
// How much of a client's own input (a table or checkpoint name, a feature
// name) an error message quotes.
inline constexpr size_t kMaxQuotedInputBytes = 64;
// Payload (absl::Status::SetPayload type URL) of a refusal that left the
// shard unchanged and may be retried as it is: the shard was busy.
inline constexpr char kRetryLaterUrl[] =
    "type.googleapis.com/mim.ps.RetryLater";

// `status` marked kRetryLaterUrl.
absl::Status MarkRetryLater(absl::Status status);
// Whether `status` carries kRetryLaterUrl.
bool IsRetryLater(const absl::Status& status);

// `input` as an error message may quote it: unchanged when at most
// `max_bytes` long, else its first `max_bytes` bytes and "... (N bytes)".
std::string QuoteInput(absl::string_view input,
                       size_t max_bytes = kMaxQuotedInputBytes);

// Replaces in *text every occurrence of the path `dir` that stands as a
// path of its own: at the start or after white space, a quote, '(', '=' or
// ':', and followed by the end, '/', white space, a quote, ')', ',', ':' or
// ';' (so "/data" in "/data/db/LOCK" is replaced, in "/database" or "a
// /data-set" not). A `dir` without a '/' is also a word, so it is replaced
// only where a '/' follows ("data/db", not "data holds"). Returns how many
// were replaced; an empty `dir` none.
size_t ReplacePath(absl::string_view dir, absl::string_view with,
                   std::string* text);

// The message is cut to kMaxErrorMessageBytes (ending "...") when longer.
// Payloads go into error_details (a serialized WireStatus) and come back
// from it; error_details that do not parse as one are ignored.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace mim::ps

#endif  // MIM_PS_STATUS_CONVERT_H_
