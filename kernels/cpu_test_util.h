// Test helpers: seeded random tensors, finite differences, comparisons,
// and the CUDA tests' device check.
#ifndef MIM_KERNELS_CPU_TEST_UTIL_H_
#define MIM_KERNELS_CPU_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common.h"

// In a CUDA test body (namespace mim::kernels): skips without a device on
// a real CUDA build (a machine without a GPU); the emulated builds define
// MIM_CUDA_DEVICE_REQUIRED, where no device is a failure: a skip there
// would drop every CUDA-vs-CPU check silently.
#ifdef MIM_CUDA_DEVICE_REQUIRED
#define SKIP_WITHOUT_CUDA()                                              \
  do {                                                                   \
    const absl::Status st = CudaDeviceStatus();                          \
    if (!st.ok()) GTEST_FAIL() << "no emulated device: " << st.message(); \
  } while (0)
#else
#define SKIP_WITHOUT_CUDA()                                  \
  do {                                                       \
    const absl::Status st = CudaDeviceStatus();              \
    if (!st.ok()) GTEST_SKIP() << std::string(st.message()); \
  } while (0)
#endif

namespace mim::kernels::testing {

template <typename T>
std::vector<T> RandomVec(size_t n, uint32_t seed, double lo = -1.0,
                         double hi = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng));
  return v;
}

inline double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of `loss` w.r.t. every `stride`-th element of *x
// (every element by default), compared with `analytic` to
// |num - ana| <= atol + rtol * |num|.
inline void ExpectGradMatchesFiniteDiff(
    const std::string& what, std::vector<double>* x,
    const std::function<double()>& loss, const std::vector<double>& analytic,
    double step = 1e-6, double atol = 1e-7, double rtol = 1e-6,
    size_t stride = 1) {
  ASSERT_EQ(x->size(), analytic.size()) << what;
  for (size_t i = 0; i < x->size(); i += stride) {
    const double saved = (*x)[i];
    (*x)[i] = saved + step;
    const double up = loss();
    (*x)[i] = saved - step;
    const double down = loss();
    (*x)[i] = saved;
    const double num = (up - down) / (2 * step);
    ASSERT_NEAR(analytic[i], num, atol + rtol * std::abs(num))
        << what << " element " << i;
  }
}

template <typename T>
void ExpectAllNear(const std::vector<T>& expected, const std::vector<T>& got,
                   double atol, double rtol, const std::string& what) {
  ASSERT_EQ(expected.size(), got.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(expected[i], got[i], atol + rtol * std::abs(double(expected[i])))
        << what << " element " << i;
  }
}

}  // namespace mim::kernels::testing

#endif  // MIM_KERNELS_CPU_TEST_UTIL_H_
