// FNV-1a, 64-bit: the checksum and fingerprint of model files, encoders and
// worker inputs. Not for security; stable across runs and hosts.
#ifndef MIM_BASE_FNV1A_H_
#define MIM_BASE_FNV1A_H_

#include <cstddef>
#include <cstdint>

namespace mim::base {

inline constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ULL;
inline constexpr uint64_t kFnv1a64Prime = 0x100000001b3ULL;

// FNV-1a of `n` bytes at `data`, continuing from `h` (the basis to start),
// so that a value can be hashed in pieces.
inline uint64_t Fnv1a64(const void* data, size_t n,
                        uint64_t h = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1a64Prime;
  }
  return h;
}

}  // namespace mim::base

#endif  // MIM_BASE_FNV1A_H_
