#include "util/shm.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace nanovllm {
namespace {

std::string errno_text() { return std::strerror(errno); }

long futex(const std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* timeout) {
  static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free);
  // Not FUTEX_PRIVATE: the word is shared between processes.
  return syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word), op, val, timeout, nullptr, 0);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

SharedRegion SharedRegion::create(const std::string& tag, size_t bytes) {
  static std::atomic<int> counter{0};
  SharedRegion r;
  r.name_ = "/nanovllm-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" + tag;
  const int fd = shm_open(r.name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw std::runtime_error("shared memory '" + r.name_ + "': cannot create: " + errno_text());
  r.owner_ = true;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const std::string why = errno_text();
    close(fd);
    shm_unlink(r.name_.c_str());
    throw std::runtime_error("shared memory '" + r.name_ + "': cannot size to " + std::to_string(bytes) +
                             " bytes: " + why);
  }
  r.data_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (r.data_ == MAP_FAILED) {
    r.data_ = nullptr;
    const std::string why = errno_text();
    shm_unlink(r.name_.c_str());
    throw std::runtime_error("shared memory '" + r.name_ + "': cannot map " + std::to_string(bytes) + " bytes: " + why);
  }
  r.size_ = bytes;
  return r;
}

SharedRegion SharedRegion::open(const std::string& name) {
  SharedRegion r;
  r.name_ = name;
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error("shared memory '" + name + "': cannot open: " + errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    throw std::runtime_error("shared memory '" + name + "': cannot read its size");
  }
  r.data_ = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (r.data_ == MAP_FAILED) {
    r.data_ = nullptr;
    throw std::runtime_error("shared memory '" + name + "': cannot map: " + errno_text());
  }
  r.size_ = static_cast<size_t>(st.st_size);
  return r;
}

SharedRegion& SharedRegion::operator=(SharedRegion&& o) noexcept {
  if (this != &o) {
    this->~SharedRegion();
    data_ = o.data_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    owner_ = o.owner_;
    o.data_ = nullptr;
    o.size_ = 0;
    o.owner_ = false;
  }
  return *this;
}

SharedRegion::~SharedRegion() {
  if (data_) munmap(data_, size_);
  data_ = nullptr;
  unlink();
}

void SharedRegion::unlink() {
  if (owner_) shm_unlink(name_.c_str());
  owner_ = false;
}

uint32_t wait_while_equal(const std::atomic<uint32_t>& word, uint32_t old, const std::function<void()>& tick,
                          int spin_us) {
  using clock = std::chrono::steady_clock;
  const auto spin_end = clock::now() + std::chrono::microseconds(spin_us);
  for (int i = 0;; ++i) {
    const uint32_t v = word.load(std::memory_order_acquire);
    if (v != old) return v;
    if ((i & 63) == 63 && clock::now() >= spin_end) break;
    cpu_relax();
  }
  for (;;) {
    const timespec timeout{0, 50'000'000};
    futex(&word, FUTEX_WAIT, old, &timeout);  // returns at once if the word already changed
    const uint32_t v = word.load(std::memory_order_acquire);
    if (v != old) return v;
    if (tick) tick();
  }
}

void wake_all(std::atomic<uint32_t>& word) { futex(&word, FUTEX_WAKE, INT32_MAX, nullptr); }

}  // namespace nanovllm
