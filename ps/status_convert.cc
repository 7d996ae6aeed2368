#include "ps/status_convert.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "proto/ps.pb.h"

namespace mim::ps {

std::string QuoteInput(absl::string_view input, size_t max_bytes) {
  if (input.size() <= max_bytes) return std::string(input);
  return absl::StrCat(input.substr(0, max_bytes), "... (", input.size(),
                      " bytes)");
}

absl::Status MarkRetryLater(absl::Status status) {
  status.SetPayload(kRetryLaterUrl, absl::Cord());
  return status;
}

bool IsRetryLater(const absl::Status& status) {
  return status.GetPayload(kRetryLaterUrl).has_value();
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::string_view message = status.message();
  std::string capped =
      message.size() <= kMaxErrorMessageBytes
          ? std::string(message)
          : absl::StrCat(message.substr(0, kMaxErrorMessageBytes - 3), "...");
  WireStatus details;
  size_t detail_bytes = 0;
  status.ForEachPayload(
      [&details, &detail_bytes](absl::string_view url,
                                const absl::Cord& payload) {
        // The details travel in the trailers too: a payload that would take
        // them past kMaxErrorDetailBytes stays on this side (whatever the
        // visiting order, one that fits beside the others is kept).
        const size_t bytes = url.size() + payload.size();
        if (detail_bytes + bytes > kMaxErrorDetailBytes) return;
        detail_bytes += bytes;
        WireAny* any = details.add_details();
        any->set_type_url(std::string(url));
        any->set_value(std::string(payload));
      });
  const auto code = static_cast<grpc::StatusCode>(status.code());
  if (details.details().empty()) return grpc::Status(code, std::move(capped));
  details.set_code(static_cast<int32_t>(status.code()));
  details.set_message(capped);
  return grpc::Status(code, std::move(capped), details.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode has the same values as absl::StatusCode (both are the
  // canonical google.rpc.Code); anything out of range becomes UNKNOWN.
  const int code = static_cast<int>(status.error_code());
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(status.error_message());
  }
  absl::Status out(static_cast<absl::StatusCode>(code),
                   status.error_message());
  WireStatus details;
  if (!status.error_details().empty() &&
      details.ParseFromString(status.error_details())) {
    for (const WireAny& any : details.details()) {
      if (!any.type_url().empty()) {
        out.SetPayload(any.type_url(), absl::Cord(any.value()));
      }
    }
  }
  return out;
}

}  // namespace mim::ps
