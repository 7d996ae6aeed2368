// Block scheduler of the CUDA grid emulator: blocks run one after another
// on the launching host thread; the threads of a block are fibers that run
// until they finish or wait at a barrier. A fiber whose
// thread finishes takes the next thread that has not started, so a block
// without barriers runs all its threads on one fiber. Shared memory, the
// race detector and warp intrinsics live here too.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/testing/cuda_emu_device.h"
#include "kernels/testing/emulator_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MIM_EMU_ASAN 1
#else
#define MIM_EMU_ASAN 0
#endif

namespace cuda_emu::internal {

thread_local uint3 t_thread_idx;
thread_local uint3 t_block_idx;
thread_local dim3 t_block_dim;
thread_local dim3 t_grid_dim;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxReportsPerLaunch = 8;

std::string Str(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Str(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// ---- fibers ----
// A warp intrinsic switches fibers once per lane, so the switch is on the
// hot path: on x86-64 it saves the callee-saved registers and the FP
// control words and swaps stack pointers (no signal-mask system call, as
// swapcontext makes); elsewhere it is swapcontext.
#if defined(__x86_64__)
#define MIM_EMU_ASM_SWITCH 1
extern "C" void mim_cuda_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .globl mim_cuda_emu_switch
  .type mim_cuda_emu_switch,@function
mim_cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mim_cuda_emu_switch,.-mim_cuda_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#else
#define MIM_EMU_ASM_SWITCH 0
#endif

struct Fiber {
#if MIM_EMU_ASM_SWITCH
  void* sp = nullptr;  // saved stack pointer while switched out
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;  // guard page first, then kStackBytes
  const void* bottom = nullptr;  // lowest usable stack address (ASan)
  size_t size = 0;
  int tid = -1;  // logical thread running on it; -1 when idle
  void* fake_stack = nullptr;  // ASan's fake stack while switched out
};

void FiberEntry();

// The fibers of one host thread: idle ones are reused by later blocks and
// launches. Not thread-safe: used only by its host thread.
class FiberPool {
 public:
  FiberPool() { main_.tid = -1; }
  ~FiberPool() {
    for (auto& f : all_) Release(f.get());
  }
  Fiber* main() { return &main_; }
  // An idle fiber (its saved context resumes in Park) or a new one.
  Fiber* Get() {
    if (!idle_.empty()) {
      Fiber* f = idle_.back();
      idle_.pop_back();
      return f;
    }
    auto f = std::make_unique<Fiber>();
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(mem, page, PROT_NONE);  // overflow faults instead of corrupting
    f->stack = static_cast<char*>(mem);
    f->bottom = f->stack + page;
    f->size = kStackBytes;
#if MIM_EMU_ASM_SWITCH
    // The frame mim_cuda_emu_switch pops: FP control words, six registers,
    // then FiberEntry as the return address, entered with the stack
    // aligned as after a call.
    uintptr_t top = reinterpret_cast<uintptr_t>(f->stack + page + kStackBytes) & ~uintptr_t{15};
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;  // FiberEntry's (never used) return address
    *--sp = reinterpret_cast<void*>(&FiberEntry);
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    const uint32_t mxcsr = 0x1f80, fpucw = 0x037f;  // the x86-64 ABI defaults
    uint64_t words = uint64_t{fpucw} << 32 | mxcsr;
    *--sp = reinterpret_cast<void*>(words);
    f->sp = sp;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack + page;
    f->ctx.uc_stack.ss_size = kStackBytes;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, FiberEntry, 0);
#endif
    all_.push_back(std::move(f));
    return all_.back().get();
  }
  void Park(Fiber* f) { idle_.push_back(f); }
  void Unpark(Fiber* f) {
    auto it = std::find(idle_.begin(), idle_.end(), f);
    if (it != idle_.end()) idle_.erase(it);
  }
  // A fiber left suspended inside a kernel (deadlocked block): dropped.
  void Discard(Fiber* f) {
    Unpark(f);
    for (auto it = all_.begin(); it != all_.end(); ++it) {
      if (it->get() == f) {
        Release(f);
        all_.erase(it);
        return;
      }
    }
  }

 private:
  static void Release(Fiber* f) {
    if (f->stack == nullptr) return;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
#if MIM_EMU_ASAN
    // Frames left on the stack keep their redzones poisoned in ASan's
    // shadow; memory mapped here later must not inherit them.
    __asan_unpoison_memory_region(f->stack + page, kStackBytes);
#endif
    munmap(f->stack, kStackBytes + page);
    f->stack = nullptr;
  }
  Fiber main_;
  std::vector<std::unique_ptr<Fiber>> all_;
  std::vector<Fiber*> idle_;
};

// ---- per-block state ----
enum class TState : uint8_t { kUnstarted, kReady, kRunning, kBarrier, kWarp, kDone };

struct WarpState {
  uint32_t present = 0;  // lanes that exist in this block
  uint32_t exited = 0;
  uint32_t arrived = 0;  // lanes waiting at the current instruction
  uint32_t mask = 0;
  WarpOp op = WarpOp::kSync;
  int width = 32;
  uint32_t parity = 0;
  unsigned long long vals[2][32] = {};
  uint32_t participants[2] = {};
  uint32_t syncs = 0;  // completed __syncwarp()s (race detector)
};

// Race-detector record of one shared byte, valid while `block` matches
// the running block's serial (so nothing is cleared between blocks).
struct ShadowByte {
  uint64_t block = 0;
  bool written = false;
  uint32_t w_epoch = 0, w_syncs = 0;
  int32_t w_tid = -1;
  uint32_t r_epoch = 0;
  int32_t r_tid[2] = {-1, -1};
  uint32_t r_syncs[2] = {0, 0};
};

struct LaunchRun;

struct BlockRun {
  LaunchRun* launch = nullptr;
  uint3 idx{};
  int nthreads = 0;
  std::vector<TState> state;
  std::vector<Fiber*> fiber_of;
  std::vector<int> start_order;
  size_t next_start = 0;
  std::deque<int> ready;
  int done = 0;
  int at_barrier = 0;
  uint32_t epoch = 0;  // completed __syncthreads()
  std::vector<WarpState> warps;
  int current = -1;
  bool abandoned = false;
  uint64_t serial = 0;
  bool shared_ready = false;
  size_t static_used = 0;
  std::vector<std::pair<const SharedDecl*, size_t>> statics;
};

struct LaunchRun {
  const char* kernel;
  LaunchConfig cfg;
  void (*body)(void*);
  void* ctx;
  int reports = 0;
  std::set<std::tuple<const SharedDecl*, int>> reported;  // (decl, kind)
};

// Everything a host thread needs to run blocks (thread_local, so not
// shared: several host threads may launch, one kernel at a time).
struct HostThread {
  FiberPool pool;
  Fiber* current = nullptr;
  BlockRun* run = nullptr;
  uint64_t serial = 0;
  alignas(16) unsigned char arena[kMaxSharedBytes];
  std::vector<ShadowByte> shadow = std::vector<ShadowByte>(kMaxSharedBytes);
};
thread_local std::unique_ptr<HostThread> t_host;

HostThread& Host() {
  if (!t_host) t_host = std::make_unique<HostThread>();
  return *t_host;
}

std::string ThreadStr(const BlockRun& r, int tid) {
  const dim3& b = r.launch->cfg.block;
  return Str("(%d,%d,%d)", tid % static_cast<int>(b.x), tid / static_cast<int>(b.x) % static_cast<int>(b.y),
             tid / static_cast<int>(b.x * b.y));
}

std::string Where(const BlockRun& r) {
  return Str("kernel '%s' block (%u,%u,%u)", r.launch->kernel, r.idx.x, r.idx.y, r.idx.z);
}

// A fault in device code: sticky, at most kMaxReportsPerLaunch per launch.
void DeviceFault(BlockRun& r, cudaError_t code, const std::string& what) {
  // The first report made the error sticky; later ones add little.
  if (r.launch->reports++ >= kMaxReportsPerLaunch) return;
  Fault(code, Where(r) + ": " + what);
}

void SetCurrent(BlockRun& r, int tid) {
  r.current = tid;
  r.state[tid] = TState::kRunning;
  const dim3& b = r.launch->cfg.block;
  t_thread_idx = {tid % b.x, tid / b.x % b.y, tid / (b.x * b.y)};
}

void SwitchTo(Fiber* from, Fiber* to) {
  HostThread& h = Host();
  h.current = to;
#if MIM_EMU_ASAN
  __sanitizer_start_switch_fiber(&from->fake_stack, to->bottom, to->size);
#endif
#if MIM_EMU_ASM_SWITCH
  mim_cuda_emu_switch(&from->sp, to->sp);
#else
  swapcontext(&from->ctx, &to->ctx);
#endif
#if MIM_EMU_ASAN
  const void* old_bottom = nullptr;
  size_t old_size = 0;
  __sanitizer_finish_switch_fiber(from->fake_stack, &old_bottom, &old_size);
#endif
}

// The calling fiber (`self`) cannot go on: its thread waits, or it has no
// thread. Runs something else; returns when `self` is resumed.
void Dispatch(Fiber* self) {
  HostThread& h = Host();
  BlockRun& r = *h.run;
  for (;;) {
    if (!r.ready.empty() && !r.abandoned) {
      const int tid = r.ready.front();
      r.ready.pop_front();
      Fiber* f = r.fiber_of[tid];
      SetCurrent(r, tid);
      if (f != self) SwitchTo(self, f);
      return;
    }
    if (r.next_start < r.start_order.size() && !r.abandoned) {
      if (self->tid < 0) {  // an idle fiber takes the thread itself
        h.pool.Unpark(self);
        return;
      }
      SwitchTo(self, h.pool.Get());
      return;
    }
    if (r.done == r.nthreads || r.abandoned) {
      SwitchTo(self, h.pool.main());
      return;
    }
    // Nothing can run and not every thread has finished: on a GPU the
    // block would hang.
    std::string at_barrier, at_warp;
    int nb = 0, nw = 0;
    for (int t = 0; t < r.nthreads; ++t) {
      if (r.state[t] == TState::kBarrier && nb++ < 4) at_barrier += " " + ThreadStr(r, t);
      if (r.state[t] == TState::kWarp && nw++ < 4) at_warp += " " + ThreadStr(r, t);
    }
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("deadlock: %d thread(s) wait at __syncthreads() (%s%s) while %d wait at a "
                    "warp intrinsic (%s%s) and %d have exited; a barrier or warp intrinsic is "
                    "not reached by every thread it waits for",
                    nb, at_barrier.c_str(), nb > 4 ? " ..." : "", nw, at_warp.c_str(),
                    nw > 4 ? " ..." : "", r.done));
    r.abandoned = true;
  }
}

void ReleaseBarrier(BlockRun& r, int me) {
  ++r.epoch;
  r.at_barrier = 0;
  const bool reverse = CurrentThreadOrder() == ThreadOrder::kReverse;
  for (int i = 0; i < r.nthreads; ++i) {
    const int t = reverse ? r.nthreads - 1 - i : i;
    if (t != me && r.state[t] == TState::kBarrier) {
      r.state[t] = TState::kReady;
      r.ready.push_back(t);
    }
  }
}

bool WarpComplete(const WarpState& w) {
  const uint32_t expected = w.mask & w.present & ~w.exited;
  return (w.arrived & expected) == expected;
}

void ReleaseWarp(BlockRun& r, int warp, int me) {
  WarpState& w = r.warps[warp];
  const uint32_t p = w.parity;
  w.participants[p] = w.arrived;
  w.parity ^= 1;
  w.arrived = 0;
  if (w.op == WarpOp::kSync) ++w.syncs;
  const bool reverse = CurrentThreadOrder() == ThreadOrder::kReverse;
  for (int i = 0; i < 32; ++i) {
    const int lane = reverse ? 31 - i : i;
    const int t = warp * 32 + lane;
    if (t != me && (w.participants[p] >> lane & 1u) && r.state[t] == TState::kWarp) {
      r.state[t] = TState::kReady;
      r.ready.push_back(t);
    }
  }
}

void ThreadExited(BlockRun& r, int tid) {
  r.state[tid] = TState::kDone;
  ++r.done;
  WarpState& w = r.warps[tid / 32];
  w.exited |= 1u << (tid % 32);
  if (w.arrived != 0 && WarpComplete(w)) ReleaseWarp(r, tid / 32, -1);
  if (r.at_barrier > 0 && r.at_barrier == r.nthreads - r.done) ReleaseBarrier(r, -1);
}

void FiberEntry() {
#if MIM_EMU_ASAN
  const void* old_bottom = nullptr;
  size_t old_size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &old_bottom, &old_size);
  // The first fiber is always entered from the launching thread's stack:
  // that is how ASan learns where to switch back to.
  Fiber* m = Host().pool.main();
  if (m->bottom == nullptr) {
    m->bottom = old_bottom;
    m->size = old_size;
  }
#endif
  for (;;) {
    HostThread& h = Host();
    Fiber* self = h.current;
    BlockRun& r = *h.run;
    if (r.next_start < r.start_order.size() && !r.abandoned) {
      const int tid = r.start_order[r.next_start++];
      self->tid = tid;
      r.fiber_of[tid] = self;
      SetCurrent(r, tid);
      r.launch->body(r.launch->ctx);
      ThreadExited(r, tid);
      self->tid = -1;
      continue;
    }
    h.pool.Park(self);
    Dispatch(self);
  }
}

void RunBlock(HostThread& h, LaunchRun& l, uint3 idx) {
  const dim3& b = l.cfg.block;
  BlockRun r;
  r.launch = &l;
  r.idx = idx;
  r.nthreads = static_cast<int>(b.x * b.y * b.z);
  r.state.assign(r.nthreads, TState::kUnstarted);
  r.fiber_of.assign(r.nthreads, nullptr);
  r.start_order.resize(r.nthreads);
  for (int i = 0; i < r.nthreads; ++i) r.start_order[i] = i;
  if (CurrentThreadOrder() == ThreadOrder::kReverse) {
    std::reverse(r.start_order.begin(), r.start_order.end());
  }
  r.warps.resize((r.nthreads + 31) / 32);
  for (int t = 0; t < r.nthreads; ++t) r.warps[t / 32].present |= 1u << (t % 32);
  r.serial = ++h.serial;
  h.run = &r;
  t_block_idx = idx;
  SwitchTo(h.pool.main(), h.pool.Get());
  if (r.abandoned) {
    for (int t = 0; t < r.nthreads; ++t) {
      if (r.state[t] != TState::kDone && r.state[t] != TState::kUnstarted &&
          r.fiber_of[t] != nullptr) {
        h.pool.Discard(r.fiber_of[t]);
      }
    }
  }
  h.run = nullptr;
}

BlockRun& Running(const char* what) {
  HostThread& h = Host();
  if (h.run == nullptr) {
    std::fprintf(stderr, "cuda_emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *h.run;
}

// Prepares the block's shared memory on first use: dynamic part first,
// everything poisoned with 0xff (NaN as float: reads of unwritten shared
// memory also show in results).
void TouchShared(HostThread& h, BlockRun& r) {
  if (r.shared_ready) return;
  r.shared_ready = true;
  r.static_used = r.launch->cfg.shared_bytes;
  std::memset(h.arena, 0xff, sizeof(h.arena));
}

void CheckShadow(HostThread& h, BlockRun& r, const SharedDecl& d, size_t decl_base,
                 size_t off, size_t bytes, bool write) {
  const int me = r.current;
  const int warp = me / 32;
  const uint32_t syncs = r.warps[warp].syncs;
  // Ordered: the same thread, or a lane of this warp before a __syncwarp.
  auto ordered = [&](int32_t tid, uint32_t their_syncs) {
    return tid == me || (tid / 32 == warp && their_syncs != syncs);
  };
  for (size_t i = off; i < off + bytes; ++i) {
    ShadowByte& s = h.shadow[i];
    if (s.block != r.serial) s = ShadowByte{r.serial};
    const char* kind = nullptr;
    int other = -1;
    int kind_id = 0;
    if (!write && !s.written) {
      kind = "reads shared memory no thread of this block has written";
      kind_id = 1;
    } else if (s.written && s.w_epoch == r.epoch && !ordered(s.w_tid, s.w_syncs)) {
      kind = write ? "write-after-write race" : "read-after-write race";
      other = s.w_tid;
      kind_id = write ? 2 : 3;
    } else if (write && s.r_epoch == r.epoch) {
      for (int k = 0; k < 2; ++k) {
        if (s.r_tid[k] >= 0 && !ordered(s.r_tid[k], s.r_syncs[k])) {
          kind = "write-after-read race";
          other = s.r_tid[k];
          kind_id = 4;
          break;
        }
      }
    }
    if (kind != nullptr && r.launch->reported.emplace(&d, kind_id).second) {
      const size_t rel = i - decl_base;
      std::string what = Str("%s on shared '%s' (%s:%d) byte %zu (element %zu): ", kind, d.name,
                             d.file, d.line, rel, rel / bytes);
      if (other >= 0) {
        what += Str("%s by thread %s, then %s by thread %s with no barrier between (after %u "
                    "__syncthreads())",
                    kind_id == 4 ? "read" : "written", ThreadStr(r, other).c_str(),
                    write ? "written" : "read", ThreadStr(r, me).c_str(), r.epoch);
      } else {
        what += Str("thread %s", ThreadStr(r, me).c_str());
      }
      DeviceFault(r, cudaErrorLaunchFailure, what);
    }
    if (write) {
      s.written = true;
      s.w_epoch = r.epoch;
      s.w_tid = me;
      s.w_syncs = syncs;
    } else {
      if (s.r_epoch != r.epoch) {
        s.r_epoch = r.epoch;
        s.r_tid[0] = s.r_tid[1] = -1;
      }
      for (int k = 0; k < 2; ++k) {
        if (s.r_tid[k] == me) {
          s.r_syncs[k] = syncs;
          break;
        }
        if (s.r_tid[k] < 0) {
          s.r_tid[k] = me;
          s.r_syncs[k] = syncs;
          break;
        }
      }
    }
  }
}

}  // namespace

// ---- entry points used by the device header ----

void Launch(const char* kernel, const LaunchConfig& cfg, void (*body)(void*), void* ctx,
            int bad_pointer_arg, const void* bad_pointer, const Operand* operands,
            int num_operands) {
  HostThread& h = Host();
  if (h.run != nullptr) {
    std::fprintf(stderr, "cuda_emu: kernel '%s' launched from device code (not emulated)\n",
                 kernel);
    std::abort();
  }
  const dim3 g = cfg.grid, b = cfg.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
      threads > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu ||
      g.y > 65535 || g.z > 65535) {
    CallError(cudaErrorInvalidConfiguration,
              Str("kernel '%s': launch configuration grid (%u,%u,%u) block (%u,%u,%u) is "
                  "invalid (blocks of 1..1024 threads, z <= 64; grid x < 2^31, y, z <= 65535, "
                  "none 0)",
                  kernel, g.x, g.y, g.z, b.x, b.y, b.z));
    return;
  }
  if (cfg.shared_bytes > kMaxSharedBytes) {
    CallError(cudaErrorInvalidValue,
              Str("kernel '%s': %zu bytes of dynamic shared memory, more than the %zu a "
                  "launch gets without cudaFuncSetAttribute",
                  kernel, cfg.shared_bytes, kMaxSharedBytes));
    return;
  }
  std::lock_guard<std::mutex> lock(DeviceMutex());
  if (StickyError() != cudaSuccess) {
    CallError(StickyError(), "");
    return;
  }
  CountLaunch();
  if (bad_pointer_arg >= 0) {
    Fault(cudaErrorIllegalAddress,
          Str("kernel '%s': argument %d (%p) is not a device address (a host pointer faults "
              "on the GPU)",
              kernel, bad_pointer_arg, bad_pointer));
    return;
  }
  if (std::string hazard = StreamOp(cfg.stream, kernel, operands, num_operands);
      !hazard.empty()) {
    Fault(cudaErrorLaunchFailure, hazard);
    return;
  }
  LaunchRun l{kernel, cfg, body, ctx, 0, {}};
  t_block_dim = b;
  t_grid_dim = g;
  for (unsigned z = 0; z < g.z; ++z) {
    for (unsigned y = 0; y < g.y; ++y) {
      for (unsigned x = 0; x < g.x; ++x) {
        RunBlock(h, l, uint3{x, y, z});
        if (StickyError() != cudaSuccess) return;  // a faulting kernel stops
      }
    }
  }
}

void SyncThreads() {
  HostThread& h = Host();
  BlockRun& r = Running("__syncthreads()");
  const int me = r.current;
  r.state[me] = TState::kBarrier;
  if (++r.at_barrier == r.nthreads - r.done) {
    ReleaseBarrier(r, me);
    r.state[me] = TState::kRunning;
    return;
  }
  Dispatch(h.current);
}

unsigned long long WarpExchange(WarpOp op, unsigned mask, unsigned long long bits, int arg,
                                int width, unsigned* participants) {
  HostThread& h = Host();
  BlockRun& r = Running("a warp intrinsic");
  const int me = r.current;
  const int warp = me / 32, lane = me % 32;
  WarpState& w = r.warps[warp];
  const unsigned long long own = bits;
  if (!(mask >> lane & 1u)) {
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("thread %s calls a warp intrinsic with mask 0x%08x, which does not "
                    "include its lane %d",
                    ThreadStr(r, me).c_str(), mask, lane));
    return own;
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("thread %s: shuffle width %d is not a power of 2 in [1, 32]",
                    ThreadStr(r, me).c_str(), width));
    return own;
  }
  if (w.arrived == 0) {
    w.op = op;
    w.mask = mask;
    w.width = width;
  } else if (w.op != op || w.mask != mask) {
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("warp %d: lanes meet at different warp intrinsics (op %d mask 0x%08x vs "
                    "op %d mask 0x%08x from thread %s): divergent __*_sync calls",
                    warp, static_cast<int>(w.op), w.mask, static_cast<int>(op), mask,
                    ThreadStr(r, me).c_str()));
  }
  const uint32_t p = w.parity;
  w.vals[p][lane] = bits;
  w.arrived |= 1u << lane;
  if (WarpComplete(w)) {
    ReleaseWarp(r, warp, me);
    r.state[me] = TState::kRunning;
  } else {
    r.state[me] = TState::kWarp;
    Dispatch(h.current);
  }
  const uint32_t took_part = w.participants[p];
  if (participants != nullptr) *participants = took_part;
  if (op == WarpOp::kSync) return 0;
  if (op == WarpOp::kVote) {
    unsigned long long ballot = 0;
    for (int l = 0; l < 32; ++l) {
      if ((took_part >> l & 1u) && w.vals[p][l] != 0) ballot |= 1ull << l;
    }
    return ballot;
  }
  const int seg = lane & ~(width - 1);
  int src = lane;
  switch (op) {
    case WarpOp::kShfl:
      src = seg + ((arg % width) + width) % width;
      break;
    case WarpOp::kShflUp:
      src = lane - arg >= seg ? lane - arg : lane;
      break;
    case WarpOp::kShflDown:
      src = lane + arg < seg + width ? lane + arg : lane;
      break;
    case WarpOp::kShflXor:
      src = (lane ^ arg) < seg + width ? lane ^ arg : lane;
      break;
    default:
      break;
  }
  if (src < 0 || src > 31 || !(took_part >> src & 1u)) {
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("thread %s shuffles from lane %d, which did not take part (exited or "
                    "outside the mask 0x%08x): undefined on a GPU",
                    ThreadStr(r, me).c_str(), src, mask));
    return own;
  }
  return w.vals[p][src];
}

void* StaticSharedStorage(const SharedDecl& decl, size_t bytes, size_t align) {
  HostThread& h = Host();
  BlockRun& r = Running("a __shared__ declaration");
  TouchShared(h, r);
  for (const auto& [d, off] : r.statics) {
    if (d == &decl) return h.arena + off;
  }
  const size_t off = (r.static_used + align - 1) / align * align;
  if (off + bytes > kMaxSharedBytes) {
    DeviceFault(r, cudaErrorLaunchFailure,
                Str("shared '%s' (%s:%d): %zu bytes do not fit: %zu of the %zu bytes of "
                    "shared memory per block are already used",
                    decl.name, decl.file, decl.line, bytes, r.static_used, kMaxSharedBytes));
    static thread_local std::vector<unsigned char> sink;
    sink.assign(bytes + align, 0);
    return sink.data();
  }
  r.statics.emplace_back(&decl, off);
  r.static_used = off + bytes;
  return h.arena + off;
}

void* DynamicSharedStorage(size_t* bytes) {
  HostThread& h = Host();
  BlockRun& r = Running("an extern __shared__ declaration");
  TouchShared(h, r);
  *bytes = r.launch->cfg.shared_bytes;
  return h.arena;
}

void OnSharedAccess(const SharedDecl& decl, const void* p, size_t bytes, bool write) {
  HostThread& h = Host();
  BlockRun& r = Running("a shared-memory access");
  const size_t off = static_cast<size_t>(static_cast<const unsigned char*>(p) - h.arena);
  size_t base = 0;  // dynamic declarations start at 0
  for (const auto& [d, o] : r.statics) {
    if (d == &decl) base = o;
  }
  CheckShadow(h, r, decl, base, off, bytes, write);
}

void* OnSharedOutOfBounds(const SharedDecl& decl, long long index, long long extent,
                          size_t bytes) {
  BlockRun& r = Running("a shared-memory access");
  DeviceFault(r, cudaErrorIllegalAddress,
              Str("out-of-bounds shared-memory index: thread %s uses '%s'[%lld] but '%s' "
                  "(%s:%d) has %lld element(s) in that dimension",
                  ThreadStr(r, r.current).c_str(), decl.name, index, decl.name, decl.file,
                  decl.line, extent));
  static thread_local std::vector<unsigned char> sink;
  if (sink.size() < bytes + 16) sink.resize(bytes + 16);
  return sink.data();
}

}  // namespace cuda_emu::internal

int __all_sync(unsigned mask, int pred) {
  unsigned took_part = 0;
  const unsigned long long ballot = ::cuda_emu::internal::WarpExchange(
      ::cuda_emu::internal::WarpOp::kVote, mask, pred != 0, 0, 32, &took_part);
  return ballot == took_part;
}

unsigned __activemask() {
  auto& r = ::cuda_emu::internal::Running("__activemask()");
  const auto& w = r.warps[r.current / 32];
  return w.present & ~w.exited;
}
