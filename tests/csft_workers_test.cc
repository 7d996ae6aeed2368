// Data-parallel C-SFT workers (worker/csft/csft_workers.h) against real
// //ps:server shards on loopback, workers as threads with a client each:
// the other workers' positives join q2item's candidates with exact counts
// and exact ids and vectors; the flag, the staleness bound and an earlier
// run's rows keep them out; two workers train one encoder end to end
// (every batch taken once, worker 0 selects, the others follow its stop);
// a missing worker ends the wait with DEADLINE_EXCEEDED naming it; bad
// options are refused.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "ps/client.h"
#include "tests/process.h"
#include "tests/shared_cluster.h"
#include "worker/csft/csft_test_util.h"
#include "worker/csft/csft_trainer.h"
#include "worker/csft/csft_workers.h"

namespace mim {
namespace {

using ::mim::csft::Catalog;
using ::mim::csft::CsftOptions;
using ::mim::csft::CsftTrainer;
using ::mim::csft::InterestPair;
using ::mim::csft::PairSplit;
using ::mim::csft::PsWorkerGroup;
using ::mim::csft::PsWorkerGroupOptions;
using ::mim::csft::testing::Batch;
using ::mim::csft::testing::TestCatalog;
using ::mim::testing::SharedClusterTest;

class CsftWorkersTest : public SharedClusterTest {
 protected:
  static void SetUpTestSuite() { StartSharedCluster("csft_workers"); }

  static PsWorkerGroupOptions Options(const std::string& prefix, int worker,
                                      int num_workers = 2) {
    PsWorkerGroupOptions o;
    o.num_workers = num_workers;
    o.worker_index = worker;
    o.prefix = prefix;
    o.dim = 6;
    o.max_positives = 4;
    o.timeout = absl::Seconds(60);
    return o;
  }
};

// The group of worker `w` for a trainer of `catalog` and `o`.
std::unique_ptr<PsWorkerGroup> Group(ps::PsClient* client,
                                     const PsWorkerGroupOptions& go,
                                     const Catalog& catalog,
                                     const CsftOptions& o) {
  auto initial = csft::InitialEncoderParams(catalog, o);
  EXPECT_TRUE(initial.ok()) << initial.status();
  auto g = PsWorkerGroup::Create(client, go, std::move(*initial), o.seed);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

TEST_F(CsftWorkersTest, PeerPositivesJoinTheCandidatesWithExactCounts) {
  const Catalog c = TestCatalog();
  CsftOptions o;
  o.batch_size = 4;
  o.queue_batches = 0;
  auto c0 = Client(), c1 = Client();
  auto g0 = Group(c0.get(), Options("counts", 0), c, o);
  auto g1 = Group(c1.get(), Options("counts", 1), c, o);
  ASSERT_TRUE(g0 && g1);
  EXPECT_EQ(g0->generation(), 1u);
  EXPECT_EQ(g1->generation(), 1u);
  const std::vector<int64_t> pool = {104, 105, 106, 107, 108, 109};
  auto t0 = CsftTrainer::Create(&c, o, pool);
  auto t1 = CsftTrainer::Create(&c, o, pool);
  ASSERT_TRUE(t0.ok() && t1.ok());
  (*t0)->set_group(g0.get());
  (*t1)->set_group(g1.get());

  // Worker 1 first: nobody has published, so per query the 3 other
  // in-batch positives and the batch's 4 hard negatives.
  auto s1 = (*t1)->Step(Batch(14));  // positives 114..117
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->peer_rows, 0);
  EXPECT_EQ(s1->negatives, 4 * 7);
  // Worker 0 then sees worker 1's 4 positives: 4 more per query.
  auto s0 = (*t0)->Step(Batch(10));  // positives 110..113
  ASSERT_TRUE(s0.ok()) << s0.status();
  EXPECT_EQ(s0->peer_rows, 4);
  EXPECT_EQ(s0->negatives, 4 * 11);
  // Worker 1's positive 113 is worker 0's too: a peer row equal to a
  // query's positive is masked for that query only.
  std::vector<InterestPair> overlap = Batch(14);
  overlap[0].item = 113;
  auto s1b = (*t1)->Step(overlap);
  ASSERT_TRUE(s1b.ok()) << s1b.status();
  EXPECT_EQ(s1b->peer_rows, 4);
  EXPECT_EQ(s1b->negatives, 4 * 11 - 1);

  // Both workers computed on and pushed to the same shared parameters:
  // after three pushes both fetch the same vector, different from the
  // seeded one.
  std::vector<float> p0, p1;
  ASSERT_TRUE(g0->FetchParams(&p0).ok());
  ASSERT_TRUE(g1->FetchParams(&p1).ok());
  EXPECT_EQ(p0, p1);
  auto initial = csft::InitialEncoderParams(c, o);
  ASSERT_TRUE(initial.ok());
  EXPECT_NE(p0, *initial);
}

TEST_F(CsftWorkersTest, ExchangeCarriesIdsAndVectorsExactly) {
  auto c0 = Client(), c1 = Client();
  PsWorkerGroupOptions o0 = Options("exact", 0), o1 = Options("exact", 1);
  o0.staleness = o1.staleness = 8;
  std::vector<float> initial(10, 0.5f);
  auto g0 = PsWorkerGroup::Create(c0.get(), o0, initial, 1);
  auto g1 = PsWorkerGroup::Create(c1.get(), o1, initial, 1);
  ASSERT_TRUE(g0.ok() && g1.ok());
  const std::vector<int64_t> ids = {0, 1, (int64_t{1} << 62) + 12345,
                                    (int64_t{1} << 42) - 1};
  std::vector<float> vectors(4 * 6);
  for (size_t i = 0; i < vectors.size(); ++i) {
    vectors[i] = std::ldexp(1.0f + float(i) / 7.0f, int(i) % 9 - 4) *
                 (i % 2 ? -1.0f : 1.0f);
  }
  std::vector<int64_t> got_ids;
  std::vector<float> got;
  ASSERT_TRUE((*g1)->ExchangePositives(0, ids, vectors, &got_ids, &got).ok());
  EXPECT_TRUE(got_ids.empty());  // worker 0 has published nothing
  ASSERT_TRUE((*g0)->ExchangePositives(0, {}, {}, &got_ids, &got).ok());
  EXPECT_EQ(got_ids, ids);
  EXPECT_EQ(got, vectors);  // bit for bit

  // Out of the staleness bound (8): not taken.
  got_ids.clear();
  got.clear();
  ASSERT_TRUE((*g0)->ExchangePositives(9, {}, {}, &got_ids, &got).ok());
  EXPECT_TRUE(got_ids.empty());
  EXPECT_EQ((*g0)->rows_too_old(), 4);
  EXPECT_EQ((*g0)->rows_too_new(), 0);
  ASSERT_TRUE((*g0)->ExchangePositives(8, {}, {}, &got_ids, &got).ok());
  EXPECT_EQ(got_ids.size(), 4u);

  // A second run over the prefix: its own generation; the first run's rows
  // in slots this run has not written are not taken.
  auto h0 = PsWorkerGroup::Create(c0.get(), o0, initial, 1);
  auto h1 = PsWorkerGroup::Create(c1.get(), o1, initial, 1);
  ASSERT_TRUE(h0.ok() && h1.ok());
  EXPECT_EQ((*h0)->generation(), 2u);
  EXPECT_EQ((*h1)->generation(), 2u);
  EXPECT_NE((*h0)->dense_table(), (*g0)->dense_table());
  got_ids.clear();
  got.clear();
  ASSERT_TRUE((*h1)
                  ->ExchangePositives(0, absl::MakeConstSpan(ids).subspan(0, 2),
                                      absl::MakeConstSpan(vectors).subspan(0, 12),
                                      &got_ids, &got)
                  .ok());
  ASSERT_TRUE((*h0)->ExchangePositives(0, {}, {}, &got_ids, &got).ok());
  EXPECT_EQ(got_ids, std::vector<int64_t>(ids.begin(), ids.begin() + 2));

  // Bad input: more ids than slots, a vector size that does not match, a
  // negative id; nothing is written.
  std::vector<int64_t> five(5, 7);
  std::vector<float> five_v(30, 0.0f);
  EXPECT_EQ((*h1)->ExchangePositives(1, five, five_v, &got_ids, &got).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*h1)
                ->ExchangePositives(1, absl::MakeConstSpan(ids).subspan(0, 1),
                                    absl::MakeConstSpan(vectors).subspan(0, 5),
                                    &got_ids, &got)
                .code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int64_t> negative = {-3};
  EXPECT_EQ((*h1)
                ->ExchangePositives(1, negative,
                                    absl::MakeConstSpan(vectors).subspan(0, 6),
                                    &got_ids, &got)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CsftWorkersTest, WorkerNegativesOffTakesNoPeerRows) {
  const Catalog c = TestCatalog();
  CsftOptions o;
  o.batch_size = 4;
  o.queue_batches = 0;
  o.worker_negatives = false;
  auto c0 = Client(), c1 = Client();
  auto g0 = Group(c0.get(), Options("off", 0), c, o);
  auto g1 = Group(c1.get(), Options("off", 1), c, o);
  ASSERT_TRUE(g0 && g1);
  const std::vector<int64_t> pool = {104, 105, 106, 107, 108, 109};
  auto t0 = CsftTrainer::Create(&c, o, pool);
  auto t1 = CsftTrainer::Create(&c, o, pool);
  ASSERT_TRUE(t0.ok() && t1.ok());
  (*t0)->set_group(g0.get());
  (*t1)->set_group(g1.get());
  ASSERT_TRUE((*t1)->Step(Batch(14)).ok());
  auto s0 = (*t0)->Step(Batch(10));
  ASSERT_TRUE(s0.ok());
  EXPECT_EQ(s0->peer_rows, 0);
  EXPECT_EQ(s0->negatives, 4 * 7);
}

TEST_F(CsftWorkersTest, TwoWorkersTrainOneEncoderAndFollowWorkerZero) {
  const Catalog c = TestCatalog();
  PairSplit split;
  for (int q = 0; q < 30; ++q) {
    for (int p = 0; p < 30; p += 3) {
      if (p == q || (q < 20) != (p < 20)) continue;
      (p % 9 == 0 ? split.valid_new : split.train).push_back({100 + q, 100 + p});
    }
  }
  CsftOptions o;
  o.epochs = 3;
  o.patience = 3;
  o.batch_size = 8;
  const int64_t batches = (int64_t(split.train.size()) + 7) / 8;
  auto c0 = Client(), c1 = Client();
  PsWorkerGroupOptions go0 = Options("train", 0), go1 = Options("train", 1);
  go0.max_positives = go1.max_positives = 8;
  auto g0 = Group(c0.get(), go0, c, o);
  auto g1 = Group(c1.get(), go1, c, o);
  ASSERT_TRUE(g0 && g1);
  absl::StatusOr<csft::TrainResult> r1 = absl::UnknownError("not run");
  std::thread other([&] { r1 = csft::TrainCsft(c, split, o, g1.get()); });
  auto r0 = csft::TrainCsft(c, split, o, g0.get());
  other.join();
  ASSERT_TRUE(r0.ok()) << r0.status();
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_TRUE(r0->chief);
  EXPECT_FALSE(r1->chief);
  // Every batch of every epoch taken by exactly one worker.
  EXPECT_EQ(r0->steps + r1->steps, 3 * batches);
  EXPECT_EQ(r0->steps, 3 * ((batches + 1) / 2));
  EXPECT_EQ(r0->log.size(), 4u);  // epoch 0 and three epochs
  EXPECT_EQ(r1->log.size(), 4u);
  EXPECT_GT(r0->peer_rows + r1->peer_rows, 0);
  // Worker 0 evaluated every epoch; worker 1 did not.
  for (const csft::EpochLog& e : r0->log) EXPECT_GT(e.valid_new.pairs, 0);
  for (const csft::EpochLog& e : r1->log) EXPECT_EQ(e.valid_new.pairs, 0);
  // Worker 1 ends on the shared parameters as the shards hold them.
  std::vector<float> shared;
  ASSERT_TRUE(g1->FetchParams(&shared).ok());
  EXPECT_EQ(r1->encoder->params(), shared);
  // The run over, worker 0 drops its parameter table (another worker may
  // not); the exchange table, which counts the runs, stays.
  EXPECT_EQ(g1->DropRunTable().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(g0->dense_table(), "train_dense_g1");
  absl::StatusOr<uint64_t> dropped = g0->DropRunTable();
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_GT(*dropped, 0u);
  EXPECT_EQ(c0->Stats("train_dense_g1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(c0->Stats("train_exchange").ok());

  // Patience 1 over 5 epochs (a new run over the prefix): whenever worker 0
  // stops, worker 1 stops after the same epoch.
  o.epochs = 5;
  o.patience = 1;
  auto h0 = Group(c0.get(), go0, c, o);
  auto h1 = Group(c1.get(), go1, c, o);
  ASSERT_TRUE(h0 && h1);
  std::thread again([&] { r1 = csft::TrainCsft(c, split, o, h1.get()); });
  r0 = csft::TrainCsft(c, split, o, h0.get());
  again.join();
  ASSERT_TRUE(r0.ok()) << r0.status();
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->log.size(), r0->log.size());
  EXPECT_EQ(r0->steps + r1->steps,
            int64_t(r0->log.size() - 1) * batches);
  EXPECT_EQ(h0->dense_table(), "train_dense_g2");

  // The exchange table dropped (its run counts start over) while the
  // second run's parameter table was kept: the run that reaches
  // generation 2 again refuses to start from those parameters.
  ASSERT_TRUE(c0->DropTable("train_exchange").ok());
  auto first = Group(c0.get(), go0, c, o);  // generation 1: dropped, fresh
  ASSERT_TRUE(first);
  EXPECT_EQ(first->generation(), 1u);
  auto initial = csft::InitialEncoderParams(c, o);
  ASSERT_TRUE(initial.ok());
  auto stale = PsWorkerGroup::Create(c0.get(), go0, *initial, o.seed);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.status().message().find(
                "C-SFT parameter table train_dense_g2 already holds"),
            std::string::npos)
      << stale.status();
  EXPECT_NE(stale.status().message().find(
                "ps_admin drop-table train_dense_g2 --yes"),
            std::string::npos)
      << stale.status();
  // The refusal left worker 0's run count alone: with the table dropped
  // as the message says, it starts at generation 2, not 3.
  ASSERT_TRUE(c0->DropTable("train_dense_g2").ok());
  auto second = Group(c0.get(), go0, c, o);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->generation(), 2u);
}

// Worker 0 drops its run's table when another worker has already started
// a later run over the prefix (its epoch row is at the next generation:
// it is done with this run's table).
TEST_F(CsftWorkersTest, DropRunTableCountsAWorkerInALaterRunAsDone) {
  auto client = Client();
  PsWorkerGroupOptions o = Options("later", 0);
  const std::vector<float> initial(4, 0.0f);
  auto g0 = PsWorkerGroup::Create(client.get(), o, initial, 1);
  o.worker_index = 1;
  auto g1 = PsWorkerGroup::Create(client.get(), o, initial, 1);
  ASSERT_TRUE(g0.ok() && g1.ok());
  ASSERT_TRUE((*g1)->Finished().ok());
  auto next = PsWorkerGroup::Create(client.get(), o, initial, 1);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ((*next)->generation(), 2u);
  ASSERT_TRUE((*next)->EndEpoch(0).ok());
  absl::StatusOr<uint64_t> dropped = (*g0)->DropRunTable();
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(client->Stats("later_dense_g1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CsftWorkersTest, WorkersFollowWorkerZerosDecisions) {
  auto client = Client();
  PsWorkerGroupOptions o = Options("decisions", 0);
  o.timeout = absl::Milliseconds(300);
  auto g0 = PsWorkerGroup::Create(client.get(), o, std::vector<float>(4, 0), 1);
  o.worker_index = 1;
  auto g1 = PsWorkerGroup::Create(client.get(), o, std::vector<float>(4, 0), 1);
  ASSERT_TRUE(g0.ok() && g1.ok());
  // No decision yet: the wait gives up naming what it waited for.
  absl::StatusOr<bool> d = (*g1)->AwaitDecision(1);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(d.status().message().find("worker 0 did not decide after epoch 1"),
            std::string::npos)
      << d.status().message();
  d = (*g1)->AwaitDecision(0);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(d.status().message().find("did not release the start barrier"),
            std::string::npos)
      << d.status().message();
  // Go on after 1, stop after 2; a later decision means "went on".
  ASSERT_TRUE((*g0)->Decide(1, false).ok());
  d = (*g1)->AwaitDecision(1);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(*d);
  ASSERT_TRUE((*g0)->Decide(2, true).ok());
  d = (*g1)->AwaitDecision(1);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(*d);
  d = (*g1)->AwaitDecision(2);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(*d);
  // Worker 0 drops the parameter table only once worker 1 is done with it.
  ASSERT_TRUE((*g0)->PushGradient(std::vector<float>(4, 1.0f)).ok());
  absl::StatusOr<uint64_t> dropped = (*g0)->DropRunTable();
  EXPECT_EQ(dropped.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(dropped.status().message().find(
                "worker(s) 1 did not say they were done with "
                "decisions_dense_g1"),
            std::string::npos)
      << dropped.status();
  EXPECT_TRUE(client->Stats("decisions_dense_g1").ok());
  ASSERT_TRUE((*g1)->Finished().ok());
  dropped = (*g0)->DropRunTable();
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, 1u);
  EXPECT_EQ(client->Stats("decisions_dense_g1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CsftWorkersTest, MissingWorkerEndsTheRunNamingIt) {
  auto client = Client();
  PsWorkerGroupOptions o = Options("missing", 0, 3);
  o.timeout = absl::Milliseconds(300);
  auto g0 = PsWorkerGroup::Create(client.get(), o, std::vector<float>(4, 0), 1);
  ASSERT_TRUE(g0.ok());
  ASSERT_TRUE((*g0)->EndEpoch(1).ok());
  o.worker_index = 2;
  o.timeout = absl::Seconds(60);
  auto g2 = PsWorkerGroup::Create(client.get(), o, std::vector<float>(4, 0), 1);
  ASSERT_TRUE(g2.ok());
  ASSERT_TRUE((*g2)->EndEpoch(1).ok());
  absl::Status s = (*g0)->AwaitEpoch(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("worker(s) 1 did not finish epoch 1"),
            std::string::npos)
      << s.message();
  // Worker 0 gave up and said so: worker 2 ends at once, ABORTED, instead
  // of waiting out its own minute.
  const absl::Time t0 = absl::Now();
  absl::StatusOr<bool> d = (*g2)->AwaitDecision(1);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kAborted) << d.status();
  EXPECT_NE(d.status().message().find("worker 0 ended run 1"),
            std::string::npos)
      << d.status().message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
}

TEST_F(CsftWorkersTest, AWorkerOfAnotherGenerationEndsTheRun) {
  auto client = Client();
  PsWorkerGroupOptions o0 = Options("gens", 0), o1 = Options("gens", 1);
  o0.timeout = o1.timeout = absl::Seconds(60);
  const std::vector<float> initial(4, 0.0f);
  // Worker 1 ran once alone over the prefix: it is one run ahead.
  ASSERT_TRUE(PsWorkerGroup::Create(client.get(), o1, initial, 1).ok());
  auto g0 = PsWorkerGroup::Create(client.get(), o0, initial, 1);
  auto g1 = PsWorkerGroup::Create(client.get(), o1, initial, 1);
  ASSERT_TRUE(g0.ok() && g1.ok());
  EXPECT_EQ((*g0)->generation(), 1u);
  EXPECT_EQ((*g1)->generation(), 2u);
  ASSERT_TRUE((*g0)->EndEpoch(0).ok());
  ASSERT_TRUE((*g1)->EndEpoch(0).ok());
  absl::Status s = (*g0)->AwaitEpoch(0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("worker 1 is at generation 2, worker 0 at 1"),
            std::string::npos)
      << s.message();
}

TEST_F(CsftWorkersTest, WorkersWithOtherInputsAreRefusedAtTheStart) {
  auto client = Client();
  PsWorkerGroupOptions o0 = Options("inputs", 0), o1 = Options("inputs", 1);
  o0.fingerprint = 12345;
  o1.fingerprint = 12346;
  const std::vector<float> initial(4, 0.0f);
  auto g0 = PsWorkerGroup::Create(client.get(), o0, initial, 1);
  auto g1 = PsWorkerGroup::Create(client.get(), o1, initial, 1);
  ASSERT_TRUE(g0.ok() && g1.ok());
  ASSERT_TRUE((*g0)->EndEpoch(0).ok());
  ASSERT_TRUE((*g1)->EndEpoch(0).ok());
  absl::Status s = (*g0)->AwaitEpoch(0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("worker 1's inputs differ from worker 0's"),
            std::string::npos)
      << s.message();
  absl::StatusOr<bool> d = (*g1)->AwaitDecision(0);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kAborted) << d.status();

  // The fingerprint sees a pair, an option and a catalogue vector.
  const Catalog c = TestCatalog();
  const std::vector<InterestPair> train = Batch(0);
  const CsftOptions o;
  const uint64_t base = csft::WorkerInputsFingerprint(c, train, o);
  EXPECT_EQ(csft::WorkerInputsFingerprint(c, train, o), base);
  std::vector<InterestPair> other = train;
  other[2].item = 111;
  EXPECT_NE(csft::WorkerInputsFingerprint(c, other, o), base);
  CsftOptions more = o;
  more.epochs = 4;
  EXPECT_NE(csft::WorkerInputsFingerprint(c, train, more), base);
  Catalog moved = c;
  moved.features[7] += 1e-6f;
  EXPECT_NE(csft::WorkerInputsFingerprint(moved, train, o), base);
}

TEST_F(CsftWorkersTest, BadOptionsAreRefused) {
  auto client = Client();
  const std::vector<float> initial(4, 0.0f);
  for (auto mutate : std::vector<void (*)(PsWorkerGroupOptions*)>{
           [](PsWorkerGroupOptions* o) { o->worker_index = 2; },
           [](PsWorkerGroupOptions* o) { o->worker_index = -1; },
           [](PsWorkerGroupOptions* o) { o->num_workers = 0; },
           [](PsWorkerGroupOptions* o) { o->dim = 0; },
           [](PsWorkerGroupOptions* o) { o->max_positives = 0; },
           [](PsWorkerGroupOptions* o) { o->staleness = -1; },
           [](PsWorkerGroupOptions* o) { o->prefix.clear(); },
           [](PsWorkerGroupOptions* o) { o->learning_rate = 0; },
       }) {
    PsWorkerGroupOptions o = Options("bad", 0);
    mutate(&o);
    auto g = PsWorkerGroup::Create(client.get(), o, initial, 1);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument)
        << g.status();
  }
  // An exchange table of another dim under the prefix: named.
  PsWorkerGroupOptions o = Options("dims", 0);
  ASSERT_TRUE(PsWorkerGroup::Create(client.get(), o, initial, 1).ok());
  o.dim = 7;
  auto g = PsWorkerGroup::Create(client.get(), o, initial, 1);
  EXPECT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("dims_exchange"), std::string::npos)
      << g.status();
}

}  // namespace
}  // namespace mim
