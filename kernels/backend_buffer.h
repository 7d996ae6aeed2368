// BackendArray<T>: a growable array in a ComputeBackend's memory (device
// memory for CUDA, host memory for the CPU), for buffers reused across
// calls: Reserve grows, never shrinks, and keeps nothing on growth.
// BackendEvent: one of the backend's events.
#ifndef MIM_KERNELS_BACKEND_BUFFER_H_
#define MIM_KERNELS_BACKEND_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/backend.h"

namespace mim::kernels {

// Move-only owner of backend memory. Not thread-safe.
template <typename T>
class BackendArray {
 public:
  explicit BackendArray(const ComputeBackend* backend) : backend_(backend) {}
  ~BackendArray() { backend_->Free(ptr_); }
  BackendArray(BackendArray&& o) noexcept
      : backend_(o.backend_),
        ptr_(std::exchange(o.ptr_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  BackendArray& operator=(BackendArray&&) = delete;
  BackendArray(const BackendArray&) = delete;
  BackendArray& operator=(const BackendArray&) = delete;

  // Makes size() == n, reallocating when n exceeds the capacity; contents
  // are unspecified afterwards (kept only when no reallocation happened).
  // Errors: INVALID_ARGUMENT for n < 0 or a byte count past size_t, else
  // the backend's Allocate errors (the array is then empty).
  absl::Status Resize(int64_t n) {
    if (n < 0 || static_cast<uint64_t>(n) > SIZE_MAX / sizeof(T)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("BackendArray: %d elements of %d bytes", n, sizeof(T)));
    }
    if (n > capacity_) {
      backend_->Free(ptr_);
      ptr_ = nullptr;
      size_ = capacity_ = 0;
      void* p = nullptr;
      absl::Status st = backend_->Allocate(static_cast<size_t>(n) * sizeof(T), &p);
      if (!st.ok()) return st;
      ptr_ = static_cast<T*>(p);
      capacity_ = n;
    }
    size_ = n;
    return absl::OkStatus();
  }
  // Resize, then every element zero.
  absl::Status ResizeZeroed(int64_t n) {
    absl::Status st = Resize(n);
    if (!st.ok()) return st;
    return backend_->Zero(ptr_, static_cast<size_t>(n) * sizeof(T));
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  int64_t size() const { return size_; }
  size_t bytes() const { return static_cast<size_t>(size_) * sizeof(T); }

 private:
  const ComputeBackend* backend_;
  T* ptr_ = nullptr;
  int64_t size_ = 0;
  int64_t capacity_ = 0;
};

// Owner of one of a ComputeBackend's events (ComputeBackend::NewEvent):
// null on a host backend, whose event calls do nothing. Move-only. Not
// thread-safe; recording on one thread and waiting on another is the
// point, ordered by the caller (the record must be made before the wait).
class BackendEvent {
 public:
  explicit BackendEvent(const ComputeBackend* backend) : backend_(backend) {}
  ~BackendEvent() { backend_->DeleteEvent(event_); }
  BackendEvent(BackendEvent&& o) noexcept
      : backend_(o.backend_), event_(std::exchange(o.event_, nullptr)) {}
  BackendEvent& operator=(BackendEvent&&) = delete;
  BackendEvent(const BackendEvent&) = delete;
  BackendEvent& operator=(const BackendEvent&) = delete;

  // Makes the event (once). Errors as ComputeBackend::NewEvent.
  absl::Status Create() {
    if (event_ != nullptr) return absl::OkStatus();
    return backend_->NewEvent(&event_);
  }
  void* get() const { return event_; }

 private:
  const ComputeBackend* backend_;
  void* event_ = nullptr;
};

}  // namespace mim::kernels

#endif  // MIM_KERNELS_BACKEND_BUFFER_H_
