#include "embedding/push_log.h"

#include <vector>

#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

using Seen = ClientWindow::Seen;

TEST(ClientWindowTest, RemembersEverySequenceInTheWindowOutOfOrder) {
  ClientWindow w;
  EXPECT_EQ(w.Check(1), Seen::kNew);
  // Calls arrive out of order: 3, 1, 5 applied; 2 and 4 not yet.
  for (uint64_t s : {3, 1, 5}) w.Mark(s);
  EXPECT_EQ(w.highest(), 5u);
  for (uint64_t s : {1, 3, 5}) EXPECT_EQ(w.Check(s), Seen::kApplied) << s;
  for (uint64_t s : {2, 4, 6, 100}) EXPECT_EQ(w.Check(s), Seen::kNew) << s;
  w.Mark(4);
  EXPECT_EQ(w.Check(4), Seen::kApplied);

  // A jump keeps what is still inside the window, across word borders.
  w.Mark(5 + 130);
  for (uint64_t s : {1, 3, 4, 5, 135}) EXPECT_EQ(w.Check(s), Seen::kApplied);
  EXPECT_EQ(w.Check(2), Seen::kNew);
  EXPECT_EQ(w.Check(134), Seen::kNew);
  w.Mark(1 + ClientWindow::kWindow + 3);  // 1..4 fall out of the window
  EXPECT_EQ(w.Check(1), Seen::kTooOld);
  EXPECT_EQ(w.Check(4), Seen::kTooOld);
  EXPECT_EQ(w.Check(5), Seen::kApplied);
  EXPECT_EQ(w.Check(135), Seen::kApplied);
  w.Mark(100000);  // beyond the window: only itself remains
  EXPECT_EQ(w.Check(100000), Seen::kApplied);
  EXPECT_EQ(w.Check(99999), Seen::kNew);
  EXPECT_EQ(w.Check(135), Seen::kTooOld);
}

// Against a plain set: every sequence in the window answers as the set
// says, after random out-of-order marks.
TEST(ClientWindowTest, MatchesASetOfAppliedSequences) {
  ClientWindow w;
  std::vector<bool> applied(5000, false);
  uint64_t x = 12345;
  uint64_t highest = 0;
  for (int i = 0; i < 3000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const uint64_t s = 1 + (x >> 33) % 4999;
    if (w.Check(s) != Seen::kNew) continue;
    w.Mark(s);
    applied[s] = true;
    highest = std::max(highest, s);
  }
  for (uint64_t s = 1; s < applied.size(); ++s) {
    const Seen want = s + ClientWindow::kWindow <= highest
                          ? Seen::kTooOld
                          : applied[s] ? Seen::kApplied : Seen::kNew;
    ASSERT_EQ(w.Check(s), want) << s;
  }
}

TEST(ClientWindowTest, EncodeDecodeRoundTripAndCorruption) {
  ClientWindow w;
  for (uint64_t s : {7, 9, 70, 200}) w.Mark(s);
  const std::string bytes = w.Encode(123456);
  int64_t last_used = 0;
  auto back = ClientWindow::Decode(42, bytes, &last_used);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == w);
  EXPECT_EQ(last_used, 123456);
  std::string bad = bytes;
  bad[20] ^= 1;
  EXPECT_EQ(ClientWindow::Decode(42, bad, &last_used).status().code(),
            absl::StatusCode::kDataLoss);
  auto truncated = ClientWindow::Decode(42, bytes.substr(1), &last_used);
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(truncated.status().message().find("client 42"), std::string::npos);
}

TEST(PushLogTest, KeysRoundTrip) {
  uint64_t id = 0;
  EXPECT_TRUE(ParsePushLogKey(PushLogKey(0x0102030405060708ULL), &id));
  EXPECT_EQ(id, 0x0102030405060708ULL);
  EXPECT_FALSE(ParsePushLogKey("r/x", &id));
}

TEST(PushLogTest, EvictsTheLeastRecentlyUsedClient) {
  PushLog log(2);
  std::vector<PushLog::Evicted> evicted;
  (void)log.Get(1, 100, &evicted);
  (void)log.Get(2, 50, &evicted);
  EXPECT_TRUE(evicted.empty());
  {
    PushLog::Pinned one = *log.Get(1, 0, &evicted);
    absl::MutexLock lock(&one->mu);
    one->last_used_micros = 300;  // client 1 pushed again
  }
  (void)log.Get(3, 400, &evicted);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].client_id, 2u);
  EXPECT_EQ(log.size(), 2u);
}

// A client between Get and the end of its push is never evicted, even
// before its push has taken the entry's mutex (the moment the eviction
// scan could not see through the mutex alone); once the handle is gone it
// is evictable again.
TEST(PushLogTest, APinnedClientIsNotEvicted) {
  PushLog log(2);
  std::vector<PushLog::Evicted> evicted;
  (void)log.Get(1, 100, &evicted);
  (void)log.Get(2, 200, &evicted);
  {
    PushLog::Pinned one = *log.Get(1, 0, &evicted);  // oldest, but pinned
    (void)log.Get(3, 300, &evicted);
    ASSERT_EQ(evicted.size(), 1u);
    EXPECT_EQ(evicted[0].client_id, 2u);
    // Every other client pinned: the log goes over by one rather than
    // evict a client in a push.
    evicted.clear();
    PushLog::Pinned three = *log.Get(3, 0, &evicted);
    (void)log.Get(4, 400, &evicted);
    EXPECT_TRUE(evicted.empty());
    EXPECT_EQ(log.size(), 3u);
  }
  (void)log.Get(5, 500, &evicted);
  ASSERT_EQ(evicted.size(), 2u);  // 1 (100), then 3 (300)
  EXPECT_EQ(evicted[0].client_id, 1u);
  EXPECT_EQ(evicted[1].client_id, 3u);
  EXPECT_EQ(log.size(), 2u);
}

// Client 1, having applied sequence 7, evicted from a log of one client
// by client 2's Get; returns what that Get evicted.
std::vector<PushLog::Evicted> EvictClientOneBehindTwo(PushLog* log) {
  std::vector<PushLog::Evicted> evicted;
  {
    PushLog::Pinned one = *log->Get(1, 100, &evicted);
    absl::MutexLock lock(&one->mu);
    one->window.Mark(7);
  }
  EXPECT_TRUE(log->Get(2, 200, &evicted).ok());
  EXPECT_EQ(evicted.size(), 1u);
  return evicted;
}

// Clients evicted by a push that then wrote nothing are put back with
// their windows.
TEST(PushLogTest, ReinstatePutsEvictedClientsBack) {
  PushLog log(1);
  std::vector<PushLog::Evicted> evicted = EvictClientOneBehindTwo(&log);
  ASSERT_EQ(evicted.size(), 1u);
  log.Reinstate(std::move(evicted));
  EXPECT_EQ(log.size(), 2u);
  evicted.clear();
  PushLog::Pinned one = *log.Get(1, 0, &evicted);
  absl::MutexLock lock(&one->mu);
  EXPECT_EQ(one->window.Check(7), ClientWindow::Seen::kApplied);
}

// A client evicted by another's push is refused (ABORTED, nothing
// changed) until that push's batch, which deletes its record, is written:
// a record it wrote meanwhile could land before the deletion and be
// deleted by it. Afterwards it starts afresh.
TEST(PushLogTest, AnEvictedClientWaitsForItsDeletionToBeWritten) {
  PushLog log(1);
  const std::vector<PushLog::Evicted> evicted = EvictClientOneBehindTwo(&log);
  ASSERT_EQ(evicted.size(), 1u);
  std::vector<PushLog::Evicted> more;
  const absl::Status refused = log.Get(1, 300, &more).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kAborted) << refused;
  EXPECT_TRUE(more.empty());
  log.EvictionsWritten(evicted);
  absl::StatusOr<PushLog::Pinned> again = log.Get(1, 300, &more);
  ASSERT_TRUE(again.ok()) << again.status();
  absl::MutexLock lock(&(*again)->mu);
  EXPECT_EQ((*again)->window.Check(7), ClientWindow::Seen::kNew);
}

}  // namespace
}  // namespace mim::embedding
