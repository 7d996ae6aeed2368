// 64-bit parameter-server keys for categorical features, with no vocabulary:
// key = field id in the top 8 bits | 56 bits of a mixed (hashed) value.
// Different fields never collide; among n distinct values of one field the
// expected number of colliding pairs is n^2 / 2^57 (about 0.07 at n = 1e8).
#ifndef MIM_WORKER_DATA_FEATURE_KEY_H_
#define MIM_WORKER_DATA_FEATURE_KEY_H_

#include <cstdint>

namespace mim::data {

// Field ids; stable on disk and across processes. Never renumber.
// Behaviour-sequence items use kItem so they share the target item's
// embedding, as in the MIM/CiUBM models.
enum class FeatureField : uint8_t {
  kUser = 1,
  kItem = 2,
  kAgeBucket = 3,
  kGender = 4,
  kOccupation = 5,
  kGenre = 6,
};

inline constexpr int kFeatureFieldBits = 8;
inline constexpr int kFeatureValueBits = 64 - kFeatureFieldBits;

// splitmix64 finaliser: a bijection on 64 bits, so distinct values differ
// before truncation to 56 bits. Pure; safe for concurrent use.
constexpr uint64_t MixFeatureValue(uint64_t v) {
  v += 0x9E3779B97F4A7C15ULL;
  v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ULL;
  v = (v ^ (v >> 27)) * 0x94D049BB133111EBULL;
  return v ^ (v >> 31);
}

// Returns the PS key of (field, value). Pure; safe for concurrent use.
constexpr uint64_t FeatureKey(FeatureField field, int64_t value) {
  return (static_cast<uint64_t>(field) << kFeatureValueBits) |
         (MixFeatureValue(static_cast<uint64_t>(value)) &
          ((uint64_t{1} << kFeatureValueBits) - 1));
}

// Returns the field a key was made from.
constexpr FeatureField FeatureKeyField(uint64_t key) {
  return static_cast<FeatureField>(key >> kFeatureValueBits);
}

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_FEATURE_KEY_H_
