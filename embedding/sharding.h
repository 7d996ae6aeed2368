// Sharding: which parameter-server shard owns a key.
//
// A pure function of (key, num_shards), shared by the shards (to refuse keys
// that are not theirs) and every client (to route). Keys are mixed with a
// 64-bit finaliser first, so sequential or strided ID keys spread evenly, then
// placed with jump consistent hashing (Lamping & Veach, 2014): growing from N
// to N+1 shards moves only ~1/(N+1) of the keys, which leaves room for
// resharding later.
#ifndef MIM_EMBEDDING_SHARDING_H_
#define MIM_EMBEDDING_SHARDING_H_

#include <cstdint>

namespace mim::embedding {

// SplitMix64 / Murmur3-style finaliser: a bijection on 64-bit values.
inline uint64_t MixKey(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  key *= 0xc4ceb9fe1a85ec53ULL;
  key ^= key >> 33;
  return key;
}

// Returns the shard in [0, num_shards) that owns `key`. num_shards must be
// >= 1 (callers validate flags; 0 is treated as 1).
uint32_t ShardOf(uint64_t key, uint32_t num_shards);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_SHARDING_H_
