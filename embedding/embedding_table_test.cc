#include "embedding/embedding_table.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "embedding/initializer.h"
#include "embedding/optimizers.h"
#include "embedding/sharding.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

TableConfig IdConfig(OptimizerKind opt, uint32_t dim = 4) {
  TableConfig c;
  c.name = "ids";
  c.kind = TableKind::kId;
  c.dim = dim;
  c.optimizer.kind = opt;
  c.optimizer.learning_rate = 0.1f;
  c.initializer.kind = InitializerKind::kNormal;
  c.initializer.scale = 0.5f;
  c.initializer.seed = 42;
  return c;
}

TableConfig ContentConfig(uint32_t dim = 4) {
  TableConfig c;
  c.name = "content";
  c.kind = TableKind::kContent;
  c.dim = dim;
  return c;
}

std::unique_ptr<EmbeddingTable> MakeTable(const TableConfig& c) {
  auto t = EmbeddingTable::Create(c);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

TEST(InitializerTest, DeterministicPerKeyAndSeed) {
  InitializerConfig c;
  c.kind = InitializerKind::kNormal;
  c.scale = 1.0f;
  c.seed = 7;
  std::vector<float> a(65), b(65), other(65);
  InitializeRow(c, 123, 65, a.data());
  InitializeRow(c, 123, 65, b.data());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), 65 * sizeof(float)));
  InitializeRow(c, 124, 65, other.data());
  EXPECT_NE(a, other);
  c.seed = 8;
  InitializeRow(c, 123, 65, other.data());
  EXPECT_NE(a, other);
}

TEST(InitializerTest, MomentsMatchTheDistribution) {
  // 2000 keys x 64 dims = 128k samples: mean within 0.01, std within 1%.
  for (InitializerKind kind :
       {InitializerKind::kNormal, InitializerKind::kUniform}) {
    InitializerConfig c;
    c.kind = kind;
    c.scale = 2.0f;
    double sum = 0, sq = 0, lo = 1e9, hi = -1e9;
    size_t n = 0;
    std::vector<float> row(64);
    for (uint64_t key = 0; key < 2000; ++key) {
      InitializeRow(c, key, 64, row.data());
      for (float v : row) {
        sum += v;
        sq += double{v} * v;
        lo = std::min<double>(lo, v);
        hi = std::max<double>(hi, v);
        ++n;
      }
    }
    const double mean = sum / n;
    const double stddev = std::sqrt(sq / n - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.01 * 2.0);
    if (kind == InitializerKind::kNormal) {
      EXPECT_NEAR(stddev, 2.0, 0.02);
    } else {
      EXPECT_NEAR(stddev, 2.0 / std::sqrt(3.0), 0.02);
      EXPECT_GE(lo, -2.0);
      EXPECT_LT(hi, 2.0);
    }
  }
  InitializerConfig zeros;
  zeros.kind = InitializerKind::kZeros;
  std::vector<float> row(8, 1.0f);
  InitializeRow(zeros, 5, 8, row.data());
  EXPECT_EQ(row, std::vector<float>(8, 0.0f));
}

TEST(EmbeddingTableTest, PullReturnsDeterministicInitialRowsAcrossTables) {
  TableConfig c = IdConfig(OptimizerKind::kAdagrad);
  auto a = MakeTable(c);
  auto b = MakeTable(c);  // e.g. another shard or a restarted process
  const std::vector<uint64_t> keys = {1, 99, 1ull << 60, 1};
  std::vector<float> va(keys.size() * 4), vb(keys.size() * 4);
  std::vector<uint32_t> missing;
  ASSERT_TRUE(a->Pull(keys, va.data(), &missing).ok());
  EXPECT_TRUE(missing.empty());
  ASSERT_TRUE(b->Pull({keys[2], keys[0], keys[1]}, vb.data(), nullptr).ok());
  EXPECT_EQ(0, std::memcmp(va.data() + 8, vb.data(), 4 * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(va.data(), vb.data() + 4, 4 * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(va.data(), va.data() + 12, 4 * sizeof(float)));
  std::vector<float> expected(4);
  InitializeRow(c.initializer, 99, 4, expected.data());
  EXPECT_EQ(0, std::memcmp(va.data() + 4, expected.data(), 4 * sizeof(float)));
  // Nothing was stored.
  EXPECT_EQ(a->Stats().rows, 0u);
  RowMeta meta;
  std::vector<float> values, state;
  EXPECT_FALSE(a->ReadRow(99, &meta, &values, &state));
}

// The rule for unseen keys of an ID table: a Pull returns the initial value
// and stores nothing (so a reader cannot grow the table); the first Push
// creates the row from that same value, exactly as if the pull had.
TEST(EmbeddingTableTest, PullOfUnseenKeysStoresNothingAndPushStartsThere) {
  TableConfig c = IdConfig(OptimizerKind::kAdagrad, 8);
  auto table = MakeTable(c);
  ASSERT_TRUE(table->Push({5, 6}, std::vector<float>(16, 0.5f), 1, nullptr)
                  .ok());
  const TableStats before = table->Stats();
  ASSERT_EQ(before.rows, 2u);

  constexpr size_t kKeys = 100000;
  std::vector<uint64_t> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = 1000 + i * 7919;
  std::vector<float> pulled(kKeys * 8);
  std::vector<uint32_t> missing;
  ASSERT_TRUE(table->Pull(keys, pulled.data(), &missing).ok());
  EXPECT_TRUE(missing.empty());  // ID tables report nothing missing
  const TableStats after = table->Stats();
  EXPECT_EQ(after.rows, before.rows);
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.keys_pulled, before.keys_pulled + kKeys);
  std::vector<float> expected(8);
  for (size_t i = 0; i < kKeys; ++i) {
    InitializeRow(c.initializer, keys[i], 8, expected.data());
    ASSERT_EQ(0, std::memcmp(pulled.data() + i * 8, expected.data(),
                             8 * sizeof(float)))
        << "key " << keys[i];
  }

  // The first push starts from the pulled value and initial state.
  const std::vector<float> grad = {1, -1, 2, -2, 0.5f, 0, 3, -3};
  ASSERT_TRUE(table->Push({keys[7]}, grad, 2, nullptr).ok());
  std::vector<float> row(pulled.begin() + 7 * 8, pulled.begin() + 8 * 8);
  std::vector<float> state(8);
  InitOptimizerState(c.optimizer, 8, state.data());
  ApplyOptimizer(c.optimizer, 8, grad.data(), 1, row.data(), state.data());
  RowMeta meta;
  std::vector<float> got_values, got_state;
  ASSERT_TRUE(table->ReadRow(keys[7], &meta, &got_values, &got_state));
  EXPECT_EQ(got_values, row);
  EXPECT_EQ(got_state, state);
  EXPECT_EQ(meta.update_count, 1u);
  EXPECT_EQ(table->Stats().rows, 3u);
}

// Keys new after the first repeat get their own gradients, repeats the sum
// (Push copies the gradients only from the first repeat on).
TEST(EmbeddingTableTest, PushWithRepeatsEqualsPushOfTheSums) {
  TableConfig c = IdConfig(OptimizerKind::kAdagrad, 2);
  auto repeated = MakeTable(c);
  auto summed = MakeTable(c);
  ASSERT_TRUE(repeated
                  ->Push({5, 6, 5, 7, 6, 8},
                         {1, 2, 3, 4, 0.5f, -1, 7, 8, 0.25f, 2, 9, 10}, 1000,
                         nullptr)
                  .ok());
  ASSERT_TRUE(summed
                  ->Push({5, 6, 7, 8},
                         {1 + 0.5f, 2 + -1.0f, 3 + 0.25f, 4 + 2.0f, 7, 8, 9,
                          10},
                         1000, nullptr)
                  .ok());
  for (uint64_t k : {5, 6, 7, 8}) {
    RowMeta m1, m2;
    std::vector<float> v1, v2, s1, s2;
    ASSERT_TRUE(repeated->ReadRow(k, &m1, &v1, &s1)) << k;
    ASSERT_TRUE(summed->ReadRow(k, &m2, &v2, &s2)) << k;
    EXPECT_EQ(v1, v2) << k;
    EXPECT_EQ(s1, s2) << k;
    EXPECT_EQ(m1.update_count, 1u) << k;
  }
}

TEST(EmbeddingTableTest, PushSumsRepeatedKeysAndUsesRowStep) {
  TableConfig c = IdConfig(OptimizerKind::kAdam, 2);
  auto table = MakeTable(c);
  const std::vector<uint64_t> keys = {7, 8, 7};
  const std::vector<float> grads = {1, 2, 3, 4, 0.5f, -1};
  auto pushed = table->Push(keys, grads, 1000, nullptr);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(*pushed, 2u);

  // Row 7 by hand: initial row + one Adam step with the summed gradient.
  std::vector<float> row(2), state(4, 0.0f);
  InitializeRow(c.initializer, 7, 2, row.data());
  InitOptimizerState(c.optimizer, 2, state.data());
  const float sum[2] = {1.5f, 1.0f};
  AdamUpdate(c.optimizer, 2, sum, 1, row.data(), state.data());

  RowMeta meta;
  std::vector<float> got, got_state;
  ASSERT_TRUE(table->ReadRow(7, &meta, &got, &got_state));
  EXPECT_EQ(got, row);
  EXPECT_EQ(got_state, state);
  EXPECT_EQ(meta.update_count, 1u);
  EXPECT_EQ(meta.last_update_micros, 1000);

  // Second push: step 2 for row 7 (its own count), step 1 for a new row 9.
  ASSERT_TRUE(table->Push({7, 9}, {1, 1, 1, 1}, 2000, nullptr).ok());
  const float ones[2] = {1, 1};
  AdamUpdate(c.optimizer, 2, ones, 2, row.data(), state.data());
  ASSERT_TRUE(table->ReadRow(7, &meta, &got, &got_state));
  EXPECT_EQ(got, row);
  EXPECT_EQ(meta.update_count, 2u);
  EXPECT_EQ(meta.last_update_micros, 2000);
  ASSERT_TRUE(table->ReadRow(9, &meta, &got, &got_state));
  EXPECT_EQ(meta.update_count, 1u);

  // Pull sees the pushed values.
  std::vector<float> pulled(2);
  ASSERT_TRUE(table->Pull({7}, pulled.data(), nullptr).ok());
  EXPECT_EQ(pulled, row);
  EXPECT_EQ(table->Stats().keys_pushed, 5u);
}

// A version above 2^53 would pin a row forever (nothing newer could be
// written): refused, naming the bound, and nothing changes.
TEST(EmbeddingTableTest, ContentVersionIsBounded) {
  auto table = MakeTable(ContentConfig(2));
  ASSERT_TRUE(table->Upsert({1}, {1, 2}, kMaxContentVersion, 5, nullptr).ok());
  for (const uint64_t version :
       {kMaxContentVersion + 1, std::numeric_limits<uint64_t>::max()}) {
    auto refused = table->Upsert({1, 2}, {3, 4, 5, 6}, version, 6, nullptr);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(refused.status().message().find(
                  "is above the largest a content row may have, 2^53 = "
                  "9007199254740992"),
              std::string::npos)
        << refused.status();
  }
  EXPECT_EQ(table->Stats().rows, 1u);
  EXPECT_EQ(table->Stats().max_version, kMaxContentVersion);
}

TEST(EmbeddingTableTest, ContentTableUpsertVersionsAndMissing) {
  auto table = MakeTable(ContentConfig(2));
  auto r = table->Upsert({1, 2, 1}, {1, 1, 2, 2, 3, 3}, 5, 100, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows_written, 2u);  // key 1 keeps its last value
  EXPECT_EQ(r->rows_stale, 0u);

  // Older version is stale; equal or newer overwrites.
  r = table->Upsert({1, 2}, {9, 9, 8, 8}, 4, 200, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows_written, 0u);
  EXPECT_EQ(r->rows_stale, 2u);
  r = table->Upsert({2}, {7, 7}, 6, 300, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows_written, 1u);

  std::vector<float> values(8, -1.0f);
  std::vector<uint32_t> missing;
  ASSERT_TRUE(table->Pull({3, 1, 2, 4}, values.data(), &missing).ok());
  EXPECT_EQ(values, std::vector<float>({0, 0, 3, 3, 7, 7, 0, 0}));
  EXPECT_EQ(missing, std::vector<uint32_t>({0, 3}));
  EXPECT_EQ(table->Stats().rows, 2u);  // pulls do not invent content rows
  EXPECT_EQ(table->Stats().max_version, 6u);

  std::vector<float> got;
  std::vector<RowMeta> meta;
  missing.clear();
  table->GetRows({2, 5}, &got, &meta, &missing);
  EXPECT_EQ(meta[0].version, 6u);
  EXPECT_EQ(meta[0].update_count, 2u);
  EXPECT_EQ(meta[0].last_update_micros, 300);
  EXPECT_EQ(missing, std::vector<uint32_t>({1}));

  // Many keys over many stripes (looked up stripe by stripe): rows and
  // missing positions in request order.
  std::vector<uint64_t> many;
  std::vector<uint32_t> want_missing;
  for (uint64_t k = 0; k < 600; ++k) {
    many.push_back(k % 3 == 0 ? 1 + (k % 2) : 1000 + k);
    if (k % 3 != 0) want_missing.push_back(static_cast<uint32_t>(k));
  }
  missing.clear();
  table->GetRows(many, &got, &meta, &missing);
  EXPECT_EQ(missing, want_missing);
  for (size_t k = 0; k < many.size(); k += 3) {
    const float want = many[k] == 1 ? 3.0f : 7.0f;
    EXPECT_EQ(got[2 * k], want) << k;
    EXPECT_EQ(meta[k].version, many[k] == 1 ? 5u : 6u) << k;
  }
}

// Snapshot of every row of `keys`, bytes of values + state + meta.
std::vector<char> Snapshot(const EmbeddingTable& t,
                           const std::vector<uint64_t>& keys) {
  std::vector<char> out;
  for (uint64_t k : keys) {
    RowMeta m;
    std::vector<float> v, s;
    const bool present = t.ReadRow(k, &m, &v, &s);
    out.push_back(present ? 1 : 0);
    // Field by field: RowMeta has padding bytes.
    const char* p = reinterpret_cast<const char*>(&m.last_update_micros);
    out.insert(out.end(), p, p + sizeof(m.last_update_micros));
    p = reinterpret_cast<const char*>(&m.update_count);
    out.insert(out.end(), p, p + sizeof(m.update_count));
    p = reinterpret_cast<const char*>(&m.version);
    out.insert(out.end(), p, p + sizeof(m.version));
    p = reinterpret_cast<const char*>(v.data());
    out.insert(out.end(), p, p + v.size() * sizeof(float));
    p = reinterpret_cast<const char*>(s.data());
    out.insert(out.end(), p, p + s.size() * sizeof(float));
  }
  return out;
}

TEST(EmbeddingTableTest, RejectedRequestsChangeNothing) {
  auto id = MakeTable(IdConfig(OptimizerKind::kFtrl, 2));
  auto content = MakeTable(ContentConfig(2));
  ASSERT_TRUE(id->Push({1, 2}, {1, 1, 1, 1}, 1, nullptr).ok());
  ASSERT_TRUE(content->Upsert({1}, {1, 1}, 1, 1, nullptr).ok());
  const std::vector<uint64_t> keys = {1, 2, 3};
  const auto id_before = Snapshot(*id, keys);
  const auto content_before = Snapshot(*content, keys);

  // Wrong length.
  auto st = id->Push({1, 3}, {1, 1, 1}, 2, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  // NaN in the second key's second element: the message names both.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  st = id->Push({1, 3}, {1, 1, 1, nan}, 2, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("key 3"), std::string::npos) << st;
  EXPECT_NE(st.message().find("position 1"), std::string::npos) << st;
  st = content->Upsert({3}, {std::numeric_limits<float>::infinity(), 0}, 2, 2,
                       nullptr)
           .status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  // Finite gradients of a repeated key whose sum overflows.
  st = id->Push({3, 3}, {3e38f, 0, 3e38f, 0}, 2, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("key 3"), std::string::npos) << st;
  // Wrong kind.
  st = content->Push({1}, {1, 1}, 2, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = id->Upsert({1}, {1, 1}, 2, 2, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  // A failing persist aborts the write.
  auto fail = [](const ChangedRows&) {
    return absl::UnavailableError("disk gone");
  };
  st = id->Push({1, 3}, {1, 1, 1, 1}, 2, fail).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  st = content->Upsert({1, 3}, {5, 5, 5, 5}, 9, 2, fail).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);

  EXPECT_EQ(Snapshot(*id, keys), id_before);
  EXPECT_EQ(Snapshot(*content, keys), content_before);
  EXPECT_EQ(content->Stats().max_version, 1u);
}

TEST(EmbeddingTableTest, PersistSeesExactlyTheInstalledRows) {
  auto table = MakeTable(IdConfig(OptimizerKind::kSgd, 3));
  std::vector<uint64_t> seen_keys;
  std::vector<float> seen_values;
  auto persist = [&](const ChangedRows& rows) {
    for (size_t i = 0; i < rows.size(); ++i) {
      seen_keys.push_back(rows.key(i));
      seen_values.insert(seen_values.end(), rows.values(i),
                         rows.values(i) + 3);
      EXPECT_EQ(rows.meta(i).update_count, 1u);
    }
    return absl::OkStatus();
  };
  ASSERT_TRUE(table->Push({5, 6, 5}, std::vector<float>(9, 1.0f), 1, persist)
                  .ok());
  ASSERT_EQ(seen_keys.size(), 2u);
  for (size_t i = 0; i < seen_keys.size(); ++i) {
    std::vector<float> pulled(3);
    ASSERT_TRUE(table->Pull({seen_keys[i]}, pulled.data(), nullptr).ok());
    EXPECT_EQ(0, std::memcmp(pulled.data(), seen_values.data() + 3 * i,
                             3 * sizeof(float)));
  }
}

TEST(EmbeddingTableTest, LoadRowRoundTripsAndChecksLengths) {
  auto table = MakeTable(IdConfig(OptimizerKind::kAdam, 2));
  RowMeta m{123, 4, 0};
  ASSERT_TRUE(table->LoadRow(77, m, {1, 2}, {3, 4, 5, 6}).ok());
  RowMeta got;
  std::vector<float> v, s;
  ASSERT_TRUE(table->ReadRow(77, &got, &v, &s));
  EXPECT_EQ(got.last_update_micros, 123);
  EXPECT_EQ(got.update_count, 4u);
  EXPECT_EQ(v, std::vector<float>({1, 2}));
  EXPECT_EQ(s, std::vector<float>({3, 4, 5, 6}));
  EXPECT_EQ(table->LoadRow(78, m, {1, 2}, {3}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EmbeddingTableTest, ConcurrentPushesAndPullsLoseNoUpdates) {
  // SGD with zero init and lr 0.1: after N pushes of gradient -1 a row is
  // exactly 0.1*N as long as every update was applied (all small integers
  // times 0.1 accumulate exactly enough for the tolerance below).
  TableConfig c = IdConfig(OptimizerKind::kSgd, 8);
  c.initializer.kind = InitializerKind::kZeros;
  auto table = MakeTable(c);
  constexpr int kThreads = 4, kRounds = 200;
  std::vector<uint64_t> keys(256);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i * 977;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> grads(keys.size() * 8, -1.0f);
      std::vector<float> out(keys.size() * 8);
      for (int r = 0; r < kRounds; ++r) {
        if ((r + t) % 2 == 0) {
          EXPECT_TRUE(table->Push(keys, grads, r, nullptr).ok());
        } else {
          EXPECT_TRUE(table->Pull(keys, out.data(), nullptr).ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const int pushes = kThreads * kRounds / 2;
  std::vector<float> out(keys.size() * 8);
  ASSERT_TRUE(table->Pull(keys, out.data(), nullptr).ok());
  for (float v : out) EXPECT_NEAR(v, 0.1f * pushes, 1e-3f);
  RowMeta m;
  std::vector<float> v, s;
  ASSERT_TRUE(table->ReadRow(keys[3], &m, &v, &s));
  EXPECT_EQ(m.update_count, static_cast<uint32_t>(pushes));
}

// Small pulls look keys of several stripes up together, holding those
// stripes' locks at once (Pull's groups): a pull racing pushes of the same
// rows must still see each row whole. Every push moves all of a row's
// values by the same step, so a row read half before and half after a push
// would hold two different values.
TEST(EmbeddingTableTest, SmallPullsRacingPushesSeeWholeRows) {
  constexpr int kDim = 512;  // long row copies: a wide window for a tear
  TableConfig c = IdConfig(OptimizerKind::kSgd, kDim);
  c.initializer.kind = InitializerKind::kZeros;
  auto table = MakeTable(c);
  std::vector<uint64_t> keys(300);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i * 7919 + 1;
  std::atomic<bool> stop{false};
  std::vector<std::thread> pushers;
  for (int t = 0; t < 2; ++t) {
    pushers.emplace_back([&] {
      const std::vector<float> grads(keys.size() * kDim, -1.0f);
      for (int r = 0; !stop.load() && r < 2000; ++r) {
        EXPECT_TRUE(table->Push(keys, grads, r, nullptr).ok());
      }
    });
  }
  int torn = 0, pulls = 0;
  std::vector<float> out(keys.size() * kDim);
  for (int r = 0; r < 1500; ++r) {
    // 1 to 300 keys: one stripe, a few, many groups.
    const size_t n = 1 + (r * 37) % keys.size();
    const absl::Span<const uint64_t> some(keys.data(), n);
    ASSERT_TRUE(table->Pull(some, out.data(), nullptr).ok());
    ++pulls;
    for (size_t k = 0; k < n; ++k) {
      for (int d = 1; d < kDim; ++d) {
        if (out[k * kDim + d] != out[k * kDim]) ++torn;
      }
    }
  }
  stop = true;
  for (auto& th : pushers) th.join();
  EXPECT_EQ(torn, 0) << "of " << pulls << " pulls";
}

// The key whose MixKey is `mixed` (MixKey is a bijection: xorshift by 33
// is its own inverse on 64 bits, and odd multipliers have inverses mod
// 2^64).
uint64_t UnmixKey(uint64_t mixed) {
  const auto inverse = [](uint64_t c) {
    uint64_t inv = c;  // Newton's iteration doubles the correct bits
    for (int i = 0; i < 6; ++i) inv *= 2 - c * inv;
    return inv;
  };
  uint64_t k = mixed;
  k ^= k >> 33;
  k *= inverse(0xc4ceb9fe1a85ec53ULL);
  k ^= k >> 33;
  k *= inverse(0xff51afd7ed558ccdULL);
  k ^= k >> 33;
  return k;
}

TEST(EmbeddingTableTest, KeysWithTheSameIndexHashAreToldApart) {
  // Keys whose mixed hashes differ only in their 25 low bits share the
  // stripe and the index's 32-bit hash: the pull pipeline's hash-only probe
  // finds the first of them, and every other must still get its own row.
  constexpr uint64_t kBase = 0x5a5a5a5a5a000000ULL;
  std::vector<uint64_t> keys;
  for (uint64_t low = 0; low < 24; ++low) keys.push_back(UnmixKey(kBase + low));
  for (const uint64_t k : keys) ASSERT_EQ(MixKey(k) >> 25, kBase >> 25);
  auto table = MakeTable(ContentConfig(2));
  std::vector<float> values;
  for (size_t i = 0; i < keys.size(); ++i) {
    values.push_back(static_cast<float>(i));
    values.push_back(static_cast<float>(100 + i));
  }
  ASSERT_TRUE(table->Upsert(keys, values, 1, 1, nullptr).ok());

  // Backwards, with one more key of the same hash that has no row, and an
  // ordinary key between them.
  const uint64_t absent = UnmixKey(kBase + 24);
  std::vector<uint64_t> pull = {absent};
  for (size_t i = keys.size(); i-- > 0;) pull.push_back(keys[i]);
  pull.push_back(77);
  std::vector<float> got(pull.size() * 2, -1.0f);
  std::vector<uint32_t> missing;
  ASSERT_TRUE(table->Pull(pull, got.data(), &missing).ok());
  EXPECT_EQ(missing, std::vector<uint32_t>({0, static_cast<uint32_t>(
                                                  pull.size() - 1)}));
  EXPECT_EQ(got[0], 0.0f);
  EXPECT_EQ(got[1], 0.0f);
  for (size_t p = 1; p + 1 < pull.size(); ++p) {
    const size_t i = keys.size() - p;
    EXPECT_EQ(got[2 * p], static_cast<float>(i)) << "key " << pull[p];
    EXPECT_EQ(got[2 * p + 1], static_cast<float>(100 + i)) << "key " << pull[p];
  }
  EXPECT_EQ(table->Stats().rows, keys.size());
}

TEST(EmbeddingTableTest, PullsDuringGrowthSeeEveryFinishedWriteExactly) {
  // One writer upserts fresh keys batch after batch (every stripe's index
  // grows many times); readers pull every key written so far, plus the
  // batch in progress, at the same time. A finished batch must read back
  // exactly; a batch in progress reads as missing or exact, never torn.
  constexpr uint32_t kDim = 4;
  constexpr uint64_t kBatches = 100, kBatch = 500;
  auto table = MakeTable(ContentConfig(kDim));
  const auto value = [](uint64_t key, uint32_t d) {
    return static_cast<float>((key % 100003) * 4 + d);
  };
  const auto key_at = [](uint64_t i) { return i * 2654435761ULL + 17; };
  std::atomic<uint64_t> done{0};  // keys [0, done) are written
  std::thread writer([&] {
    std::vector<uint64_t> keys(kBatch);
    std::vector<float> values(kBatch * kDim);
    for (uint64_t b = 0; b < kBatches; ++b) {
      for (uint64_t i = 0; i < kBatch; ++i) {
        keys[i] = key_at(b * kBatch + i);
        for (uint32_t d = 0; d < kDim; ++d) {
          values[i * kDim + d] = value(keys[i], d);
        }
      }
      ASSERT_TRUE(table->Upsert(keys, values, 1, 1, nullptr).ok());
      done.store((b + 1) * kBatch, std::memory_order_release);
    }
  });
  std::vector<uint64_t> wrong(2, 0), checked(2, 0);
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      uint64_t seen = 0;
      while (seen < kBatches * kBatch) {
        seen = done.load(std::memory_order_acquire);
        const uint64_t upto = std::min(seen + kBatch, kBatches * kBatch);
        std::vector<uint64_t> keys;
        for (uint64_t i = 0; i < upto; ++i) keys.push_back(key_at(i));
        std::vector<float> got(keys.size() * kDim);
        std::vector<uint32_t> missing;
        if (!table->Pull(keys, got.data(), &missing).ok()) ++wrong[t];
        size_t m = 0;
        for (uint64_t i = 0; i < keys.size(); ++i) {
          const bool is_missing = m < missing.size() && missing[m] == i;
          if (is_missing) ++m;
          if (is_missing && i < seen) ++wrong[t];  // a finished write lost
          for (uint32_t d = 0; d < kDim; ++d) {
            const float want = is_missing ? 0.0f : value(keys[i], d);
            if (got[i * kDim + d] != want) ++wrong[t];
          }
        }
        checked[t] += keys.size();
      }
    });
  }
  writer.join();
  for (std::thread& th : readers) th.join();
  EXPECT_EQ(wrong, std::vector<uint64_t>(2, 0));
  EXPECT_GE(checked[0], kBatches * kBatch);
  EXPECT_EQ(table->Stats().rows, kBatches * kBatch);
}

// Memory goal: at most 1.25x the raw float bytes (64 floats = 256 bytes) for
// a 64-d SGD or content table. See the layout comment in embedding_table.cc.
TEST(EmbeddingTableTest, BytesPerRowWithinBudgetFor64dTables) {
  constexpr size_t kRows = 200000;
  constexpr size_t kBatch = 1000;
  std::vector<uint64_t> keys(kBatch);
  std::vector<float> values(kBatch * 64, 0.25f);

  TableConfig sgd = IdConfig(OptimizerKind::kSgd, 64);
  sgd.initializer.kind = InitializerKind::kZeros;
  auto id = MakeTable(sgd);
  auto content = MakeTable(ContentConfig(64));
  for (size_t b = 0; b < kRows / kBatch; ++b) {
    for (size_t i = 0; i < kBatch; ++i) keys[i] = (b * kBatch + i) * 7919 + 3;
    ASSERT_TRUE(id->Push(keys, values, 1, nullptr).ok());
    ASSERT_TRUE(content->Upsert(keys, values, 1, 1, nullptr).ok());
  }
  for (const EmbeddingTable* t : {id.get(), content.get()}) {
    const TableStats s = t->Stats();
    EXPECT_EQ(s.rows, kRows);
    EXPECT_LE(s.bytes_per_row, 1.25 * 256) << t->config().name;
    EXPECT_GE(s.bytes_per_row, 256.0) << t->config().name;
    std::cout << t->config().name << " bytes_per_row=" << s.bytes_per_row
              << "\n";
  }
}

}  // namespace
}  // namespace mim::embedding
