// The shared-memory mailbox (core/comm/shm_mailbox.h) between threads and between real
// processes: answers in place, refuses the wrong segment, and a client waiting on a server that
// was killed (SIGKILL), stopped serving or hangs fails instead of waiting forever.
#include "core/comm/shm_mailbox.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace moemesh::comm {
namespace {

using Clock = std::chrono::steady_clock;

// Upper-cases the request into the reply and appends "!".
size_t Shout(absl::string_view request, char* reply, size_t capacity) {
  std::string answer = absl::AsciiStrToUpper(request);
  answer += "!";
  const size_t length = std::min(answer.size(), capacity);
  std::memcpy(reply, answer.data(), length);
  return length;
}

std::string Ask(MailboxClient& client, const std::string& text, absl::Duration timeout) {
  std::memcpy(client.data(), text.data(), text.size());
  client.Post(text.size());
  absl::StatusOr<size_t> length = client.AwaitReply(absl::Now() + timeout);
  if (!length.ok()) return std::string(length.status().ToString());
  std::string reply(client.data(), *length);
  client.Reset();
  return reply;
}

// A thread serving `client`'s mailbox whose handler holds every request until `release` is
// set (then answers 0 bytes), stopping when `stop_requested` says so. Returns once the server
// holds its liveness lock (posting before that would fail at once).
std::thread ServeWithoutAnswering(MailboxClient& client, std::atomic<bool>& release,
                                  std::function<bool()> stop_requested) {
  std::promise<void> attached;
  std::future<void> attached_future = attached.get_future();
  std::thread serving([&release, name = client.name(), nonce = client.nonce(),
                       stop_requested = std::move(stop_requested),
                       attached = std::move(attached)]() mutable {
    auto server = MailboxServer::Attach(name, nonce);
    attached.set_value();
    ASSERT_TRUE(server.ok()) << server.status();
    (*server)->Serve(
        [&](absl::string_view, char*, size_t) -> size_t {
          while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          return 0;
        },
        stop_requested);
  });
  attached_future.wait();
  return serving;
}

TEST(SharedMemoryMailbox, AnswersInPlaceRequestAfterRequest) {
  auto client = MailboxClient::Create(1 << 16);
  ASSERT_TRUE(client.ok()) << client.status();
  auto server = MailboxServer::Attach((*client)->name(), (*client)->nonce());
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->capacity(), size_t{1} << 16);
  std::atomic<bool> stop{false};
  std::thread serving([&] { (*server)->Serve(Shout, [&] { return stop.load(); }); });
  (*client)->Unlink();  // the name goes; both mappings keep working
  EXPECT_TRUE(absl::IsNotFound(
      MailboxServer::Attach((*client)->name(), (*client)->nonce()).status()));
  for (int i = 0; i < 200; ++i) {
    const std::string text = "dispatch " + std::to_string(i);
    ASSERT_EQ(Ask(**client, text, absl::Seconds(10)), absl::AsciiStrToUpper(text) + "!");
  }
  // A message filling the whole capacity.
  const std::string large((1 << 16) - 1, 'a');
  EXPECT_EQ(Ask(**client, large, absl::Seconds(10)), std::string((1 << 16) - 1, 'A') + "!");
  client->reset();  // closing the mailbox ends Serve without the stop flag
  serving.join();
}

TEST(SharedMemoryMailbox, RefusesOtherSegmentsAndNonces) {
  EXPECT_TRUE(absl::IsNotFound(
      MailboxServer::Attach("/moemesh-dispatch-no-such-segment", std::string(32, '0')).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MailboxServer::Attach("../etc/passwd", "x").status()));
  auto client = MailboxClient::Create(4096);
  ASSERT_TRUE(client.ok()) << client.status();
  std::string wrong = (*client)->nonce();
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  auto refused = MailboxServer::Attach((*client)->name(), wrong);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("nonce"), absl::string_view::npos);
  // The first server to attach removes the name: no second server, nothing left in /dev/shm.
  auto first = MailboxServer::Attach((*client)->name(), (*client)->nonce());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(absl::IsNotFound(
      MailboxServer::Attach((*client)->name(), (*client)->nonce()).status()));
  EXPECT_TRUE((*first)->capacity() == 4096);
}

TEST(SharedMemoryMailbox, ServerThatStopsServingFailsTheWaitingClient) {
  auto client = MailboxClient::Create(4096);
  ASSERT_TRUE(client.ok()) << client.status();
  // The server never answers: it stops being a server while "computing".
  std::atomic<bool> stop{false};
  std::thread serving = ServeWithoutAnswering(**client, stop, [&] { return stop.load(); });
  std::memcpy((*client)->data(), "x", 1);
  (*client)->Post(1);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop = true;
  });
  const auto start = Clock::now();
  // The server thread answers the pending request (with 0 bytes) as it stops, or lets go of the
  // liveness lock; the client either gets that answer or UNAVAILABLE, and never waits 60 s.
  absl::StatusOr<size_t> reply = (*client)->AwaitReply(absl::Now() + absl::Seconds(60));
  stopper.join();
  serving.join();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 10);
  if (!reply.ok()) EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  // The server is gone now: a pool would see it before posting, and a request fails at once.
  EXPECT_FALSE((*client)->ServerAlive());
  (*client)->Reset();
  (*client)->Post(1);
  absl::StatusOr<size_t> after = (*client)->AwaitReply(absl::Now() + absl::Seconds(60));
  EXPECT_TRUE(absl::IsUnavailable(after.status())) << after.status();
  EXPECT_NE(after.status().message().find("stopped serving"), absl::string_view::npos)
      << after.status();
  EXPECT_TRUE((*client)->dead());
}

TEST(SharedMemoryMailbox, HungServerFailsAtTheDeadline) {
  auto client = MailboxClient::Create(4096);
  ASSERT_TRUE(client.ok()) << client.status();
  std::atomic<bool> release{false};
  std::thread serving = ServeWithoutAnswering(**client, release, [] { return false; });
  std::memcpy((*client)->data(), "x", 1);
  (*client)->Post(1);
  const auto start = Clock::now();
  absl::StatusOr<size_t> reply = (*client)->AwaitReply(absl::Now() + absl::Milliseconds(300));
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply.status())) << reply.status();
  EXPECT_GE(waited, 0.29);
  release = true;
  client->reset();  // closed while the server answers: it stops (kClosed is kept)
  serving.join();
}

// A real process serves the mailbox and is killed with SIGKILL while "computing" a reply: the
// kernel frees its robust liveness lock and the waiting client fails within milliseconds, not
// at its 60-second deadline.
TEST(SharedMemoryMailbox, KilledServerProcessFailsTheWaitingClientAtOnce) {
  auto client = MailboxClient::Create(4096);
  ASSERT_TRUE(client.ok()) << client.status();
  int ready_pipe[2];
  ASSERT_EQ(pipe(ready_pipe), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready_pipe[0]);
    auto server = MailboxServer::Attach((*client)->name(), (*client)->nonce());
    if (!server.ok()) _exit(2);
    // Answers the first request, then hangs on the second (until killed).
    int answered = 0;
    const char ready = 'r';
    if (write(ready_pipe[1], &ready, 1) != 1) _exit(3);
    (*server)->Serve(
        [&](absl::string_view request, char* reply, size_t capacity) -> size_t {
          if (answered++ == 0) return Shout(request, reply, capacity);
          while (true) pause();
        },
        [] { return false; });
    _exit(0);
  }
  close(ready_pipe[1]);
  char ready = 0;
  ASSERT_EQ(read(ready_pipe[0], &ready, 1), 1);
  close(ready_pipe[0]);
  (*client)->Unlink();
  EXPECT_EQ(Ask(**client, "first", absl::Seconds(30)), "FIRST!");
  std::memcpy((*client)->data(), "second", 6);
  (*client)->Post(6);
  std::thread killer([child] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(child, SIGKILL);
  });
  const auto start = Clock::now();
  absl::StatusOr<size_t> reply = (*client)->AwaitReply(absl::Now() + absl::Seconds(60));
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  killer.join();
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ASSERT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  EXPECT_NE(reply.status().message().find("died"), absl::string_view::npos) << reply.status();
  EXPECT_LT(waited, 5.0);  // (the deadline was 60 s)
}

}  // namespace
}  // namespace moemesh::comm
