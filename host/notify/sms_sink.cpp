#include "notify/sms_sink.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "notify/child_process.h"

namespace switchboard::notify {

namespace {

std::int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr const char* kMaskedCode = "*****";

// The text as the outbox may show it: every occurrence of the live code masked.
std::string maskCode(std::string text, const std::string& code) {
  if (code.empty()) return text;
  for (auto at = text.find(code); at != std::string::npos; at = text.find(code, at)) {
    text.replace(at, code.size(), kMaskedCode);
    at += std::char_traits<char>::length(kMaskedCode);
  }
  return text;
}

// Why an argument must not reach the program: a leading '-' would be read as an option
// (the ABI says phones are E.164, "+digits"), and a control character has no business in
// a phone number or a code.
std::optional<std::string> unsafeArgument(const std::string& value, const char* what) {
  if (value.empty()) return std::string(what) + " is empty";
  if (value.front() == '-') return std::string(what) + " starts with '-'";
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) return std::string(what) + " has a control character";
  }
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------- DevSmsSink

DevSmsSink::DevSmsSink(std::size_t outboxCapacity) : SmsSink(outboxCapacity) {}

void DevSmsSink::send(std::string phone, std::string code, std::string text) {
  spdlog::info("sms (dev sink) to {}: code {}: {}", phone, code, text);
  outbox_.add(SmsRecord{std::move(phone), std::move(code), std::move(text), nowMs(), "logged"});
  std::lock_guard lock(mutex_);
  ++sent_;
}

SmsStats DevSmsSink::stats() const {
  std::lock_guard lock(mutex_);
  return SmsStats{sent_, 0, 0};
}

// ---------------------------------------------------------------- CommandSmsSink

CommandSmsSink::CommandSmsSink(std::vector<std::string> command, CommandSmsOptions options)
    : SmsSink(options.outboxCapacity), command_(std::move(command)), options_(options) {
  if (command_.empty() || command_.front().empty()) {
    throw std::invalid_argument(
        "SMS command is empty: give the program to run, e.g. "
        "/usr/local/bin/send-sms");
  }
  worker_ = std::thread([this] { run(); });
}

CommandSmsSink::~CommandSmsSink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

void CommandSmsSink::send(std::string phone, std::string code, std::string text) {
  Sms sms{std::move(phone), std::move(code), std::move(text)};
  std::optional<std::string> refused = unsafeArgument(sms.phone, "phone");
  if (!refused) refused = unsafeArgument(sms.code, "code");
  if (!refused) {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      refused = "sink is shutting down";
    } else if (queue_.size() >= options_.queueCapacity) {
      refused = "queue full (" + std::to_string(options_.queueCapacity) + ")";
    } else {
      queue_.push_back(std::move(sms));
    }
  }
  if (!refused) {
    wake_.notify_one();
    return;
  }
  spdlog::error("sms to {} dropped: {}", sms.phone, *refused);
  record(sms, "dropped: " + *refused);
  std::lock_guard lock(mutex_);
  ++stats_.failed;
  ++stats_.dropped;
}

SmsStats CommandSmsSink::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CommandSmsSink::run() {
  std::optional<std::chrono::steady_clock::time_point> shutdownDeadline;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_ && !shutdownDeadline) {
      shutdownDeadline = std::chrono::steady_clock::now() + options_.shutdownBound;
    }
    if (queue_.empty()) return;  // only reached when stopping
    if (shutdownDeadline && std::chrono::steady_clock::now() >= *shutdownDeadline) break;
    Sms sms = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    deliver(sms);
    lock.lock();
  }
  // Shutdown bound passed with SMS still queued.
  std::deque<Sms> left = std::move(queue_);
  lock.unlock();
  spdlog::error("sms command sink shut down with {} SMS not sent", left.size());
  for (const auto& sms : left) record(sms, "dropped: shutdown");
  lock.lock();
  stats_.failed += left.size();
  stats_.dropped += left.size();
}

void CommandSmsSink::deliver(const Sms& sms) {
  std::vector<std::string> argv = command_;
  argv.push_back(sms.phone);
  argv.push_back(sms.code);
  std::string text = sms.text;
  text.erase(std::remove(text.begin(), text.end(), '\0'), text.end());  // cannot live in environ
  ChildOutcome outcome = runChildProcess(argv, {"SWITCHBOARD_SMS_TEXT=" + text}, options_.timeout);
  // The outbox first, then the counters: whoever sees a count change finds the record.
  if (outcome.succeeded()) {
    spdlog::info("sms to {} handed to {}", sms.phone, command_.front());
    record(sms, "sent");
  } else {
    // The program's stderr may echo the code; the log is no place for a live one.
    std::string why = maskCode(outcome.describe(), sms.code);
    spdlog::error("sms to {} failed: {}: {}", sms.phone, command_.front(), why);
    record(sms, "failed: " + why);
  }
  std::lock_guard lock(mutex_);
  ++(outcome.succeeded() ? stats_.sent : stats_.failed);
}

void CommandSmsSink::record(const Sms& sms, std::string outcome) {
  outbox_.add(SmsRecord{sms.phone, kMaskedCode, maskCode(sms.text, sms.code), nowMs(),
                        maskCode(std::move(outcome), sms.code)});
}

// ---------------------------------------------------------------- factory

std::unique_ptr<SmsSink> makeSmsSink(const std::vector<std::string>& command) {
  if (command.empty()) return std::make_unique<DevSmsSink>();
  return std::make_unique<CommandSmsSink>(command);
}

}  // namespace switchboard::notify
