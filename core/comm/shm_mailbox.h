// A one-slot request/reply mailbox in a POSIX shared-memory segment, for two processes on one
// host (an attention node and an expert node started side by side): the client writes a message
// into the segment and wakes the server with a futex; the server answers in place and wakes the
// client. One round trip costs two futex wakes instead of gRPC's thread hand-offs, TLS and
// HTTP/2 framing (on a 2-core VM those measured ~1.9 ms per round trip; see bench/README.md,
// "Cluster"). The process boundary stays: each side owns its own memory, only the message bytes
// are shared.
//
// Liveness: the server's thread holds a robust, process-shared mutex in the segment for as long
// as it serves. A client waiting for a reply tries that mutex every few milliseconds: EBUSY means
// the server is alive; EOWNERDEAD (the kernel released it for a dead thread or process) or
// success (the server let go) means it will never answer. So a killed expert node is noticed in
// milliseconds, a hung one at the caller's deadline.
//
// Same host: the client puts a random nonce into the segment and tells the server the segment's
// name and the nonce over the authenticated control path (ExpertService.AttachSharedMemory); a
// server on another host or in another IPC namespace cannot open the name (NOT_FOUND).
// The segment is created 0600 (same user only); its name is unlinked once attached, so nothing is
// left in /dev/shm whichever side exits first.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace moemesh::comm {

struct MailboxHeader;

// The creating side. Not thread-safe: one request at a time, Post -> AwaitReply -> Reset.
class MailboxClient {
 public:
  // Creates a segment with `capacity` bytes of message space, reserved up front
  // (posix_fallocate: a full /dev/shm is an error here, not a SIGBUS on first touch).
  // Errors: RESOURCE_EXHAUSTED / INTERNAL naming the failed call.
  static absl::StatusOr<std::unique_ptr<MailboxClient>> Create(size_t capacity);
  ~MailboxClient();  // closes the mailbox (a server waiting on it stops) and unmaps it

  MailboxClient(const MailboxClient&) = delete;
  MailboxClient& operator=(const MailboxClient&) = delete;

  const std::string& name() const { return name_; }
  const std::string& nonce() const { return nonce_; }
  size_t capacity() const { return capacity_; }
  // Removes the segment's name; both mappings stay valid. Idempotent (the destructor calls it).
  void Unlink();

  // The message space [0, capacity): write the request here, then Post.
  char* data() { return data_; }
  // Hands data()[0, length) to the server and wakes it. Requires length <= capacity.
  void Post(size_t length);
  // Waits until the server answered the posted request, or `deadline`; returns the reply's
  // length (the reply is data()[0, length)). Errors: UNAVAILABLE when the server exited or its
  // process died (checked every kLivenessCheck), DEADLINE_EXCEEDED at the deadline. After an
  // error the mailbox is unusable (dead()).
  absl::StatusOr<size_t> AwaitReply(absl::Time deadline);
  // Ready for the next Post, after the reply was read.
  void Reset();
  // Whether a server still holds the liveness lock (a pooled mailbox whose node restarted or
  // stopped serving is not). False marks the mailbox dead.
  bool ServerAlive();
  bool dead() const { return dead_; }

  static constexpr absl::Duration kLivenessCheck = absl::Milliseconds(5);

 private:
  MailboxClient() = default;
  // Tries the liveness lock and lets it go again: EBUSY (a server holds it), EOWNERDEAD (its
  // holder died), 0 (nobody held it: the server let go), or another pthread error.
  int ProbeServer();

  std::string name_;
  std::string nonce_;
  size_t capacity_ = 0;
  size_t mapped_bytes_ = 0;
  int fd_ = -1;
  MailboxHeader* header_ = nullptr;
  char* data_ = nullptr;
  bool unlinked_ = false;
  bool dead_ = false;
};

// The attaching side. Attach, Serve and the destructor run on one thread (the liveness lock is
// that thread's): the expert node runs them in the gRPC handler of the call that attached it, so
// the call's cancellation (the attention node's process or connection went away) stops serving.
class MailboxServer {
 public:
  // Reads the request (the view is into the segment) and writes the reply into `reply` (the same
  // bytes: it must have read the whole request before writing), at most `capacity` bytes;
  // returns the reply's length.
  using Handler =
      std::function<size_t(absl::string_view request, char* reply, size_t capacity)>;

  // Opens segment `name` made by a MailboxClient on this host, checks its header and `nonce`,
  // takes the liveness lock and removes the name (both sides keep their mapping; nothing is left
  // in /dev/shm if the client dies before it unlinks). Errors: NOT_FOUND (no such segment here: another host or IPC
  // namespace), FAILED_PRECONDITION (not a mailbox, another layout version, the wrong nonce),
  // INVALID_ARGUMENT (not a shared-memory name).
  static absl::StatusOr<std::unique_ptr<MailboxServer>> Attach(const std::string& name,
                                                               const std::string& nonce);
  ~MailboxServer();  // lets go of the liveness lock (a waiting client fails at once) and unmaps

  MailboxServer(const MailboxServer&) = delete;
  MailboxServer& operator=(const MailboxServer&) = delete;

  // Answers every posted request with `handler` until the client closes the mailbox or
  // `stop_requested` returns true (asked every kStopCheck while idle).
  void Serve(const Handler& handler, const std::function<bool()>& stop_requested);

  size_t capacity() const { return capacity_; }

  static constexpr absl::Duration kStopCheck = absl::Milliseconds(50);

 private:
  MailboxServer() = default;

  std::string name_;
  size_t capacity_ = 0;
  size_t mapped_bytes_ = 0;
  MailboxHeader* header_ = nullptr;
  char* data_ = nullptr;
  bool locked_ = false;
};

}  // namespace moemesh::comm
