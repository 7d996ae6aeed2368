// Flag and file checks of the TLS credentials. Handshakes with real
// certificates (tools/make_test_certs.sh) are in tests/security_test.
#include "base/grpc_tls.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"

namespace mim::base {
namespace {

using ::testing::HasSubstr;

std::string WriteFile(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(dir == nullptr ? "/tmp" : dir, "/", name);
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

// Shaped like PEM; gRPC parses the contents only at the handshake.
const char kCert[] =
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const char kKey[] =
    "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

TEST(ServerCredentialsTest, NoFilesIsInsecure) {
  auto c = ServerCredentialsFromFiles({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(*c, nullptr);
}

TEST(ServerCredentialsTest, ChecksFlagCombinationsAndFiles) {
  const std::string cert = WriteFile("cert.pem", kCert);
  const std::string key = WriteFile("key.pem", kKey);
  const std::string text = WriteFile("text.txt", "not a certificate\n");

  auto only_cert = ServerCredentialsFromFiles({cert, "", ""});
  EXPECT_EQ(only_cert.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(only_cert.status().message(),
              HasSubstr("--tls_cert and --tls_key go together"));

  auto ca_alone = ServerCredentialsFromFiles({"", "", cert});
  EXPECT_EQ(ca_alone.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ca_alone.status().message(),
              HasSubstr("--tls_client_ca needs --tls_cert and --tls_key"));

  auto missing = ServerCredentialsFromFiles({cert + ".gone", key, ""});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              HasSubstr(absl::StrCat("--tls_cert: cannot read ", cert, ".gone")));

  auto swapped = ServerCredentialsFromFiles({key, cert, ""});
  EXPECT_EQ(swapped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(swapped.status().message(),
              HasSubstr("--tls_cert: " + key + " holds no PEM CERTIFICATE"));

  auto bad_ca = ServerCredentialsFromFiles({cert, key, text});
  EXPECT_EQ(bad_ca.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_ca.status().message(), HasSubstr("--tls_client_ca: "));

  EXPECT_TRUE(ServerCredentialsFromFiles({cert, key, ""}).ok());
  EXPECT_TRUE(ServerCredentialsFromFiles({cert, key, cert}).ok());
}

TEST(ChannelCredentialsTest, ChecksFlagCombinationsAndFiles) {
  const std::string cert = WriteFile("ccert.pem", kCert);
  const std::string key = WriteFile("ckey.pem", kKey);

  auto insecure = ChannelCredentialsFromFiles({});
  ASSERT_TRUE(insecure.ok()) << insecure.status();
  EXPECT_NE(*insecure, nullptr);

  auto cert_without_ca = ChannelCredentialsFromFiles({"", cert, key});
  EXPECT_EQ(cert_without_ca.status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cert_without_ca.status().message(),
              HasSubstr("--tls_client_cert/--tls_client_key need --tls_ca"));

  TlsClientFiles half{cert, cert, "", "ps_"};
  auto half_pair = ChannelCredentialsFromFiles(half);
  EXPECT_EQ(half_pair.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(half_pair.status().message(),
              HasSubstr("--ps_tls_client_cert and --ps_tls_client_key go "
                        "together"));

  auto bad_key = ChannelCredentialsFromFiles({cert, cert, cert});
  EXPECT_EQ(bad_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_key.status().message(),
              HasSubstr("--tls_client_key: " + cert +
                        " holds no PEM PRIVATE KEY"));

  EXPECT_TRUE(ChannelCredentialsFromFiles({cert, "", ""}).ok());
  EXPECT_TRUE(ChannelCredentialsFromFiles({cert, cert, key}).ok());
}

}  // namespace
}  // namespace mim::base
