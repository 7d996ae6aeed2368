// The serving tier end to end, every part a real process on loopback: two
// shards, the synthetic dataset, fastText content vectors with their saved
// encoder, a din_mim model trained on the shards, and //serving:server.
// Checks: scores equal the trainer's own evaluation; a new item upserted
// through the server is scored with its content at once; bad requests are
// refused naming the field; a new model version is picked up under load
// without a failed request; a killed shard gives UNAVAILABLE and the tier
// recovers by itself when the shard returns, or, with --degraded_reads,
// answers without that shard's rows.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "base/atomic_file.h"
#include "proto/serving.grpc.pb.h"
#include "ps/client.h"
#include "serving/content_encoder.h"
#include "tests/ops_util.h"
#include "tests/process.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/model/manifest.h"

namespace mim::testing {
namespace {

using serving::PredictionService;
using serving::PredictRequest;
using serving::PredictResponse;

constexpr int kMaxCandidates = 200;
constexpr char kContentTable[] = "item_content";

struct Env {
  std::string dir;
  std::vector<std::unique_ptr<ShardProcess>> shards;
  std::string ps;
  std::string data;
  std::string model_dir;
  std::vector<data::Sample> test_samples;
  std::vector<float> trainer_scores;  // per test sample, from --predictions_out
  std::unique_ptr<ServerProcess> server;
  std::unique_ptr<PredictionService::Stub> stub;
};
Env* env = nullptr;

absl::Status RunTool(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> r = RunCommand(argv);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " exited ", r->exit_code,
                                            ": ", r->err.substr(0, 4000)));
  }
  return absl::OkStatus();
}

std::vector<std::string> TrainArgs(const std::vector<std::string>& extra,
                                   const std::string& model = "din_mim") {
  std::vector<std::string> a = {
      Runfile("worker/trainer"), "--ps=" + env->ps,
      "--train=" + env->data + "/train.tsv",
      "--test=" + env->data + "/test.tsv", "--model=" + model,
      "--content_table=" + std::string(kContentTable),
      "--content_encoder=" + env->data + "/encoder", "--epochs=1",
      "--batch_size=256", "--threads=1", "--prefetch=false", "--progress=false",
      "--model_dir=" + (model == "din_mim" ? env->model_dir
                                           : env->dir + "/model_" + model)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

grpc::Status Predict(const PredictRequest& req, PredictResponse* resp,
                     absl::Duration deadline = absl::Seconds(10)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  return env->stub->Predict(&ctx, req, resp);
}

PredictRequest RequestFor(const data::Sample& s) {
  PredictRequest r;
  r.set_user_id(s.user_id);
  (*r.mutable_user_features())["age_bucket"] = s.age_bucket;
  (*r.mutable_user_features())["gender"] = s.gender;
  (*r.mutable_user_features())["occupation"] = s.occupation;
  for (int64_t b : s.behavior) r.add_behavior_item_ids(b);
  r.add_candidate_item_ids(s.item_id);
  serving::ItemFeatures* f = r.add_candidate_features();
  for (int32_t g : s.genres) f->add_genres(g);
  return r;
}

std::string GetStatusVersion() {
  grpc::ClientContext ctx;
  serving::GetStatusResponse resp;
  grpc::Status st = env->stub->GetStatus(&ctx, serving::GetStatusRequest(), &resp);
  return st.ok() ? resp.model_version() : "";
}

// GetStatus every 50 ms until `done` holds of the answer or 30 s pass;
// the last answer (a failed call fails the test).
serving::GetStatusResponse StatusWhen(
    const std::function<bool(const serving::GetStatusResponse&)>& done) {
  serving::GetStatusResponse status;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  do {
    absl::SleepFor(absl::Milliseconds(50));
    grpc::ClientContext ctx;
    const grpc::Status st =
        env->stub->GetStatus(&ctx, serving::GetStatusRequest(), &status);
    EXPECT_TRUE(st.ok()) << st.error_message();
    if (!st.ok()) break;
  } while (!done(status) && absl::Now() < give_up);
  return status;
}

// A request for user `user` with 40 new item ids from `first_item`: rows
// in no cache, which must come from both shards.
PredictRequest UncachedRequest(const data::Sample& s, int64_t user,
                               int64_t first_item) {
  PredictRequest req = RequestFor(s);
  req.clear_candidate_features();
  req.set_user_id(user);
  req.clear_candidate_item_ids();
  for (int i = 0; i < 40; ++i) req.add_candidate_item_ids(first_item + i);
  return req;
}

// What a caller gets while a shard is down or hung: UNAVAILABLE within its
// deadline, without the shard's address (that stays in the server log).
void ExpectShardUnavailable(const grpc::Status& st) {
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE)
      << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(),
                                "the parameter servers did not answer"))
      << st.error_message();
  EXPECT_FALSE(absl::StrContains(st.error_message(),
                                 env->shards[1]->address()))
      << st.error_message();
}

// Sends SIGCONT to `pid` when it goes out of scope, so that a failed
// assertion never leaves a stopped shard behind.
struct ResumeAtExit {
  pid_t pid;
  ~ResumeAtExit() { kill(pid, SIGCONT); }
};

// Stops `pid` (SIGSTOP) and waits until every thread of it is stopped
// (state T in /proc/PID/task/TID/stat): kill() wakes one thread, which
// stops the others only once it runs, so on a loaded machine the process
// went on answering for a while after kill() returned.
void StopProcess(pid_t pid) {
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  const auto all_stopped = [pid] {
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(
             absl::StrCat("/proc/", pid, "/task"), ec)) {
      std::ifstream in(task.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      const size_t paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size() ||
          stat[paren + 2] != 'T') {
        return false;
      }
    }
    return !ec;
  };
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!all_stopped()) {
    ASSERT_LT(absl::Now(), give_up) << "process " << pid << " did not stop";
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// Predicts `req` until it succeeds or 30 s pass (a shard back); the last
// status.
grpc::Status PredictUntilOk(const PredictRequest& req, PredictResponse* resp,
                            absl::Duration deadline) {
  grpc::Status back;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  do {
    back = Predict(req, resp, deadline);
  } while (!back.ok() && absl::Now() < give_up);
  return back;
}

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env = new Env;
    env->dir = std::string(std::getenv("TEST_TMPDIR")) + "/serving";
    env->data = env->dir + "/data";
    env->model_dir = env->dir + "/model";
    std::filesystem::create_directories(env->data);
    auto shards = ShardProcess::StartCluster(env->dir, 2, {"--threads=8"});
    ASSERT_TRUE(shards.ok()) << shards.status();
    env->shards = std::move(*shards);
    env->ps = env->shards[0]->address() + "," + env->shards[1]->address();
    ASSERT_TRUE(RunTool({Runfile("tools/gen_synthetic"), "--output_dir=" + env->data,
                     "--num_samples=24000", "--num_items=600",
                     "--num_users=300", "--seed=5"})
                    .ok());
    ASSERT_TRUE(RunTool({Runfile("tools/content_vectors"),
                     "--item_text=" + env->data + "/item_text.tsv",
                     "--output=" + env->data + "/vectors.tsv",
                     "--encoder_out=" + env->data + "/encoder", "--dim=16",
                     "--epoch=3", "--threads=1"})
                    .ok());
    const absl::Status ingested =
        RunTool({Runfile("tools/ingest_content"), "--ps=" + env->ps,
             "--vectors=" + env->data + "/vectors.tsv",
             "--table=" + std::string(kContentTable), "--content_version=1"});
    ASSERT_TRUE(ingested.ok()) << ingested;
    const absl::Status trained = RunTool(TrainArgs(
        {"--predictions_out=" + env->dir + "/predictions.tsv"}));
    ASSERT_TRUE(trained.ok()) << trained;

    auto reader = data::SampleReader::Open(env->data + "/test.tsv");
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE((*reader)->ReadBatch(1 << 20, &env->test_samples).ok());
    std::ifstream preds(env->dir + "/predictions.tsv");
    std::string line;
    while (std::getline(preds, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> cols = absl::StrSplit(line, '\t');
      ASSERT_EQ(cols.size(), 4u) << line;
      float score = 0;
      ASSERT_TRUE(absl::SimpleAtof(cols[3], &score)) << line;
      env->trainer_scores.push_back(score);
    }
    ASSERT_EQ(env->trainer_scores.size(), env->test_samples.size());

    auto server = ServerProcess::Start(
        {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
         "--model_dir=" + env->model_dir,
         absl::StrCat("--max_candidates=", kMaxCandidates),
         "--reload_interval_ms=100", "--content_poll_ms=200",
         "--cache_ttl_ms=200", "--metrics_port=0"},
        /*expect_metrics=*/true);
    ASSERT_TRUE(server.ok()) << server.status();
    env->server = std::move(*server);
    env->stub = PredictionService::NewStub(grpc::CreateChannel(
        env->server->address(), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  void SetUp() override {
    if (env == nullptr || env->stub == nullptr) GTEST_SKIP() << "setup failed";
  }
};

// Flags are checked before anything starts, each error naming its flag
// (exit status 1).
TEST(ServingFlagsTest, BadLimitsExitNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--grpc_memory_mb=1",
       "--grpc_memory_mb must be at least twice --max_message_kb (1024 KiB)"},
      {"--grpc_memory_mb=0", "--grpc_memory_mb must be at least twice"},
      {"--max_message_kb=0", "--max_message_kb must be >= 1"},
      {"--reload_interval_ms=-5",
       "--reload_interval_ms and --content_poll_ms must be >= 0"},
      {"--content_poll_ms=-1",
       "--reload_interval_ms and --content_poll_ms must be >= 0"},
  };
  for (const auto& [flag, message] : cases) {
    absl::StatusOr<CommandResult> r = RunCommand(
        {Runfile("serving/server"), "--ps=127.0.0.1:1", "--model_dir=/none",
         "--port=0", flag});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 1) << flag << ": " << r->err;
    EXPECT_NE(r->err.find(message), std::string::npos) << flag << ": " << r->err;
  }
}

TEST_F(ServingTest, ScoresEqualTheTrainersEvaluation) {
  const size_t n = std::min<size_t>(300, env->test_samples.size());
  std::string version;
  for (size_t i = 0; i < n; ++i) {
    PredictResponse resp;
    grpc::Status st = Predict(RequestFor(env->test_samples[i]), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.scores_size(), 1);
    EXPECT_NEAR(resp.scores(0), env->trainer_scores[i], 1e-5) << "sample " << i;
    if (i == 0) version = resp.model_version();
    EXPECT_EQ(resp.model_version(), version);
  }
  EXPECT_TRUE(absl::EndsWith(version, "-din_mim")) << version;
}

// Without a cache every request misses both tables, so the content rows are
// pulled on the fetch threads while the ID rows are pulled on the request's
// thread: the scores are those of pulling one after the other, bit for bit.
TEST_F(ServingTest, ConcurrentIdAndContentPullsScoreAsSequentialOnes) {
  std::vector<std::vector<float>> scores;
  for (const char* fetch_threads : {"--fetch_threads=0", "--fetch_threads=4"}) {
    auto server = ServerProcess::Start(
        {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
         "--model_dir=" + env->model_dir, "--cache_mb=0", "--metrics_port=-1",
         fetch_threads});
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = PredictionService::NewStub(grpc::CreateChannel(
        (*server)->address(), grpc::InsecureChannelCredentials()));
    scores.emplace_back();
    for (size_t i = 0; i < std::min<size_t>(60, env->test_samples.size());
         ++i) {
      PredictRequest request = RequestFor(env->test_samples[i]);
      // Three candidates, so a request pulls several content rows.
      for (size_t j = 1; j <= 2; ++j) {
        const data::Sample& other =
            env->test_samples[(i + j) % env->test_samples.size()];
        request.add_candidate_item_ids(other.item_id);
        serving::ItemFeatures* features = request.add_candidate_features();
        for (int32_t g : other.genres) features->add_genres(g);
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      PredictResponse resp;
      const grpc::Status st = stub->Predict(&ctx, request, &resp);
      ASSERT_TRUE(st.ok()) << fetch_threads << ": " << st.error_message();
      ASSERT_EQ(resp.scores_size(), 3);
      EXPECT_EQ(resp.cache_hits(), 0);
      scores.back().insert(scores.back().end(), resp.scores().begin(),
                           resp.scores().end());
    }
  }
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_EQ(scores[0], scores[1]);
}

// A row written by another writer at a version below the table's newest
// leaves the newest where it is; the content poll still notices it (the
// table's count of written rows moved) and flushes the cached rows, so a
// server with a long cache TTL scores the new row within a few polls.
TEST_F(ServingTest, AWriteBelowTheNewestVersionIsNoticedByThePoll) {
  auto server = ServerProcess::Start(
      {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
       "--model_dir=" + env->model_dir, "--cache_ttl_ms=600000",
       "--cache_max_stale_ms=600000", "--content_poll_ms=100",
       "--metrics_port=-1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = PredictionService::NewStub(grpc::CreateChannel(
      (*server)->address(), grpc::InsecureChannelCredentials()));
  const auto predict = [&](const PredictRequest& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    PredictResponse resp;
    const grpc::Status st = stub->Predict(&ctx, request, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  };
  // The table's newest version is now the clock's (an upsert of another
  // item), far above the ingest's version 1.
  {
    grpc::ClientContext ctx;
    serving::UpsertItemRequest up;
    up.set_item_id(800500);
    for (int i = 0; i < 16; ++i) up.add_vector(0.25f);
    serving::UpsertItemResponse resp;
    ASSERT_TRUE(stub->UpsertItem(&ctx, up, &resp).ok());
  }
  // Polls that see the upsert's own version flush once; let them pass.
  absl::SleepFor(absl::Milliseconds(600));
  const data::Sample& s = env->test_samples[7];
  const PredictRequest request = RequestFor(s);
  const PredictResponse before = predict(request);
  ASSERT_EQ(before.scores_size(), 1);
  const PredictResponse cached = predict(request);
  ASSERT_EQ(cached.scores(0), before.scores(0));
  EXPECT_GT(cached.cache_hits(), 0);
  // Another writer changes the candidate's row at version 2.
  auto ps = ps::PsClient::Create(absl::StrSplit(env->ps, ','));
  ASSERT_TRUE(ps.ok()) << ps.status();
  const uint64_t key = static_cast<uint64_t>(s.item_id);
  std::vector<float> other(16);
  for (int i = 0; i < 16; ++i) other[i] = (i % 2 == 0) ? 0.7f : -0.7f;
  auto written =
      (*ps)->Upsert(kContentTable, absl::MakeConstSpan(&key, 1), other, 2);
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_EQ(written->rows_written, 1u) << "the item's row was above version 2";
  float after = before.scores(0);
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (after == before.scores(0) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
    after = predict(request).scores(0);
  }
  EXPECT_NE(after, before.scores(0));
}

// Every kind of model the trainer trains is served with the trainer's own
// scores: with and without content, each backbone.
TEST_F(ServingTest, EveryModelKindIsServedAsTheTrainerScoresIt) {
  for (const std::string model : {"din", "avgpool_ct", "sim_mim"}) {
    SCOPED_TRACE(model);
    const std::string preds = env->dir + "/predictions_" + model + ".tsv";
    const absl::Status trained = RunTool(TrainArgs(
        {"--max_train_samples=4000", "--predictions_out=" + preds}, model));
    ASSERT_TRUE(trained.ok()) << trained;
    std::vector<float> expected;
    std::ifstream in(preds);
    std::string line;
    while (std::getline(in, line) && expected.size() < 100) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> cols = absl::StrSplit(line, '\t');
      float score = 0;
      ASSERT_TRUE(absl::SimpleAtof(cols[3], &score)) << line;
      expected.push_back(score);
    }
    auto server = ServerProcess::Start(
        {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
         "--model_dir=" + env->dir + "/model_" + model, "--metrics_port=-1"});
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = PredictionService::NewStub(grpc::CreateChannel(
        (*server)->address(), grpc::InsecureChannelCredentials()));
    for (size_t i = 0; i < expected.size(); ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      PredictResponse resp;
      grpc::Status st =
          stub->Predict(&ctx, RequestFor(env->test_samples[i]), &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_NEAR(resp.scores(0), expected[i], 1e-5) << "sample " << i;
    }
    // A model without content has nothing to ingest into.
    grpc::ClientContext ctx;
    serving::UpsertItemRequest up;
    up.set_item_id(1);
    up.set_text("anything");
    serving::UpsertItemResponse up_resp;
    const grpc::Status st = stub->UpsertItem(&ctx, up, &up_resp);
    if (model == "din") {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_TRUE(absl::StrContains(st.error_message(), "reads no content"))
          << st.error_message();
    }
  }
}

TEST_F(ServingTest, ManyCandidatesScoreAsEachAlone) {
  // One request with 50 candidates gives each the score of a request with
  // it alone, in request order (repeats included).
  const data::Sample& s = env->test_samples[0];
  PredictRequest many = RequestFor(s);
  many.clear_candidate_features();
  many.clear_candidate_item_ids();
  for (int i = 0; i < 50; ++i) many.add_candidate_item_ids((i * 37) % 600);
  many.add_candidate_item_ids(0);
  PredictResponse all;
  ASSERT_TRUE(Predict(many, &all).ok());
  ASSERT_EQ(all.scores_size(), 51);
  for (int i = 0; i < 51; i += 5) {
    PredictRequest one = many;
    one.clear_candidate_item_ids();
    one.add_candidate_item_ids(many.candidate_item_ids(i));
    PredictResponse alone;
    ASSERT_TRUE(Predict(one, &alone).ok());
    EXPECT_NEAR(alone.scores(0), all.scores(i), 1e-6) << i;
  }
  EXPECT_EQ(all.scores(50), all.scores(0));
}

TEST_F(ServingTest, UpsertedNewItemIsScoredWithItsContentAtOnce) {
  const int64_t new_item = 1000000007;
  PredictRequest req = RequestFor(env->test_samples[1]);
  req.clear_candidate_features();
  req.set_candidate_item_ids(0, new_item);
  PredictResponse before;
  ASSERT_TRUE(Predict(req, &before).ok());

  // The text of an existing item: the new item gets that item's vector.
  std::ifstream texts(env->data + "/item_text.tsv");
  std::string line, text;
  while (std::getline(texts, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    text = cols[1];
    break;
  }
  ASSERT_FALSE(text.empty());
  grpc::ClientContext ctx;
  serving::UpsertItemRequest up;
  up.set_item_id(new_item);
  up.set_text(text);
  serving::UpsertItemResponse up_resp;
  grpc::Status st = env->stub->UpsertItem(&ctx, up, &up_resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_GT(up_resp.content_version(), 1u);
  // The manifest pins the encoder that filled the table; the server used it.
  std::string descriptor;
  {
    std::ifstream in(env->data + "/encoder/encoder.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    descriptor = ss.str();
  }
  EXPECT_TRUE(absl::StrContains(descriptor, "id=" + up_resp.encoder()))
      << descriptor;
  {
    std::ifstream in(env->model_dir + "/manifest.json");
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_TRUE(absl::StrContains(ss.str(), "\"id\": \"" + up_resp.encoder()))
        << ss.str();
  }
  EXPECT_NEAR(up_resp.norm(), 1.0, 1e-5);

  // Read-your-write: the next Predict scores it with the new content.
  PredictResponse after;
  ASSERT_TRUE(Predict(req, &after).ok());
  EXPECT_NE(after.scores(0), before.scores(0));

  // The row on the shards is the encoder's vector of that text, bit for bit.
  auto encoder = serving::ContentEncoder::Load(env->data + "/encoder");
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  std::vector<float> expected;
  ASSERT_TRUE((*encoder)->Encode(text, &expected).ok());
  auto ps = ps::PsClient::Create(absl::StrSplit(env->ps, ','));
  ASSERT_TRUE(ps.ok());
  const uint64_t key = new_item;
  auto rows = (*ps)->GetRows(kContentTable, absl::MakeConstSpan(&key, 1));
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, expected);
  EXPECT_EQ(rows->meta[0].version(), up_resp.content_version());
}

// An upserted row's version is above the item's own and at least the Unix
// time in seconds, not one above the table's newest: a stream of upserts
// does not run the table's versions ahead of the clock (which would make a
// later catalogue re-ingest, at its Unix time, stale for those items).
TEST_F(ServingTest, UpsertVersionsFollowTheClockNotTheUpsertCount) {
  const auto upsert = [&](int64_t item) -> uint64_t {
    grpc::ClientContext ctx;
    serving::UpsertItemRequest up;
    up.set_item_id(item);
    for (int i = 0; i < 16; ++i) up.add_vector(0.25f);
    serving::UpsertItemResponse resp;
    const grpc::Status st = env->stub->UpsertItem(&ctx, up, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.content_version();
  };
  const uint64_t before = absl::ToUnixSeconds(absl::Now());
  std::vector<uint64_t> versions;
  for (int64_t item = 800001; item <= 800020; ++item) {
    versions.push_back(upsert(item));
  }
  const uint64_t after = absl::ToUnixSeconds(absl::Now());
  for (const uint64_t v : versions) {
    EXPECT_GE(v, before);
    EXPECT_LE(v, after);  // 20 upserts did not move it 20 ahead
  }
  // The same item again: above its own row's version, whatever the clock.
  const uint64_t first = upsert(800001);
  const uint64_t second = upsert(800001);
  EXPECT_GT(first, versions[0]);
  EXPECT_GT(second, first);
}

TEST_F(ServingTest, BadRequestsAreRefusedNamingTheField) {
  const PredictRequest good = RequestFor(env->test_samples[2]);
  struct Case {
    std::string field;
    PredictRequest req;
  };
  std::vector<Case> cases;
  {
    PredictRequest r = good;
    r.clear_candidate_item_ids();
    r.clear_candidate_features();
    cases.push_back({"candidate_item_ids", r});
  }
  {
    PredictRequest r = good;
    r.clear_candidate_features();
    for (int i = 0; i < kMaxCandidates; ++i) r.add_candidate_item_ids(i);
    cases.push_back({"--max_candidates=200", r});
  }
  {
    PredictRequest r = good;
    (*r.mutable_user_features())["zodiac"] = 3;
    cases.push_back({"unknown feature 'zodiac'", r});
  }
  {
    PredictRequest r = good;
    r.set_candidate_item_ids(0, -5);
    cases.push_back({"candidate_item_ids[0]", r});
  }
  {
    PredictRequest r = good;
    r.add_behavior_item_ids(-1);
    cases.push_back({"behavior_item_ids[", r});
  }
  {
    PredictRequest r = good;
    r.add_candidate_features();
    cases.push_back({"candidate_features", r});
  }
  {
    PredictRequest r = good;
    r.clear_candidate_features();
    for (int i = 0; i < r.candidate_item_ids_size(); ++i) {
      auto* f = r.add_candidate_features();
      f->add_genres(2);
      if (i == 0) f->add_genres(2);
    }
    cases.push_back({"candidate_features[0].genres: genre 2 appears twice", r});
  }
  for (const Case& c : cases) {
    PredictResponse resp;
    grpc::Status st = Predict(c.req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_TRUE(absl::StrContains(st.error_message(), c.field))
        << c.field << ": " << st.error_message();
  }
  grpc::ClientContext ctx;
  serving::UpsertItemRequest up;
  up.set_item_id(5);
  up.add_vector(1.0f);
  serving::UpsertItemResponse up_resp;
  grpc::Status st = env->stub->UpsertItem(&ctx, up, &up_resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "has dim 16"))
      << st.error_message();
  // Finite values whose squares overflow float would make every score of
  // the item NaN: refused.
  {
    grpc::ClientContext huge_ctx;
    serving::UpsertItemRequest huge;
    huge.set_item_id(5);
    for (int i = 0; i < 16; ++i) huge.add_vector(i == 3 ? 2e19f : 0.5f);
    st = env->stub->UpsertItem(&huge_ctx, huge, &up_resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(st.error_message(),
                                  "vector[3] = 2e+19): the content module's "
                                  "cosine would overflow"))
        << st.error_message();
  }
  // The server still answers.
  PredictResponse resp;
  EXPECT_TRUE(Predict(good, &resp).ok());
}

// A model whose tables are not on the shards (dropped, never created, or
// another dim) would fail every request: the server does not start on it,
// naming the table. (A reload to such a version is refused the same way,
// by the same check, and the current version goes on serving.)
TEST_F(ServingTest, AModelWhoseTableIsNotOnTheShardsIsRefused) {
  const std::string dir = env->dir + "/model_missing_table";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(env->model_dir, dir,
                        std::filesystem::copy_options::recursive);
  absl::StatusOr<model::ModelManifest> m = model::ReadManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->content_table.has_value());
  const std::string content_table = m->content_table->name;
  m->content_table->name = "no_such_table";
  ASSERT_TRUE(model::WriteManifest(dir, *m).ok());
  absl::StatusOr<CommandResult> r = RunCommand(
      {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
       "--model_dir=" + dir, "--metrics_port=-1"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1) << r->err;
  EXPECT_TRUE(absl::StrContains(
      r->err, "reads table 'no_such_table', which is on no shard"))
      << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, content_table)) << r->err;  // listed

  // The ID table pointed at the content table, whose dim differs.
  m->content_table->name = content_table;
  if (m->id_table.dim != m->content_table->dim) {
    m->id_table.name = content_table;
    ASSERT_TRUE(model::WriteManifest(dir, *m).ok());
    r = RunCommand({Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
                    "--model_dir=" + dir, "--metrics_port=-1"});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 1) << r->err;
    EXPECT_TRUE(absl::StrContains(
        r->err, absl::StrCat("reads table '", content_table, "' with dim ",
                             m->id_table.dim, ": shard 0 (")))
        << r->err;
  }
  std::filesystem::remove_all(dir);
}

// A new version that cannot be served (its content table is on no shard)
// is not installed: the current one goes on serving, and GetStatus and the
// metrics say that a reload failed and why. Putting the manifest back
// clears nothing already served.
TEST_F(ServingTest, AFailedReloadIsReportedAndTheCurrentVersionServes) {
  const std::string v1 = GetStatusVersion();
  ASSERT_FALSE(v1.empty());
  std::string original;
  const std::string manifest_path =
      env->model_dir + "/" + model::kManifestFileName;
  ASSERT_TRUE(base::ReadFileToString(manifest_path, &original).ok());
  absl::StatusOr<model::ModelManifest> m = model::ReadManifest(env->model_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->content_table.has_value());
  m->model_version = v1 + "-broken";
  m->content_table->name = "no_such_table";
  ASSERT_TRUE(model::WriteManifest(env->model_dir, *m).ok());
  serving::GetStatusResponse status =
      StatusWhen([](const serving::GetStatusResponse& st) {
        return st.model_reload_failures() > 0;
      });
  ASSERT_TRUE(base::WriteFileAtomically(manifest_path, original).ok());
  EXPECT_GE(status.model_reload_failures(), 1);
  EXPECT_EQ(status.model_version(), v1);
  EXPECT_TRUE(absl::StrContains(status.last_reload_error(),
                                v1 + "-broken: "))
      << status.last_reload_error();
  EXPECT_TRUE(absl::StrContains(status.last_reload_error(), "no_such_table"))
      << status.last_reload_error();
  PredictResponse resp;
  EXPECT_TRUE(Predict(RequestFor(env->test_samples[0]), &resp).ok());
  EXPECT_EQ(resp.model_version(), v1);
  absl::StatusOr<std::string> metrics =
      HttpGet(env->server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(absl::StrContains(*metrics, "mim_serving_model_reload_failures"))
      << *metrics;
  // With the manifest put back, nothing fails to load: the error clears.
  status = StatusWhen([](const serving::GetStatusResponse& st) {
    return st.last_reload_error().empty();
  });
  EXPECT_EQ(status.last_reload_error(), "");
  EXPECT_EQ(status.model_version(), v1);
}

TEST_F(ServingTest, NewModelVersionIsPickedUpUnderLoadWithoutAFailedRequest) {
  const std::string v1 = GetStatusVersion();
  ASSERT_FALSE(v1.empty());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0}, failed{0}, went_back{0};
  std::vector<std::thread> clients;
  std::vector<std::string> last_seen(3);
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&, t] {
      std::string seen = v1;
      for (int i = 0; !stop.load(); ++i) {
        PredictResponse resp;
        const data::Sample& s =
            env->test_samples[(t * 1000 + i) % env->test_samples.size()];
        grpc::Status st = Predict(RequestFor(s), &resp);
        if (!st.ok()) {
          ++failed;
          continue;
        }
        ++ok;
        if (resp.model_version() != seen) {
          if (resp.model_version() == v1) ++went_back;
          seen = resp.model_version();
        }
      }
      last_seen[t] = seen;
    });
  }
  // A warm-started continuation of the model, saved into the served dir.
  const absl::Status trained = RunTool(TrainArgs(
      {"--init_model_dir=" + env->model_dir, "--max_train_samples=3000"}));
  // Wait for the new version to be served (GetStatus), then a little load
  // on it.
  std::string v2;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (trained.ok() && absl::Now() < give_up) {
    v2 = GetStatusVersion();
    if (!v2.empty() && v2 != v1) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  const int64_t ok_at_switch = ok.load();
  while (ok.load() < ok_at_switch + 30 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop = true;
  for (std::thread& c : clients) c.join();
  ASSERT_TRUE(trained.ok()) << trained;
  EXPECT_NE(v2, v1);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(went_back.load(), 0);
  EXPECT_GT(ok.load(), 30);
  for (const std::string& seen : last_seen) EXPECT_EQ(seen, v2);
}

// Prometheus metrics (checked by promtool), grpc.health.v1 and server
// reflection on the serving tier.
TEST_F(ServingTest, MetricsHealthAndReflection) {
  const std::string before = HttpGet(env->server->metrics_port(), "/metrics")
                                 .value_or("");
  const double predicts_before =
      MetricSample(before, "mim_serving_requests_total{code=\"OK\","
                           "method=\"Predict\"}")
          .value_or(-1);
  ASSERT_GE(predicts_before, 0) << before;
  const double invalid_before =
      MetricSample(before, "mim_serving_requests_total{code="
                           "\"INVALID_ARGUMENT\",method=\"Predict\"}")
          .value_or(0);
  for (int i = 0; i < 5; ++i) {
    PredictResponse resp;
    ASSERT_TRUE(Predict(RequestFor(env->test_samples[i]), &resp).ok());
  }
  PredictRequest bad = RequestFor(env->test_samples[0]);
  bad.clear_candidate_item_ids();
  bad.clear_candidate_features();
  PredictResponse resp;
  EXPECT_FALSE(Predict(bad, &resp).ok());
  absl::StatusOr<std::string> after =
      HttpGet(env->server->metrics_port(), "/metrics");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(MetricSample(*after, "mim_serving_requests_total{code=\"OK\","
                                 "method=\"Predict\"}"),
            predicts_before + 5);
  EXPECT_EQ(MetricSample(*after,
                         "mim_serving_requests_total{code=\"INVALID_ARGUMENT\","
                         "method=\"Predict\"}"),
            invalid_before + 1);
  for (const char* series :
       {"mim_serving_cache_hit_ratio", "mim_serving_cache_bytes",
        "mim_serving_request_seconds_count{method=\"Predict\"}",
        "mim_serving_shard_pull_seconds_count{table=\"id\"}"}) {
    EXPECT_TRUE(MetricSample(*after, series).has_value()) << series;
  }
  const absl::Status promtool =
      PromtoolCheck(*after, env->dir + "/serving_metrics.txt");
  if (absl::IsNotFound(promtool)) {
    GTEST_SKIP() << promtool;
  }
  EXPECT_TRUE(promtool.ok()) << promtool;

  // grpc.health.v1 (PsClient's health check speaks the standard protocol).
  auto health = ps::PsClient::Create({env->server->address()});
  ASSERT_TRUE(health.ok());
  const std::vector<absl::Status> serving = (*health)->Health();
  ASSERT_EQ(serving.size(), 1u);
  EXPECT_TRUE(serving[0].ok()) << serving[0];
  const std::vector<std::string> services =
      ReflectedServices(env->server->address());
  EXPECT_NE(std::find(services.begin(), services.end(),
                      "mim.serving.PredictionService"),
            services.end());
  EXPECT_NE(std::find(services.begin(), services.end(),
                      "grpc.health.v1.Health"),
            services.end());
}

// A shard that hangs (SIGSTOP) outlasts the tier's own retry budget
// (--ps_timeout_ms, 2 s by default), well inside the caller's 10 s: the
// caller gets UNAVAILABLE (retry), not a DEADLINE_EXCEEDED that reads as
// its own deadline, and no shard address; resumed, the tier answers again.
TEST_F(ServingTest, HungShardGivesUnavailableWithinTheCallersDeadline) {
  const PredictRequest req =
      UncachedRequest(env->test_samples[4], 888888, 2100000000);
  const pid_t pid = env->shards[1]->pid();
  const ResumeAtExit resume{pid};
  StopProcess(pid);
  PredictResponse resp;
  const absl::Time start = absl::Now();
  grpc::Status st = Predict(req, &resp, absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  ExpectShardUnavailable(st);
  kill(pid, SIGCONT);
  const grpc::Status back = PredictUntilOk(req, &resp, absl::Seconds(10));
  EXPECT_TRUE(back.ok()) << back.error_message();
  EXPECT_EQ(resp.scores_size(), 40);
}

TEST_F(ServingTest, KilledShardGivesUnavailableAndTheTierRecoversByItself) {
  const PredictRequest req =
      UncachedRequest(env->test_samples[3], 777777, 2000000000);
  env->shards[1]->Kill(SIGKILL);
  PredictResponse resp;
  grpc::Status st = Predict(req, &resp, absl::Seconds(3));
  ExpectShardUnavailable(st);
  // UNAVAILABLE (not DEADLINE_EXCEEDED) means the server answered within the
  // caller's deadline instead of letting the client cut the call.

  ASSERT_TRUE(ShardProcess::Restart(&env->shards[1]).ok());
  const grpc::Status back = PredictUntilOk(req, &resp, absl::Seconds(3));
  EXPECT_TRUE(back.ok()) << back.error_message();
  EXPECT_EQ(resp.scores_size(), 40);
  EXPECT_FALSE(resp.stale());
}

// With --degraded_reads, a dead or hung shard costs the requests that need
// it a part of their rows, not their answers: the rows it holds are read
// as missing (rows_unavailable, the rest pulled from the live shard), the
// shard is left out of the next requests for --shard_down_ms (a request
// whose deadline is shorter than --ps_timeout_ms is answered, which it
// could not be if it waited for the hung shard), the metric counts the
// rows, and once the shard is back (a probe after the interval) the scores
// are the ones from before, bit for bit. A request whose own deadline runs
// out while a shard hangs marks no shard down.
TEST_F(ServingTest, DegradedReadsAnswerWithoutADeadShardsRows) {
  auto started = ServerProcess::Start(
      {Runfile("serving/server"), "--port=0", "--ps=" + env->ps,
       "--model_dir=" + env->model_dir, "--cache_mb=0", "--degraded_reads",
       "--shard_down_ms=4000", "--ps_timeout_ms=2000",
       "--reload_interval_ms=0", "--content_poll_ms=0", "--metrics_port=0"},
      /*expect_metrics=*/true);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<ServerProcess> degraded = std::move(*started);
  auto stub = PredictionService::NewStub(grpc::CreateChannel(
      degraded->address(), grpc::InsecureChannelCredentials()));
  const auto predict = [&stub](const PredictRequest& req,
                               PredictResponse* resp,
                               absl::Duration deadline = absl::Seconds(10)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    return stub->Predict(&ctx, req, resp);
  };
  // Real users and items: rows on both shards.
  PredictRequest req = RequestFor(env->test_samples[5]);
  req.clear_candidate_features();
  for (int i = 6; i < 30; ++i) {
    req.add_candidate_item_ids(env->test_samples[i].item_id);
  }
  const auto scores = [](const PredictResponse& r) {
    return std::vector<float>(r.scores().begin(), r.scores().end());
  };
  // Predicts until no row is missing (the shard probed after its interval
  // and found up), at most 30 s.
  const auto until_whole = [&](PredictResponse* resp) {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    do {
      absl::SleepFor(absl::Milliseconds(100));
      const grpc::Status st = predict(req, resp);
      EXPECT_TRUE(st.ok()) << st.error_message();
      if (!st.ok()) return;
    } while (resp->rows_unavailable() != 0 && absl::Now() < give_up);
  };
  PredictResponse before;
  ASSERT_TRUE(predict(req, &before).ok());
  EXPECT_EQ(before.rows_unavailable(), 0);
  const int32_t rows = before.rows_pulled();  // no cache: every row
  ASSERT_GT(rows, 0);

  // Dead: answered within a deadline shorter than --ps_timeout_ms.
  env->shards[1]->Kill(SIGKILL);
  PredictResponse during;
  const grpc::Status st = predict(req, &during, absl::Milliseconds(1500));
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_GT(during.rows_unavailable(), 0);
  EXPECT_LT(during.rows_unavailable(), rows);  // shard 0 still answers
  EXPECT_EQ(during.rows_pulled() + during.rows_unavailable(), rows);
  ASSERT_EQ(during.scores_size(), before.scores_size());
  for (const float p : during.scores()) {
    EXPECT_TRUE(p > 0.0f && p < 1.0f) << p;
  }
  PredictResponse again;
  ASSERT_TRUE(predict(req, &again).ok());
  EXPECT_EQ(again.rows_unavailable(), during.rows_unavailable());
  EXPECT_EQ(scores(again), scores(during));
  const absl::StatusOr<std::string> metrics =
      HttpGet(degraded->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const double counted =
      MetricSample(*metrics,
                   "mim_serving_rows_unavailable_total{table=\"id\"}")
          .value_or(0) +
      MetricSample(*metrics,
                   "mim_serving_rows_unavailable_total{table=\"content\"}")
          .value_or(0);
  EXPECT_EQ(counted, 2.0 * during.rows_unavailable()) << *metrics;

  // Back: probed after the interval, whole again.
  ASSERT_TRUE(ShardProcess::Restart(&env->shards[1]).ok());
  PredictResponse after;
  until_whole(&after);
  EXPECT_EQ(after.rows_unavailable(), 0);
  EXPECT_EQ(after.rows_pulled(), rows);
  EXPECT_EQ(scores(after), scores(before));

  // Hung: the first request waits out --ps_timeout_ms and leaves the shard
  // out; the next one is answered well inside a deadline shorter than
  // that, with the same rows missing and the same scores.
  const pid_t pid = env->shards[1]->pid();
  const ResumeAtExit resume{pid};
  StopProcess(pid);
  PredictResponse hung;
  ASSERT_TRUE(predict(req, &hung).ok());
  EXPECT_EQ(hung.rows_unavailable(), during.rows_unavailable());
  EXPECT_EQ(scores(hung), scores(during));
  PredictResponse quick;
  const grpc::Status in_time = predict(req, &quick, absl::Milliseconds(1500));
  ASSERT_TRUE(in_time.ok()) << in_time.error_message();
  EXPECT_EQ(scores(quick), scores(during));

  // A short deadline runs out while the shard hangs: the request fails,
  // and neither shard is marked down for it (a request right after the
  // shard resumes is whole at once, with no interval to wait out).
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  until_whole(&after);
  ASSERT_EQ(after.rows_unavailable(), 0);
  StopProcess(pid);
  PredictResponse cut;
  const grpc::Status short_deadline =
      predict(req, &cut, absl::Milliseconds(300));
  EXPECT_FALSE(short_deadline.ok());
  // The server may still be inside that request when its caller gives up.
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  PredictResponse whole;
  ASSERT_TRUE(predict(req, &whole).ok());
  EXPECT_EQ(whole.rows_unavailable(), 0);
  EXPECT_EQ(scores(whole), scores(before));
}

}  // namespace
}  // namespace mim::testing

// libfasttext (linked through the content encoder) defines its own main();
// this one must win, so the test links gtest without gtest_main.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
