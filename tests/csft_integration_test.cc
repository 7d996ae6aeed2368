// //worker/csft:csft end to end on two real shards: tiny planted data
// (items of 4 genres, users who like one genre), C-SFT trains, writes the
// vectors, the encoder and the metrics, and upserts every item's vector
// into a new content table; the rows on the shards equal the file, the
// saved encoder reproduces them, and din_mim trains on the new table. Two
// csft processes as data-parallel workers through the same shards. Then
// the serving tier's UpsertItem with the C-SFT encoder. And a worker
// killed mid-run (fault test with real processes).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/serving.grpc.pb.h"
#include "ps/client.h"
#include "tests/process.h"
#include "worker/csft/encoder.h"
#include "worker/csft/pairs.h"
#include "worker/data/content_vectors.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

extern char** environ;

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ServerProcess;
using ::mim::testing::ShardProcess;

constexpr int kItems = 60;
constexpr int kDim = 8;

void WriteData(const std::string& dir) {
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  {
    auto w = data::ContentVectorWriter::Open(dir + "/vec.tsv", kDim, "text");
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < kItems; ++i) {
      std::vector<float> v(kDim);
      for (int k = 0; k < kDim; ++k) v[k] = (k == i % 4 ? 1.0f : 0.0f) + noise(rng);
      ASSERT_TRUE((*w)->Write(1000 + i, v).ok());
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
  for (const char* name : {"train", "test"}) {
    auto w = data::SampleWriter::Open(dir + "/" + name + ".tsv");
    ASSERT_TRUE(w.ok());
    int64_t ts = std::string(name) == "train" ? 1 : 100000;
    for (int u = 0; u < 40; ++u) {
      std::vector<int64_t> behavior;
      for (int step = 0; step < 12; ++step) {
        data::Sample s;
        s.timestamp = ts++;
        s.user_id = u;
        const int item = int(rng() % kItems);
        s.item_id = 1000 + item;
        s.label = item % 4 == u % 4 ? 1 : 0;
        s.genres = {1 + item % 4};
        s.behavior = behavior;
        if (s.behavior.size() > 50) s.behavior.erase(s.behavior.begin());
        ASSERT_TRUE((*w)->Write(s).ok());
        if (s.label == 1) behavior.push_back(s.item_id);
      }
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
}

// The vectors file at `path` holds every item, and content table `table`
// on the shards holds exactly its vectors (bit for bit: the file's %.9g
// reads back as the float written), each row at `version`. *tuned gets the file's vectors.
void ExpectShardsHoldFile(
    const std::vector<std::unique_ptr<ShardProcess>>& shards,
    const std::string& table, uint64_t version, const std::string& path,
    std::vector<data::ItemVector>* tuned) {
  auto read = data::ReadAllContentVectors(path, kDim);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), size_t(kItems));
  *tuned = std::move(*read);
  auto client = ps::PsClient::Create(ShardProcess::Addresses(shards));
  ASSERT_TRUE(client.ok());
  std::vector<uint64_t> keys;
  for (const auto& iv : *tuned) keys.push_back(uint64_t(iv.item_id));
  auto rows = (*client)->GetRows(table, keys);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(rows->missing.empty());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(rows->meta[i].version(), version) << "item " << keys[i];
    EXPECT_EQ(std::vector<float>(rows->values.begin() + i * kDim,
                                 rows->values.begin() + (i + 1) * kDim),
              (*tuned)[i].values)
        << "item " << keys[i];
  }
}

TEST(CsftIntegrationTest, TrainsUpsertsAndDinMimTrainsOnTheNewTable) {
  const std::string dir = ::testing::TempDir() + "/csft_e2e";
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  WriteData(dir);
  auto shards = ShardProcess::StartCluster(dir + "/ps", 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrJoin(ShardProcess::Addresses(*shards), ",");

  absl::StatusOr<CommandResult> run = RunCommand(
      {Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
       "--vectors=" + dir + "/vec.tsv", "--eval_samples=" + dir + "/test.tsv",
       "--out_vectors=" + dir + "/csft.tsv",
       "--encoder_out=" + dir + "/csft.encoder",
       "--metrics_out=" + dir + "/csft.json", "--ps=" + ps,
       "--table=item_content_csft", "--content_version=7", "--epochs=2",
       "--batch_size=32", "--holdout_items=0.2", "--select_last_epoch"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;

  std::vector<data::ItemVector> tuned;
  ExpectShardsHoldFile(*shards, "item_content_csft", 7, dir + "/csft.tsv",
                       &tuned);
  if (HasFatalFailure()) return;

  // The saved encoder encodes an item to its row.
  auto encoder = csft::CsftEncoder::Load(dir + "/csft.encoder");
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  auto plain = data::ReadAllContentVectors(dir + "/vec.tsv", kDim);
  ASSERT_TRUE(plain.ok());
  std::vector<float> x = (*plain)[5].values;
  data::L2Normalize(&x);
  const std::vector<int32_t> genres = {1 + 5 % 4};
  std::vector<float> out(kDim);
  ASSERT_TRUE((*encoder)->Encode({{x.data(), &genres}}, out.data()).ok());
  // Trained (--select_last_epoch): the row is not the plain vector, so the
  // comparison below tells a trained encoder from an untrained one.
  double moved = 0;
  for (int k = 0; k < kDim; ++k) {
    moved = std::max<double>(moved, std::abs(tuned[5].values[k] - x[k]));
  }
  EXPECT_GT(moved, 1e-3);
  // One item alone against the whole catalogue in one call: the BLAS
  // kernel OpenBLAS picks for the CPU may sum a row in another order for
  // another number of rows, so within a few ulp, not bit for bit.
  for (int k = 0; k < kDim; ++k) {
    EXPECT_NEAR(out[k], tuned[5].values[k], 1e-6) << "dim " << k;
  }

  std::ifstream metrics(dir + "/csft.json");
  std::string json((std::istreambuf_iterator<char>(metrics)),
                   std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"best_epoch\""), std::string::npos);
  EXPECT_NE(json.find("\"new\": {\"plain\""), std::string::npos);

  run = RunCommand({Runfile("worker/trainer"), "--ps=" + ps,
                    "--train=" + dir + "/train.tsv",
                    "--test=" + dir + "/test.tsv", "--model=din_mim",
                    "--content_table=item_content_csft", "--epochs=1",
                    "--table_prefix=e2e_", "--progress=false",
                    "--metrics_out=" + dir + "/din_mim.json"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->err;
}

// Two csft processes (--num_workers=2) through the same shards: both end
// OK, worker 0 writes every output (the shards' rows equal its file) and
// both took the other's positives as negatives; worker 1 writes only its
// own figures. A worker alone gives up naming worker 0; bad worker flags
// are refused naming them.
TEST(CsftIntegrationTest, TwoWorkerProcessesTrainOneEncoderThroughTheShards) {
  const std::string dir = ::testing::TempDir() + "/csft_workers_e2e";
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  WriteData(dir);
  auto shards = ShardProcess::StartCluster(dir + "/ps", 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrJoin(ShardProcess::Addresses(*shards), ",");
  const std::vector<std::string> common = {
      Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
      "--vectors=" + dir + "/vec.tsv", "--ps=" + ps, "--epochs=2",
      "--batch_size=16", "--holdout_items=0.2", "--num_workers=2",
      "--worker_prefix=e2e_workers", "--worker_timeout_s=120"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = common;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  absl::StatusOr<CommandResult> one = absl::UnknownError("not run");
  std::thread other([&] {
    one = RunCommand(with({"--worker_index=1",
                           "--metrics_out=" + dir + "/worker1.json"}));
  });
  absl::StatusOr<CommandResult> zero = RunCommand(
      with({"--worker_index=0", "--out_vectors=" + dir + "/csft.tsv",
            "--encoder_out=" + dir + "/csft.encoder",
            "--metrics_out=" + dir + "/worker0.json",
            "--table=item_content_csft2", "--content_version=3"}));
  other.join();
  ASSERT_TRUE(zero.ok()) << zero.status();
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(zero->exit_code, 0) << zero->err;
  ASSERT_EQ(one->exit_code, 0) << one->err;

  std::vector<data::ItemVector> tuned;
  ExpectShardsHoldFile(*shards, "item_content_csft2", 3, dir + "/csft.tsv",
                       &tuned);
  if (HasFatalFailure()) return;
  // Worker 0 dropped the run's parameter table; the exchange table stays.
  EXPECT_TRUE(absl::StrContains(
      zero->err, "dropped the run's parameter table e2e_workers_dense_g1"))
      << zero->err;
  {
    auto client = ps::PsClient::Create(ShardProcess::Addresses(*shards));
    ASSERT_TRUE(client.ok()) << client.status();
    auto tables = (*client)->ListTables();
    ASSERT_TRUE(tables.ok()) << tables.status();
    std::vector<std::string> names;
    for (const auto& t : *tables) names.push_back(t.name());
    EXPECT_THAT(names, ::testing::Contains("e2e_workers_exchange"));
    EXPECT_THAT(names, ::testing::Not(::testing::Contains(
                           "e2e_workers_dense_g1")));
  }
  // Peer rows: each worker's count, from its metrics; both above zero
  // (by epoch 2 at the latest the epoch barrier has made the other's
  // epoch-1 positives visible).
  for (const std::string& name : {"worker0", "worker1"}) {
    std::ifstream f(dir + "/" + name + ".json");
    std::string json((std::istreambuf_iterator<char>(f)),
                     std::istreambuf_iterator<char>());
    EXPECT_NE(json.find("\"num_workers\": 2"), std::string::npos) << json;
    const size_t at = json.find("\"peer_rows\": ");
    ASSERT_NE(at, std::string::npos) << json;
    int64_t peer_rows = 0;
    ASSERT_TRUE(absl::SimpleAtoi(
        json.substr(at + 13, json.find_first_of(",}", at) - at - 13),
        &peer_rows))
        << json;
    EXPECT_GT(peer_rows, 0) << name << ": " << json;
  }

  // A worker alone: it waits for worker 0 at the start, then gives up.
  absl::StatusOr<CommandResult> alone =
      RunCommand({Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
                  "--vectors=" + dir + "/vec.tsv", "--ps=" + ps,
                  "--num_workers=2", "--worker_index=1",
                  "--worker_prefix=e2e_alone", "--worker_timeout_s=1"});
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(alone->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(alone->err, "DEADLINE_EXCEEDED"))
      << alone->err;
  EXPECT_TRUE(absl::StrContains(alone->err, "did not release the start barrier"))
      << alone->err;

  // Bad worker flags.
  absl::StatusOr<CommandResult> bad =
      RunCommand({Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
                  "--vectors=" + dir + "/vec.tsv", "--num_workers=2",
                  "--worker_index=1"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad->err, "--num_workers=2 needs --ps"))
      << bad->err;
  bad = RunCommand({Runfile("worker/csft/csft"),
                    "--train=" + dir + "/train.tsv",
                    "--vectors=" + dir + "/vec.tsv", "--ps=" + ps,
                    "--num_workers=2", "--worker_index=2"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad->err, "--worker_index=2 of --num_workers=2"))
      << bad->err;
}

// Starts argv with stdout and stderr appended to `log`; returns its pid.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(),
                             environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "posix_spawn " << argv[0];
  return rc == 0 ? pid : -1;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)),
                     std::istreambuf_iterator<char>());
}

// Waits (up to 120 s) until `path` holds `text`.
bool WaitForText(const std::string& path, const std::string& text) {
  for (int i = 0; i < 6000; ++i) {
    if (absl::StrContains(ReadAll(path), text)) return true;
    usleep(20000);
  }
  return false;
}

// Exit code of `pid` (-1 when a signal ended it).
int WaitExit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A worker killed (SIGKILL) mid-run: the other side ends within its
// --worker_timeout_s naming it, and worker 0 writes no output at all (no
// vectors from a run that lost a worker). Then the run starts over with a
// new prefix and ends OK, as docs/OPERATIONS.md says to do.
TEST(CsftIntegrationTest, AKilledWorkerEndsTheRunAndNothingIsWritten) {
  const std::string dir = ::testing::TempDir() + "/csft_workers_kill";
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  WriteData(dir);
  auto shards = ShardProcess::StartCluster(dir + "/ps", 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrJoin(ShardProcess::Addresses(*shards), ",");
  auto argv = [&](int worker, const std::string& prefix, int epochs,
                  int timeout_s) {
    std::vector<std::string> a = {
        Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
        "--vectors=" + dir + "/vec.tsv", "--ps=" + ps,
        absl::StrCat("--epochs=", epochs), absl::StrCat("--patience=", epochs),
        "--batch_size=16", "--holdout_items=0.2", "--num_workers=2",
        absl::StrCat("--worker_index=", worker), "--worker_prefix=" + prefix,
        absl::StrCat("--worker_timeout_s=", timeout_s)};
    if (worker == 0) {
      a.push_back("--out_vectors=" + dir + "/" + prefix + ".tsv");
      a.push_back("--table=" + prefix);
    }
    return a;
  };

  // How long the surviving side waits: long enough that a loaded machine
  // does not make a live worker look dead (an epoch here takes
  // milliseconds), short enough for a test.
  constexpr int kGiveUpS = 8;

  // Worker 1 dies after its second epoch: worker 0 gives up naming it.
  {
    const std::string l0 = dir + "/kill1_w0.log", l1 = dir + "/kill1_w1.log";
    const pid_t w0 = SpawnLogged(argv(0, "kill1", 100000, kGiveUpS), l0);
    const pid_t w1 = SpawnLogged(argv(1, "kill1", 100000, 600), l1);
    ASSERT_GT(w0, 0);
    ASSERT_GT(w1, 0);
    ASSERT_TRUE(WaitForText(l1, "csft worker 1 epoch 2:")) << ReadAll(l1);
    kill(w1, SIGKILL);
    EXPECT_EQ(WaitExit(w1), -1);
    EXPECT_EQ(WaitExit(w0), 1) << ReadAll(l0);
    EXPECT_TRUE(absl::StrContains(
        ReadAll(l0),
        "DEADLINE_EXCEEDED: C-SFT worker 0: worker(s) 1 did not finish epoch"))
        << ReadAll(l0);
    EXPECT_FALSE(std::ifstream(dir + "/kill1.tsv").good());
  }
  // Worker 0 dies after its second epoch: worker 1 gives up naming it.
  {
    const std::string l0 = dir + "/kill0_w0.log", l1 = dir + "/kill0_w1.log";
    const pid_t w0 = SpawnLogged(argv(0, "kill0", 100000, 600), l0);
    const pid_t w1 = SpawnLogged(argv(1, "kill0", 100000, kGiveUpS), l1);
    ASSERT_GT(w0, 0);
    ASSERT_GT(w1, 0);
    ASSERT_TRUE(WaitForText(l0, "csft epoch 2:")) << ReadAll(l0);
    kill(w0, SIGKILL);
    EXPECT_EQ(WaitExit(w0), -1);
    EXPECT_EQ(WaitExit(w1), 1) << ReadAll(l1);
    EXPECT_TRUE(
        absl::StrContains(ReadAll(l1), "worker 0 did not decide after epoch"))
        << ReadAll(l1);
    EXPECT_FALSE(std::ifstream(dir + "/kill0.tsv").good());
  }
  // Started over with a new prefix: both end OK and worker 0 writes.
  {
    const std::string l0 = dir + "/again_w0.log", l1 = dir + "/again_w1.log";
    const pid_t w0 = SpawnLogged(argv(0, "again", 2, 120), l0);
    const pid_t w1 = SpawnLogged(argv(1, "again", 2, 120), l1);
    ASSERT_GT(w0, 0);
    ASSERT_GT(w1, 0);
    EXPECT_EQ(WaitExit(w1), 0) << ReadAll(l1);
    EXPECT_EQ(WaitExit(w0), 0) << ReadAll(l0);
    auto tuned = data::ReadAllContentVectors(dir + "/again.tsv", kDim);
    ASSERT_TRUE(tuned.ok()) << tuned.status();
    EXPECT_EQ(tuned->size(), size_t(kItems));
  }
}

// The serving tier with a table C-SFT filled: tools/content_vectors trains
// fastText on the synthetic item texts, csft tunes those vectors and
// upserts them, the trainer records both encoders in the manifest, and
// //serving:server's UpsertItem of a new item id with an existing item's
// text and genres writes the row csft wrote for that item (within a few
// ulp: one item alone against the catalogue in one BLAS call), not the
// plain fastText vector.
TEST(CsftIntegrationTest, ServingUpsertsANewItemWithTheCsftEncoder) {
  const std::string dir = ::testing::TempDir() + "/csft_serving";
  const std::string data = dir + "/data";
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + data).c_str()), 0);
  auto ok = [](const std::vector<std::string>& argv) {
    absl::StatusOr<CommandResult> r = RunCommand(argv);
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) {
      return absl::InternalError(absl::StrCat(argv[0], " exited ",
                                              r->exit_code, ": ",
                                              r->err.substr(0, 4000)));
    }
    return absl::OkStatus();
  };
  absl::Status st = ok({Runfile("tools/gen_synthetic"), "--output_dir=" + data,
                        "--num_samples=4000", "--num_items=300",
                        "--num_users=100", "--seed=3"});
  ASSERT_TRUE(st.ok()) << st;
  st = ok({Runfile("tools/content_vectors"),
           "--item_text=" + data + "/item_text.tsv",
           "--output=" + data + "/vectors.tsv",
           "--encoder_out=" + data + "/encoder", "--dim=8", "--epoch=1",
           "--threads=1"});
  ASSERT_TRUE(st.ok()) << st;
  auto shards = ShardProcess::StartCluster(dir + "/ps", 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrJoin(ShardProcess::Addresses(*shards), ",");
  // The last epoch, at a high learning rate: the tuned vectors must differ
  // from the plain ones for the comparison below to mean anything.
  st = ok({Runfile("worker/csft/csft"), "--train=" + data + "/train.tsv",
           "--vectors=" + data + "/vectors.tsv",
           "--genres_from=" + data + "/test.tsv",
           "--out_vectors=" + dir + "/csft.tsv",
           "--encoder_out=" + dir + "/csft.encoder", "--ps=" + ps,
           "--table=item_content_csft", "--content_version=1", "--epochs=1",
           "--batch_size=64", "--lr=0.01", "--select_last_epoch",
           "--max_train_pairs=3000", "--holdout_items=0.2"});
  ASSERT_TRUE(st.ok()) << st;
  const std::string model_dir = dir + "/model";
  st = ok({Runfile("worker/trainer"), "--ps=" + ps,
           "--train=" + data + "/train.tsv", "--test=" + data + "/test.tsv",
           "--model=din_mim", "--content_table=item_content_csft",
           "--content_encoder=" + data + "/encoder",
           "--csft_encoder=" + dir + "/csft.encoder", "--epochs=1",
           "--batch_size=256", "--threads=1", "--progress=false",
           "--model_dir=" + model_dir});
  ASSERT_TRUE(st.ok()) << st;
  auto server = ServerProcess::Start({Runfile("serving/server"), "--port=0",
                                      "--ps=" + ps, "--model_dir=" + model_dir,
                                      "--metrics_port=-1"});
  ASSERT_TRUE(server.ok()) << server.status();

  // Item X: the first item of item_text.tsv, its text as content_vectors
  // read it and its genres as csft took them (first sample that has it).
  std::ifstream texts(data + "/item_text.tsv");
  std::string line, text;
  int64_t item = -1;
  while (std::getline(texts, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols =
        absl::StrSplit(line, absl::MaxSplits('\t', 1));
    ASSERT_EQ(cols.size(), 2u) << line;
    ASSERT_TRUE(absl::SimpleAtoi(cols[0], &item)) << line;
    text = cols[1];
    break;
  }
  ASSERT_GE(item, 0);
  absl::flat_hash_map<int64_t, std::vector<int32_t>> genres;
  for (const char* f : {"/train.tsv", "/test.tsv"}) {
    auto samples = csft::ReadSamples(data + f);
    ASSERT_TRUE(samples.ok()) << samples.status();
    csft::CollectGenres(*samples, &genres);
  }
  ASSERT_TRUE(genres.contains(item));
  auto tuned = data::ReadAllContentVectors(dir + "/csft.tsv", 8);
  auto plain = data::ReadAllContentVectors(data + "/vectors.tsv", 8);
  ASSERT_TRUE(tuned.ok() && plain.ok());
  std::vector<float> want, plain_row;
  for (const auto& iv : *tuned) {
    if (iv.item_id == item) want = iv.values;
  }
  for (const auto& iv : *plain) {
    if (iv.item_id == item) plain_row = iv.values;
  }
  ASSERT_EQ(want.size(), 8u);
  ASSERT_EQ(plain_row.size(), 8u);
  double moved = 0;
  for (int k = 0; k < 8; ++k) moved = std::max<double>(moved, std::abs(want[k] - plain_row[k]));
  ASSERT_GT(moved, 1e-3) << "csft wrote the plain vector; the check below "
                            "would not tell the encoders apart";

  auto stub = serving::PredictionService::NewStub(grpc::CreateChannel(
      (*server)->address(), grpc::InsecureChannelCredentials()));
  constexpr int64_t kNewItem = 987654;
  serving::UpsertItemRequest up;
  up.set_item_id(kNewItem);
  up.set_text(text);
  for (int32_t g : genres[item]) up.add_genres(g);
  serving::UpsertItemResponse resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status g = stub->UpsertItem(&ctx, up, &resp);
    ASSERT_TRUE(g.ok()) << g.error_message();
  }
  auto encoder = csft::CsftEncoder::Load(dir + "/csft.encoder");
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  EXPECT_TRUE(absl::StartsWith(
      resp.encoder(),
      absl::StrFormat("csft:%016x+", (*encoder)->Fingerprint())))
      << resp.encoder();
  auto client = ps::PsClient::Create(ShardProcess::Addresses(*shards));
  ASSERT_TRUE(client.ok());
  const uint64_t key = kNewItem;
  auto rows = (*client)->GetRows("item_content_csft", absl::MakeConstSpan(&key, 1));
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_TRUE(rows->missing.empty());
  EXPECT_EQ(rows->meta[0].version(), resp.content_version());
  // Encoded alone by the serving tier, in one call of the whole catalogue
  // by csft: within a few ulp (see the first test).
  ASSERT_EQ(rows->values.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_NEAR(rows->values[k], want[k], 1e-6) << "dim " << k;
  }

  // A genre given twice is refused, as Predict refuses it.
  if (!genres[item].empty()) {
    serving::UpsertItemRequest twice = up;
    twice.add_genres(genres[item][0]);
    grpc::ClientContext ctx;
    const grpc::Status g = stub->UpsertItem(&ctx, twice, &resp);
    EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(
        g.error_message(), absl::StrCat("genre ", genres[item][0],
                                        " appears twice")))
        << g.error_message();
  }
  // A genre the encoder never saw is refused, naming it.
  up.add_genres(100000);
  grpc::ClientContext ctx;
  const grpc::Status g = stub->UpsertItem(&ctx, up, &resp);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(g.error_message(), "100000 is not a genre id"))
      << g.error_message();
  // Also when the text has no known word (and the genres would go unused).
  up.set_text("qqqzzx vvvkkw");
  grpc::ClientContext ctx2;
  const grpc::Status unknown = stub->UpsertItem(&ctx2, up, &resp);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(
      absl::StrContains(unknown.error_message(), "100000 is not a genre id"))
      << unknown.error_message();
}

}  // namespace
}  // namespace mim
