// Start-up of a real //ps:server shard on a damaged data dir (child
// processes on loopback): SIGKILLed under a stream of upserts and a byte of
// its write-ahead log flipped, it refuses to start (exit 2, DATA_LOSS naming
// the log and the writes that would be lost); with --accept_data_loss it
// starts, keeps exactly the rows before the damage and reports what it
// dropped in TableStats, /metrics and `ps_admin stats`; the start after
// that is clean. A data dir whose db/ was deleted is refused the same way.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/ps.grpc.pb.h"
#include "tests/ops_util.h"
#include "tests/process.h"

namespace mim::ps {
namespace {

namespace fs = std::filesystem;
using ::mim::testing::CommandResult;
using ::mim::testing::HttpGet;
using ::mim::testing::MetricSample;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ServerProcess;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kDim = 4;
constexpr char kTable[] = "item_mm";

std::string FreshDir(const std::string& tag) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", tag);
  fs::remove_all(dir);
  return dir;
}

std::vector<std::string> ServerArgv(const std::string& data_dir,
                                    bool accept_data_loss) {
  std::vector<std::string> argv = {Runfile("ps/server"), "--host=127.0.0.1",
                                   "--port=0",           "--threads=4",
                                   "--metrics_port=0",
                                   "--data_dir=" + data_dir};
  if (accept_data_loss) argv.push_back("--accept_data_loss");
  return argv;
}

std::unique_ptr<ParameterServer::Stub> Stub(int port) {
  return ParameterServer::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return c;
}

// Row `key` as the writer upserts it.
std::string RowBytes(uint64_t key) {
  std::vector<float> row(kDim);
  for (uint32_t d = 0; d < kDim; ++d) row[d] = static_cast<float>(key) + 0.25f * d;
  return std::string(reinterpret_cast<const char*>(row.data()),
                     sizeof(float) * kDim);
}

void CreateTable(ParameterServer::Stub& stub) {
  CreateTableRequest req;
  req.mutable_config()->set_name(kTable);
  req.mutable_config()->set_kind(CONTENT);
  req.mutable_config()->set_dim(kDim);
  CreateTableResponse resp;
  grpc::Status st = stub.CreateTable(Context().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

// Keys 0..n-1 present on the shard, which must be exactly a prefix 0..k-1
// holding the writer's bytes; returns k.
uint64_t PresentPrefix(ParameterServer::Stub& stub, uint64_t n) {
  GetRowsRequest req;
  req.set_table(kTable);
  for (uint64_t k = 0; k < n; ++k) req.add_keys(k);
  GetRowsResponse resp;
  grpc::Status st = stub.GetRows(Context().get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  std::vector<bool> missing(n, false);
  for (uint32_t i : resp.missing()) missing[i] = true;
  const uint64_t k = static_cast<uint64_t>(
      std::find(missing.begin(), missing.end(), true) - missing.begin());
  for (uint64_t i = 0; i < n; ++i) {
    EXPECT_EQ(missing[i], i >= k) << "key " << i << " breaks the prefix";
    if (i < k) {
      EXPECT_EQ(resp.values().substr(i * kDim * 4, kDim * 4), RowBytes(i))
          << i;
    }
  }
  return k;
}

StartupRecovery Recovery(ParameterServer::Stub& stub) {
  TableStatsRequest req;
  TableStatsResponse resp;
  grpc::Status st = stub.TableStats(Context().get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.recovery();
}

// Upserts key 0, 1, 2, ... one per call, from its own thread, until a call
// fails (the shard was killed). Thread-safe.
class Writer {
 public:
  explicit Writer(int port) : stub_(Stub(port)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() {
    if (thread_.joinable()) thread_.join();
  }

  // Blocks until `n` upserts were acknowledged or the writer stopped.
  void WaitForAcked(uint64_t n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return acked_ >= n || done_;
    };
    mu_.Await(absl::Condition(&reached));
  }
  // Waits for the writer to stop; the number of acknowledged upserts.
  uint64_t Finish() {
    thread_.join();
    absl::MutexLock lock(&mu_);
    return acked_;
  }

 private:
  void Run() {
    for (uint64_t key = 0;; ++key) {
      UpsertRequest req;
      req.set_table(kTable);
      req.add_keys(key);
      req.set_values(RowBytes(key));
      req.set_version(1);
      UpsertResponse resp;
      if (!stub_->Upsert(Context().get(), req, &resp).ok()) break;
      absl::MutexLock lock(&mu_);
      acked_ = key + 1;
    }
    absl::MutexLock lock(&mu_);
    done_ = true;
  }

  const std::unique_ptr<ParameterServer::Stub> stub_;
  absl::Mutex mu_;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

std::string NewestWal(const std::string& data_dir) {
  std::vector<std::string> wals;
  for (const auto& e : fs::directory_iterator(data_dir + "/db")) {
    if (e.path().extension() == ".log") wals.push_back(e.path().string());
  }
  EXPECT_FALSE(wals.empty());
  std::sort(wals.begin(), wals.end());
  return wals.empty() ? "" : wals.back();
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c ^= 0x20;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  ASSERT_TRUE(f.good());
}

// The number before `after` in `text`, e.g. "drops 123 acknowledged".
uint64_t NumberBefore(const std::string& text, const std::string& after) {
  const size_t at = text.find(after);
  if (at == std::string::npos) return 0;
  size_t start = at;
  while (start > 0 && std::isdigit(static_cast<unsigned char>(text[start - 1]))) {
    --start;
  }
  uint64_t n = 0;
  EXPECT_TRUE(absl::SimpleAtoi(text.substr(start, at - start), &n)) << text;
  return n;
}

TEST(ShardRecoveryTest, DamagedLogRefusesThenAcceptDataLossReportsTheLoss) {
  const std::string dir = FreshDir("damaged");
  uint64_t acked = 0;
  {
    auto shard = ServerProcess::Start(ServerArgv(dir, false),
                                      /*expect_metrics=*/true);
    ASSERT_TRUE(shard.ok()) << shard.status();
    CreateTable(*Stub((*shard)->port()));
    Writer writer((*shard)->port());
    writer.WaitForAcked(3000);
    const int status = (*shard)->Kill(SIGKILL);  // under writes
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    acked = writer.Finish();
  }
  ASSERT_GE(acked, 3000u);

  // One flipped byte in the middle of a 32 KiB block of the log.
  const std::string wal = NewestWal(dir);
  const std::string wal_name = "db/" + fs::path(wal).filename().string();
  const uint64_t offset = fs::file_size(wal) / 2 / 32768 * 32768 + 16000;
  ASSERT_LT(offset, fs::file_size(wal));
  FlipByte(wal, offset);

  absl::StatusOr<CommandResult> refused = RunCommand(ServerArgv(dir, false));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 2) << refused->err;
  EXPECT_EQ(refused->out, "");  // never said it was listening
  // The reason depends on which byte of a record was hit (its checksum,
  // length or type): RocksDB's words follow.
  EXPECT_THAT(refused->err, HasSubstr("DATA_LOSS: write-ahead log " +
                                      wal_name + " is damaged (Corruption: "));
  EXPECT_THAT(refused->err, HasSubstr("--accept_data_loss"));
  const std::string message =
      refused->err.substr(refused->err.find("DATA_LOSS"));
  EXPECT_THAT(message, Not(HasSubstr(dir)));  // relative names only
  const uint64_t writes = NumberBefore(message, " acknowledged writes");
  const uint64_t records = NumberBefore(message, " readable records");
  EXPECT_GT(writes, 0u);

  auto shard = ServerProcess::Start(ServerArgv(dir, true),
                                    /*expect_metrics=*/true);
  ASSERT_TRUE(shard.ok()) << shard.status();
  auto stub = Stub((*shard)->port());
  // Rows before the damage are there, bit for bit, and nothing after it;
  // with the writes dropped they make every fully written upsert (all the
  // acknowledged ones, and possibly the one in flight at the kill).
  const uint64_t kept = PresentPrefix(*stub, acked + 1);
  EXPECT_GT(kept, 0u);
  EXPECT_GE(kept + writes, acked);
  EXPECT_LE(kept + writes, acked + 1);

  const StartupRecovery r = Recovery(*stub);
  EXPECT_TRUE(r.data_loss_accepted());
  EXPECT_FALSE(r.started_empty());
  EXPECT_EQ(r.wal_writes_dropped(), writes);
  EXPECT_EQ(r.wal_records_dropped(), records);
  EXPECT_GT(r.wal_bytes_dropped(), 0u);
  ASSERT_EQ(r.files_size(), 1);
  EXPECT_EQ(r.files(0), wal_name);
  EXPECT_TRUE(fs::exists(dir + "/" + r.salvage_dir() + "/" +
                         fs::path(wal).filename().string()))
      << r.salvage_dir();

  absl::StatusOr<std::string> scrape = HttpGet((*shard)->metrics_port(),
                                               "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(MetricSample(*scrape, "mim_ps_startup_data_loss_accepted"), 1.0);
  EXPECT_EQ(MetricSample(*scrape, "mim_ps_startup_wal_writes_dropped_total"),
            static_cast<double>(writes));
  EXPECT_EQ(MetricSample(*scrape, "mim_ps_startup_wal_records_dropped_total"),
            static_cast<double>(records));

  absl::StatusOr<CommandResult> admin = RunCommand(
      {Runfile("tools/ps_admin"), absl::StrCat("--ps=", (*shard)->address()),
       "stats", kTable});
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_EQ(admin->exit_code, 0) << admin->err;
  EXPECT_THAT(admin->out,
              HasSubstr(absl::StrCat("started with --accept_data_loss: ",
                                     writes, " writes")));

  // The damaged log is gone: the next start needs no flag, reports nothing
  // and has the same rows.
  shard->reset();
  shard = ServerProcess::Start(ServerArgv(dir, false), /*expect_metrics=*/true);
  ASSERT_TRUE(shard.ok()) << shard.status();
  stub = Stub((*shard)->port());
  EXPECT_EQ(PresentPrefix(*stub, acked + 1), kept);
  EXPECT_FALSE(Recovery(*stub).data_loss_accepted());
  scrape = HttpGet((*shard)->metrics_port(), "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(MetricSample(*scrape, "mim_ps_startup_data_loss_accepted"), 0.0);
}

TEST(ShardRecoveryTest, DeletedDatabaseRefusesThenStartsEmptyWhenAccepted) {
  const std::string dir = FreshDir("nodb");
  {
    auto shard = ServerProcess::Start(ServerArgv(dir, false),
                                      /*expect_metrics=*/true);
    ASSERT_TRUE(shard.ok()) << shard.status();
    auto stub = Stub((*shard)->port());
    CreateTable(*stub);
    CheckpointRequest req;
    req.set_name("before");
    CheckpointResponse resp;
    ASSERT_TRUE(stub->Checkpoint(Context().get(), req, &resp).ok());
  }
  fs::remove_all(dir + "/db");

  absl::StatusOr<CommandResult> refused = RunCommand(ServerArgv(dir, false));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 2) << refused->err;
  EXPECT_THAT(refused->err,
              HasSubstr("DATA_LOSS: the data dir holds this shard's "
                        "MIM_DATA_DIR"));
  EXPECT_THAT(refused->err, HasSubstr("db/ is missing"));
  EXPECT_FALSE(fs::exists(dir + "/db"));

  auto shard = ServerProcess::Start(ServerArgv(dir, true),
                                    /*expect_metrics=*/true);
  ASSERT_TRUE(shard.ok()) << shard.status();
  auto stub = Stub((*shard)->port());
  const StartupRecovery r = Recovery(*stub);
  EXPECT_TRUE(r.data_loss_accepted());
  EXPECT_TRUE(r.started_empty());
  ListTablesResponse tables;
  ASSERT_TRUE(
      stub->ListTables(Context().get(), ListTablesRequest(), &tables).ok());
  EXPECT_EQ(tables.tables_size(), 0);
  // The checkpoint brings the table back.
  RestoreRequest restore;
  restore.set_name("before");
  RestoreResponse restored;
  grpc::Status st = stub->Restore(Context().get(), restore, &restored);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(
      stub->ListTables(Context().get(), ListTablesRequest(), &tables).ok());
  EXPECT_EQ(tables.tables_size(), 1);
}

}  // namespace
}  // namespace mim::ps
