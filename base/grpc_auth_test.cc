#include "base/grpc_auth.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::base {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kRead = "read-token-0123456789abcdef";
const std::string kAdmin = "admin-token-0123456789abcdef";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir == nullptr ? "/tmp" : dir, "/", name);
}

std::string WriteFile(const std::string& name, const std::string& text,
                      mode_t mode) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::trunc) << text;
  chmod(path.c_str(), mode);
  return path;
}

std::unique_ptr<Authorizer> Both() {
  auto a = Authorizer::FromText(
      absl::StrCat("# shard tokens\n\nread ", kRead, "\n  admin\t", kAdmin,
                   "  \n"),
      "test");
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

absl::Status Call(const Authorizer& a, std::vector<std::string> values,
                  Role needed) {
  std::vector<absl::string_view> views(values.begin(), values.end());
  return a.CheckValues(views, needed, "Push");
}

TEST(AuthorizerTest, ParsesRolesCommentsAndBlankLines) {
  auto a = Both();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->count(Role::kRead), 1);
  EXPECT_EQ(a->count(Role::kAdmin), 1);
}

TEST(AuthorizerTest, RefusesBadFilesNamingTheLineNotTheToken) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "holds no token"},
      {"# only a comment\n", "holds no token"},
      {absl::StrCat("writer ", kAdmin, "\n"), "line 1: unknown role 'writer'"},
      {absl::StrCat(kAdmin, " admin\n"),
       "line 1: unknown role (a " + std::to_string(kAdmin.size()) +
           "-character word, long enough to be a token: is the line written "
           "'TOKEN ROLE'?)"},
      {absl::StrCat("read ", kRead, " extra\n"), "line 1: expected 'ROLE TOKEN'"},
      {"read\n", "line 1: expected 'ROLE TOKEN'"},
      {"\nadmin short\n", "line 2: not a valid token (5 characters)"},
      {"admin bad\"quote-0123456789abcdef\n", "line 1: not a valid token"},
      {"admin bad=inside-0123456789abcdef\n", "line 1: not a valid token"},
      {absl::StrCat("read ", kRead, "\nadmin ", kRead, "\n"),
       "line 2: this token is listed twice"},
  };
  for (const Case& c : cases) {
    auto a = Authorizer::FromText(c.text, "tokens.txt");
    ASSERT_FALSE(a.ok()) << c.text;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(a.status().message(), HasSubstr(c.message)) << c.text;
    EXPECT_THAT(a.status().message(), HasSubstr("tokens.txt")) << c.text;
    EXPECT_THAT(a.status().message(), Not(HasSubstr(kRead)));
    EXPECT_THAT(a.status().message(), Not(HasSubstr(kAdmin)));
    // Not even a prefix of a token: 8 characters already narrow a guess.
    EXPECT_THAT(a.status().message(), Not(HasSubstr(kRead.substr(0, 8))));
    EXPECT_THAT(a.status().message(), Not(HasSubstr(kAdmin.substr(0, 8))));
  }
  // Trailing '=' padding is part of the alphabet.
  EXPECT_TRUE(
      Authorizer::FromText("read abcdefghijklmnopqrstuvwxyz012345==\n", "t")
          .ok());
}

TEST(AuthorizerTest, ChecksTokensAndRoles) {
  auto a = Both();
  ASSERT_NE(a, nullptr);
  const std::string bearer_read = "Bearer " + kRead;
  const std::string bearer_admin = "Bearer " + kAdmin;
  EXPECT_TRUE(Call(*a, {bearer_read}, Role::kRead).ok());
  EXPECT_TRUE(Call(*a, {bearer_admin}, Role::kRead).ok());
  EXPECT_TRUE(Call(*a, {bearer_admin}, Role::kAdmin).ok());
  EXPECT_TRUE(Call(*a, {"bearer " + kAdmin}, Role::kAdmin).ok());

  absl::Status s = Call(*a, {bearer_read}, Role::kAdmin);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "Push needs the admin role; this token has the read role");

  s = Call(*a, {}, Role::kRead);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("Push needs a token with the read role"));

  for (const std::string& wrong :
       {std::string("Bearer ") + kRead + "x", std::string("Bearer ") +
        kRead.substr(0, kRead.size() - 1), std::string("Bearer "),
        std::string("Bearer ") + kRead.substr(0, 10) + "X" +
            kRead.substr(11)}) {
    s = Call(*a, {wrong}, Role::kRead);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << wrong;
    EXPECT_EQ(s.message(), "Push: the bearer token is not valid on this server");
  }
  s = Call(*a, {kAdmin}, Role::kRead);  // no scheme
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("is not 'Bearer TOKEN'"));
  EXPECT_THAT(s.message(), Not(HasSubstr(kAdmin)));
  s = Call(*a, {"Basic dXNlcjpwYXNz"}, Role::kRead);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);

  s = Call(*a, {bearer_admin, bearer_admin}, Role::kRead);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("2 'authorization' metadata values"));
}

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  // A presented string that is a prefix padded with NULs is not equal.
  EXPECT_FALSE(ConstantTimeEquals(std::string("ab\0", 3), "ab"));
}

TEST(TokenFileTest, ServerFileMustBePrivate) {
  const std::string text = absl::StrCat("admin ", kAdmin, "\n");
  const std::string open = WriteFile("tokens_open", text, 0644);
  auto a = Authorizer::FromFile(open);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(a.status().message(),
              HasSubstr(absl::StrCat("--auth_tokens: ", open,
                                     " has mode 0644")));
  EXPECT_THAT(a.status().message(), HasSubstr("chmod 600"));

  const std::string group = WriteFile("tokens_group", text, 0640);
  EXPECT_EQ(Authorizer::FromFile(group).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const std::string group_write = WriteFile("tokens_gw", text, 0620);
  EXPECT_EQ(Authorizer::FromFile(group_write).status().code(),
            absl::StatusCode::kFailedPrecondition);

  const std::string private_file = WriteFile("tokens_private", text, 0600);
  auto ok = Authorizer::FromFile(private_file);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->count(Role::kAdmin), 1);

  EXPECT_EQ(Authorizer::FromFile(TempPath("no_such_file")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenFileTest, ClientFileHoldsOneToken) {
  const std::string path =
      WriteFile("client_token", absl::StrCat("# for the trainer\n ", kAdmin,
                                             " \n\n"),
                0600);
  auto token = ReadTokenFile(path);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, kAdmin);

  auto open = ReadTokenFile(
      WriteFile("client_open", kAdmin, 0604), "--ps_auth_token_file");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(open.status().message(), HasSubstr("--ps_auth_token_file: "));

  auto two = ReadTokenFile(
      WriteFile("client_two", absl::StrCat(kRead, "\n", kAdmin, "\n"), 0600));
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("has 2"));

  auto role_line = ReadTokenFile(
      WriteFile("client_role", absl::StrCat("admin ", kAdmin, "\n"), 0600));
  EXPECT_EQ(role_line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(role_line.status().message(), Not(HasSubstr(kAdmin)));
}

}  // namespace
}  // namespace mim::base
