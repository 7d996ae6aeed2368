// Fuzz target: the servers' token file (--auth_tokens, base/grpc_auth.h)
// and the check of a call's "authorization" metadata.
//
// The input is the token file's text. Invariants for a file that parses:
// each "ROLE TOKEN" line's token, presented as "Bearer TOKEN", passes the
// read check and passes the admin check exactly when ROLE is admin
// (PERMISSION_DENIED otherwise). Every input line presented as a metadata
// value gets OK, UNAUTHENTICATED or PERMISSION_DENIED, never a crash.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/grpc_auth.h"
#include "tests/fuzz/fuzz_util.h"

using mim::base::Authorizer;
using mim::base::Role;
using mim::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text = mim::fuzz::AsStringView(data, size);
  absl::StatusOr<std::unique_ptr<Authorizer>> auth =
      Authorizer::FromText(text, "fuzz tokens");
  if (!auth.ok()) {
    Require(auth.status().code() == absl::StatusCode::kInvalidArgument,
            "a bad token file must be INVALID_ARGUMENT");
    return 0;
  }
  Require((*auth)->count(Role::kRead) + (*auth)->count(Role::kAdmin) >= 1,
          "an accepted token file holds no token");

  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    std::vector<absl::string_view> fields =
        absl::StrSplit(stripped, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() == 2 && stripped[0] != '#') {
      const std::string bearer = absl::StrCat("Bearer ", fields[1]);
      Require((*auth)->CheckValues({bearer}, Role::kRead, "Fuzz").ok(),
              "a listed token fails the read check");
      const absl::Status admin =
          (*auth)->CheckValues({bearer}, Role::kAdmin, "Fuzz");
      if (fields[0] == "admin") {
        Require(admin.ok(), "an admin token fails the admin check");
      } else {
        Require(admin.code() == absl::StatusCode::kPermissionDenied,
                "a read token passes the admin check");
      }
    }
    const absl::Status any = (*auth)->CheckValues({line}, Role::kAdmin, "Fuzz");
    Require(any.ok() || any.code() == absl::StatusCode::kUnauthenticated ||
                any.code() == absl::StatusCode::kPermissionDenied,
            "CheckValues answered an unexpected code");
  }
  return 0;
}
