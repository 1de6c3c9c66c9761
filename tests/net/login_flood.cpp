// A figure printer (not a test): do 15,000 connections that never log in stop logged-in
// phones from being served?
//
// Starts the real host (2 network threads, --login-deadline-ms 20000, or DEADLINE_MS), logs two
// phones in and times 500 messages one at a time (send until the other phone has it): the baseline.
// Then opens 15,000 TCP connections that each send a Cap'n Proto Bootstrap and nothing
// more, times the same 500 messages and a fresh login while they are all open, and waits
// for the login deadline to close them. Prints the figures and the host's resident memory
// at each step. Usage: net_login_flood [CONNECTIONS] [DEADLINE_MS]
#include <arpa/inet.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "running_host.h"

namespace {

using namespace switchboard;
using Clock = std::chrono::steady_clock;

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The resident memory of the host serving on `port`, found by its command line.
long hostRssKib(uint16_t port) {
  std::string needle = "127.0.0.1:" + std::to_string(port);
  DIR* proc = ::opendir("/proc");
  long rss = -1;
  while (dirent* entry = ::readdir(proc)) {
    std::string pid = entry->d_name;
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline("/proc/" + pid + "/cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (args.find("switchboard") == std::string::npos || args.find(needle) == std::string::npos)
      continue;
    std::ifstream status("/proc/" + pid + "/status");
    std::string key;
    while (status >> key) {
      if (key == "VmRSS:") {
        status >> rss;
        break;
      }
    }
  }
  ::closedir(proc);
  return rss;
}

struct Timing {
  double p50 = 0, p99 = 0, max = 0, perSecond = 0;
};

// `from` sends `count` messages to `to`, one at a time, each timed until `to` has it.
Timing pingPong(client::Client& from, const std::string& toPhone, std::mutex& mutex,
                std::condition_variable& arrived, size_t& received, size_t count) {
  std::vector<double> ms;
  auto start = Clock::now();
  for (size_t i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    size_t before;
    {
      std::lock_guard lock(mutex);
      before = received;
    }
    from.send(toPhone, "flood probe " + std::to_string(i));
    std::unique_lock lock(mutex);
    arrived.wait(lock, [&] { return received > before; });
    ms.push_back(msSince(t0));
  }
  double total = msSince(start);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[ms.size() * 99 / 100], ms.back(), count * 1000.0 / total};
}

void print(const char* phase, const Timing& t) {
  std::printf("%-28s p50 %.2f ms  p99 %.2f ms  max %.2f ms  %.0f msgs/s\n", phase, t.p50, t.p99,
              t.max, t.perSecond);
}

}  // namespace

int main(int argc, char** argv) {
  size_t floodCount = argc > 1 ? std::stoul(argv[1]) : 15000;
  std::string deadlineMs = argc > 2 ? argv[2] : "20000";
  integration::RunningHost host({"--login-deadline-ms", deadlineMs});
  host.start();

  std::mutex mutex;
  std::condition_variable arrived;
  size_t received = 0;
  client::Client alice(host.clientOptions());
  client::Client bob(host.clientOptions());
  bob.onMessage([&](const client::Message&) {
    std::lock_guard lock(mutex);
    ++received;
    arrived.notify_all();
  });
  std::string aliceKey = integration::registerPhone(alice, host.sms(), "+15550100001");
  std::string bobKey = integration::registerPhone(bob, host.sms(), "+15550100002");
  alice.login("+15550100001", aliceKey);
  bob.login("+15550100002", bobKey);
  client::Client carol(host.clientOptions());
  std::string carolKey = integration::registerPhone(carol, host.sms(), "+15550100003");

  pingPong(alice, "+15550100002", mutex, arrived, received, 100);  // warm-up
  std::printf("host RSS before the flood: %ld KiB\n", hostRssKib(host.port()));
  print("baseline", pingPong(alice, "+15550100002", mutex, arrived, received, 500));

  // The flood: connect, send one Bootstrap message, never log in.
  capnp::MallocMessageBuilder message;
  message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(0);
  auto bootstrap = capnp::messageToFlatArray(message);
  std::vector<int> flood;
  auto floodStart = Clock::now();
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(host.port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (size_t i = 0; i < floodCount; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      std::printf("flood connection %zu failed: %s\n", i, std::strerror(errno));
      if (fd >= 0) ::close(fd);
      break;
    }
    ::send(fd, bootstrap.begin(), bootstrap.asBytes().size(), MSG_NOSIGNAL);
    flood.push_back(fd);
  }
  std::printf("%zu connections opened in %.0f ms\n", flood.size(), msSince(floodStart));
  print("with the flood open", pingPong(alice, "+15550100002", mutex, arrived, received, 500));
  auto loginStart = Clock::now();
  carol.login("+15550100003", carolKey);
  std::printf("a fresh login during the flood: %.1f ms\n", msSince(loginStart));
  long rssFlooded = hostRssKib(host.port());
  std::printf("host RSS with the flood open: %ld KiB\n", rssFlooded);

  // Wait for the deadline to close every flood connection (EOF on our side).
  std::vector<pollfd> open;
  for (int fd : flood) open.push_back({fd, POLLIN, 0});
  size_t closed = 0;
  char buffer[4096];
  while (closed < open.size() && msSince(floodStart) < 120'000) {
    if (::poll(open.data(), open.size(), 1000) <= 0) continue;
    for (auto& p : open) {
      if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::recv(p.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        ::close(p.fd);
        p.fd = -1;
        ++closed;
      }
    }
  }
  std::printf(
      "%zu of %zu flood connections closed by the host (deadline %s ms; all seen closed %.0f ms "
      "after the flood began, checked once the measurements above were done)\n",
      closed, open.size(), deadlineMs.c_str(), msSince(floodStart));
  print("after the deadline", pingPong(alice, "+15550100002", mutex, arrived, received, 500));
  std::printf("host RSS: %ld KiB flooded, %ld KiB after the deadline\n", rssFlooded,
              hostRssKib(host.port()));
  for (auto& p : open)
    if (p.fd >= 0) ::close(p.fd);
  carol.logout();
  alice.logout();
  bob.logout();
  return 0;
}
