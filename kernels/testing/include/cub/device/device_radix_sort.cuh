// Stand-in for CUB's DeviceRadixSort in the CUDA grid emulator: SortPairs
// with CUB's contract (query temp storage with a null pointer, then sort;
// stable; signed keys in numeric order) done by std::stable_sort on the
// emulator's host-side device memory. CUB itself is not exercised.
#ifndef MIM_KERNELS_TESTING_INCLUDE_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_
#define MIM_KERNELS_TESTING_INCLUDE_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/testing/cuda_emu_runtime.h"

namespace cuda_emu::internal {
// The device-side checks of a CUB call queued on `stream`: each range
// inside one allocation, no sticky error, no stream-order hazard (`writes`:
// which operands it writes); otherwise reports `what` and returns the error.
cudaError_t CheckCubOperands(const char* what, const void* const* ptrs, const size_t* bytes,
                             const bool* writes, int n, cudaStream_t stream);
}  // namespace cuda_emu::internal

namespace cub {

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes,
                               const KeyT* d_keys_in, KeyT* d_keys_out, const ValueT* d_values_in,
                               ValueT* d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = nullptr) {
    static_assert(std::is_integral_v<KeyT>, "the emulated SortPairs takes integer keys only");
    const size_t n = num_items > 0 ? static_cast<size_t>(num_items) : 0;
    // What CUB needs is an implementation detail; asking for some makes a
    // caller that skips the query or the allocation fail here too.
    const size_t needed = n * (sizeof(KeyT) + sizeof(ValueT)) + 256;
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = needed;
      return cudaSuccess;
    }
    if (begin_bit != 0 || end_bit != static_cast<int>(sizeof(KeyT) * 8)) {
      return cudaErrorInvalidValue;  // partial-bit sorts are not emulated
    }
    const void* ptrs[] = {d_temp_storage, d_keys_in, d_keys_out, d_values_in, d_values_out};
    const size_t bytes[] = {needed, n * sizeof(KeyT), n * sizeof(KeyT), n * sizeof(ValueT),
                            n * sizeof(ValueT)};
    const bool writes[] = {true, false, true, false, true};
    if (temp_storage_bytes < needed) return cudaErrorInvalidValue;
    if (const cudaError_t e = cuda_emu::internal::CheckCubOperands(
            "cub::DeviceRadixSort::SortPairs", ptrs, bytes, writes, n == 0 ? 1 : 5, stream);
        e != cudaSuccess) {
      return e;
    }
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return d_keys_in[a] < d_keys_in[b]; });
    std::vector<KeyT> keys(n);
    std::vector<ValueT> values(n);
    for (size_t i = 0; i < n; ++i) {
      keys[i] = d_keys_in[order[i]];
      values[i] = d_values_in[order[i]];
    }
    std::copy(keys.begin(), keys.end(), d_keys_out);
    std::copy(values.begin(), values.end(), d_values_out);
    return cudaSuccess;
  }
};

}  // namespace cub

#endif  // MIM_KERNELS_TESTING_INCLUDE_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_
