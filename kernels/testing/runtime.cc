// CUDA runtime API of the grid emulator on host memory (see
// cuda_emu_runtime.h for the model and the error contract).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/testing/cuda_emu_device.h"
#include "kernels/testing/emulator_internal.h"

namespace cuda_emu {
namespace internal {
namespace {

// An allocation larger than this is refused as out of memory (an H200 has
// 141 GB; a test asking for more than this is a size bug).
constexpr size_t kMaxAllocation = size_t{16} << 30;

struct Allocation {
  size_t bytes;
  bool pinned;  // cudaMallocHost: host memory kernels may also address
};

// Stream-order bookkeeping (emulator_internal.h, StreamOp). A clock maps a
// stream index to the number of operations of that stream ordered before
// (or at) a point; index 0 is the legacy default stream.
using Clock = std::vector<uint64_t>;

void Join(Clock* into, const Clock& from) {
  if (into->size() < from.size()) into->resize(from.size(), 0);
  for (size_t i = 0; i < from.size(); ++i) (*into)[i] = std::max((*into)[i], from[i]);
}

// One queued operation's use of an allocation.
struct Touch {
  int stream = -1;  // -1: none
  uint64_t tick = 0;
  const char* what = nullptr;
};

// Whether `t` is ordered before the operation whose clock is `c`.
bool Before(const Touch& t, const Clock& c) {
  return t.stream < 0 || (static_cast<size_t>(t.stream) < c.size() && c[t.stream] >= t.tick);
}

struct AllocationUse {
  Touch write;               // the last writer
  std::vector<Touch> reads;  // the last reader per stream since then
};

struct StreamState {
  Clock clock;
  bool blocking = true;  // synchronizes with the legacy default stream
};

struct Device {
  std::mutex device_mu;  // DeviceMutex()
  std::mutex mu;         // everything below
  std::map<uintptr_t, Allocation> allocations;
  size_t bytes_in_use = 0;
  cudaError_t sticky = cudaSuccess;
  std::string sticky_text;
  std::vector<std::string> reports;
  long long launches = 0;
  std::atomic<int> order{-1};
  // Stream-order bookkeeping.
  std::map<const void*, int> stream_index;  // handle -> index in streams
  std::vector<StreamState> streams{StreamState{}};  // [0]: the default stream
  std::map<const void*, Clock> events;              // at their last record
  std::map<uintptr_t, AllocationUse> uses;          // by allocation base
};

Device& Dev() {
  static Device* d = new Device;  // never destroyed: used by thread_local destructors
  return *d;
}

thread_local cudaError_t t_last_error = cudaSuccess;
// What the calling host thread has synchronized with.
thread_local Clock t_host_clock;

const char* Name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* Description(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

// The allocation holding p (base, allocation), or null.
const std::pair<const uintptr_t, Allocation>* Find(Device& d, const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = d.allocations.upper_bound(a);
  if (it == d.allocations.begin()) return nullptr;
  --it;
  if (a > it->first + it->second.bytes) return nullptr;  // one past the end is fine
  return &*it;
}

// Sticky error or success; for calls that must fail once a kernel faulted.
cudaError_t Sticky() {
  const cudaError_t s = StickyError();
  if (s != cudaSuccess) t_last_error = s;
  return s;
}

std::string Hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", p);
  return buf;
}

cudaError_t Allocate(void** ptr, size_t bytes, bool pinned, const char* what) {
  if (ptr == nullptr) return CallError(cudaErrorInvalidValue, std::string(what) + ": null result pointer");
  *ptr = nullptr;
  if (const cudaError_t s = Sticky(); s != cudaSuccess) return s;
  if (bytes == 0) return cudaSuccess;
  if (bytes > kMaxAllocation) {
    return CallError(cudaErrorMemoryAllocation,
                     std::string(what) + ": " + std::to_string(bytes) + " bytes is more than the "
                     "emulator's 16 GiB per allocation");
  }
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0) {
    return CallError(cudaErrorMemoryAllocation, std::string(what) + ": host allocation failed");
  }
  // Device memory starts undefined: 0xff bytes (NaN as float) make reads
  // of never-written memory show in results.
  std::memset(p, 0xff, bytes);
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  d.allocations[reinterpret_cast<uintptr_t>(p)] = {bytes, pinned};
  d.bytes_in_use += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t Free(void* ptr, bool pinned, const char* what) {
  if (ptr == nullptr) return cudaSuccess;
  Device& d = Dev();
  {
    std::lock_guard<std::mutex> l(d.mu);
    auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == d.allocations.end() || it->second.pinned != pinned) {
      return CallError(cudaErrorInvalidValue,
                       std::string(what) + "(" + Hex(ptr) + "): not the start of a live " +
                           (pinned ? "cudaMallocHost" : "cudaMalloc") + " allocation");
    }
    d.bytes_in_use -= it->second.bytes;
    d.allocations.erase(it);
    d.uses.erase(reinterpret_cast<uintptr_t>(ptr));
    // cudaFree and cudaFreeHost wait for the device.
    for (const StreamState& st : d.streams) Join(&t_host_clock, st.clock);
  }
  std::free(ptr);
  return Sticky();  // freed either way, so RAII owners do not leak
}

int StreamIndex(Device& d, cudaStream_t s) {
  if (s == nullptr) return 0;
  auto [it, added] = d.stream_index.emplace(s, static_cast<int>(d.streams.size()));
  if (added) d.streams.emplace_back();  // unknown handle: a blocking stream
  return it->second;
}

std::string StreamName(int s) {
  return s == 0 ? std::string("the default stream") : "stream " + std::to_string(s);
}

// Makes the clock of stream `s` take in the queuing thread's knowledge and
// the legacy default stream's implicit synchronization; returns it.
Clock& QueueOn(Device& d, int s) {
  Join(&d.streams[s].clock, t_host_clock);
  if (s != 0 && d.streams[s].blocking) {
    const Clock def = d.streams[0].clock;
    Join(&d.streams[s].clock, def);
  } else if (s == 0) {
    for (size_t i = 1; i < d.streams.size(); ++i) {
      if (d.streams[i].blocking) {
        const Clock other = d.streams[i].clock;
        Join(&d.streams[0].clock, other);
      }
    }
  }
  Clock& c = d.streams[s].clock;
  if (c.size() <= static_cast<size_t>(s)) c.resize(s + 1, 0);
  return c;
}

std::string Hazard(const Touch& now, bool now_writes, const Touch& before, bool before_wrote,
                   uintptr_t base, size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", reinterpret_cast<void*>(base));
  return std::string("stream order: '") + now.what + "' on " + StreamName(now.stream) +
         (now_writes ? " writes" : " reads") + " allocation " + buf + " (" +
         std::to_string(bytes) + " bytes), which '" + before.what + "' on " +
         StreamName(before.stream) + (before_wrote ? " writes" : " reads") +
         ", and no event wait or host synchronization orders the second after the first "
         "(a buffer rewritten while queued work may still read it, or read before its "
         "copy lands)";
}

}  // namespace

std::string StreamOp(cudaStream_t stream, const char* what, const Operand* operands, int n) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  const int s = StreamIndex(d, stream);
  Clock& c = QueueOn(d, s);
  const Touch me{s, ++c[s], what};
  std::string report;
  for (int i = 0; i < n; ++i) {
    const auto* a = Find(d, operands[i].ptr);
    if (a == nullptr) continue;  // host memory
    AllocationUse& u = d.uses[a->first];
    const bool w = operands[i].write;
    if (report.empty() && !Before(u.write, c)) {
      report = Hazard(me, w, u.write, true, a->first, a->second.bytes);
    }
    if (w) {
      for (const Touch& r : u.reads) {
        if (report.empty() && !Before(r, c)) {
          report = Hazard(me, true, r, false, a->first, a->second.bytes);
        }
      }
      u.write = me;
      u.reads.clear();
    } else {
      auto it = std::find_if(u.reads.begin(), u.reads.end(),
                             [&](const Touch& r) { return r.stream == s; });
      if (it == u.reads.end()) {
        u.reads.push_back(me);
      } else {
        *it = me;
      }
    }
  }
  return report;
}

void HostWaitsForStream(cudaStream_t stream) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  const int s = StreamIndex(d, stream);
  Join(&t_host_clock, QueueOn(d, s));
}

void HostWaitsForDevice() {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  for (const StreamState& st : d.streams) Join(&t_host_clock, st.clock);
}

void RegisterStream(cudaStream_t stream, bool blocking) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  d.streams[StreamIndex(d, stream)].blocking = blocking;
}

void RecordEvent(cudaEvent_t event, cudaStream_t stream) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  d.events[event] = QueueOn(d, StreamIndex(d, stream));
}

void StreamWaitsForEvent(cudaStream_t stream, cudaEvent_t event) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  Clock& c = QueueOn(d, StreamIndex(d, stream));
  auto it = d.events.find(event);
  if (it != d.events.end()) Join(&c, it->second);  // never recorded: no-op
}

void HostWaitsForEvent(cudaEvent_t event) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  auto it = d.events.find(event);
  if (it != d.events.end()) Join(&t_host_clock, it->second);
}

bool Queue(cudaStream_t stream, const char* what, std::initializer_list<Operand> ops) {
  const std::string hazard = StreamOp(stream, what, ops.begin(), static_cast<int>(ops.size()));
  if (hazard.empty()) return true;
  Fault(cudaErrorLaunchFailure, hazard);
  return false;
}

std::mutex& DeviceMutex() { return Dev().device_mu; }

cudaError_t StickyError() {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  return d.sticky;
}

void Fault(cudaError_t code, const std::string& report) {
  std::fprintf(stderr, "cuda_emu: FAULT: %s\n", report.c_str());
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  d.reports.push_back(report);
  if (d.sticky == cudaSuccess) {
    d.sticky = code;
    d.sticky_text = std::string(Description(code)) + " [cuda_emu: " + report + "]";
  }
}

cudaError_t CallError(cudaError_t code, const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "cuda_emu: %s: %s\n", Name(code), why.c_str());
  t_last_error = code;
  return code;
}

bool InDeviceRange(const void* p, size_t bytes, bool pinned_too) {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  const auto* a = Find(d, p);
  if (a == nullptr || (a->second.pinned && !pinned_too)) return false;
  return reinterpret_cast<uintptr_t>(p) - a->first + bytes <= a->second.bytes;
}

bool IsDeviceAddress(const void* p) { return InDeviceRange(p, 0, true); }

ThreadOrder CurrentThreadOrder() {
  Device& d = Dev();
  int o = d.order.load(std::memory_order_relaxed);
  if (o < 0) {
    const char* env = std::getenv("MIM_CUDA_EMU_ORDER");
    o = env != nullptr && std::strcmp(env, "reverse") == 0 ? 1 : 0;
    int unset = -1;
    if (d.order.compare_exchange_strong(unset, o) && o == 1) {
      std::fprintf(stderr, "cuda_emu: MIM_CUDA_EMU_ORDER=reverse: block threads start and "
                           "resume in reverse order\n");
    }
    o = d.order.load(std::memory_order_relaxed);
  }
  return o == 1 ? ThreadOrder::kReverse : ThreadOrder::kForward;
}

void CountLaunch() {
  Device& d = Dev();
  std::lock_guard<std::mutex> l(d.mu);
  ++d.launches;
}

}  // namespace internal

void SetThreadOrder(ThreadOrder order) {
  internal::Dev().order.store(order == ThreadOrder::kReverse ? 1 : 0);
}

std::vector<std::string> TakeReports() {
  internal::Device& d = internal::Dev();
  std::lock_guard<std::mutex> l(d.mu);
  return std::exchange(d.reports, {});
}

void ClearStickyError() {
  internal::Device& d = internal::Dev();
  std::lock_guard<std::mutex> l(d.mu);
  d.sticky = cudaSuccess;
  d.sticky_text.clear();
  internal::t_last_error = cudaSuccess;
}

size_t DeviceBytesInUse() {
  internal::Device& d = internal::Dev();
  std::lock_guard<std::mutex> l(d.mu);
  return d.bytes_in_use;
}

long long LaunchCount() {
  internal::Device& d = internal::Dev();
  std::lock_guard<std::mutex> l(d.mu);
  return d.launches;
}

}  // namespace cuda_emu

using cuda_emu::internal::CallError;
using cuda_emu::internal::InDeviceRange;

const char* cudaGetErrorName(cudaError_t e) { return cuda_emu::internal::Name(e); }

const char* cudaGetErrorString(cudaError_t e) {
  auto& d = cuda_emu::internal::Dev();
  {
    std::lock_guard<std::mutex> l(d.mu);
    // The sticky error's text carries the report (valid until cleared).
    if (e != cudaSuccess && e == d.sticky) return d.sticky_text.c_str();
  }
  return cuda_emu::internal::Description(e);
}

cudaError_t cudaGetLastError() {
  const cudaError_t s = cuda_emu::internal::StickyError();
  if (s != cudaSuccess) return s;
  return std::exchange(cuda_emu::internal::t_last_error, cudaSuccess);
}

cudaError_t cudaPeekAtLastError() {
  const cudaError_t s = cuda_emu::internal::StickyError();
  return s != cudaSuccess ? s : cuda_emu::internal::t_last_error;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return CallError(cudaErrorInvalidValue, "cudaGetDeviceCount: null count");
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return CallError(cudaErrorInvalidValue, "cudaGetDevice: null device");
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) {
    return CallError(cudaErrorInvalidDevice,
                     "cudaSetDevice(" + std::to_string(device) + "): the emulator has device 0 only");
  }
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return CallError(cudaErrorInvalidValue, "cudaGetDeviceProperties: null");
  if (device != 0) return cudaSetDevice(device);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "mim CUDA grid emulator");
  prop->totalGlobalMem = size_t{16} << 30;
  prop->sharedMemPerBlock = cuda_emu::internal::kMaxSharedBytes;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  cuda_emu::internal::HostWaitsForDevice();
  return cuda_emu::internal::Sticky();
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  return cuda_emu::internal::Allocate(ptr, bytes, false, "cudaMalloc");
}
cudaError_t cudaFree(void* ptr) { return cuda_emu::internal::Free(ptr, false, "cudaFree"); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  return cuda_emu::internal::Allocate(ptr, bytes, true, "cudaMallocHost");
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  return cuda_emu::internal::Allocate(ptr, bytes, true, "cudaHostAlloc");
}
cudaError_t cudaFreeHost(void* ptr) {
  return cuda_emu::internal::Free(ptr, true, "cudaFreeHost");
}

namespace {

// cudaMemcpy (sync) or cudaMemcpyAsync on `stream`.
cudaError_t Memcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                   cudaStream_t stream, bool async) {
  if (const cudaError_t s = cuda_emu::internal::Sticky(); s != cudaSuccess) return s;
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) {
    return CallError(cudaErrorInvalidValue, "cudaMemcpy: null pointer with " +
                                                std::to_string(bytes) + " bytes to copy");
  }
  const bool dst_dev = InDeviceRange(dst, bytes, true), src_dev = InDeviceRange(src, bytes, true);
  const bool dst_in_alloc = cuda_emu::internal::IsDeviceAddress(dst);
  const bool src_in_alloc = cuda_emu::internal::IsDeviceAddress(src);
  const std::string what = "cudaMemcpy of " + std::to_string(bytes) + " bytes from " +
                           cuda_emu::internal::Hex(src) + " to " + cuda_emu::internal::Hex(dst);
  bool want_dst_dev = false, want_src_dev = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: want_dst_dev = true; break;
    case cudaMemcpyDeviceToHost: want_src_dev = true; break;
    case cudaMemcpyDeviceToDevice: want_dst_dev = want_src_dev = true; break;
    case cudaMemcpyDefault:
      want_dst_dev = dst_in_alloc;
      want_src_dev = src_in_alloc;
      break;
    default:
      return CallError(cudaErrorInvalidValue, what + ": unknown cudaMemcpyKind");
  }
  if (want_dst_dev && !dst_dev) {
    return CallError(cudaErrorInvalidValue,
                     what + ": the destination range is not inside one device allocation");
  }
  if (want_src_dev && !src_dev) {
    return CallError(cudaErrorInvalidValue,
                     what + ": the source range is not inside one device allocation");
  }
  if (kind != cudaMemcpyDefault && ((!want_dst_dev && dst_in_alloc && InDeviceRange(dst, 0, false)) ||
                                    (!want_src_dev && src_in_alloc && InDeviceRange(src, 0, false)))) {
    return CallError(cudaErrorInvalidValue,
                     what + ": a device pointer where the copy kind says host memory");
  }
  // A synchronous copy to or from the host returns once it is done (and
  // one from the host starts after the default stream's earlier work); a
  // device-to-device one does not wait.
  const bool host_sync = !async && !(want_dst_dev && want_src_dev);
  if (host_sync) cuda_emu::internal::HostWaitsForStream(nullptr);
  if (!cuda_emu::internal::Queue(stream, async ? "cudaMemcpyAsync" : "cudaMemcpy",
                                 {{src, false}, {dst, true}})) {
    return cuda_emu::internal::Sticky();
  }
  {
    std::lock_guard<std::mutex> l(cuda_emu::internal::DeviceMutex());
    std::memmove(dst, src, bytes);
  }
  if (host_sync) cuda_emu::internal::HostWaitsForStream(nullptr);
  return cudaSuccess;
}

cudaError_t Memset(void* ptr, int value, size_t bytes, cudaStream_t stream, bool async) {
  if (const cudaError_t s = cuda_emu::internal::Sticky(); s != cudaSuccess) return s;
  if (bytes == 0) return cudaSuccess;
  if (!InDeviceRange(ptr, bytes, true)) {
    return CallError(cudaErrorInvalidValue,
                     "cudaMemset of " + std::to_string(bytes) + " bytes at " +
                         cuda_emu::internal::Hex(ptr) + ": not inside one device allocation");
  }
  if (!cuda_emu::internal::Queue(stream, async ? "cudaMemsetAsync" : "cudaMemset",
                                 {{ptr, true}})) {
    return cuda_emu::internal::Sticky();
  }
  std::lock_guard<std::mutex> l(cuda_emu::internal::DeviceMutex());
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return Memcpy(dst, src, bytes, kind, nullptr, false);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return Memcpy(dst, src, bytes, kind, stream, true);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  return Memset(ptr, value, bytes, nullptr, false);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  return Memset(ptr, value, bytes, stream, true);
}

// Streams and events: every call is synchronous, so they only need to be
// distinct non-null handles.
namespace {
std::atomic<uintptr_t> g_next_handle{0x1000};
template <typename H>
cudaError_t NewHandle(H* h, const char* what) {
  if (h == nullptr) return CallError(cudaErrorInvalidValue, std::string(what) + ": null handle");
  *h = reinterpret_cast<H>(g_next_handle.fetch_add(16));
  return cuda_emu::internal::Sticky();
}

cudaError_t NewStream(cudaStream_t* s, unsigned int flags, const char* what) {
  const cudaError_t e = NewHandle(s, what);
  if (s == nullptr) return e;
  cuda_emu::internal::RegisterStream(*s, (flags & cudaStreamNonBlocking) == 0);
  return e;
}
}  // namespace

cudaError_t cudaStreamCreate(cudaStream_t* s) { return NewStream(s, 0, "cudaStreamCreate"); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  return NewStream(s, flags, "cudaStreamCreateWithFlags");
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cuda_emu::internal::Sticky(); }
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  cuda_emu::internal::HostWaitsForStream(s);
  return cuda_emu::internal::Sticky();
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  cuda_emu::internal::StreamWaitsForEvent(s, e);
  return cuda_emu::internal::Sticky();
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return NewHandle(e, "cudaEventCreate"); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  return NewHandle(e, "cudaEventCreateWithFlags");
}
cudaError_t cudaEventDestroy(cudaEvent_t) { return cuda_emu::internal::Sticky(); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  cuda_emu::internal::RecordEvent(e, s);
  return cuda_emu::internal::Sticky();
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  cuda_emu::internal::HostWaitsForEvent(e);
  return cuda_emu::internal::Sticky();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  if (ms == nullptr) return CallError(cudaErrorInvalidValue, "cudaEventElapsedTime: null ms");
  *ms = 0.f;
  return cuda_emu::internal::Sticky();
}
