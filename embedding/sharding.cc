#include "embedding/sharding.h"

namespace mim::embedding {

uint32_t ShardOf(uint64_t key, uint32_t num_shards) {
  if (num_shards <= 1) return 0;
  // Jump consistent hash over the mixed key.
  uint64_t k = MixKey(key);
  int64_t b = -1, j = 0;
  while (j < static_cast<int64_t>(num_shards)) {
    b = j;
    k = k * 2862933555777941757ULL + 1;
    j = static_cast<int64_t>((b + 1) * (static_cast<double>(1LL << 31) /
                                        static_cast<double>((k >> 33) + 1)));
  }
  return static_cast<uint32_t>(b);
}

}  // namespace mim::embedding
