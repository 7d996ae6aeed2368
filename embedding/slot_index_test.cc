#include "embedding/slot_index.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

// Keys live outside the index, as records do in a table: slot i holds
// keys[i].
struct Keys {
  std::vector<uint64_t> keys;
  uint64_t operator()(uint32_t slot) const { return keys[slot]; }
};

// A well-mixed 32-bit hash (splitmix64's finaliser, top bits).
uint32_t Hash(uint64_t key) {
  key += 0x9e3779b97f4a7c15ULL;
  key = (key ^ (key >> 30)) * 0xbf58476d1ce4e5b9ULL;
  key = (key ^ (key >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<uint32_t>((key ^ (key >> 31)) >> 32);
}

// Inserts `key` with `hash` as the next slot, as a table's stripe does.
void Add(SlotIndex* index, Keys* store, uint64_t key, uint32_t hash) {
  ASSERT_EQ(index->Find(hash, key, *store), SlotIndex::kNone) << key;
  const uint32_t slot = static_cast<uint32_t>(store->keys.size());
  store->keys.push_back(key);
  index->Insert(hash, slot);
}

TEST(SlotIndexTest, EmptyIndexFindsNothingAndHoldsNoMemory) {
  SlotIndex index;
  Keys store;
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.capacity(), 0u);
  EXPECT_EQ(index.bytes(), 0u);
  EXPECT_EQ(index.Find(Hash(1), 1, store), SlotIndex::kNone);
  EXPECT_EQ(index.FindHash(Hash(1)), SlotIndex::kNone);
  index.Prefetch(Hash(1));  // a no-op on an empty index
}

TEST(SlotIndexTest, FindsEveryKeyThroughEveryGrowthAndStaysAtMostSevenEighthsFull) {
  SlotIndex index;
  Keys store;
  constexpr uint64_t kKeys = 100000;
  size_t last_capacity = 0;
  for (uint64_t k = 0; k < kKeys; ++k) {
    const uint64_t key = k * 7919 + 11;
    Add(&index, &store, key, Hash(key));
    ASSERT_LE(index.size() * 8, index.capacity() * 7);
    if (index.capacity() != last_capacity) {
      // Grown (doubled, or the first group): every key so far is where it
      // was put, with its own slot.
      ASSERT_EQ(index.capacity(),
                last_capacity == 0 ? SlotIndex::kGroupEntries
                                   : 2 * last_capacity);
      last_capacity = index.capacity();
      for (uint32_t slot = 0; slot < store.keys.size(); ++slot) {
        const uint64_t key_at = store.keys[slot];
        ASSERT_EQ(index.Find(Hash(key_at), key_at, store), slot) << key_at;
      }
    }
  }
  EXPECT_EQ(index.size(), kKeys);
  // The smallest power-of-two number of groups with kKeys <= 7/8 of them.
  EXPECT_EQ(index.capacity(), 131072u);
  EXPECT_EQ(index.bytes(), 131072u * 8);
  for (uint32_t slot = 0; slot < kKeys; ++slot) {
    const uint64_t key = store.keys[slot];
    EXPECT_EQ(index.Find(Hash(key), key, store), slot);
  }
  // Keys never inserted (k * 7919 + 12 is never k' * 7919 + 11).
  for (uint64_t k = 0; k < kKeys; ++k) {
    const uint64_t key = k * 7919 + 12;
    EXPECT_EQ(index.Find(Hash(key), key, store), SlotIndex::kNone) << key;
  }
}

TEST(SlotIndexTest, KeysSharingAHashAreToldApartByTheirKeys) {
  SlotIndex index;
  Keys store;
  constexpr uint32_t kSharedHash = 0x12345678;
  // 50 keys with one hash fill several groups from the same start; others
  // with their own hashes go in between.
  for (uint64_t k = 0; k < 50; ++k) {
    Add(&index, &store, 1000 + k, kSharedHash);
    Add(&index, &store, 5000 + k, Hash(5000 + k));
  }
  for (uint32_t slot = 0; slot < store.keys.size(); ++slot) {
    const uint64_t key = store.keys[slot];
    const uint32_t hash = key < 5000 ? kSharedHash : Hash(key);
    EXPECT_EQ(index.Find(hash, key, store), slot) << key;
  }
  // FindHash stops at the first entry with the hash: the first key
  // inserted with it (slot 0); the caller confirms the key.
  EXPECT_EQ(index.FindHash(kSharedHash), 0);
  // A key with the shared hash that was never inserted.
  EXPECT_EQ(index.Find(kSharedHash, 999, store), SlotIndex::kNone);
  // A hash no key has.
  EXPECT_EQ(index.FindHash(kSharedHash + 1), SlotIndex::kNone);
}

TEST(SlotIndexTest, ProbesWrapFromTheLastGroupToTheFirst) {
  SlotIndex index;
  Keys store;
  // Hashes at the very top all start in the last group; 40 of them fill it
  // and wrap into group 0, where keys whose hash starts there follow.
  for (uint64_t k = 0; k < 40; ++k) {
    Add(&index, &store, k, 0xFFFFFFFFu - static_cast<uint32_t>(k % 3));
  }
  for (uint64_t k = 0; k < 40; ++k) Add(&index, &store, 100 + k, 0);
  EXPECT_EQ(index.size(), 80u);
  for (uint32_t slot = 0; slot < store.keys.size(); ++slot) {
    const uint64_t key = store.keys[slot];
    const uint32_t hash =
        key < 100 ? 0xFFFFFFFFu - static_cast<uint32_t>(key % 3) : 0u;
    EXPECT_EQ(index.Find(hash, key, store), slot) << key;
  }
  EXPECT_EQ(index.Find(0xFFFFFFFFu, 12345, store), SlotIndex::kNone);
  EXPECT_EQ(index.Find(0, 12345, store), SlotIndex::kNone);
}

TEST(SlotIndexTest, ConcurrentReadersOfAFinishedIndexAllSeeEveryKey) {
  // "const methods are safe": four threads look up every key at once.
  SlotIndex index;
  Keys store;
  constexpr uint64_t kKeys = 20000;
  for (uint64_t k = 0; k < kKeys; ++k) Add(&index, &store, k * 3, Hash(k * 3));
  std::vector<int> wrong(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t slot = 0; slot < kKeys; ++slot) {
        const uint64_t key = store.keys[(slot + t * 5000) % kKeys];
        const int64_t got = index.Find(Hash(key), key, store);
        if (got < 0 || store.keys[static_cast<uint32_t>(got)] != key) {
          ++wrong[t];
        }
        if (index.Find(Hash(key + 1), key + 1, store) != SlotIndex::kNone) {
          ++wrong[t];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace mim::embedding
