#pragma once
// A client::Client whose callbacks record everything, for tests to wait on and assert.

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "client/client.h"
#include "running_host.h"

namespace switchboard::integration {

// One phone under test: its Client (callbacks installed before any login) and what
// those callbacks saw. Reads are thread-safe snapshots. holdDeliveries() makes
// onMessage block (stalling the client's thread, as a phone that stops reading
// would) until releaseDeliveries().
class RecordingPhone {
 public:
  RecordingPhone(client::ClientOptions options, std::string number);
  ~RecordingPhone();

  client::Client& client() { return *client_; }
  const std::string& number() const { return number_; }
  const std::string& key() const { return key_; }

  // Registers through the SMS file and logs in.
  void registerAndLogin(const SmsFile& sms);
  void login() { client_->login(number_, key_); }
  void setKey(std::string key) { key_ = std::move(key); }

  std::vector<client::Message> messages() const;
  std::size_t messageCount() const;  // messages().size() without the copy
  std::vector<client::Receipt> receipts() const;
  std::vector<client::PresenceUpdate> presence() const;
  std::vector<std::string> kicks() const;
  std::vector<client::ConnectionState> connectionStates() const;
  std::size_t disconnects() const;

  bool waitForMessages(std::size_t count) const;
  // Waits for a message with this body.
  bool waitUntilMessage(const std::string& body) const;
  bool waitForReceipt(std::uint64_t id, client::ReceiptKind kind) const;

  void holdDeliveries();
  void releaseDeliveries();

 private:
  std::string number_;
  std::string key_;
  mutable std::mutex mutex_;
  std::condition_variable released_;
  bool holding_ = false;
  std::vector<client::Message> messages_;
  std::vector<client::Receipt> receipts_;
  std::vector<client::PresenceUpdate> presence_;
  std::vector<std::string> kicks_;
  std::vector<client::ConnectionState> states_;
  std::unique_ptr<client::Client> client_;  // last: destroyed first, callbacks stop
};

// The bodies of `messages`, in order.
std::vector<std::string> bodiesOf(const std::vector<client::Message>& messages);

// What `call` throws as a ClientError of `kind`; a test failure (and "") when it
// throws another kind or is accepted.
template <class Call>
std::string clientFailure(client::ClientError::Kind kind, Call&& call) {
  try {
    call();
  } catch (const client::ClientError& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "the call was accepted";
  return {};
}

// The server's reason when `call` throws a refused ClientError.
template <class Call>
std::string refusal(Call&& call) {
  return clientFailure(client::ClientError::Kind::refused, std::forward<Call>(call));
}

// Registers `number` on `host` and logs it in once, then lets that phone go (it is away
// from then on); returns its device key for later logins.
std::string registerAway(const RunningHost& host, const std::string& number);

}  // namespace switchboard::integration
