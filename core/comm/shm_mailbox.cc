#include "core/comm/shm_mailbox.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace moemesh::comm {

namespace {

constexpr char kMagic[8] = {'m', 'o', 'e', 'm', 'e', 's', 'h', 'M'};
constexpr uint32_t kLayoutVersion = 1;
constexpr size_t kNonceBytes = 32;  // hex of 16 random bytes
constexpr size_t kDataOffset = 4096;

// The futex word's values.
enum MailboxState : uint32_t { kIdle = 0, kRequest = 1, kReply = 2, kClosed = 3 };

static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "the futex word must be a plain 32-bit word in the segment");

// FUTEX_WAIT on a shared (not process-private) word: returns when woken, when *word != expected,
// or after `timeout`.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  const timespec relative = absl::ToTimespec(std::max(timeout, absl::ZeroDuration()));
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &relative, nullptr,
          0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr,
          0);
}

std::string RandomHex(size_t random_bytes) {
  std::random_device device;
  std::string bytes(random_bytes, '\0');
  for (char& byte : bytes) byte = static_cast<char>(device() & 0xff);
  return absl::BytesToHexString(bytes);
}

std::string Errno(absl::string_view call, absl::string_view name) {
  return absl::StrCat(call, "(", name, "): ", std::strerror(errno));
}

}  // namespace

struct MailboxHeader {
  char magic[8];
  uint32_t layout_version;
  uint32_t reserved;
  uint64_t capacity;
  char nonce[kNonceBytes];
  std::atomic<uint32_t> state;  // MailboxState
  uint32_t reserved2;
  uint64_t length;              // bytes of the message in the data area
  pthread_mutex_t server_alive;  // robust, process-shared; held by the serving thread
};
static_assert(sizeof(MailboxHeader) <= kDataOffset);

absl::StatusOr<std::unique_ptr<MailboxClient>> MailboxClient::Create(size_t capacity) {
  std::unique_ptr<MailboxClient> client(new MailboxClient());
  client->name_ = absl::StrCat("/moemesh-dispatch-", getpid(), "-", RandomHex(8));
  client->nonce_ = RandomHex(kNonceBytes / 2);
  client->capacity_ = capacity;
  client->mapped_bytes_ = kDataOffset + capacity;
  client->fd_ = shm_open(client->name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (client->fd_ < 0) return absl::InternalError(Errno("shm_open", client->name_));
  // From here the destructor unlinks the name and closes the descriptor on every error.
  if (const int error = posix_fallocate(client->fd_, 0, static_cast<off_t>(client->mapped_bytes_));
      error != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("posix_fallocate(", client->name_, ", ",
                                                     client->mapped_bytes_,
                                                     " bytes): ", std::strerror(error)));
  }
  void* mapped = mmap(nullptr, client->mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED,
                      client->fd_, 0);
  if (mapped == MAP_FAILED) return absl::InternalError(Errno("mmap", client->name_));
  MailboxHeader* header = new (mapped) MailboxHeader();
  client->header_ = header;
  client->data_ = static_cast<char*>(mapped) + kDataOffset;
  std::memcpy(header->magic, kMagic, sizeof(kMagic));
  header->layout_version = kLayoutVersion;
  header->capacity = capacity;
  std::memcpy(header->nonce, client->nonce_.data(), kNonceBytes);
  header->length = 0;
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  const int error = pthread_mutex_init(&header->server_alive, &attributes);
  pthread_mutexattr_destroy(&attributes);
  if (error != 0) {
    return absl::InternalError(absl::StrCat("pthread_mutex_init in ", client->name_, ": ",
                                            std::strerror(error)));
  }
  header->state.store(kIdle, std::memory_order_release);
  return client;
}

MailboxClient::~MailboxClient() {
  if (header_ != nullptr) {
    header_->state.store(kClosed, std::memory_order_release);
    FutexWakeAll(&header_->state);
    munmap(header_, mapped_bytes_);
  }
  if (fd_ >= 0) close(fd_);
  Unlink();
}

void MailboxClient::Unlink() {
  if (unlinked_ || name_.empty()) return;
  unlinked_ = true;
  shm_unlink(name_.c_str());
}

void MailboxClient::Post(size_t length) {
  header_->length = length;
  header_->state.store(kRequest, std::memory_order_release);
  FutexWakeAll(&header_->state);
}

absl::StatusOr<size_t> MailboxClient::AwaitReply(absl::Time deadline) {
  while (true) {
    const uint32_t state = header_->state.load(std::memory_order_acquire);
    if (state == kReply) return static_cast<size_t>(header_->length);
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      dead_ = true;
      return absl::DeadlineExceededError("no reply through shared memory before the deadline");
    }
    FutexWait(&header_->state, state, std::min(deadline - now, kLivenessCheck));
    if (header_->state.load(std::memory_order_acquire) == kReply) continue;
    // Still no reply: is anyone serving?
    const int server = ProbeServer();
    if (server == EBUSY) continue;
    // The server may have answered just before it went.
    if (header_->state.load(std::memory_order_acquire) == kReply) {
      return static_cast<size_t>(header_->length);
    }
    dead_ = true;
    if (server == EOWNERDEAD) {
      return absl::UnavailableError("the serving process died (its shared-memory lock was freed)");
    }
    return absl::UnavailableError("the server stopped serving this shared-memory mailbox");
  }
}

void MailboxClient::Reset() { header_->state.store(kIdle, std::memory_order_release); }

int MailboxClient::ProbeServer() {
  const int locked = pthread_mutex_trylock(&header_->server_alive);
  if (locked == EOWNERDEAD) pthread_mutex_consistent(&header_->server_alive);
  if (locked == 0 || locked == EOWNERDEAD) pthread_mutex_unlock(&header_->server_alive);
  return locked;
}

bool MailboxClient::ServerAlive() {
  if (dead_) return false;
  if (ProbeServer() == EBUSY) return true;
  dead_ = true;
  return false;
}

absl::StatusOr<std::unique_ptr<MailboxServer>> MailboxServer::Attach(const std::string& name,
                                                                     const std::string& nonce) {
  if (name.empty() || name[0] != '/' || name.find('/', 1) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("not a shared-memory name: \"", name, "\""));
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no shared-memory segment ", name,
                                              " here (another host or IPC namespace)"));
    }
    return absl::FailedPreconditionError(Errno("shm_open", name));
  }
  struct stat status;
  if (fstat(fd, &status) != 0 || static_cast<size_t>(status.st_size) < kDataOffset) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(name, " is not a dispatch mailbox (size)"));
  }
  const size_t mapped_bytes = static_cast<size_t>(status.st_size);
  void* mapped = mmap(nullptr, mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) return absl::FailedPreconditionError(Errno("mmap", name));
  std::unique_ptr<MailboxServer> server(new MailboxServer());
  server->name_ = name;
  server->mapped_bytes_ = mapped_bytes;
  server->header_ = static_cast<MailboxHeader*>(mapped);
  server->data_ = static_cast<char*>(mapped) + kDataOffset;
  const MailboxHeader& header = *server->header_;
  auto refuse = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat(name, ": ", why));  // ~ unmaps
  };
  if (std::memcmp(header.magic, kMagic, sizeof(kMagic)) != 0) {
    return refuse("not a dispatch mailbox (magic)");
  }
  if (header.layout_version != kLayoutVersion) {
    return refuse(absl::StrCat("mailbox layout version ", header.layout_version,
                               ", this build's is ", kLayoutVersion));
  }
  if (header.capacity != mapped_bytes - kDataOffset) {
    return refuse("capacity disagrees with the segment's size");
  }
  if (nonce.size() != kNonceBytes || std::memcmp(header.nonce, nonce.data(), kNonceBytes) != 0) {
    return refuse("wrong nonce (not the segment the client created)");
  }
  server->capacity_ = header.capacity;
  int error = pthread_mutex_trylock(&server->header_->server_alive);
  if (error == EOWNERDEAD) {  // an earlier server of this segment died: take over
    pthread_mutex_consistent(&server->header_->server_alive);
    error = 0;
  }
  if (error != 0) {
    return refuse(error == EBUSY ? "another server already serves it"
                                 : absl::StrCat("cannot take the liveness lock: ",
                                                std::strerror(error)));
  }
  server->locked_ = true;
  shm_unlink(name.c_str());  // the name was only the rendezvous
  return server;
}

MailboxServer::~MailboxServer() {
  if (header_ == nullptr) return;
  if (locked_) pthread_mutex_unlock(&header_->server_alive);
  munmap(header_, mapped_bytes_);
}

void MailboxServer::Serve(const Handler& handler, const std::function<bool()>& stop_requested) {
  while (!stop_requested()) {
    const uint32_t state = header_->state.load(std::memory_order_acquire);
    if (state == kClosed) return;
    if (state != kRequest) {
      FutexWait(&header_->state, state, kStopCheck);
      continue;
    }
    const size_t length = std::min<size_t>(header_->length, capacity_);
    const size_t reply = handler(absl::string_view(data_, length), data_, capacity_);
    header_->length = std::min(reply, capacity_);
    // Only from kRequest: a client that closed meanwhile keeps kClosed.
    uint32_t expected = kRequest;
    if (!header_->state.compare_exchange_strong(expected, kReply, std::memory_order_acq_rel)) {
      return;
    }
    FutexWakeAll(&header_->state);
  }
}

}  // namespace moemesh::comm
