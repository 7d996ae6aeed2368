// Conversion between absl::Status and grpc::Status, used only at the RPC edge
// (the service handlers and the client adapter). The canonical codes are the
// same numbers in both libraries, so the code travels unchanged; a message
// sent to a client is capped at kMaxErrorMessageBytes (it travels in HTTP/2
// trailers, whose size is limited: a longer one would reach the client as
// a metadata-size error instead of the real one).
#ifndef MIM_PS_STATUS_CONVERT_H_
#define MIM_PS_STATUS_CONVERT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace mim::ps {

inline constexpr size_t kMaxErrorMessageBytes = 1024;
// How much of a client's own input (a table or checkpoint name, a feature
// name) an error message quotes.
inline constexpr size_t kMaxQuotedInputBytes = 64;

// `input` as an error message may quote it: unchanged when at most
// `max_bytes` long, else its first `max_bytes` bytes and "... (N bytes)".
std::string QuoteInput(absl::string_view input,
                       size_t max_bytes = kMaxQuotedInputBytes);

// The message is cut to kMaxErrorMessageBytes (ending "...") when longer.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace mim::ps

#endif  // MIM_PS_STATUS_CONVERT_H_
