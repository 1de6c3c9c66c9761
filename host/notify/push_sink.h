// Where push notifications go out: the sinks the host hands (phone, text, queued) to when
// the offline plugin asks for a push after queuing a message for an absent phone.
//
// The host calls notify() from its network threads; notify() never blocks on the outside
// world: the log sink only logs, the webhook sink queues for a thread of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace switchboard::notify {

struct PushStats {
  std::uint64_t sent = 0;     // logged (log sink) or answered 2xx (webhook)
  std::uint64_t failed = 0;   // gave up: retries exhausted, or a non-retryable answer
  std::uint64_t dropped = 0;  // never tried: queue full, or still queued at shutdown
};

// The host's push sink. Implementations are thread-safe: any thread may call notify() and
// stats() at once; notify() returns without waiting for delivery.
class PushSink {
 public:
  PushSink() = default;
  virtual ~PushSink() = default;
  PushSink(const PushSink&) = delete;
  PushSink& operator=(const PushSink&) = delete;

  // `queued`: how many messages now wait for `phone` (the badge count).
  virtual void notify(std::string phone, std::string text, std::uint64_t queued) = 0;
  virtual PushStats stats() const = 0;
};

// The default: logs each push at info level and counts it as sent.
class LogPushSink final : public PushSink {
 public:
  void notify(std::string phone, std::string text, std::uint64_t queued) override;
  PushStats stats() const override;

 private:
  std::atomic<std::uint64_t> sent_{0};
};

struct WebhookPushOptions {
  std::size_t queueCapacity = 10000;               // pushes waiting; beyond this notify() drops
  std::chrono::milliseconds requestTimeout{5000};  // one attempt: connect, send, full answer
  unsigned maxRetries = 3;                         // after the first attempt
  std::chrono::milliseconds firstBackoff{200};     // doubles after each retry
  unsigned concurrency = 4;                        // requests in flight at once
  std::chrono::milliseconds flushBound{2000};      // destructor: time to empty the queue
};

// POSTs each push as JSON {"phone":"...","text":"...","queued":N} (Content-Type
// application/json) to an operator-configured plain-HTTP URL.
//
// The sink owns one thread running its own KJ event loop and kj::HttpClient (which keeps
// idle connections alive for reuse). notify() only appends to a bounded queue and wakes that
// thread; a full queue drops the push (counted, error logged). Each attempt is bounded by
// `requestTimeout`; a connection failure, a time-out or a 5xx answer is retried up to
// `maxRetries` times with doubling backoff; any other non-2xx answer fails at once.
//
// Destruction stops accepting, keeps sending what is queued for up to `flushBound`, then
// cancels what is left (counted as dropped) and joins the thread.
class WebhookPushSink final : public PushSink {
 public:
  // `url` is "http://HOST[:PORT]/path". Throws std::invalid_argument (one line) when it is
  // malformed or not plain http (https is refused: this sink has no TLS).
  explicit WebhookPushSink(const std::string& url, WebhookPushOptions options = {});
  ~WebhookPushSink() override;

  void notify(std::string phone, std::string text, std::uint64_t queued) override;
  PushStats stats() const override;

 private:
  class Dispatcher;  // the KJ thread and everything it owns
  std::unique_ptr<Dispatcher> dispatcher_;
};

// The host's choice from its configuration: an empty URL means the log sink; a malformed
// one throws std::invalid_argument.
std::unique_ptr<PushSink> makePushSink(const std::string& webhookUrl);

// The webhook body for one push, JSON-escaped (each byte of invalid UTF-8 becomes U+FFFD). Exposed
// because tests and the docs show it.
std::string pushJson(const std::string& phone, const std::string& text, std::uint64_t queued);

}  // namespace switchboard::notify
