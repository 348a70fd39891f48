// Emulated device memory: vlk_emu_alloc / vlk_emu_free / vlk_emu_set_check.
// Fresh buffers are filled with 0xFF bytes (NaN in f32, f16 and bf16), so
// reads of never-written device memory show up. Checked buffers end against a
// PROT_NONE page: the first out-of-bounds access faults, and the runtime turns
// the fault into a launch error.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "internal.h"

namespace vlk_emu {
namespace {

struct Alloc {
  char* map;        // what mmap/aligned_alloc returned
  size_t map_len;   // mmap length; 0 for unchecked buffers
  size_t len;       // bytes the caller may use (checked: rounded up to 16)
};

std::mutex mu;
// Leaked so that it outlives static destruction (buffers may be freed late).
std::unordered_map<const void*, Alloc>& allocs() {
  static auto* m = new std::unordered_map<const void*, Alloc>();
  return *m;
}
std::atomic<int> check_mode{-1};  // -1: not decided yet, read VLK_EMU_CHECK

bool checked() {
  int m = check_mode.load();
  if (m < 0) {
    const char* e = std::getenv("VLK_EMU_CHECK");
    m = e && *e && std::strcmp(e, "0") != 0;
    check_mode.store(m);
  }
  return m != 0;
}

size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }

}  // namespace

bool describe_address(const void* addr, char* buf, size_t len) {
  // Called from the SIGSEGV handler: never wait for the lock.
  std::unique_lock<std::mutex> lk(mu, std::try_to_lock);
  if (!lk.owns_lock()) return false;
  const char* a = static_cast<const char*>(addr);
  for (const auto& [user, al] : allocs()) {
    const char* end = static_cast<const char*>(user) + al.len;
    if (al.map_len && a >= end && a < end + page()) {
      std::snprintf(buf, len, "out-of-bounds access %zu bytes past the end of a %zu-byte buffer at %p",
                    size_t(a - end), al.len, user);
      return true;
    }
  }
  return false;
}

}  // namespace vlk_emu

using namespace vlk_emu;

extern "C" void vlk_emu_set_check(int on) { check_mode.store(on != 0); }

extern "C" void* vlk_emu_alloc(size_t bytes) {
  Alloc al{};
  char* user;
  if (checked()) {
    al.len = (bytes + 15) / 16 * 16;  // keeps float4 / cp.async alignment
    const size_t body = (al.len + page() - 1) / page() * page();
    al.map_len = body + page();
    void* m = mmap(nullptr, al.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    al.map = static_cast<char*>(m);
    mprotect(al.map + body, page(), PROT_NONE);
    user = al.map + body - al.len;
  } else {
    al.len = (bytes + 255) / 256 * 256;
    al.map = static_cast<char*>(std::aligned_alloc(256, al.len ? al.len : 256));
    if (!al.map) return nullptr;
    user = al.map;
  }
  std::memset(user, 0xFF, al.len);
  std::lock_guard<std::mutex> lk(mu);
  allocs()[user] = al;
  return user;
}

extern "C" void vlk_emu_free(void* p) {
  if (!p) return;
  Alloc al;
  {
    std::lock_guard<std::mutex> lk(mu);
    auto it = allocs().find(p);
    if (it == allocs().end()) {
      std::fprintf(stderr, "vlk_emu_free: %p was not returned by vlk_emu_alloc\n", p);
      std::abort();
    }
    al = it->second;
    allocs().erase(it);
  }
  if (al.map_len) munmap(al.map, al.map_len);
  else std::free(al.map);
}
