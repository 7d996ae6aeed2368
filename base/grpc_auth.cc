#include "base/grpc_auth.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "grpcpp/client_context.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/server_context.h"

namespace mim::base {
namespace {

constexpr absl::string_view kBearerPrefix = "Bearer ";

// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
// *"=".
bool IsValidToken(absl::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
    return false;
  }
  size_t i = 0;
  for (; i < token.size(); ++i) {
    const char c = token[i];
    const bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
                    c == '/';
    if (!ok) break;
  }
  if (i == 0) return false;
  for (; i < token.size(); ++i) {
    if (token[i] != '=') return false;
  }
  return true;
}

std::string TokenRule() {
  return absl::StrFormat(
      "a token is %d..%d characters of [A-Za-z0-9-._~+/] (then optional "
      "'='), e.g. from `openssl rand -hex 32`",
      kMinTokenLength, kMaxTokenLength);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path, ": ",
                                            std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(flag, ": error reading ", path));
  }
  return text.str();
}

}  // namespace

const char* RoleName(Role role) {
  return role == Role::kAdmin ? "admin" : "read";
}

absl::Status CheckPrivateFile(const std::string& path, absl::string_view flag) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(flag, ": cannot stat ", path, ": ",
                                            std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, ": ", path, " is not a regular file"));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: %s has mode %04o: a token file must not be readable or "
        "writable by group or others; run chmod 600 %s",
        flag, path, st.st_mode & 07777, path));
  }
  return absl::OkStatus();
}

bool ConstantTimeEquals(absl::string_view secret,
                        absl::string_view presented) {
  // Runs over every byte of `secret`, whatever `presented` holds; the
  // accumulator is volatile so the compiler cannot stop at the first
  // difference.
  volatile unsigned char diff = secret.size() == presented.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char p =
        i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | (static_cast<unsigned char>(secret[i]) ^ p);
  }
  return diff == 0;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::FromFile(
    const std::string& path) {
  if (absl::Status s = CheckPrivateFile(path, "--auth_tokens"); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> text = ReadWholeFile(path, "--auth_tokens");
  if (!text.ok()) return text.status();
  return FromText(*text, absl::StrCat("--auth_tokens file ", path));
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::FromText(
    absl::string_view text, absl::string_view source) {
  std::vector<Entry> entries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s line %d: expected 'ROLE TOKEN' (ROLE read or admin), got %d "
          "fields",
          source, line_number, fields.size()));
    }
    Role role;
    if (fields[0] == "read") {
      role = Role::kRead;
    } else if (fields[0] == "admin") {
      role = Role::kAdmin;
    } else {
      // A word as long as a token may be one (the line written 'TOKEN
      // ROLE'): never quote any part of it, a log must not leak a secret.
      if (fields[0].size() >= kMinTokenLength) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s line %d: unknown role (a %d-character word, long enough to "
            "be a token: is the line written 'TOKEN ROLE'?); expected 'ROLE "
            "TOKEN' with ROLE read or admin",
            source, line_number, fields[0].size()));
      }
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s line %d: unknown role '%s'; expected read or admin", source,
          line_number, fields[0]));
    }
    if (!IsValidToken(fields[1])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s line %d: not a valid token (%d characters); %s", source,
          line_number, fields[1].size(), TokenRule()));
    }
    for (const Entry& e : entries) {
      if (e.token == fields[1]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s line %d: this token is listed twice; give each token one "
            "role",
            source, line_number));
      }
    }
    entries.push_back({role, std::string(fields[1])});
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        " holds no token; expected lines 'ROLE TOKEN' (ROLE read or admin)"));
  }
  return std::unique_ptr<Authorizer>(new Authorizer(std::move(entries)));
}

absl::Status Authorizer::Check(const grpc::ServerContextBase& context,
                               Role needed, absl::string_view method) const {
  std::vector<absl::string_view> values;
  const auto range = context.client_metadata().equal_range(kAuthorizationKey);
  for (auto it = range.first; it != range.second; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  return CheckValues(values, needed, method);
}

absl::Status Authorizer::CheckValues(
    const std::vector<absl::string_view>& values, Role needed,
    absl::string_view method) const {
  if (values.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        method, " needs a token with the ", RoleName(needed),
        " role: send metadata 'authorization: Bearer TOKEN' (clients: "
        "--auth_token_file)"));
  }
  if (values.size() > 1) {
    return absl::UnauthenticatedError(absl::StrCat(
        method, ": the call carries ", values.size(),
        " 'authorization' metadata values; send exactly one"));
  }
  absl::string_view value = values[0];
  if (value.size() < kBearerPrefix.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kBearerPrefix.size()),
                              kBearerPrefix)) {
    return absl::UnauthenticatedError(
        absl::StrCat(method, ": 'authorization' metadata is not 'Bearer TOKEN'"));
  }
  const absl::string_view presented = value.substr(kBearerPrefix.size());
  // Every token is compared, so the time does not tell which one matched.
  int matched = -1;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (ConstantTimeEquals(entries_[i].token, presented)) {
      matched = static_cast<int>(i);
    }
  }
  if (matched < 0) {
    return absl::UnauthenticatedError(
        absl::StrCat(method, ": the bearer token is not valid on this server"));
  }
  const Role role = entries_[matched].role;
  if (static_cast<int>(role) < static_cast<int>(needed)) {
    return absl::PermissionDeniedError(absl::StrCat(
        method, " needs the ", RoleName(needed),
        " role; this token has the ", RoleName(role), " role"));
  }
  return absl::OkStatus();
}

int Authorizer::count(Role role) const {
  int n = 0;
  for (const Entry& e : entries_) n += e.role == role ? 1 : 0;
  return n;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path,
                                          absl::string_view flag) {
  if (absl::Status s = CheckPrivateFile(path, flag); !s.ok()) return s;
  absl::StatusOr<std::string> text = ReadWholeFile(path, flag);
  if (!text.ok()) return text.status();
  std::string token;
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    ++lines;
    token = std::string(line);
  }
  if (lines != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path,
                     " must hold exactly one token line, has ", lines));
  }
  if (!IsValidToken(token)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " does not hold a valid token (",
                     token.size(), " characters); ", TokenRule()));
  }
  return token;
}

void AddBearerToken(const std::string& token, grpc::ClientContext* context) {
  if (token.empty()) return;
  context->AddMetadata(kAuthorizationKey, absl::StrCat(kBearerPrefix, token));
}

namespace {

class WithoutReflectionOption final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(
      std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins)
      override {
    // The name gRPC's ProtoServerReflectionPlugin gives itself.
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                         return p->name() == "proto_server_reflection";
                       }),
        plugins->end());
  }
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection() {
  return std::make_unique<WithoutReflectionOption>();
}

}  // namespace mim::base
