// 64-bit integers as 8 big-endian bytes: the byte order in which keys of a
// sorted store (RocksDB) compare as the integers do, so that a table's rows
// are contiguous and in key order. The supported hosts are little-endian.
#ifndef MIM_BASE_BIG_ENDIAN_H_
#define MIM_BASE_BIG_ENDIAN_H_

#include <cstdint>
#include <cstring>

namespace mim::base {

// Writes `v` to out[0..8), most significant byte first.
inline void StoreBigEndian64(uint64_t v, char* out) {
  v = __builtin_bswap64(v);
  std::memcpy(out, &v, sizeof(v));
}

// Reads 8 bytes at `p`, most significant first.
inline uint64_t LoadBigEndian64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return __builtin_bswap64(v);
}

}  // namespace mim::base

#endif  // MIM_BASE_BIG_ENDIAN_H_
