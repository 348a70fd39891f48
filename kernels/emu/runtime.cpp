// The emulator's scheduler: a pool of OS worker threads runs the blocks of a
// grid; each worker runs one block at a time, with one fiber per CUDA thread,
// switching fibers only at barriers, warp collectives and thread exit. Errors
// (divergent barriers, collective mismatches, faults) abort the block and are
// returned by the launch instead of hanging or crashing.
#include <signal.h>
#include <setjmp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"
#include "fiber.h"
#include "internal.h"

// Dynamic shared memory: kernels declare `extern __shared__ T vlk_smem[];`.
// 227 KiB, the most a Hopper block may use, in every OS thread's TLS.
static constexpr size_t kMaxDynSmem = 227 * 1024;
alignas(128) __thread unsigned char vlk_smem[kMaxDynSmem];

namespace vlk_emu {

__thread ThreadState* cur_thread;
__thread BlockState* cur_block;

namespace {

enum class St : uint8_t { Ready, Barrier, Warp, Done };

struct Copy { char* dst; const char* src; int bytes, src_bytes; unsigned group; };
constexpr unsigned kUncommitted = ~0u;

struct Fiber : ThreadState {
  Context ctx;
  Stack stack;
  unsigned lin = 0;          // linear thread index in the block
  const char* file = "";     // call site of the collective it waits in
  int line = 0;
  unsigned bar_count = 0;    // result of the last barrier (__syncthreads_count)
  std::vector<Copy> copies;  // cp.async not yet performed
  unsigned groups = 0;       // cp.async groups committed so far
};

// Scheduling state of a fiber, kept in a dense array apart from the fibers:
// the scheduler and the collectives scan it on every switch.
struct Wait {
  St st;
  Op op;        // collective it waits in (St::Warp)
  unsigned mask;
  bool same(const Wait& o) const { return st == St::Warp && op == o.op && mask == o.mask; }
};

// Lanes of one warp waiting in the same collective (same op and mask).
struct Group {
  Op op;
  unsigned mask, need, arrived;
};
struct Warp {
  std::vector<Group> groups;  // pending collectives, disjoint masks
  unsigned exited = 0;        // lanes that have returned
};

struct Launch {
  const char* name;
  void (*body)(void*);
  void* ctx;
  vlk_dim3 grid, block;
  size_t shmem;
  unsigned nthreads;
  uint64_t nblocks;
  bool reverse;  // run threads in descending order (VLK_EMU_REVERSE=1)
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string err;
  unsigned workers_done = 0;  // guarded by the pool mutex
};

size_t env_size(const char* name, size_t dflt) {
  const char* e = std::getenv(name);
  const long v = e ? std::atol(e) : 0;
  return v > 0 ? size_t(v) : dflt;
}

struct Worker : BlockState {
  std::vector<Fiber*> f;
  std::vector<Wait> ws;  // ws[i] belongs to f[i]
  std::vector<Warp> warps;
  unsigned n = 0, cur = 0, done = 0, first_done = 0, at_barrier = 0, bar_count = 0;
  const char* bar_file = "";
  int bar_line = 0;
  Context sched;
  const Launch* L = nullptr;
  bool failed = false;
  volatile sig_atomic_t in_block = 0;
  sigjmp_buf jb;
  char msg[1024];

  Fiber* me() { return f[cur]; }

  void vformat(const Fiber* t, const char* fmt, va_list ap) {
    int k = std::snprintf(msg, sizeof msg, "kernel %s: block (%u,%u,%u), thread (%u,%u,%u): ",
                          L->name, idx.x, idx.y, idx.z, t->tid.x, t->tid.y, t->tid.z);
    std::vsnprintf(msg + k, sizeof msg - size_t(k), fmt, ap);
  }
  void format(const Fiber* t, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vformat(t, fmt, ap);
    va_end(ap);
  }
  // Reports an error as thread t and abandons the block (back to run_block).
  [[noreturn]] void fail(const Fiber* t, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vformat(t, fmt, ap);
    va_end(ap);
    failed = true;
    context_switch(me()->ctx, sched);
    __builtin_unreachable();
  }

  // Called by the running fiber once it is no longer Ready: resumes the next
  // Ready fiber in round-robin order (descending with L->reverse), or the
  // scheduler when there is none (block finished, or deadlocked).
  void next() {
    Fiber* self = me();
    const unsigned step = L->reverse ? n - 1 : 1;
    for (unsigned k = 1, j = cur; k <= n; ++k) {
      j = j + step >= n ? j + step - n : j + step;
      if (ws[j].st != St::Ready) continue;
      if (j == cur) return;
      cur = j;
      cur_thread = f[j];
      // The switch's pops miss the cache; start loading the stack top of
      // the fiber most likely to run after this one.
#if VLK_EMU_ASM_SWITCH
      const Fiber* after = f[j + step >= n ? j + step - n : j + step];
      __builtin_prefetch(after->ctx.sp);
      __builtin_prefetch(static_cast<const char*>(after->ctx.sp) + 64);
#endif
      context_switch(self->ctx, f[j]->ctx);
      return;
    }
    context_switch(self->ctx, sched);
  }

  bool run_block(uint64_t b);
  void run_launch(Launch& launch);
  void diagnose_deadlock();
};

__thread Worker* cur_worker;

void perform(const Copy& c) {
  std::memcpy(c.dst, c.src, size_t(c.src_bytes));
  std::memset(c.dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
}

// Every fiber starts here and ends in the final next(): the kernel returning
// is the CUDA thread exiting.
void fiber_main() {
  Worker& w = *cur_worker;
  w.L->body(w.L->ctx);
  Fiber* t = w.me();
  for (const Copy& c : t->copies) perform(c);
  t->copies.clear();
  w.ws[t->lin].st = St::Done;
  if (w.done++ == 0) w.first_done = t->lin;
  if (w.at_barrier)
    w.fail(t, "exited while %u other thread(s) wait at __syncthreads() (%s:%d); every thread of "
              "the block must reach each barrier",
           w.at_barrier, w.bar_file, w.bar_line);
  const unsigned lane = t->lin & 31, base = t->lin - lane;
  Warp& wp = w.warps[t->lin >> 5];
  wp.exited |= 1u << lane;
  for (const Group& g : wp.groups) {
    if (!(g.mask >> lane & 1)) continue;
    const Fiber* k = w.f[base + unsigned(__builtin_ctz(g.arrived))];
    w.fail(t, "exited while lane %u waits for it in %s(mask=0x%08x) at %s:%d", k->lin & 31,
           op_name(g.op), g.mask, k->file, k->line);
  }
  w.next();
  __builtin_unreachable();
}

bool Worker::run_block(uint64_t b) {
  const uint64_t gx = L->grid.x, gy = L->grid.y;
  idx = uint3{unsigned(b % gx), unsigned(b / gx % gy), unsigned(b / (gx * gy))};
  std::memset(vlk_smem, 0xFF, L->shmem);  // never-written shared memory reads as NaN
  for (unsigned i = 0; i < n; ++i) {
    Fiber* t = f[i];
    t->tid = uint3{i % dim.x, i / dim.x % dim.y, i / (dim.x * dim.y)};
    t->lin = i;
    ws[i] = Wait{St::Ready, Op::None, 0};
    t->copies.clear();
    t->groups = 0;
    context_init(t->ctx, t->stack, i, fiber_main);
  }
  for (unsigned i = 0; i < (n + 31) / 32; ++i) {
    warps[i].groups.clear();
    warps[i].exited = 0;
  }
  cur = done = at_barrier = 0;
  failed = false;
  if (sigsetjmp(jb, 1)) return false;  // a fault in a fiber: msg is set
  in_block = 1;
  cur = L->reverse ? n - 1 : 0;
  cur_thread = f[cur];
  context_switch(sched, f[cur]->ctx);
  in_block = 0;
  if (failed) return false;
  if (done < n) {
    diagnose_deadlock();
    return false;
  }
  return true;
}

// No fiber can run, yet some have not exited: some lane waits in a warp
// collective for a lane that is elsewhere. Name both.
void Worker::diagnose_deadlock() {
  for (unsigned i = 0; i < n; ++i) {
    const Wait& t = ws[i];
    if (t.st != St::Warp) continue;
    const unsigned base = i & ~31u;
    for (unsigned j = 0; j < 32 && base + j < n; ++j) {
      const Wait& g = ws[base + j];
      if (!(t.mask >> j & 1) || g.same(t)) continue;
      char where[256];
      if (g.st == St::Barrier)
        std::snprintf(where, sizeof where, "is at __syncthreads() (%s:%d)", bar_file, bar_line);
      else
        std::snprintf(where, sizeof where, "waits in %s(mask=0x%08x) at %s:%d", op_name(g.op),
                      g.mask, f[base + j]->file, f[base + j]->line);
      format(f[i], "lane %u waits in %s(mask=0x%08x) at %s:%d, but lane %u of that mask %s "
                   "(all lanes of the mask must execute the same warp collective)",
             i & 31, op_name(t.op), t.mask, f[i]->file, f[i]->line, j, where);
      return;
    }
  }
  format(f[0], "deadlock: no thread can make progress");
}

void Worker::run_launch(Launch& launch) {
  L = &launch;
  grid = dim3(launch.grid.x, launch.grid.y, launch.grid.z);
  dim = dim3(launch.block.x, launch.block.y, launch.block.z);
  n = launch.nthreads;
  static const size_t stack = env_size("VLK_EMU_STACK_KB", 128) * 1024;
  while (f.size() < n) {
    f.push_back(new Fiber());
    f.back()->stack = stack_alloc(stack);
  }
  ws.resize(f.size());
  warps.resize((f.size() + 31) / 32);
  while (!launch.failed.load(std::memory_order_relaxed)) {
    const uint64_t b = launch.next.fetch_add(1);
    if (b >= launch.nblocks) break;
    if (!run_block(b)) {
      std::lock_guard<std::mutex> lk(launch.mu);
      if (!launch.failed) launch.err = msg;
      launch.failed = true;
    }
  }
}

// ---- Faults: SIGSEGV/SIGBUS inside a kernel become a launch error ------------

struct sigaction old_segv, old_bus;

void on_fault(int sig, siginfo_t* si, void* uctx) {
  Worker* w = cur_worker;
  if (w && w->in_block) {
    w->in_block = 0;
    const Fiber* t = w->me();
    char what[256];
    if (t->stack.contains_guard(si->si_addr))
      std::snprintf(what, sizeof what, "stack overflow of the emulated thread (raise VLK_EMU_STACK_KB)");
    else if (!describe_address(si->si_addr, what, sizeof what))
      std::snprintf(what, sizeof what, "invalid memory access at %p", si->si_addr);
    w->format(t, "%s (%s)", what, sig == SIGSEGV ? "SIGSEGV" : "SIGBUS");
    siglongjmp(w->jb, 1);
  }
  // Not a kernel's fault: hand it to the previous handler (e.g. Rust's
  // stack-overflow reporter), or re-fault with the default action.
  const struct sigaction& old = sig == SIGSEGV ? old_segv : old_bus;
  if (old.sa_flags & SA_SIGINFO) {
    old.sa_sigaction(sig, si, uctx);
  } else if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
    signal(sig, SIG_DFL);
  } else {
    old.sa_handler(sig);
  }
}

void install_fault_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
}

// ---- Worker pool -------------------------------------------------------------

struct Pool {
  std::mutex launch_mu;  // one launch at a time
  std::mutex mu;
  std::condition_variable cv, cv_done;
  Launch* job = nullptr;
  uint64_t gen = 0;
  unsigned nworkers;

  Pool() {
    // Default capped at 16: each worker may hold 1024 fiber stacks, i.e. 2048
    // memory mappings (stack + guard page), against Linux's 65530 per process.
    const unsigned hw = std::thread::hardware_concurrency();
    nworkers = unsigned(env_size("VLK_EMU_THREADS", std::min(16u, std::max(1u, hw))));
    install_fault_handler();
    for (unsigned i = 0; i < nworkers; ++i) std::thread([this] { work(); }).detach();
  }

  void work() {
    Worker w;
    cur_worker = &w;
    cur_block = &w;
    // Faults on an overflowed fiber stack need a stack of their own.
    static constexpr size_t kAltStack = 64 * 1024;
    stack_t alt{};
    alt.ss_sp = new char[kAltStack];
    alt.ss_size = kAltStack;
    sigaltstack(&alt, nullptr);
    uint64_t seen = 0;
    for (;;) {
      Launch* l;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return gen != seen; });
        seen = gen;
        l = job;
      }
      w.run_launch(*l);
      std::lock_guard<std::mutex> lk(mu);
      if (++l->workers_done == nworkers) cv_done.notify_all();
    }
  }
};

// Leaked: detached workers may still wait on its mutex during process exit.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

// ---- Operations called from kernels (declared in runtime.h) -------------------

int syncthreads(const char* file, int line, int pred) {
  Worker& w = *cur_worker;
  Fiber* t = w.me();
  if (w.done)
    w.fail(t, "__syncthreads() at %s:%d after thread (%u,%u,%u) exited; every thread of the "
              "block must reach each barrier",
           file, line, w.f[w.first_done]->tid.x, w.f[w.first_done]->tid.y, w.f[w.first_done]->tid.z);
  if (w.at_barrier == 0) {
    w.bar_file = file;
    w.bar_line = line;
    w.bar_count = 0;
  } else if (line != w.bar_line || (file != w.bar_file && std::strcmp(file, w.bar_file) != 0)) {
    w.fail(t, "divergent __syncthreads(): this thread is at %s:%d while %u other thread(s) wait at "
              "%s:%d",
           file, line, w.at_barrier, w.bar_file, w.bar_line);
  }
  w.bar_count += pred != 0;
  if (++w.at_barrier == w.n) {  // last one in releases everybody
    w.at_barrier = 0;
    for (unsigned i = 0; i < w.n; ++i) {
      if (w.ws[i].st == St::Barrier) w.ws[i].st = St::Ready;
      w.f[i]->bar_count = w.bar_count;
    }
    return int(w.bar_count);
  }
  w.ws[t->lin].st = St::Barrier;
  w.next();
  return int(t->bar_count);
}

void collective(Op op, unsigned mask, const char* file, int line) {
  Worker& w = *cur_worker;
  Fiber* t = w.me();
  const unsigned lane = t->lin & 31, base = t->lin - lane;
  if (!(mask >> lane & 1))
    w.fail(t, "%s at %s:%d: mask 0x%08x does not include the calling lane %u", op_name(op), file,
           line, mask, lane);
  const unsigned exist = w.n - base >= 32 ? ~0u : (1u << (w.n - base)) - 1;
  const unsigned need = mask & exist;
  Warp& wp = w.warps[t->lin >> 5];
  if (need & wp.exited)
    w.fail(t, "%s(mask=0x%08x) at %s:%d: lane %u of the mask has already exited", op_name(op),
           mask, file, line, unsigned(__builtin_ctz(need & wp.exited)));
  size_t gi = 0;
  while (gi < wp.groups.size() && wp.groups[gi].mask != mask) ++gi;
  if (gi == wp.groups.size()) {
    wp.groups.push_back(Group{op, mask, need, 0});
  } else if (wp.groups[gi].op != op) {
    // The waiting lanes need this lane in their collective: they never complete.
    const Fiber* k = w.f[base + unsigned(__builtin_ctz(wp.groups[gi].arrived))];
    w.fail(t, "%s(mask=0x%08x) at %s:%d, while lane %u waits in %s with the same mask at %s:%d "
              "(all lanes of the mask must execute the same warp collective)",
           op_name(op), mask, file, line, k->lin & 31, op_name(wp.groups[gi].op), k->file, k->line);
  }
  Wait* wl = &w.ws[base];
  if ((wp.groups[gi].arrived |= 1u << lane) != need) {  // wait; the last lane computes our result
    wl[lane] = Wait{St::Warp, op, mask};
    t->file = file;
    t->line = line;
    w.next();
    return;
  }
  wp.groups[gi] = wp.groups.back();
  wp.groups.pop_back();
  Lane* lanes[32] = {};
  for (unsigned m = need; m; m &= m - 1) {
    const unsigned j = unsigned(__builtin_ctz(m));
    lanes[j] = &w.f[base + j]->lane;
  }
  char err[512];
  if (!warp_compute(op, lanes, need, err, sizeof err))
    w.fail(t, "%s(mask=0x%08x) at %s:%d: %s", op_name(op), mask, file, line, err);
  for (unsigned m = need; m; m &= m - 1) wl[__builtin_ctz(m)] = Wait{St::Ready, Op::None, 0};
}

unsigned active_mask() {
  Worker& w = *cur_worker;
  const unsigned base = w.me()->lin & ~31u;
  unsigned m = 0;
  for (unsigned j = 0; j < 32 && base + j < w.n; ++j)
    if (w.ws[base + j].st != St::Done) m |= 1u << j;
  return m;
}

// cp.async is deferred until the wait that covers it, so a missing or too
// weak cp.async.wait_group shows up as stale shared memory, as on a GPU.
void cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line) {
  Worker& w = *cur_worker;
  Fiber* t = w.me();
  const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  if (d % unsigned(bytes) || s % unsigned(bytes))
    w.fail(t, "cp.async of %d bytes at %s:%d: dst %p and src %p must be %d-byte aligned", bytes,
           file, line, dst, src, bytes);
  if (src_bytes < 0 || src_bytes > bytes)
    w.fail(t, "cp.async at %s:%d: src-size %d outside [0, %d]", file, line, src_bytes, bytes);
  t->copies.push_back(Copy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes,
                           kUncommitted});
}

void cp_async_commit() {
  Fiber* t = cur_worker->me();
  for (Copy& c : t->copies)
    if (c.group == kUncommitted) c.group = t->groups;
  ++t->groups;
}

void cp_async_wait(int pending_groups) {
  Fiber* t = cur_worker->me();
  const unsigned keep = unsigned(pending_groups);
  auto done = [&](const Copy& c) { return c.group != kUncommitted && c.group + keep < t->groups; };
  for (const Copy& c : t->copies)
    if (done(c)) perform(c);
  t->copies.erase(std::remove_if(t->copies.begin(), t->copies.end(), done), t->copies.end());
}

int launch(const char* name, void (*body)(void*), void* ctx, vlk_dim3 grid, vlk_dim3 block,
           size_t shmem, char* err, size_t errlen) {
  auto error = [&](int code, const char* text) {
    if (err && errlen) std::snprintf(err, errlen, "kernel %s: %s", name, text);
    return code;
  };
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (!grid.x || !grid.y || !grid.z || grid.y > 65535 || grid.z > 65535)
    return error(2, "invalid grid dimensions");
  if (!nthreads || nthreads > 1024 || block.z > 64) return error(2, "invalid block dimensions");
  if (shmem > kMaxDynSmem) return error(2, "dynamic shared memory above 227 KiB");
  Launch l;
  l.name = name;
  l.body = body;
  l.ctx = ctx;
  l.grid = grid;
  l.block = block;
  l.shmem = shmem;
  l.nthreads = unsigned(nthreads);
  l.nblocks = uint64_t(grid.x) * grid.y * grid.z;
  // Threads run one after another between synchronisation points, so a missing
  // __syncthreads() shows up as stale data read from threads that have not run
  // yet: ascending order exposes reads of higher-numbered threads' writes,
  // descending order those of lower-numbered ones.
  const char* rev = std::getenv("VLK_EMU_REVERSE");
  l.reverse = rev && *rev && std::strcmp(rev, "0") != 0;
  Pool& p = pool();
  std::lock_guard<std::mutex> one_launch(p.launch_mu);
  {
    std::lock_guard<std::mutex> lk(p.mu);
    p.job = &l;
    ++p.gen;
  }
  p.cv.notify_all();
  {
    std::unique_lock<std::mutex> lk(p.mu);
    p.cv_done.wait(lk, [&] { return l.workers_done == p.nworkers; });
  }
  if (!l.failed) return 0;
  if (err && errlen) std::snprintf(err, errlen, "%s", l.err.c_str());
  return 1;
}

}  // namespace vlk_emu
