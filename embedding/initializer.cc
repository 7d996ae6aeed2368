#include "embedding/initializer.h"

#include <cmath>
#include <cstring>

#include "embedding/sharding.h"

namespace mim::embedding {
namespace {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double NextUnit() { return (Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace

void InitializeRow(const InitializerConfig& config, uint64_t key, uint32_t dim,
                   float* out) {
  if (config.kind == InitializerKind::kZeros || config.scale == 0.0f) {
    std::memset(out, 0, sizeof(float) * dim);
    return;
  }
  // Two rounds of mixing so that (seed, key) and (seed', key') with
  // seed ^ key == seed' ^ key' still get unrelated streams.
  SplitMix64 rng(MixKey(key ^ MixKey(config.seed + 0x9E3779B97F4A7C15ULL)));
  const double scale = config.scale;
  if (config.kind == InitializerKind::kUniform) {
    for (uint32_t i = 0; i < dim; ++i) {
      out[i] = static_cast<float>((2.0 * rng.NextUnit() - 1.0) * scale);
    }
    return;
  }
  constexpr double kTwoPi = 6.283185307179586476925;
  for (uint32_t i = 0; i < dim; i += 2) {
    const double u1 = 1.0 - rng.NextUnit();  // (0, 1]: log is finite
    const double u2 = rng.NextUnit();
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(r * std::cos(kTwoPi * u2) * scale);
    if (i + 1 < dim) {
      out[i + 1] = static_cast<float>(r * std::sin(kTwoPi * u2) * scale);
    }
  }
}

}  // namespace mim::embedding
