// Security of the shards and the serving tier, with real processes on
// loopback: the listening sockets (loopback by default, exactly one gRPC
// port), TLS and mutual TLS with certificates from tools/make_test_certs.sh,
// bearer tokens with the read and admin roles on every RPC (refused calls
// change nothing), error messages without server paths or unbounded client
// input, and the trainer, ps_admin, ingest_content, csft, the serving tier
// and tools/serving_client.py working with TLS and tokens end to end.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/grpc_tls.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/ps.grpc.pb.h"
#include "proto/serving.grpc.pb.h"
#include "ps/client.h"
#include "ps/health.grpc.pb.h"
#include "tests/ops_util.h"
#include "tests/process.h"
#include "tests/ps_tables.h"

namespace mim::testing {
namespace {

namespace fs = std::filesystem;
using ps::PsClient;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

const std::string kAdminToken = "admin-0123456789abcdef0123456789abcdef";
const std::string kReadToken = "read-0123456789abcdef0123456789abcdef";
const std::string kWrongToken = "wrong-0123456789abcdef0123456789abcdef";

std::string TmpDir() { return std::getenv("TEST_TMPDIR"); }

// A directory of this test's own.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(TmpDir(), "/", info->test_suite_name(), ".",
                      info->name());
}

// Writes `text` to `path` with mode `mode` (the umask does not apply).
void WriteFile(const std::string& path, const std::string& text,
               mode_t mode = 0600) {
  std::ofstream(path, std::ios::trunc) << text;
  ASSERT_EQ(chmod(path.c_str(), mode), 0) << path;
}

// Certificates from tools/make_test_certs.sh and token files, in `dir`.
struct Secrets {
  std::string dir;
  std::string ca() const { return dir + "/ca.pem"; }
  std::string server_cert() const { return dir + "/server.pem"; }
  std::string server_key() const { return dir + "/server.key"; }
  std::string client_cert() const { return dir + "/client.pem"; }
  std::string client_key() const { return dir + "/client.key"; }
  std::string tokens() const { return dir + "/tokens.txt"; }
  std::string admin_token() const { return dir + "/admin.token"; }
  std::string read_token() const { return dir + "/read.token"; }
  std::string wrong_token() const { return dir + "/wrong.token"; }

  std::vector<std::string> ServerTls(bool mutual) const {
    std::vector<std::string> f = {"--tls_cert=" + server_cert(),
                                  "--tls_key=" + server_key()};
    if (mutual) f.push_back("--tls_client_ca=" + ca());
    return f;
  }
  std::vector<std::string> ClientTls(bool with_cert) const {
    std::vector<std::string> f = {"--tls_ca=" + ca()};
    if (with_cert) {
      f.push_back("--tls_client_cert=" + client_cert());
      f.push_back("--tls_client_key=" + client_key());
    }
    return f;
  }
  std::shared_ptr<grpc::ChannelCredentials> Credentials(bool with_cert) const {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> c =
        base::ChannelCredentialsFromFiles(
            {ca(), with_cert ? client_cert() : "",
             with_cert ? client_key() : "", ""});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }
};

absl::StatusOr<Secrets> MakeSecrets(const std::string& dir) {
  absl::StatusOr<CommandResult> r =
      RunCommand({"/bin/bash", Runfile("tools/make_test_certs.sh"), dir});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError("make_test_certs.sh: " + r->err);
  }
  Secrets s{dir};
  WriteFile(s.tokens(), absl::StrCat("# test tokens\nadmin ", kAdminToken,
                                     "\nread ", kReadToken, "\n"));
  WriteFile(s.admin_token(), kAdminToken + "\n");
  WriteFile(s.read_token(), kReadToken + "\n");
  WriteFile(s.wrong_token(), kWrongToken + "\n");
  return s;
}

// ------------------------------------------------------- listening sockets

struct Listener {
  std::string address;  // hex, as /proc/net/tcp{,6} writes it
  int port = 0;
  bool v6 = false;
};

bool IsLoopback(const Listener& l) {
  if (!l.v6) return l.address == "0100007F";
  return l.address == "0000000000000000FFFF00000100007F" ||  // ::ffff:127.0.0.1
         l.address == "00000000000000000000000001000000";    // ::1
}

// Every TCP socket in LISTEN state that process `pid` holds: its socket
// inodes from /proc/PID/fd, matched in /proc/PID/net/tcp and tcp6.
std::vector<Listener> ListeningSockets(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
  for (const auto& entry : fs::directory_iterator(fd_dir)) {
    std::error_code ec;
    const std::string target = fs::read_symlink(entry.path(), ec).string();
    if (!ec && absl::StartsWith(target, "socket:[")) {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  std::vector<Listener> out;
  for (const bool v6 : {false, true}) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/net/tcp", v6 ? "6" : ""));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f =
          absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() < 10 || f[3] != "0A" || inodes.count(f[9]) == 0) continue;
      const std::vector<std::string> local = absl::StrSplit(f[1], ':');
      Listener l;
      l.address = local[0];
      l.port = static_cast<int>(std::stoul(local[1], nullptr, 16));
      l.v6 = v6;
      out.push_back(l);
    }
  }
  return out;
}

std::vector<int> Ports(const std::vector<Listener>& listeners) {
  std::vector<int> ports;
  for (const Listener& l : listeners) ports.push_back(l.port);
  return ports;
}

TEST(ListenTest, ShardDefaultsToLoopbackWithOneGrpcPort) {
  const std::string dir = TmpDir() + "/listen_default";
  auto shard = ServerProcess::Start(
      {Runfile("ps/server"), "--port=0", "--data_dir=" + dir + "/data",
       "--metrics_port=0", "--threads=4"},
      /*expect_metrics=*/true);
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::vector<Listener> listeners = ListeningSockets((*shard)->pid());
  // The gRPC port and the metrics port, nothing else: with --port=0, gRPC's
  // SO_REUSEPORT listener used to bind a second socket to a second
  // ephemeral port that served the whole API.
  EXPECT_THAT(Ports(listeners),
              UnorderedElementsAre((*shard)->port(), (*shard)->metrics_port()));
  for (const Listener& l : listeners) {
    EXPECT_TRUE(IsLoopback(l)) << "port " << l.port << " listens on "
                               << l.address;
  }
}

TEST(ListenTest, ShardOnAllInterfacesOnlyWhenAsked) {
  const std::string dir = TmpDir() + "/listen_any";
  auto shard = ServerProcess::Start(
      {Runfile("ps/server"), "--host=0.0.0.0", "--port=0",
       "--data_dir=" + dir + "/data", "--threads=4"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::vector<Listener> listeners = ListeningSockets((*shard)->pid());
  ASSERT_THAT(Ports(listeners), UnorderedElementsAre((*shard)->port()));
  EXPECT_FALSE(IsLoopback(listeners[0])) << listeners[0].address;
}

// ------------------------------------------------------- shards: TLS, mTLS

std::unique_ptr<PsClient> Client(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    const std::string& token = "") {
  PsClient::Options o;
  o.credentials = std::move(credentials);
  o.auth_token = token;
  o.max_attempts = 1;
  o.timeout = absl::Seconds(20);
  o.push_retry = PsClient::Options::PushRetry::kNever;
  auto c = PsClient::Create({address}, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto secrets = MakeSecrets(TmpDir() + "/tls_certs");
    ASSERT_TRUE(secrets.ok()) << secrets.status();
    secrets_ = new Secrets(*secrets);
    // Certificates of another CA: trusted by nobody here.
    auto other = MakeSecrets(TmpDir() + "/tls_other");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ = new Secrets(*other);
  }
  static void TearDownTestSuite() {
    delete secrets_;
    delete other_;
  }
  std::unique_ptr<ShardProcess> StartShard(const std::string& name,
                                           bool mutual) {
    ShardProcess::Flags f;
    f.data_dir = TmpDir() + "/" + name;
    f.extra = secrets_->ServerTls(mutual);
    auto shard = ShardProcess::Start(f);
    EXPECT_TRUE(shard.ok()) << shard.status();
    return shard.ok() ? *std::move(shard) : nullptr;
  }
  static Secrets* secrets_;
  static Secrets* other_;
};
Secrets* TlsTest::secrets_ = nullptr;
Secrets* TlsTest::other_ = nullptr;

TEST_F(TlsTest, ServesOnlyTls) {
  auto shard = StartShard("tls", /*mutual=*/false);
  ASSERT_NE(shard, nullptr);
  auto tls = Client(shard->address(), secrets_->Credentials(false));
  ASSERT_TRUE(tls->CreateTable(IdTable("t", 4), false).ok());
  auto pulled = tls->Pull("t", std::vector<uint64_t>{1, 2});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, std::vector<float>(8, 0.0f));
  EXPECT_TRUE(tls->Health()[0].ok());

  auto plain = Client(shard->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(plain->ListTables().status().code(), absl::StatusCode::kUnavailable);
  auto wrong_ca = Client(shard->address(), other_->Credentials(false));
  EXPECT_EQ(wrong_ca->ListTables().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutTrustedCertificate) {
  auto shard = StartShard("mtls", /*mutual=*/true);
  ASSERT_NE(shard, nullptr);
  auto no_cert = Client(shard->address(), secrets_->Credentials(false));
  EXPECT_EQ(no_cert->ListTables().status().code(),
            absl::StatusCode::kUnavailable);
  // A client certificate from another CA, with the right server CA.
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> foreign =
      base::ChannelCredentialsFromFiles({secrets_->ca(), other_->client_cert(),
                                         other_->client_key(), ""});
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  EXPECT_EQ(Client(shard->address(), *foreign)->ListTables().status().code(),
            absl::StatusCode::kUnavailable);

  auto with_cert = Client(shard->address(), secrets_->Credentials(true));
  ASSERT_TRUE(with_cert->CreateTable(IdTable("t", 4), false).ok());
  auto tables = with_cert->ListTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 1u);
  EXPECT_EQ((*tables)[0].name(), "t");
}

TEST_F(TlsTest, BadTlsFlagsStopTheServerNamingTheFlag) {
  const std::string data = "--data_dir=" + TmpDir() + "/tls_bad";
  auto r = RunCommand({Runfile("ps/server"), data,
                       "--tls_cert=" + secrets_->server_cert()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_THAT(r->err, HasSubstr("--tls_cert and --tls_key go together"));

  r = RunCommand({Runfile("ps/server"), data,
                  "--tls_cert=" + secrets_->server_key(),
                  "--tls_key=" + secrets_->server_key()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_THAT(r->err, HasSubstr("--tls_cert: " + secrets_->server_key() +
                                " holds no PEM CERTIFICATE"));
}

// ------------------------------------------------------- shards: tokens

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()),
                     v.size() * sizeof(float));
}

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto secrets = MakeSecrets(TestDir() + "/secrets");
    ASSERT_TRUE(secrets.ok()) << secrets.status();
    secrets_ = *secrets;
    ShardProcess::Flags f;
    f.data_dir = TestDir() + "/shard";
    f.extra = {"--auth_tokens=" + secrets_.tokens()};
    auto shard = ShardProcess::Start(f);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = *std::move(shard);
    auto insecure = grpc::InsecureChannelCredentials();
    none_ = Client(shard_->address(), insecure);
    wrong_ = Client(shard_->address(), insecure, kWrongToken);
    read_ = Client(shard_->address(), insecure, kReadToken);
    admin_ = Client(shard_->address(), insecure, kAdminToken);
  }

  // Everything a refused call must leave as it was.
  struct State {
    std::string rows;
    std::string content;
    std::vector<std::string> tables;
    std::vector<std::string> checkpoints;
    uint64_t pushes = 0;  // keys pushed since the shard started
  };
  State Snapshot() {
    State st;
    auto rows = admin_->GetRows("t", keys_);
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (rows.ok()) st.rows = Bytes(rows->values);
    auto content = admin_->GetRows("c", keys_);
    EXPECT_TRUE(content.ok()) << content.status();
    if (content.ok()) {
      st.content = Bytes(content->values);
      for (const ps::RowMeta& m : content->meta) {
        st.content += absl::StrCat("/", m.version());
      }
    }
    auto tables = admin_->ListTables();
    EXPECT_TRUE(tables.ok()) << tables.status();
    if (tables.ok()) {
      for (const ps::TableConfig& t : *tables) st.tables.push_back(t.name());
    }
    auto lists = admin_->ListCheckpoints();
    EXPECT_TRUE(lists.ok()) << lists.status();
    if (lists.ok()) {
      for (const ps::CheckpointEntry& c : (*lists)[0].list.checkpoints()) {
        st.checkpoints.push_back(c.name());
      }
    }
    auto stats = admin_->Stats("t");
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (stats.ok()) st.pushes = (*stats)[0].stats.tables(0).pushes();
    return st;
  }

  Secrets secrets_;
  std::unique_ptr<ShardProcess> shard_;
  std::unique_ptr<PsClient> none_, wrong_, read_, admin_;
  const std::vector<uint64_t> keys_ = {1, 2, 3};
};

TEST_F(TokenTest, ReadCallsNeedAReadOrAdminToken) {
  ASSERT_TRUE(admin_->CreateTable(IdTable("t", 2), false).ok());
  for (PsClient* c : {none_.get(), wrong_.get(), read_.get(), admin_.get()}) {
    const absl::StatusCode want = c == read_.get() || c == admin_.get()
                                      ? absl::StatusCode::kOk
                                      : absl::StatusCode::kUnauthenticated;
    const std::string who = c == none_.get()    ? "no token"
                            : c == wrong_.get() ? "wrong token"
                            : c == read_.get()  ? "read token"
                                                : "admin token";
    EXPECT_EQ(c->Pull("t", keys_).status().code(), want) << who;
    EXPECT_EQ(c->GetRows("t", keys_).status().code(), want) << who;
    EXPECT_EQ(c->Stats("").status().code(), want) << who;
    EXPECT_EQ(c->ListTables().status().code(), want) << who;
    EXPECT_EQ(c->ListCheckpoints().status().code(), want) << who;
    EXPECT_EQ(c->Health()[0].code(),
              want == absl::StatusCode::kOk ? absl::StatusCode::kOk
                                            : absl::StatusCode::kUnavailable)
        << who;  // Health reports any failure as UNAVAILABLE
  }
  const absl::Status missing = none_->Pull("t", keys_).status();
  EXPECT_THAT(missing.message(),
              HasSubstr("Pull needs a token with the read role: send "
                        "metadata 'authorization: Bearer TOKEN'"));
  const absl::Status wrong = wrong_->ListTables().status();
  EXPECT_THAT(wrong.message(),
              HasSubstr("ListTables: the bearer token is not valid on this "
                        "server"));
  EXPECT_THAT(wrong.message(), Not(HasSubstr(kWrongToken)));
  EXPECT_THAT(none_->Health()[0].message(),
              HasSubstr("Health.Check needs a token with the read role"));
}

TEST_F(TokenTest, WritesAndRestoresNeedAnAdminTokenAndRefusalsChangeNothing) {
  ASSERT_TRUE(admin_->CreateTable(IdTable("t", 2), false).ok());
  ASSERT_TRUE(admin_->CreateTable(ContentTable("c", 2), false).ok());
  const std::vector<float> grads = {1, 1, 2, 2, 3, 3};
  ASSERT_TRUE(admin_->Push("t", keys_, grads).ok());
  ASSERT_TRUE(admin_->Upsert("c", keys_, {1, 1, 2, 2, 3, 3}, 1).ok());
  ASSERT_TRUE(admin_->Checkpoint("c1").ok());
  const std::string rows_at_c1 = Snapshot().rows;
  // After the checkpoint, so that a restore would change the rows.
  ASSERT_TRUE(admin_->Push("t", keys_, grads).ok());
  const State before = Snapshot();
  ASSERT_EQ(before.checkpoints, std::vector<std::string>{"c1"});
  ASSERT_EQ(before.pushes, 6u);
  ASSERT_NE(before.rows, rows_at_c1);

  for (PsClient* c : {none_.get(), wrong_.get(), read_.get()}) {
    const absl::StatusCode want = c == read_.get()
                                      ? absl::StatusCode::kPermissionDenied
                                      : absl::StatusCode::kUnauthenticated;
    EXPECT_EQ(c->CreateTable(IdTable("t2", 2), false).code(), want);
    EXPECT_EQ(c->Push("t", keys_, grads).status().code(), want);
    EXPECT_EQ(c->Upsert("c", keys_, {9, 9, 9, 9, 9, 9}, 2).status().code(),
              want);
    EXPECT_EQ(c->Checkpoint("c2").status().code(), want);
    EXPECT_EQ(c->Restore("c1").status().code(), want);
  }
  const State after = Snapshot();
  EXPECT_EQ(after.rows, before.rows);
  EXPECT_EQ(after.content, before.content);
  EXPECT_EQ(after.tables, before.tables);
  EXPECT_EQ(after.checkpoints, before.checkpoints);
  EXPECT_EQ(after.pushes, before.pushes);

  const absl::Status denied = read_->Push("t", keys_, grads).status();
  EXPECT_THAT(denied.message(),
              HasSubstr("Push needs the admin role; this token has the read "
                        "role"));

  // The admin token does all of it.
  EXPECT_TRUE(admin_->CreateTable(IdTable("t2", 2), false).ok());
  EXPECT_TRUE(admin_->Upsert("c", keys_, {9, 9, 9, 9, 9, 9}, 2).ok());
  EXPECT_TRUE(admin_->Checkpoint("c2").ok());
  auto restored = admin_->Restore("c1");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(Snapshot().rows, rows_at_c1);
}

TEST_F(TokenTest, ReflectionIsOffWithTokens) {
  EXPECT_TRUE(ReflectedServices(shard_->address()).empty());
}

TEST(TokenFileTest, ServerRefusesOpenOrMalformedTokenFiles) {
  const std::string dir = TmpDir() + "/token_files";
  fs::create_directories(dir);
  const std::string data = "--data_dir=" + dir + "/data";
  const std::string open = dir + "/open.txt";
  WriteFile(open, absl::StrCat("admin ", kAdminToken, "\n"), 0644);
  auto r = RunCommand({Runfile("ps/server"), data, "--auth_tokens=" + open});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_THAT(r->err, HasSubstr("--auth_tokens: " + open + " has mode 0644"));
  EXPECT_THAT(r->err, HasSubstr("chmod 600 " + open));

  const std::string bad = dir + "/bad.txt";
  WriteFile(bad, absl::StrCat("# ok\nsuperuser ", kAdminToken, "\n"));
  r = RunCommand({Runfile("ps/server"), data, "--auth_tokens=" + bad});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_THAT(r->err, HasSubstr("line 2: unknown role 'superuser'"));
  EXPECT_THAT(r->err, Not(HasSubstr(kAdminToken)));
}

// ------------------------------------------------- shards: what errors say

class ErrorMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ShardProcess::Flags f;
    f.data_dir = TestDir() + "/shard";
    auto shard = ShardProcess::Start(f);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = *std::move(shard);
    client_ = Client(shard_->address(), grpc::InsecureChannelCredentials());
    ASSERT_TRUE(client_->CreateTable(IdTable("t", 2), false).ok());
  }
  // No form of the data dir's path appears in `message`.
  void ExpectNoServerPath(absl::string_view message) {
    const std::string dir = shard_->flags().data_dir;
    EXPECT_THAT(message, Not(HasSubstr(dir))) << message;
    EXPECT_THAT(message, Not(HasSubstr(fs::weakly_canonical(dir).string())))
        << message;
    EXPECT_THAT(message, Not(HasSubstr(TmpDir()))) << message;
  }
  std::unique_ptr<ShardProcess> shard_;
  std::unique_ptr<PsClient> client_;
};

TEST_F(ErrorMessageTest, CheckpointPathsAreRelativeToTheDataDir) {
  auto made = client_->Checkpoint("c1");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)[0].checkpoint.path(), "checkpoints/c1");
  auto lists = client_->ListCheckpoints();
  ASSERT_TRUE(lists.ok()) << lists.status();
  ASSERT_EQ((*lists)[0].list.checkpoints_size(), 1);
  EXPECT_EQ((*lists)[0].list.checkpoints(0).path(), "checkpoints/c1");

  auto stub = ps::ParameterServer::NewStub(grpc::CreateChannel(
      shard_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  ps::RestoreRequest request;
  request.set_name("nope");
  ps::RestoreResponse response;
  const grpc::Status st = stub->Restore(&context, request, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("no checkpoint named 'nope'"));
  ExpectNoServerPath(st.error_message());
}

TEST_F(ErrorMessageTest, StorageFailuresSendAGenericMessage) {
  // A file where the checkpoint directory should be: the storage fails
  // with a message naming paths under the data dir.
  const std::string checkpoints = shard_->flags().data_dir + "/checkpoints";
  fs::remove_all(checkpoints);
  WriteFile(checkpoints, "not a directory\n");
  auto made = client_->Checkpoint("c1");
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInternal) << made.status();
  EXPECT_THAT(made.status().message(),
              HasSubstr("Checkpoint failed on shard 0/1: INTERNAL error in "
                        "the shard's storage; the shard's log has the "
                        "details"));
  ExpectNoServerPath(made.status().message());
}

TEST_F(ErrorMessageTest, LongClientInputIsQuotedCapped) {
  const std::string huge(1 << 20, 'x');
  const std::string capped = absl::StrCat(std::string(64, 'x'),
                                          "... (1048576 bytes)");
  std::vector<absl::Status> errors = {
      client_->Pull(huge, {1}).status(),
      client_->GetRows(huge, {1}).status(),
      client_->Push(huge, {1}, {1, 1}).status(),
      client_->Upsert(huge, {1}, {1, 1}, 1).status(),
      client_->Stats(huge).status(),
      client_->CreateTable(IdTable(huge, 2), false),
      client_->Checkpoint(huge).status(),
  };
  ps::TableConfig bad_optimizer = IdTable("t3", 2);
  bad_optimizer.mutable_optimizer()->set_name(huge);
  errors.push_back(client_->CreateTable(bad_optimizer, false));
  for (size_t i = 0; i < errors.size(); ++i) {
    EXPECT_EQ(errors[i].code(), absl::StatusCode::kInvalidArgument)
        << i << ": " << errors[i].ToString().substr(0, 300);
    EXPECT_LT(errors[i].message().size(), 400u) << i;
    EXPECT_THAT(errors[i].message(), HasSubstr("..."))
        << i << ": " << errors[i].message();
  }
  EXPECT_THAT(errors[0].message(),
              HasSubstr(absl::StrCat("table name '", capped,
                                     "' is too long: names are 1..128 "
                                     "characters")));
  EXPECT_THAT(errors[6].message(),
              HasSubstr(absl::StrCat("checkpoint name '", capped, "'")));
  EXPECT_THAT(errors[7].message(),
              HasSubstr("table 't3': optimizer.name: '" +
                        std::string(32, 'x') + "... (1048576 bytes)' is not a "
                                               "known name"));

  // Restore lists the shard's checkpoints before it sends the name; a raw
  // call reaches the shard.
  auto stub = ps::ParameterServer::NewStub(grpc::CreateChannel(
      shard_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  ps::RestoreRequest request;
  request.set_name(huge);
  ps::RestoreResponse response;
  const grpc::Status st = stub->Restore(&context, request, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(),
            absl::StrCat("checkpoint name '", capped,
                         "' is too long: names are 1..128 characters"));
}

// ------------------------------------- the whole system with TLS and tokens

// Two shards and the serving tier with mutual TLS and tokens; the content
// vectors, the content table, a din_mim model trained on the shards.
struct SecureEnv {
  Secrets secrets;
  std::string dir;
  std::string data;
  std::string model_dir;
  std::vector<std::unique_ptr<ShardProcess>> shards;
  std::string ps;
  std::unique_ptr<ServerProcess> serving;
};
SecureEnv* secure = nullptr;

// Runs a tool that must succeed.
absl::Status RunOk(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> r = RunCommand(argv);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " exited ", r->exit_code,
                                            ": ", r->err.substr(0, 4000)));
  }
  return absl::OkStatus();
}

std::vector<std::string> With(std::vector<std::string> argv,
                              const std::vector<std::string>& more) {
  argv.insert(argv.end(), more.begin(), more.end());
  return argv;
}

std::vector<std::string> ClientFlags(const std::string& token_file,
                                     bool with_cert = true) {
  std::vector<std::string> f = secure->secrets.ClientTls(with_cert);
  if (!token_file.empty()) f.push_back("--auth_token_file=" + token_file);
  return f;
}

std::vector<std::string> TrainerArgs(const std::string& token_file,
                                     const std::string& model_dir) {
  return With({Runfile("worker/trainer"), "--ps=" + secure->ps,
               "--train=" + secure->data + "/train.tsv",
               "--test=" + secure->data + "/test.tsv", "--model=din_mim",
               "--content_table=item_content",
               "--content_encoder=" + secure->data + "/encoder", "--epochs=1",
               "--batch_size=256", "--threads=1", "--progress=false",
               "--model_dir=" + model_dir},
              ClientFlags(token_file));
}

class SecureSystemTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    secure = new SecureEnv;
    secure->dir = TmpDir() + "/secure";
    secure->data = secure->dir + "/data";
    secure->model_dir = secure->dir + "/model";
    fs::create_directories(secure->data);
    auto secrets = MakeSecrets(secure->dir + "/secrets");
    ASSERT_TRUE(secrets.ok()) << secrets.status();
    secure->secrets = *secrets;
    const Secrets& s = secure->secrets;

    std::vector<std::string> server_flags = s.ServerTls(/*mutual=*/true);
    server_flags.push_back("--auth_tokens=" + s.tokens());
    auto shards = ShardProcess::StartCluster(secure->dir, 2, server_flags);
    ASSERT_TRUE(shards.ok()) << shards.status();
    secure->shards = *std::move(shards);
    secure->ps = secure->shards[0]->address() + "," +
                 secure->shards[1]->address();

    absl::Status st = RunOk({Runfile("tools/gen_synthetic"),
                             "--output_dir=" + secure->data,
                             "--num_samples=4000", "--num_items=300",
                             "--num_users=100", "--seed=3"});
    ASSERT_TRUE(st.ok()) << st;
    st = RunOk({Runfile("tools/content_vectors"),
                "--item_text=" + secure->data + "/item_text.tsv",
                "--output=" + secure->data + "/vectors.tsv",
                "--encoder_out=" + secure->data + "/encoder", "--dim=8",
                "--epoch=1", "--threads=1"});
    ASSERT_TRUE(st.ok()) << st;
    st = RunOk(With({Runfile("tools/ingest_content"), "--ps=" + secure->ps,
                     "--vectors=" + secure->data + "/vectors.tsv",
                     "--table=item_content", "--content_version=1"},
                    ClientFlags(s.admin_token())));
    ASSERT_TRUE(st.ok()) << st;
    st = RunOk(TrainerArgs(s.admin_token(), secure->model_dir));
    ASSERT_TRUE(st.ok()) << st;

    std::vector<std::string> serving = {
        Runfile("serving/server"), "--port=0", "--ps=" + secure->ps,
        "--model_dir=" + secure->model_dir, "--metrics_port=0",
        "--ps_tls_ca=" + s.ca(), "--ps_tls_client_cert=" + s.client_cert(),
        "--ps_tls_client_key=" + s.client_key(),
        "--ps_auth_token_file=" + s.admin_token()};
    serving = With(serving, server_flags);
    auto server = ServerProcess::Start(serving, /*expect_metrics=*/true);
    ASSERT_TRUE(server.ok()) << server.status();
    secure->serving = *std::move(server);
  }
  static void TearDownTestSuite() {
    delete secure;
    secure = nullptr;
  }

  CommandResult Admin(const std::vector<std::string>& args,
                      const std::string& token_file, bool with_cert = true) {
    std::vector<std::string> argv = With(
        {Runfile("tools/ps_admin"), "--ps=" + secure->ps, "--attempts=1"},
        ClientFlags(token_file, with_cert));
    argv = With(argv, args);
    auto r = RunCommand(argv);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult();
  }

  std::unique_ptr<serving::PredictionService::Stub> ServingStub(
      bool with_cert = true) {
    return serving::PredictionService::NewStub(grpc::CreateChannel(
        secure->serving->address(),
        secure->secrets.Credentials(with_cert)));
  }

  std::unique_ptr<PsClient> AdminClient() {
    PsClient::Options o;
    o.credentials = secure->secrets.Credentials(true);
    o.auth_token = kAdminToken;
    auto c = PsClient::Create(absl::StrSplit(secure->ps, ','), o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
};

void SetToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
}

TEST_F(SecureSystemTest, PsAdminWithTlsAndTokens) {
  const Secrets& s = secure->secrets;
  CommandResult r = Admin({"health"}, s.read_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
  r = Admin({"tables"}, s.read_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("item_content"));
  r = Admin({"stats", "item_content"}, s.read_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;

  r = Admin({"create-table", "extra", "--kind=id", "--dim=4"}, s.read_token());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(r.err, HasSubstr("CreateTable needs the admin role"));
  r = Admin({"checkpoint", "by-reader"}, s.read_token());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));
  r = Admin({"--json", "checkpoints"}, s.read_token());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("by-reader")));

  r = Admin({"create-table", "extra", "--kind=id", "--dim=4"},
            s.admin_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Admin({"checkpoint", "by-admin"}, s.admin_token());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("at checkpoints/by-admin"));

  r = Admin({"tables"}, "");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = Admin({"tables"}, s.wrong_token());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  // Without a client certificate the handshake fails.
  r = Admin({"tables"}, s.admin_token(), /*with_cert=*/false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  // A token file others can read is refused before anything is sent.
  const std::string open = secure->dir + "/open.token";
  WriteFile(open, kAdminToken, 0644);
  r = Admin({"tables"}, open);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("chmod 600 " + open));
}

TEST_F(SecureSystemTest, TrainerNeedsTheAdminToken) {
  // The suite's own training ran with the admin token and saved the model.
  EXPECT_TRUE(fs::exists(secure->model_dir + "/manifest.json"));
  // Its own table (a table the suite's run trained would be refused
  // before any write is tried, as a fresh run on trained rows).
  std::vector<std::string> args = TrainerArgs(
      secure->secrets.read_token(), secure->dir + "/model_by_reader");
  args.push_back("--table_prefix=by_reader_");
  auto r = RunCommand(args);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_FALSE(fs::exists(secure->dir + "/model_by_reader/manifest.json"));
}

TEST_F(SecureSystemTest, CsftUpsertsWithTlsAndTheAdminToken) {
  const Secrets& s = secure->secrets;
  auto csft = [&](const std::string& token_file, const std::string& table) {
    return RunCommand(With(
        {Runfile("worker/csft/csft"), "--train=" + secure->data + "/train.tsv",
         "--vectors=" + secure->data + "/vectors.tsv",
         "--out_vectors=" + secure->dir + "/" + table + ".tsv",
         "--ps=" + secure->ps, "--table=" + table, "--content_version=1",
         "--epochs=1", "--batch_size=64", "--max_train_pairs=500"},
        ClientFlags(token_file)));
  };
  auto r = csft(s.read_token(), "csft_by_reader");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, HasSubstr("PERMISSION_DENIED"));
  r = csft(s.admin_token(), "csft_by_admin");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  CommandResult tables = Admin({"tables"}, s.read_token());
  EXPECT_EQ(tables.exit_code, 0) << tables.err;
  EXPECT_THAT(tables.out, HasSubstr("csft_by_admin"));
  EXPECT_THAT(tables.out, Not(HasSubstr("csft_by_reader")));
}

TEST_F(SecureSystemTest, ServingNeedsReadForPredictAndAdminForUpsert) {
  auto stub = ServingStub();
  serving::PredictRequest req;
  req.set_user_id(1);
  req.add_behavior_item_ids(1);
  req.add_behavior_item_ids(2);
  req.add_candidate_item_ids(3);
  req.add_candidate_item_ids(4);
  for (const std::string& token : {kReadToken, kAdminToken}) {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    serving::PredictResponse resp;
    const grpc::Status st = stub->Predict(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.scores_size(), 2);
  }
  for (const std::string& token : {std::string(), kWrongToken}) {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    serving::PredictResponse resp;
    EXPECT_EQ(stub->Predict(&ctx, req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    SetToken(&ctx, kReadToken);
    serving::GetStatusResponse resp;
    ASSERT_TRUE(stub->GetStatus(&ctx, {}, &resp).ok());
    EXPECT_FALSE(resp.model_version().empty());
  }
  {
    grpc::ClientContext ctx;
    SetToken(&ctx, "");
    serving::GetStatusResponse resp;
    EXPECT_EQ(stub->GetStatus(&ctx, {}, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }

  // UpsertItem: refused with the read token, the row stays absent.
  const uint64_t item = 900000001;
  auto admin = AdminClient();
  auto row = admin->GetRows("item_content", {item});
  ASSERT_TRUE(row.ok()) << row.status();
  ASSERT_EQ(row->missing, std::vector<uint32_t>{0});
  serving::UpsertItemRequest up;
  up.set_item_id(item);
  for (int i = 0; i < 8; ++i) up.add_vector(0.1f * (i + 1));
  {
    grpc::ClientContext ctx;
    SetToken(&ctx, kReadToken);
    serving::UpsertItemResponse resp;
    const grpc::Status st = stub->UpsertItem(&ctx, up, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(st.error_message(),
              "UpsertItem needs the admin role; this token has the read role");
  }
  row = admin->GetRows("item_content", {item});
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->missing, std::vector<uint32_t>{0});
  {
    grpc::ClientContext ctx;
    SetToken(&ctx, kAdminToken);
    serving::UpsertItemResponse resp;
    const grpc::Status st = stub->UpsertItem(&ctx, up, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_GT(resp.content_version(), 1u);
  }
  row = admin->GetRows("item_content", {item});
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_TRUE(row->missing.empty());
}

TEST_F(SecureSystemTest, ServingRefusesPlainAndCertificatelessClients) {
  serving::PredictRequest req;
  req.set_user_id(1);
  req.add_candidate_item_ids(3);
  auto no_cert = ServingStub(/*with_cert=*/false);
  grpc::ClientContext ctx;
  SetToken(&ctx, kReadToken);
  serving::PredictResponse resp;
  EXPECT_EQ(no_cert->Predict(&ctx, req, &resp).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  auto plain = serving::PredictionService::NewStub(grpc::CreateChannel(
      secure->serving->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx2;
  SetToken(&ctx2, kReadToken);
  EXPECT_EQ(plain->Predict(&ctx2, req, &resp).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  // Health over the same mTLS channel needs the read token too.
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      secure->serving->address(), secure->secrets.Credentials(true)));
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hresp;
  grpc::ClientContext h1;
  SetToken(&h1, "");
  EXPECT_EQ(health->Check(&h1, hreq, &hresp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext h2;
  SetToken(&h2, kReadToken);
  ASSERT_TRUE(health->Check(&h2, hreq, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(SecureSystemTest, ServingListensOnOneGrpcPort) {
  const std::vector<Listener> listeners =
      ListeningSockets(secure->serving->pid());
  EXPECT_THAT(Ports(listeners),
              UnorderedElementsAre(secure->serving->port(),
                                   secure->serving->metrics_port()));
  for (const Listener& l : listeners) EXPECT_TRUE(IsLoopback(l)) << l.port;
}

TEST_F(SecureSystemTest, PythonClientWithTlsAndTokens) {
  setenv("XDG_CACHE_HOME", (TmpDir() + "/cache").c_str(), 1);
  const Secrets& s = secure->secrets;
  const std::vector<std::string> base = {
      "/usr/bin/python3", Runfile("tools/serving_client.py"),
      "--target=" + secure->serving->address(), "--tls_ca=" + s.ca(),
      "--tls_client_cert=" + s.client_cert(),
      "--tls_client_key=" + s.client_key()};
  auto r = RunCommand(With(base, {"--auth_token_file=" + s.read_token(), "--json",
                           "status"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_THAT(r->out, HasSubstr("model_version"));

  r = RunCommand(With(base, {"--auth_token_file=" + s.read_token(), "upsert",
                      "--item=900000002", "--vector=1,2,3,4,5,6,7,8"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, HasSubstr("PERMISSION_DENIED"));

  r = RunCommand(With(base, {"--auth_token_file=" + s.admin_token(), "upsert",
                      "--item=900000002", "--vector=1,2,3,4,5,6,7,8"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;

  r = RunCommand(With(base, {"status"}));  // no token
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, HasSubstr("UNAUTHENTICATED"));
}

TEST_F(SecureSystemTest, LoadTestWithTlsAndTokens) {
  const Secrets& s = secure->secrets;
  const std::string out = secure->dir + "/load.json";
  const std::vector<std::string> base = With(
      {Runfile("tools/load_test"), "--target=" + secure->serving->address(),
       "--json_out=" + out, "--users=1-100", "--items=1-300", "--qps=20",
       "--duration=1", "--candidates=4", "--behaviors=3",
       "--deadline_ms=30000"},
      s.ClientTls(/*with_cert=*/true));
  auto r = RunCommand(With(base, {"--auth_token_file=" + s.read_token()}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
  nlohmann::json report = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(report["sent"], 20);
  EXPECT_EQ(report["ok"], 20);
  EXPECT_EQ(report["errors"], nlohmann::json::object());

  // No token: every Predict is refused (GetStatus too, so it is skipped).
  r = RunCommand(With(base, {"--status=false"}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
  report = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(report["ok"], 0);
  EXPECT_EQ(report["errors"], nlohmann::json({{"UNAUTHENTICATED", 20}}));
}

}  // namespace
}  // namespace mim::testing
