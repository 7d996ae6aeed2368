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

size_t ReplacePath(absl::string_view dir, absl::string_view with,
                   std::string* text) {
  if (dir.empty()) return 0;
  const auto before_ok = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\'' || c == '"' ||
           c == '(' || c == '=' || c == ':';
  };
  const auto after_ok = [](char c) {
    return c == '/' || c == ' ' || c == '\t' || c == '\n' || c == '\'' ||
           c == '"' || c == ')' || c == ',' || c == ':' || c == ';';
  };
  // A dir without a '/' ("data") is also a word: only "data/..." is it.
  const bool bare = dir.find('/') == absl::string_view::npos;
  size_t replaced = 0;
  size_t from = 0;
  while (true) {
    const size_t at = text->find(dir.data(), from, dir.size());
    if (at == std::string::npos) break;
    const size_t end = at + dir.size();
    if ((at == 0 || before_ok((*text)[at - 1])) &&
        (bare ? end < text->size() && (*text)[end] == '/'
              : end == text->size() || after_ok((*text)[end]))) {
      text->replace(at, dir.size(), with.data(), with.size());
      from = at + with.size();
      ++replaced;
    } else {
      from = at + 1;
    }
  }
  return replaced;
}

}  // namespace mim::ps
