// SlotIndex: the key -> slot index of one stripe of an EmbeddingTable.
//
// An open-addressing hash index of 32-bit slot numbers whose keys live
// elsewhere (in the records the slots name). Each entry keeps 32 bits of
// the key's hash beside its slot, and entries sit in 64-byte groups of 8,
// one cache line each: a lookup reads one group (rarely the next) and
// touches a record only for an entry whose hash matches, so a probe costs
// one cache miss, and that miss can be prefetched from the hash alone.
// Growing never reads a record either: an entry's position is a function
// of its stored hash.
//
// Rows are never removed from a table, so the index has no erase; an
// empty entry therefore ends every probe sequence.
//
// Thread-safety: const methods are safe; others need external
// synchronization (the stripe's lock).
#ifndef MIM_EMBEDDING_SLOT_INDEX_H_
#define MIM_EMBEDDING_SLOT_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mim::embedding {

class SlotIndex {
 public:
  // What Find and FindHash return when nothing matches.
  static constexpr int64_t kNone = -1;
  // Entries per group (one 64-byte cache line).
  static constexpr size_t kGroupEntries = 8;

  SlotIndex() = default;
  SlotIndex(SlotIndex&&) = default;
  SlotIndex& operator=(SlotIndex&&) = default;

  size_t size() const { return size_; }
  // Entries allocated (a multiple of kGroupEntries, or 0).
  size_t capacity() const { return groups_ << 3; }
  size_t bytes() const { return groups_ * sizeof(Group); }

  // Starts loading the group where `hash`'s probe begins.
  void Prefetch(uint32_t hash) const {
    if (groups_ != 0) __builtin_prefetch(&table_[GroupOf(hash)]);
  }

  // The slot of the first entry on `hash`'s probe sequence whose stored
  // hash equals `hash`, or kNone. Reads no record: the caller confirms the
  // key (a different key with the same 32-bit hash is possible) and, when
  // it differs, calls Find.
  int64_t FindHash(uint32_t hash) const {
    return Probe(hash, [](uint32_t) { return true; });
  }

  // The slot whose key is `key`, or kNone. `hash` is the 32-bit hash the
  // key was inserted with; `key_of(slot)` returns the key stored in a slot
  // (read only for entries whose hash matches).
  template <typename KeyOf>
  int64_t Find(uint32_t hash, uint64_t key, const KeyOf& key_of) const {
    return Probe(hash, [&](uint32_t slot) { return key_of(slot) == key; });
  }

  // Adds `slot` under `hash`. The caller guarantees that the key is not in
  // the index yet (Find returned kNone) and that slot < 2^32 - 1. Grows the
  // index (doubling) beyond 7/8 full.
  void Insert(uint32_t hash, uint32_t slot) {
    if ((size_ + 1) * 8 > capacity() * 7) Grow();
    Place(hash, slot + 1);
    ++size_;
  }

 private:
  struct Entry {
    uint32_t hash;
    uint32_t slot_plus_one;  // 0: empty
  };
  struct alignas(64) Group {
    Entry entries[kGroupEntries];
  };
  static_assert(sizeof(Group) == 64, "a group is one cache line");

  // The top bits of the hash pick the group, so that growing can place
  // every entry from its stored hash alone.
  size_t GroupOf(uint32_t hash) const {
    return static_cast<size_t>(uint64_t{hash} >> shift_);
  }

  // Walks `hash`'s probe sequence up to the first empty entry: the first
  // slot whose stored hash equals `hash` and that `match(slot)` accepts, or
  // kNone.
  template <typename Match>
  int64_t Probe(uint32_t hash, const Match& match) const {
    if (groups_ == 0) return kNone;
    for (size_t g = GroupOf(hash);; g = (g + 1) & mask_) {
      const Group& group = table_[g];
      for (size_t e = 0; e < kGroupEntries; ++e) {
        const Entry& entry = group.entries[e];
        if (entry.slot_plus_one == 0) return kNone;
        if (entry.hash == hash && match(entry.slot_plus_one - 1)) {
          return int64_t{entry.slot_plus_one} - 1;
        }
      }
    }
  }

  void Place(uint32_t hash, uint32_t slot_plus_one) {
    for (size_t g = GroupOf(hash);; g = (g + 1) & mask_) {
      Group& group = table_[g];
      for (size_t e = 0; e < kGroupEntries; ++e) {
        Entry& entry = group.entries[e];
        if (entry.slot_plus_one == 0) {
          entry.hash = hash;
          entry.slot_plus_one = slot_plus_one;
          return;
        }
      }
    }
  }

  void Grow() {
    const size_t old_groups = groups_;
    std::unique_ptr<Group[]> old = std::move(table_);
    groups_ = old_groups == 0 ? 1 : old_groups * 2;
    mask_ = groups_ - 1;
    int bits = 0;
    while ((size_t{1} << bits) < groups_) ++bits;
    shift_ = 32 - bits;
    table_.reset(new Group[groups_]());  // zeroed: every entry empty
    for (size_t g = 0; g < old_groups; ++g) {
      for (const Entry& entry : old[g].entries) {
        if (entry.slot_plus_one != 0) Place(entry.hash, entry.slot_plus_one);
      }
    }
  }

  std::unique_ptr<Group[]> table_;
  size_t groups_ = 0;  // a power of two, or 0
  size_t mask_ = 0;
  int shift_ = 32;
  size_t size_ = 0;
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_SLOT_INDEX_H_
