// Tests of the CUDA grid emulator itself, written as CUDA: toy kernels
// whose outcome is known, including deliberate bugs the emulator must
// report (a shared-memory race, a missing barrier, an out-of-bounds shared
// index, a read of unwritten shared memory, a deadlock, a host pointer as
// kernel argument). Built only through cuda_emulated_library.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <cub/device/device_radix_sort.cuh>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ---- toy kernels ----

// Every thread of a 3-D grid of 3-D blocks writes its global linear id.
__global__ void IdsKernel(int* out) {
  const int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int id = bx * blockDim.x * blockDim.y * blockDim.z + tx;
  out[id] = id;
}

// Tree sum in shared memory; `missing_barrier` drops the barrier inside
// the loop (the classic bug: a thread reads a partial sum another thread
// has not finished).
__global__ void BlockSumKernel(const float* x, float* out, bool missing_barrier) {
  __shared__ float part[256];
  part[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
    if (!missing_barrier) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

// Each thread writes its slot, then reads its neighbour's: racy without
// the barrier between.
__global__ void NeighbourKernel(int* out, bool barrier) {
  __shared__ int slot[64];
  slot[threadIdx.x] = static_cast<int>(threadIdx.x) * 10;
  if (barrier) __syncthreads();
  out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

// Lanes of one warp exchange through shared memory; __syncwarp() orders
// them (no race), its absence does not.
__global__ void WarpSharedKernel(int* out, bool syncwarp) {
  __shared__ int v[32];
  v[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (syncwarp) __syncwarp();
  out[threadIdx.x] = v[31 - threadIdx.x];
}

// Reads one element past the end of a shared array.
__global__ void SharedOobKernel(int* out) {
  __shared__ int buf[32];
  buf[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x + 1];
}

// Block 1 reads what block 0 wrote: shared memory is per block, so this
// reads memory no thread of block 1 has written.
__global__ void CrossBlockKernel(int* out) {
  __shared__ int once;
  if (blockIdx.x == 0 && threadIdx.x == 0) once = 42;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = once;
}

// Dynamic shared memory: reversed copy through `buf`; `over` indexes past
// the launch's dynamic size.
__global__ void DynamicSharedKernel(const float* x, float* out, int over) {
  extern __shared__ float buf[];
  buf[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x + over];
}

// Butterfly sum, down-shift sum, broadcast, up-shift and 16-lane segments.
__global__ void ShuffleKernel(const float* x, float* out) {
  const int lane = threadIdx.x % 32;
  const float v = x[threadIdx.x];
  float s = v;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  float d = v;
  for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
  const float b = __shfl_sync(0xffffffffu, v, 3);
  const float u = __shfl_up_sync(0xffffffffu, v, 1);
  const float seg = __shfl_xor_sync(0xffffffffu, v, 8, 16);
  out[threadIdx.x * 5 + 0] = s;
  out[threadIdx.x * 5 + 1] = lane == 0 ? d : 0.f;
  out[threadIdx.x * 5 + 2] = b;
  out[threadIdx.x * 5 + 3] = u;
  out[threadIdx.x * 5 + 4] = seg;
}

__global__ void VoteKernel(unsigned* out) {
  const int lane = threadIdx.x % 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 7);
  const int all = __all_sync(0xffffffffu, lane < 40);
  const int none = __all_sync(0xffffffffu, lane < 31);
  if (lane == 0) {
    out[0] = ballot;
    out[1] = any;
    out[2] = all;
    out[3] = none;
  }
}

// Lanes 16..31 exit first; the rest shuffle among themselves with a
// half mask.
__global__ void PartialWarpKernel(int* out) {
  const int lane = threadIdx.x;
  if (lane >= 16) return;
  out[lane] = __shfl_down_sync(0x0000ffffu, lane * 2, 1, 16);
}

// Lanes 0..15 wait at a full-warp shuffle that lanes 16..31 never reach:
// they wait at __syncthreads instead. Hangs a GPU.
__global__ void DeadlockKernel(int* out) {
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x), 0);
  } else {
    __syncthreads();
  }
}

__global__ void AtomicKernel(float* sum, unsigned long long* min_id, int* count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(sum, 0.5f);
  atomicMin(min_id, static_cast<unsigned long long>(1000 - i % 1000));
  atomicAdd(count, 1);
}

// Thread i reads what thread i - 1 wrote to global memory, without any
// synchronization: the result depends on the schedule (the race detector
// watches shared memory only; running both thread orders shows this).
__global__ void OrderDependentKernel(int* x) {
  if (threadIdx.x > 0) x[threadIdx.x] = x[threadIdx.x - 1] + 1;
}

__global__ void CopyKernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

// ---- helpers ----

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return p;
}
template <typename T>
std::vector<T> HostCopy(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// Each test starts with a healthy device and leaves no reports behind.
class EmulatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cuda_emu::ClearStickyError();
    cuda_emu::TakeReports();
    cuda_emu::SetThreadOrder(cuda_emu::ThreadOrder::kForward);
  }
  void TearDown() override {
    cuda_emu::ClearStickyError();
    cuda_emu::TakeReports();
  }
  // The reports of the last launch, after checking the sticky error it left.
  std::vector<std::string> Faults(cudaError_t code) {
    EXPECT_EQ(cudaDeviceSynchronize(), code);
    EXPECT_EQ(cudaGetLastError(), code) << "sticky: not cleared by reading it";
    return cuda_emu::TakeReports();
  }
  // The one report a fault that should be found once produced.
  std::string OneFault(cudaError_t code) {
    std::vector<std::string> r = Faults(code);
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? "" : r[0];
  }
};

TEST_F(EmulatorTest, OneDeviceWithCudaProperties) {
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_EQ(n, 1);
  cudaDeviceProp p;
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "non-sticky: cleared once read";
}

TEST_F(EmulatorTest, EveryThreadOfA3dGridRunsOnce) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int n = 12 * 24;
  int* d = DeviceCopy(std::vector<int>(n, -1));
  IdsKernel<<<grid, block>>>(d);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> want(n);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(HostCopy(d, n), want);
  cudaFree(d);
}

TEST_F(EmulatorTest, BadLaunchConfigurationsAreNotSticky) {
  int* d = DeviceCopy(std::vector<int>(4, 0));
  IdsKernel<<<1, 2048>>>(d);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  IdsKernel<<<0, 32>>>(d);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  IdsKernel<<<1, dim3(1, 1, 65)>>>(d);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  DynamicSharedKernel<<<1, 32, 49 * 1024>>>(nullptr, nullptr, 0);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  IdsKernel<<<1, 4>>>(d);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_THAT(HostCopy(d, 4), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
  cudaFree(d);
}

TEST_F(EmulatorTest, BlockSumWithBarriersIsExactAndRaceFree) {
  std::vector<float> x(4 * 256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  float* dx = DeviceCopy(x);
  float* dout = DeviceCopy(std::vector<float>(4, 0.f));
  for (auto order : {cuda_emu::ThreadOrder::kForward, cuda_emu::ThreadOrder::kReverse}) {
    cuda_emu::SetThreadOrder(order);
    BlockSumKernel<<<4, 256>>>(dx, dout, false);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> want(4, 0.f);
    for (size_t i = 0; i < x.size(); ++i) want[i / 256] += x[i];
    EXPECT_EQ(HostCopy(dout, 4), want);
  }
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
  cudaFree(dx);
  cudaFree(dout);
}

TEST_F(EmulatorTest, MissingBarrierInAReductionIsARace) {
  float* dx = DeviceCopy(std::vector<float>(256, 1.f));
  float* dout = DeviceCopy(std::vector<float>(1, 0.f));
  BlockSumKernel<<<1, 256>>>(dx, dout, true);
  EXPECT_THAT(Faults(cudaErrorLaunchFailure),
              Contains(AllOf(HasSubstr("kernel 'BlockSumKernel' block (0,0,0)"), HasSubstr("race"),
                             HasSubstr("shared 'part' (kernels/testing/emulator_test.cu:"),
                             HasSubstr("no barrier between"))));
  // The error surfaces through the runtime as a device fault would.
  EXPECT_THAT(std::string(cudaGetErrorString(cudaErrorLaunchFailure)), HasSubstr("BlockSumKernel"));
  // Every later call fails until the context is reset.
  float* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorLaunchFailure);
  cudaFree(dx);
  cudaFree(dout);
}

TEST_F(EmulatorTest, NeighbourReadNeedsABarrier) {
  int* d = DeviceCopy(std::vector<int>(64, 0));
  NeighbourKernel<<<1, 64>>>(d, true);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int> want(64);
  for (int i = 0; i < 64; ++i) want[i] = (i + 1) % 64 * 10;
  EXPECT_EQ(HostCopy(d, 64), want);
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());

  NeighbourKernel<<<1, 64>>>(d, false);
  // Thread 0 runs first and reads slot 1 before thread 1 writes it; then
  // thread 1 overwrites what thread 0 read.
  const std::vector<std::string> forward = Faults(cudaErrorLaunchFailure);
  EXPECT_THAT(forward, Contains(AllOf(HasSubstr("reads shared memory no thread of this block has "
                                                "written"),
                                      HasSubstr("'slot'"), HasSubstr("thread (0,0,0)"))));
  EXPECT_THAT(forward, Contains(HasSubstr("write-after-read race on shared 'slot'")));
  cuda_emu::ClearStickyError();
  // In reverse order thread 62 reads slot 63 after thread 63 wrote it:
  // the detector names both threads.
  cuda_emu::SetThreadOrder(cuda_emu::ThreadOrder::kReverse);
  NeighbourKernel<<<1, 64>>>(d, false);
  EXPECT_THAT(Faults(cudaErrorLaunchFailure),
              Contains(AllOf(HasSubstr("read-after-write race on shared 'slot'"),
                             HasSubstr("element 63"),
                             HasSubstr("written by thread (63,0,0), then read by thread "
                                       "(62,0,0)"))));
  cudaFree(d);
}

TEST_F(EmulatorTest, SyncwarpOrdersLanesOfOneWarp) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  WarpSharedKernel<<<1, 32>>>(d, true);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int> want(32);
  for (int i = 0; i < 32; ++i) want[i] = 31 - i;
  EXPECT_EQ(HostCopy(d, 32), want);
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
  cuda_emu::SetThreadOrder(cuda_emu::ThreadOrder::kReverse);
  WarpSharedKernel<<<1, 32>>>(d, false);
  EXPECT_THAT(Faults(cudaErrorLaunchFailure), Contains(HasSubstr("race on shared 'v'")));
  cudaFree(d);
}

TEST_F(EmulatorTest, OutOfBoundsSharedIndexIsCaught) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  SharedOobKernel<<<1, 32>>>(d);
  EXPECT_THAT(OneFault(cudaErrorIllegalAddress),
              AllOf(HasSubstr("out-of-bounds shared-memory index"),
                    HasSubstr("thread (31,0,0) uses 'buf'[32]"), HasSubstr("has 32 element(s)")));
  cudaFree(d);
}

TEST_F(EmulatorTest, SharedMemoryBelongsToOneBlock) {
  int* d = DeviceCopy(std::vector<int>(2, 0));
  CrossBlockKernel<<<2, 32>>>(d);
  EXPECT_THAT(OneFault(cudaErrorLaunchFailure),
              AllOf(HasSubstr("block (1,0,0)"), HasSubstr("no thread of this block has written"),
                    HasSubstr("'once'")));
  cudaFree(d);
}

TEST_F(EmulatorTest, DynamicSharedMemoryHasTheLaunchSize) {
  std::vector<float> x(64);
  std::iota(x.begin(), x.end(), 0.f);
  float* dx = DeviceCopy(x);
  float* dout = DeviceCopy(std::vector<float>(64, 0.f));
  DynamicSharedKernel<<<1, 64, 64 * sizeof(float)>>>(dx, dout, 0);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> want(x.rbegin(), x.rend());
  EXPECT_EQ(HostCopy(dout, 64), want);
  DynamicSharedKernel<<<1, 64, 64 * sizeof(float)>>>(dx, dout, 1);
  EXPECT_THAT(OneFault(cudaErrorIllegalAddress),
              AllOf(HasSubstr("'buf'[64]"), HasSubstr("has 64 element(s)")));
  cudaFree(dx);
  cudaFree(dout);
}

TEST_F(EmulatorTest, WarpShufflesMatchCudaSemantics) {
  const int n = 64;  // two warps
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i * i % 17);
  float* dx = DeviceCopy(x);
  float* dout = DeviceCopy(std::vector<float>(n * 5, -1.f));
  ShuffleKernel<<<1, n>>>(dx, dout);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> out = HostCopy(dout, n * 5);
  for (int t = 0; t < n; ++t) {
    const int w = t / 32, lane = t % 32;
    float warp_sum = 0.f;
    for (int l = 0; l < 32; ++l) warp_sum += x[w * 32 + l];
    EXPECT_EQ(out[t * 5 + 0], warp_sum) << "xor butterfly, thread " << t;
    EXPECT_EQ(out[t * 5 + 1], lane == 0 ? warp_sum : 0.f) << "down-shift sum, thread " << t;
    EXPECT_EQ(out[t * 5 + 2], x[w * 32 + 3]) << "broadcast, thread " << t;
    EXPECT_EQ(out[t * 5 + 3], x[lane == 0 ? t : t - 1]) << "up-shift, thread " << t;
    EXPECT_EQ(out[t * 5 + 4], x[w * 32 + (lane ^ 8)]) << "xor in 16-lane segments, thread " << t;
  }
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
  cudaFree(dx);
  cudaFree(dout);
}

TEST_F(EmulatorTest, VotesSeeTheWholeWarp) {
  unsigned* d = DeviceCopy(std::vector<unsigned>(4, 99));
  VoteKernel<<<1, 32>>>(d);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  unsigned want_ballot = 0;
  for (int l = 0; l < 32; l += 3) want_ballot |= 1u << l;
  EXPECT_THAT(HostCopy(d, 4), ElementsAre(want_ballot, 1u, 1u, 0u));
  cudaFree(d);
}

TEST_F(EmulatorTest, ExitedLanesDoNotBlockAPartialMask) {
  int* d = DeviceCopy(std::vector<int>(16, -1));
  PartialWarpKernel<<<1, 32>>>(d);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int> want(16);
  for (int l = 0; l < 16; ++l) want[l] = l == 15 ? 30 : (l + 1) * 2;
  EXPECT_EQ(HostCopy(d, 16), want);
  cudaFree(d);
}

TEST_F(EmulatorTest, DeadlockIsReportedNotHung) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  DeadlockKernel<<<1, 32>>>(d);
  EXPECT_THAT(OneFault(cudaErrorLaunchFailure),
              AllOf(HasSubstr("deadlock"), HasSubstr("16 thread(s) wait at __syncthreads()"),
                    HasSubstr("16 wait at a warp intrinsic")));
  cuda_emu::ClearStickyError();
  // The emulator is still usable afterwards.
  IdsKernel<<<1, 32>>>(d);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(d);
}

TEST_F(EmulatorTest, AtomicsAreExactAcrossBlocks) {
  float* sum = DeviceCopy(std::vector<float>{0.f});
  unsigned long long* mn = DeviceCopy(std::vector<unsigned long long>{~0ull});
  int* count = DeviceCopy(std::vector<int>{0});
  AtomicKernel<<<40, 256>>>(sum, mn, count);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(HostCopy(sum, 1)[0], 40 * 256 * 0.5f);
  EXPECT_EQ(HostCopy(mn, 1)[0], 1ull);
  EXPECT_EQ(HostCopy(count, 1)[0], 40 * 256);
  cudaFree(sum);
  cudaFree(mn);
  cudaFree(count);
}

TEST_F(EmulatorTest, ThreadOrderChangesAScheduleDependentResult) {
  int* d = DeviceCopy(std::vector<int>(8, 0));
  OrderDependentKernel<<<1, 8>>>(d);
  EXPECT_THAT(HostCopy(d, 8), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  ASSERT_EQ(cudaMemset(d, 0, 8 * sizeof(int)), cudaSuccess);
  cuda_emu::SetThreadOrder(cuda_emu::ThreadOrder::kReverse);
  OrderDependentKernel<<<1, 8>>>(d);
  EXPECT_THAT(HostCopy(d, 8), ElementsAre(0, 1, 1, 1, 1, 1, 1, 1));
  cudaFree(d);
}

TEST_F(EmulatorTest, HostPointerArgumentIsAFault) {
  std::vector<float> host(8, 1.f);
  float* dout = DeviceCopy(std::vector<float>(8, 0.f));
  CopyKernel<<<1, 8>>>(host.data(), dout, 8);
  EXPECT_THAT(OneFault(cudaErrorIllegalAddress),
              AllOf(HasSubstr("kernel 'CopyKernel': argument 0"),
                    HasSubstr("is not a device address")));
  cudaFree(dout);
}

TEST_F(EmulatorTest, CopiesMustStayInsideTheirAllocation) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 8 * sizeof(float)), cudaSuccess);
  std::vector<float> h(9, 2.f);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 9 * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d + 1, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(h.data(), d, 8 * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue)
      << "kind says host to device, pointers say the opposite";
  EXPECT_EQ(cudaMemset(d, 0, 9 * sizeof(float)), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaFree(d + 1), cudaErrorInvalidValue);
  const size_t before = cuda_emu::DeviceBytesInUse();
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cuda_emu::DeviceBytesInUse(), before - 8 * sizeof(float));
}

TEST_F(EmulatorTest, NewDeviceMemoryIsNotZero) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 4 * sizeof(float)), cudaSuccess);
  for (float v : HostCopy(d, 4)) EXPECT_TRUE(std::isnan(v));
  cudaFree(d);
}

TEST_F(EmulatorTest, SgemmIsColumnMajorWithCublasChecks) {
  // C[m x n] = A^T[m x k] B[k x n] with A stored k x m, column-major.
  const int m = 3, n = 2, k = 4;
  std::vector<float> a(k * m), b(k * n), c(m * n, 5.f);
  for (int i = 0; i < k * m; ++i) a[i] = static_cast<float>(i + 1);
  for (int i = 0; i < k * n; ++i) b[i] = static_cast<float>(2 * i - 3);
  float *da = DeviceCopy(a), *db = DeviceCopy(b), *dc = DeviceCopy(c);
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float alpha = 2.f, beta = 1.f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, da, k, db, k, &beta, dc, m),
            CUBLAS_STATUS_SUCCESS);
  std::vector<float> want(m * n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float acc = 0.f;
      for (int p = 0; p < k; ++p) acc += a[i * k + p] * b[j * k + p];
      want[j * m + i] = alpha * acc + beta * c[j * m + i];
    }
  }
  EXPECT_EQ(HostCopy(dc, m * n), want);
  // ld below the rows of op(A), as cuBLAS checks.
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, da, k - 1, db, k, &beta, dc,
                        m),
            CUBLAS_STATUS_INVALID_VALUE);
  // B read past its allocation: an illegal address on the device.
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n + 1, k, &alpha, da, k, db, k, &beta, dc,
                        m),
            CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_THAT(OneFault(cudaErrorIllegalAddress), HasSubstr("cublasSgemm"));
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
}

// TF32 tensor-op math rounds A and B to 10-bit mantissas (to nearest,
// ties to even) and accumulates in fp32; the default mode is exact fp32.
TEST_F(EmulatorTest, Tf32MathRoundsTheOperandsToNearestEven) {
  const float u = std::ldexp(1.f, -11);  // half a TF32 ulp at 1
  // a: 1 + u (a tie: to 1), 1 + 3u (a tie: to 1 + 4u), 1 + 0.75u (to 1),
  // 1 + 2.75u (to 1 + 2u); b = 1. Each is a 1x1x1 product.
  const std::vector<float> a = {1.f + u, 1.f + 3 * u, 1.f + 0.75f * u, 1.f + 2.75f * u};
  const std::vector<float> want = {1.f, 1.f + 4 * u, 1.f, 1.f + 2 * u};
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1.f, zero = 0.f;
  float* db = DeviceCopy(std::vector<float>{1.f});
  float* dc = DeviceCopy(std::vector<float>{0.f});
  for (size_t i = 0; i < a.size(); ++i) {
    float* da = DeviceCopy(std::vector<float>{a[i]});
    ASSERT_EQ(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, da, 1, db, 1, &zero, dc, 1),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(HostCopy(dc, 1)[0], a[i]) << "fp32, case " << i;
    ASSERT_EQ(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, da, 1, db, 1, &zero, dc, 1),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(HostCopy(dc, 1)[0], want[i]) << "tf32, case " << i;
    cudaFree(da);
  }
  // Products of rounded operands accumulate in fp32: (1+3u)(1+3u) + 1*1
  // = (1+4u)^2 + 1 = 2 + 8u + 16u^2, exact in fp32.
  float* da = DeviceCopy(std::vector<float>{1.f + 3 * u, 1.f});
  float* db2 = DeviceCopy(std::vector<float>{1.f + 3 * u, 1.f});
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 2, &one, da, 1, db2, 2, &zero, dc, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(HostCopy(dc, 1)[0], 2.f + 8 * u + 16 * u * u);
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
  for (float* p : {da, db, db2, dc}) cudaFree(p);
}

TEST_F(EmulatorTest, SortPairsIsStableWithSignedKeys) {
  const std::vector<int32_t> keys = {3, -1, 2, 3, -1, 0, 2};
  const int n = static_cast<int>(keys.size());
  std::vector<int32_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  int32_t *dk = DeviceCopy(keys), *dv = DeviceCopy(iota);
  int32_t *ok = DeviceCopy(std::vector<int32_t>(n)), *ov = DeviceCopy(std::vector<int32_t>(n));
  size_t temp_bytes = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, dk, ok, dv, ov, n), cudaSuccess);
  EXPECT_GT(temp_bytes, 0u);
  void* temp = nullptr;
  ASSERT_EQ(cudaMalloc(&temp, temp_bytes), cudaSuccess);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, dk, ok, dv, ov, n), cudaSuccess);
  EXPECT_THAT(HostCopy(ok, n), ElementsAre(-1, -1, 0, 2, 2, 3, 3));
  EXPECT_THAT(HostCopy(ov, n), ElementsAre(1, 4, 5, 2, 6, 0, 3));
  size_t small = temp_bytes - 1;
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(temp, small, dk, ok, dv, ov, n),
            cudaErrorInvalidValue);
  for (void* p : {static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(ok),
                  static_cast<void*>(ov), temp}) {
    cudaFree(p);
  }
}

TEST_F(EmulatorTest, StreamsAndEventsAreInOrderNoOps) {
  cudaStream_t s = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  EXPECT_NE(e0, e1);
  std::vector<float> x(100);
  std::iota(x.begin(), x.end(), 1.f);
  float *din = nullptr, *dout = nullptr;
  ASSERT_EQ(cudaMalloc(&din, 400), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dout, 400), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(e0, s), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(din, x.data(), 400, cudaMemcpyHostToDevice, s), cudaSuccess);
  CopyKernel<<<2, 64, 0, s>>>(din, dout, 100);
  std::vector<float> y(100, 0.f);
  EXPECT_EQ(cudaMemcpyAsync(y.data(), dout, 400, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(e1, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(y, x);
  float ms = -1.f;
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaSuccess);
  EXPECT_EQ(ms, 0.f);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  cudaFree(din);
  cudaFree(dout);
}

// The stream-order checker: a GPU may run a non-blocking stream's copy
// while kernels queued earlier on the default stream still read the
// buffer it overwrites, unless an event orders them. The emulator runs
// everything at once, so it checks the ordering the calls declare.
class StreamOrderTest : public EmulatorTest {
 protected:
  void SetUp() override {
    EmulatorTest::SetUp();
    ASSERT_EQ(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaEventCreate(&read_done_), cudaSuccess);
    ASSERT_EQ(cudaEventCreate(&copied_), cudaSuccess);
    ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&staging_), 64 * sizeof(float)),
              cudaSuccess);
    for (int i = 0; i < 64; ++i) staging_[i] = static_cast<float>(i);
    in_ = DeviceCopy(std::vector<float>(64, 1.f));
    out_ = DeviceCopy(std::vector<float>(64, 0.f));
  }
  void TearDown() override {
    cudaFree(in_);
    cudaFree(out_);
    cudaFreeHost(staging_);
    cudaEventDestroy(read_done_);
    cudaEventDestroy(copied_);
    cudaStreamDestroy(copy_);
    EmulatorTest::TearDown();
  }
  cudaError_t CopyIn() {
    return cudaMemcpyAsync(in_, staging_, 64 * sizeof(float), cudaMemcpyHostToDevice, copy_);
  }
  cudaStream_t copy_ = nullptr;
  cudaEvent_t read_done_ = nullptr, copied_ = nullptr;
  float* staging_ = nullptr;
  float *in_ = nullptr, *out_ = nullptr;
};

TEST_F(StreamOrderTest, CopyOverABufferAQueuedKernelReadsIsAHazard) {
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  EXPECT_EQ(CopyIn(), cudaErrorLaunchFailure);
  EXPECT_THAT(OneFault(cudaErrorLaunchFailure),
              AllOf(HasSubstr("stream order: 'cudaMemcpyAsync' on stream"),
                    HasSubstr("writes allocation"),
                    HasSubstr("which 'CopyKernel' on the default stream reads")));
}

TEST_F(StreamOrderTest, KernelReadingBeforeTheCopyLandsIsAHazard) {
  ASSERT_EQ(CopyIn(), cudaSuccess);
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  EXPECT_THAT(OneFault(cudaErrorLaunchFailure),
              AllOf(HasSubstr("'CopyKernel' on the default stream reads"),
                    HasSubstr("which 'cudaMemcpyAsync' on stream")));
}

TEST_F(StreamOrderTest, EventsOrderTheCopyAfterTheReadAndTheNextReadAfterTheCopy) {
  for (int round = 0; round < 3; ++round) {
    CopyKernel<<<1, 64>>>(in_, out_, 64);
    ASSERT_EQ(cudaEventRecord(read_done_, nullptr), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(copy_, read_done_, 0), cudaSuccess);
    ASSERT_EQ(CopyIn(), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(copied_, copy_), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(nullptr, copied_, 0), cudaSuccess);
  }
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
  EXPECT_EQ(HostCopy(out_, 64)[63], 63.f);
}

TEST_F(StreamOrderTest, AHostSynchronizationOrdersWhatTheThreadQueuesNext) {
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(CopyIn(), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(nullptr), cudaSuccess);  // never recorded: no-op
  ASSERT_EQ(cudaStreamSynchronize(copy_), cudaSuccess);
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
}

TEST_F(StreamOrderTest, AnotherThreadsSynchronizationDoesNotOrderThisThread) {
  CopyKernel<<<1, 64>>>(in_, out_, 64);
  std::thread([] { EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess); }).join();
  // This thread never waited: the copy may overtake the kernel.
  EXPECT_EQ(CopyIn(), cudaErrorLaunchFailure);
  EXPECT_THAT(OneFault(cudaErrorLaunchFailure), HasSubstr("stream order"));
}

TEST_F(StreamOrderTest, AnEventRecordedOnAnotherThreadOrdersAcrossThreads) {
  // The double-buffered input pattern: the compute thread records, the
  // staging thread's copy stream waits.
  std::thread([&] {
    CopyKernel<<<1, 64>>>(in_, out_, 64);
    EXPECT_EQ(cudaEventRecord(read_done_, nullptr), cudaSuccess);
  }).join();
  ASSERT_EQ(cudaStreamWaitEvent(copy_, read_done_, 0), cudaSuccess);
  EXPECT_EQ(CopyIn(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_THAT(cuda_emu::TakeReports(), IsEmpty());
}

#if defined(__SANITIZE_ADDRESS__)
// Writes one element past the end when launched with n + 1 threads.
__global__ void GlobalOobKernel(float* out) { out[threadIdx.x] = 1.f; }

// Device memory is host memory with ASan's redzones: a kernel writing past
// its allocation is a heap-buffer-overflow naming the kernel.
TEST(EmulatorAsanDeathTest, OutOfBoundsDeviceWriteIsAHeapOverflow) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 8 * sizeof(float)), cudaSuccess);
  EXPECT_DEATH(
      {
        GlobalOobKernel<<<1, 9>>>(d);
        cudaDeviceSynchronize();
      },
      "heap-buffer-overflow(.|\n)*GlobalOobKernel");
  cudaFree(d);
}
#endif

}  // namespace
