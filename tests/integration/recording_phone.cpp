#include "recording_phone.h"

namespace switchboard::integration {

RecordingPhone::RecordingPhone(client::ClientOptions options, std::string number)
    : number_(std::move(number)), client_(std::make_unique<client::Client>(std::move(options))) {
  client_->onMessage([this](const client::Message& message) {
    std::unique_lock lock(mutex_);
    released_.wait(lock, [this] { return !holding_; });
    messages_.push_back(message);
  });
  client_->onReceipt([this](const client::Receipt& receipt) {
    std::lock_guard lock(mutex_);
    receipts_.push_back(receipt);
  });
  client_->onPresence([this](const client::PresenceUpdate& update) {
    std::lock_guard lock(mutex_);
    presence_.push_back(update);
  });
  client_->onKicked([this](const std::string& reason) {
    std::lock_guard lock(mutex_);
    kicks_.push_back(reason);
  });
  client_->onConnectionState([this](client::ConnectionState state) {
    std::lock_guard lock(mutex_);
    states_.push_back(state);
  });
}

RecordingPhone::~RecordingPhone() {
  releaseDeliveries();
  client_.reset();
}

void RecordingPhone::registerAndLogin(const SmsFile& sms) {
  key_ = registerPhone(*client_, sms, number_);
  login();
}

std::string registerAway(const RunningHost& host, const std::string& number) {
  RecordingPhone phone(host.clientOptions(), number);
  phone.registerAndLogin(host.sms());
  return phone.key();
}

std::vector<client::Message> RecordingPhone::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}
std::size_t RecordingPhone::messageCount() const {
  std::lock_guard lock(mutex_);
  return messages_.size();
}
std::vector<client::Receipt> RecordingPhone::receipts() const {
  std::lock_guard lock(mutex_);
  return receipts_;
}
std::vector<client::PresenceUpdate> RecordingPhone::presence() const {
  std::lock_guard lock(mutex_);
  return presence_;
}
std::vector<std::string> RecordingPhone::kicks() const {
  std::lock_guard lock(mutex_);
  return kicks_;
}
std::vector<client::ConnectionState> RecordingPhone::connectionStates() const {
  std::lock_guard lock(mutex_);
  return states_;
}
std::size_t RecordingPhone::disconnects() const {
  std::lock_guard lock(mutex_);
  std::size_t count = 0;
  for (auto state : states_) count += state == client::ConnectionState::disconnected ? 1 : 0;
  return count;
}

bool RecordingPhone::waitForMessages(std::size_t count) const {
  return waitUntil([&] { return messages().size() >= count; });
}

bool RecordingPhone::waitUntilMessage(const std::string& body) const {
  return waitUntil([&] {
    for (const auto& m : messages()) {
      if (m.body == body) return true;
    }
    return false;
  });
}

bool RecordingPhone::waitForReceipt(std::uint64_t id, client::ReceiptKind kind) const {
  return waitUntil([&] {
    for (const auto& r : receipts()) {
      if (r.id == id && r.kind == kind) return true;
    }
    return false;
  });
}

void RecordingPhone::holdDeliveries() {
  std::lock_guard lock(mutex_);
  holding_ = true;
}

void RecordingPhone::releaseDeliveries() {
  {
    std::lock_guard lock(mutex_);
    holding_ = false;
  }
  released_.notify_all();
}

std::vector<std::string> bodiesOf(const std::vector<client::Message>& messages) {
  std::vector<std::string> bodies;
  for (const auto& m : messages) bodies.push_back(m.body);
  return bodies;
}

}  // namespace switchboard::integration
