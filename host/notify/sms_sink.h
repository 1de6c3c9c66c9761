// Where registration codes go out: the SMS sinks the host hands (phone, code, text) to.
//
// The auth plugin decides the code and the whole SMS text; the host calls send() from its
// network threads. send() never blocks on the outside world: the dev sink only logs, the
// command sink queues the SMS for a worker thread of its own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "notify/sms_outbox.h"

namespace switchboard::notify {

struct SmsStats {
  std::uint64_t sent = 0;     // handed over: logged (dev) or the command exited 0
  std::uint64_t failed = 0;   // did not go out, for any reason (includes `dropped`)
  std::uint64_t dropped = 0;  // never ran: queue full, refused arguments, or shutdown
};

// The host's SMS sink. Implementations are thread-safe: any thread may call send(),
// stats() and outbox() at once. send() returns without waiting for delivery; the
// outcome shows in stats() and in the outbox.
class SmsSink {
 public:
  virtual ~SmsSink() = default;
  SmsSink(const SmsSink&) = delete;
  SmsSink& operator=(const SmsSink&) = delete;

  virtual void send(std::string phone, std::string code, std::string text) = 0;
  virtual SmsStats stats() const = 0;

  // The last SMS records (see SmsOutbox), newest first, for the admin API.
  std::vector<SmsRecord> outbox(std::optional<std::string> phone = {},
                                std::size_t limit = 100) const {
    return outbox_.read(phone, limit);
  }

 protected:
  explicit SmsSink(std::size_t outboxCapacity) : outbox_(outboxCapacity) {}
  SmsOutbox outbox_;
};

// The default, for development and tests: logs each SMS (code included) at info level and
// keeps it, unmasked, in the outbox. Nothing leaves the machine.
class DevSmsSink final : public SmsSink {
 public:
  explicit DevSmsSink(std::size_t outboxCapacity = 1000);

  void send(std::string phone, std::string code, std::string text) override;
  SmsStats stats() const override;

 private:
  mutable std::mutex mutex_;
  std::uint64_t sent_ = 0;
};

struct CommandSmsOptions {
  std::size_t queueCapacity = 1000;          // SMS waiting for the worker; beyond this send() drops
  std::chrono::milliseconds timeout{10000};  // per command run; then its process group is killed
  std::chrono::milliseconds shutdownBound{2000};  // how long the destructor keeps running the queue
  std::size_t outboxCapacity = 1000;
};

// Hands each SMS to an operator-configured program: runs `command` + {phone, code} with the
// text in the environment variable SWITCHBOARD_SMS_TEXT, without a shell (posix_spawnp, so
// a bare name is looked up in PATH). stdin/stdout are /dev/null; the first line of stderr
// is logged when the command fails.
//
// One worker thread, owned by the sink, runs commands one at a time from a bounded queue;
// send() only enqueues (a full queue drops the SMS with an error log). A run that exceeds
// `timeout` has its whole process group killed (SIGKILL) and counts as failed. The outbox
// records every outcome with the code masked, since the SMS went to a real gateway.
//
// Destruction stops accepting, keeps running queued SMS for up to `shutdownBound` (the
// running command still bounded by `timeout`), counts the rest as dropped, joins the worker.
class CommandSmsSink final : public SmsSink {
 public:
  // Throws std::invalid_argument when `command` is empty or its program name is empty.
  explicit CommandSmsSink(std::vector<std::string> command, CommandSmsOptions options = {});
  ~CommandSmsSink() override;

  void send(std::string phone, std::string code, std::string text) override;
  SmsStats stats() const override;

 private:
  struct Sms {
    std::string phone;
    std::string code;
    std::string text;
  };
  void run();
  void deliver(const Sms& sms);
  void record(const Sms& sms, std::string outcome);

  const std::vector<std::string> command_;
  const CommandSmsOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Sms> queue_;
  bool stopping_ = false;
  SmsStats stats_;
  std::thread worker_;  // last: starts after every member above exists
};

// The host's choice from its configuration: an empty command means the dev sink.
std::unique_ptr<SmsSink> makeSmsSink(const std::vector<std::string>& command);

}  // namespace switchboard::notify
