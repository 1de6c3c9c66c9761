// A real host in the test process, and real clients of it: the admin socket
// (Cap'n Proto over the Unix socket) and phones (Gateway over TCP).
#pragma once

#include <gtest/gtest.h>
#include <kj/async.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "host_process.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "switchboard/proto/admin.capnp.h"
#include "switchboard/proto/client.capnp.h"
#include "test_support.h"

namespace switchboard::admin::testing {

using switchboard::testing::TempDir;
using switchboard::testing::waitUntil;

// A HostConfig on `dir`: ephemeral client and metrics ports, the admin socket
// at dir/admin.sock, the build tree's plugins, two network threads.
HostConfig testConfig(const std::filesystem::path& dir);

// What a phone's Inbox heard; written on the client thread, read anywhere.
struct InboxLog {
  std::mutex mutex;
  std::vector<std::string> kicked;
  std::vector<std::pair<std::string, std::string>> messages;  // (from, body)
  std::size_t kickCount();
  std::size_t messageCount();
};

// A client thread holding one admin connection and any number of phones.
// Every RPC runs on the client thread (runSync); results come back as plain
// values and refusals as std::runtime_error carrying the server's sentence.
class AdminTestClient {
 public:
  explicit AdminTestClient(const std::string& adminSocket);
  ~AdminTestClient();

  net::NetworkThread& thread() { return thread_; }

  // Runs f(admin) on the client thread; f returns a kj::Promise<T>.
  template <class F>
  auto admin(F&& f) {
    return thread_.runSync([&] { return f(*admin_); });
  }

  // requestCode -> admin outbox -> verify: the new device key.
  std::string registerPhone(const std::string& clientEndpoint, const std::string& phone);
  // Logs `phone` in with `key`; returns the index of the phone's session.
  std::size_t login(const std::string& clientEndpoint, const std::string& phone,
                    const std::string& key, std::shared_ptr<InboxLog> log);

 private:
  struct Phone;
  net::NetworkThread thread_{"admin-test-client"};
  kj::Own<net::RpcConnection> adminConnection_;
  std::unique_ptr<proto::Admin::Client> admin_;
  std::vector<std::unique_ptr<Phone>> phones_;  // lives on thread_
};

// Each test gets its own host on a fresh directory and an admin connection.
class AdminHostTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  std::string adminSocket() const { return (dir.path() / "admin.sock").string(); }
  std::string phones() const { return host->clientEndpoint(); }

  // Admin.broadcast: a system message to `phone` (empty: everyone).
  std::uint32_t broadcast(const std::string& phone, const std::string& body) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.broadcastRequest();
      request.setPhone(phone);
      request.setBody(body);
      return request.send().then([](auto&& r) { return r.getRecipients(); });
    });
  }

  // Runs `call` and returns the refusal's text; fails the test if it succeeded.
  template <class F>
  std::string refusal(F&& call) {
    try {
      call();
    } catch (const std::exception& e) {
      return e.what();
    }
    ADD_FAILURE() << "the call was not refused";
    return {};
  }

  TempDir dir;
  std::unique_ptr<HostProcess> host;
  std::unique_ptr<AdminTestClient> client;
};

}  // namespace switchboard::admin::testing
