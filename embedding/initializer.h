// Deterministic per-key row initialisation for ID tables.
//
// A row's initial values depend only on (initializer config, key): the RNG
// is SplitMix64 seeded with a mix of the table seed and the key. Every shard,
// every restart and every replica therefore computes the same row, which is
// why a Pull of a key that has no row returns this value without storing it
// (the row is created by the key's first Push, from the same value).
//
// Thread-safety: reentrant (pure function).
#ifndef MIM_EMBEDDING_INITIALIZER_H_
#define MIM_EMBEDDING_INITIALIZER_H_

#include <cstdint>

#include "embedding/table_config.h"

namespace mim::embedding {

// Writes `dim` floats for `key` into `out`: zeros, uniform in
// [-scale, scale), or normal(0, scale^2) by Box-Muller.
void InitializeRow(const InitializerConfig& config, uint64_t key, uint32_t dim,
                   float* out);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_INITIALIZER_H_
