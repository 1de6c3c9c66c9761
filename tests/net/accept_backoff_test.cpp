// RpcListener at the descriptor limit: it pauses accepting instead of spinning and flooding
// the log, keeps serving live connections, and accepts the waiting ones once descriptors free.
//
// The limit is lowered in a child process (a gtest death test, "threadsafe" style: the child
// re-runs only this test), so no other test sees it.

#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/rpc_listener.h"

#include "test_service.capnp.h"
#include "wait_until.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <kj/common.h>
#include <netinet/in.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::net {
namespace {

using testing::waitUntil;

class EchoService final : public TestService::Server {
 public:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }
};

// Counts log lines at warning level or above that are about accepting.
class AcceptWarningCounter final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::atomic<int> count{0};

 protected:
  void sink_it_(const spdlog::details::log_msg& message) override {
    std::string_view text(message.payload.data(), message.payload.size());
    if (message.level >= spdlog::level::warn && text.find("accept on") != text.npos) ++count;
  }
  void flush_() override {}
};

int highestOpenDescriptor() {
  int highest = -1;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int own = ::dirfd(dir);
  while (dirent* entry = ::readdir(dir)) {
    int fd = std::atoi(entry->d_name);
    if (entry->d_name[0] != '.' && fd != own) highest = std::max(highest, fd);
  }
  ::closedir(dir);
  return highest;
}

std::string echo(NetworkThread& thread, TestService::Client& service, const std::string& text) {
  return thread.runSync([&] {
    auto request = service.echoRequest();
    request.setText(text);
    return request.send().then([](capnp::Response<TestService::EchoResults>&& response) {
      return std::string(response.getText().cStr());
    });
  });
}

#define SCENARIO_CHECK(condition)                                                               \
  do {                                                                                          \
    if (!(condition)) return std::string("line ") + std::to_string(__LINE__) + ": " #condition; \
  } while (false)

// Returns "" on success, else what failed.
std::string runAtTheDescriptorLimit() {
  auto warnings = std::make_shared<AcceptWarningCounter>();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("accept-backoff", warnings));

  constexpr int kFree = 3;     // descriptors left for the server to accept with
  constexpr int kClients = 6;  // raw connections made at the limit: kFree get in, the rest wait

  NetworkThread server{"server"};
  NetworkThread client{"client"};
  server.start();
  client.start();
  std::atomic<int> accepted{0};
  std::optional<RpcListener> listener;
  listener.emplace(std::vector<NetworkThread*>{&server}, "127.0.0.1:0",
                   [&](const ConnectionInfo&) -> capnp::Capability::Client {
                     ++accepted;
                     return kj::heap<EchoService>();
                   });

  kj::Own<RpcConnection> existing;             // client thread only
  std::optional<TestService::Client> service;  // client thread only
  // On every return, failures included: KJ objects die on their own threads.
  KJ_DEFER({
    client.runSync([&] {
      service.reset();
      existing = nullptr;
    });
    listener.reset();
  });
  client.runSync([&] {
    return RpcConnection::connect(client, listener->boundEndpoint())
        .then([&](kj::Own<RpcConnection> connection) {
          existing = kj::mv(connection);
          service = existing->bootstrapAs<TestService>();
        });
  });
  SCENARIO_CHECK(echo(client, *service, "before") == "before");

  // The client sockets exist before the limit, so only the server's accepts run short.
  std::vector<int> raw;
  for (int i = 0; i < kClients; ++i)
    raw.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  SCENARIO_CHECK(std::all_of(raw.begin(), raw.end(), [](int fd) { return fd >= 0; }));

  // Leave exactly kFree descriptor numbers: limit just above the highest open one, fill every
  // free number below it, then give back kFree.
  rlimit limit{};
  SCENARIO_CHECK(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  limit.rlim_cur = static_cast<rlim_t>(highestOpenDescriptor() + 1 + kFree);
  SCENARIO_CHECK(limit.rlim_cur <= limit.rlim_max);
  SCENARIO_CHECK(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
  std::vector<int> fillers;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  SCENARIO_CHECK(errno == EMFILE);
  SCENARIO_CHECK(fillers.size() >= static_cast<size_t>(kFree));
  for (int i = 0; i < kFree; ++i) {
    ::close(fillers.back());
    fillers.pop_back();
  }

  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(listener->port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int fd : raw) {
    // Completes from the kernel backlog whether or not the server accepts.
    SCENARIO_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  }

  auto start = std::chrono::steady_clock::now();
  SCENARIO_CHECK(waitUntil([&] { return accepted.load() == 1 + kFree; }));
  SCENARIO_CHECK(waitUntil([&] { return warnings->count.load() >= 1; }));
  // The server thread, with accepts failing, still serves the live connection.
  SCENARIO_CHECK(echo(client, *service, "at the limit") == "at the limit");
  // Give a spinning accept loop time to show itself (a wait, not a measurement).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  SCENARIO_CHECK(accepted.load() == 1 + kFree);
  SCENARIO_CHECK(echo(client, *service, "still") == "still");
  // One line at the start, then at most one per 10 s: a bound that a slow machine only helps.
  auto elapsed = std::chrono::steady_clock::now() - start;
  int allowed = 2 + static_cast<int>(elapsed / std::chrono::seconds(10));
  if (warnings->count.load() > allowed) {
    return "accept warnings: " + std::to_string(warnings->count.load()) + " > " +
           std::to_string(allowed);
  }

  // Free descriptors: the waiting connections are accepted.
  for (int i = 0; i < kFree; ++i) {
    ::close(raw[static_cast<size_t>(i)]);
  }
  SCENARIO_CHECK(waitUntil([&] { return accepted.load() == 1 + kClients; }));
  SCENARIO_CHECK(waitUntil([&] { return listener->connectionCount() == 1 + kClients - kFree; }));
  SCENARIO_CHECK(echo(client, *service, "after") == "after");

  for (int i = kFree; i < kClients; ++i) ::close(raw[static_cast<size_t>(i)]);
  for (int fd : fillers) ::close(fd);
  return "";
}

TEST(AcceptBackoffDeathTest, AtTheDescriptorLimitPausesKeepsServingAndResumes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::string failure = runAtTheDescriptorLimit();
        std::fprintf(stderr, "%s\n", failure.empty() ? "scenario passed" : failure.c_str());
        std::exit(failure.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "scenario passed");
}

}  // namespace
}  // namespace switchboard::net
