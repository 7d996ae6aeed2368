// DeviceBuffer<T>: RAII owner of a CUDA device allocation, usable from plain
// C++ (no CUDA headers needed: the runtime calls live in the CUDA library,
// or in a stub that returns UNIMPLEMENTED when built without CUDA).
#ifndef MIM_KERNELS_DEVICE_BUFFER_H_
#define MIM_KERNELS_DEVICE_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace mim::kernels {
namespace internal {
absl::Status DeviceAlloc(size_t bytes, void** ptr);
void DeviceFree(void* ptr);
absl::Status CopyHostToDevice(void* dst, const void* src, size_t bytes);
absl::Status CopyDeviceToHost(void* dst, const void* src, size_t bytes);
absl::Status DeviceMemsetZero(void* ptr, size_t bytes);
}  // namespace internal

// Owns `size` elements of T in device memory; freed on destruction.
// Move-only. Not thread-safe.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { internal::DeviceFree(ptr_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      internal::DeviceFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Allocates `size` elements (zero-filled). Errors: INTERNAL on CUDA
  // failure, UNIMPLEMENTED without CUDA, INVALID_ARGUMENT when the byte
  // count overflows.
  static absl::StatusOr<DeviceBuffer> Allocate(size_t size) {
    if (size > SIZE_MAX / sizeof(T)) {
      return absl::InvalidArgumentError("DeviceBuffer: size * sizeof(T) overflows size_t");
    }
    DeviceBuffer b;
    void* p = nullptr;
    absl::Status s = internal::DeviceAlloc(size * sizeof(T), &p);
    if (!s.ok()) return s;
    b.ptr_ = static_cast<T*>(p);
    b.size_ = size;
    absl::Status zeroed = internal::DeviceMemsetZero(p, size * sizeof(T));
    if (!zeroed.ok()) return zeroed;
    return b;
  }
  // Allocates and copies `host` into the new buffer.
  static absl::StatusOr<DeviceBuffer> FromHost(absl::Span<const T> host) {
    absl::StatusOr<DeviceBuffer> b = Allocate(host.size());
    if (!b.ok()) return b;
    absl::Status s = b->CopyFromHost(host);
    if (!s.ok()) return s;
    return b;
  }

  // Copies must match size() exactly; otherwise INVALID_ARGUMENT.
  absl::Status CopyFromHost(absl::Span<const T> host) {
    if (host.size() != size_) return SizeError();
    return internal::CopyHostToDevice(ptr_, host.data(), size_ * sizeof(T));
  }
  absl::Status CopyToHost(absl::Span<T> host) const {
    if (host.size() != size_) return SizeError();
    return internal::CopyDeviceToHost(host.data(), ptr_, size_ * sizeof(T));
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  static absl::Status SizeError() {
    return absl::InvalidArgumentError("DeviceBuffer copy: host span size differs from buffer size");
  }
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mim::kernels

#endif  // MIM_KERNELS_DEVICE_BUFFER_H_
