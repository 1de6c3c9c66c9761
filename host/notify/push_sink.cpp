#include "notify/push_sink.h"

#include <kj/async-io.h>
#include <kj/compat/http.h>
#include <kj/compat/url.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace switchboard::notify {

// ---------------------------------------------------------------- JSON body

namespace {

void appendEscaped(std::string& out, const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  for (std::size_t i = 0; i < text.size();) {
    unsigned char c = byte(i);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      switch (c) {
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
      }
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      // A well-formed UTF-8 sequence passes through; anything else becomes U+FFFD, since
      // a receiver's JSON parser may reject the whole body over one stray byte.
      std::size_t length = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      if (c > 0xf4) length = 0;
      bool valid = length > 0 && i + length <= text.size();
      for (std::size_t k = 1; valid && k < length; ++k) valid = (byte(i + k) & 0xc0) == 0x80;
      if (valid && length == 3) {
        unsigned char second = byte(i + 1);
        valid =
            !(c == 0xe0 && second < 0xa0) && !(c == 0xed && second >= 0xa0);  // overlong, surrogate
      }
      if (valid && length == 4) {
        unsigned char second = byte(i + 1);
        valid = !(c == 0xf0 && second < 0x90) && !(c == 0xf4 && second >= 0x90);
      }
      if (valid) {
        out.append(text, i, length);
        i += length;
      } else {
        out += "\xef\xbf\xbd";  // U+FFFD, as UTF-8 (receivers need not decode \u escapes)
        ++i;
      }
    }
  }
}

}  // namespace

std::string pushJson(const std::string& phone, const std::string& text, std::uint64_t queued) {
  std::string out = "{\"phone\":\"";
  appendEscaped(out, phone);
  out += "\",\"text\":\"";
  appendEscaped(out, text);
  out += "\",\"queued\":";
  out += std::to_string(queued);
  out += '}';
  return out;
}

// ---------------------------------------------------------------- LogPushSink

void LogPushSink::notify(std::string phone, std::string text, std::uint64_t queued) {
  spdlog::info("push (log sink) to {} ({} queued): {}", phone, queued, text);
  sent_.fetch_add(1, std::memory_order_relaxed);
}

PushStats LogPushSink::stats() const {
  return PushStats{sent_.load(std::memory_order_relaxed), 0, 0};
}

// ---------------------------------------------------------------- URL

namespace {

std::string checkedWebhookUrl(const std::string& text) {
  auto refuse = [&](const std::string& why) {
    return std::invalid_argument("push webhook URL \"" + text + "\": " + why);
  };
  if (text.rfind("https://", 0) == 0) {
    throw refuse("https is not supported (no TLS in this sink); use http:// to a local relay");
  }
  if (text.rfind("http://", 0) != 0) throw refuse("must start with http://");
  KJ_IF_MAYBE (url, kj::Url::tryParse(text.c_str())) {
    std::string host(url->host.cStr());
    if (host.empty()) throw refuse("has no host");
    // The port is whatever follows the last ':' outside an IPv6 literal's brackets.
    auto colon = host.rfind(':');
    auto bracket = host.rfind(']');
    if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
      std::string port = host.substr(colon + 1);
      bool digits = !port.empty() && port.size() <= 5 &&
                    port.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535) {
        throw refuse("bad port \"" + port + "\"");
      }
      if (colon == 0) throw refuse("has no host");
    }
    return text;
  }
  throw refuse("not a valid URL");
}

}  // namespace

// ---------------------------------------------------------------- WebhookPushSink

// The sink's KJ thread and the queue it shares with callers of notify().
//
// Callers touch only the mutex-guarded part: the queue, the counters, and the fulfillers
// that wake the thread (KJ cross-thread fulfillers, so waking never blocks). Everything KJ
// (event loop, HTTP client, timers, promises) is made, used and destroyed on the thread.
class WebhookPushSink::Dispatcher {
 public:
  Dispatcher(std::string url, WebhookPushOptions options)
      : url_(std::move(url)), options_(options) {
    if (options_.concurrency == 0) options_.concurrency = 1;
    thread_ = std::thread([this] { threadMain(); });
    std::unique_lock lock(mutex_);
    started_.wait(lock, [this] { return running_ || finished_; });
  }

  ~Dispatcher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      if (stopRequested_ != nullptr) stopRequested_->fulfill();
      for (auto* idle : idle_) {
        if (idle->isWaiting()) idle->fulfill();
      }
    }
    thread_.join();
  }

  void enqueue(std::string phone, std::string body) {
    {
      std::lock_guard lock(mutex_);
      if (!stopping_ && !finished_ && queue_.size() < options_.queueCapacity) {
        queue_.push_back(Push{std::move(phone), std::move(body)});
        for (auto* idle : idle_) {
          if (idle->isWaiting()) {
            idle->fulfill();
            break;
          }
        }
        return;
      }
      ++stats_.dropped;
    }
    spdlog::error("push to {} dropped: webhook queue full ({}) or sink stopped", phone,
                  options_.queueCapacity);
  }

  PushStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  struct Push {
    std::string phone;
    std::string body;
  };

  // What the KJ thread owns while it runs.
  struct Loop {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    kj::HttpHeaderTable headerTable;
    kj::Own<kj::HttpClient> client;
  };

  // An idle worker's listing in idle_: made under the lock, removed (then the fulfiller
  // destroyed, on the KJ thread) when the wait ends or is cancelled.
  class IdleListing {
   public:
    IdleListing(Dispatcher& dispatcher, kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller)
        : dispatcher_(dispatcher), fulfiller_(kj::mv(fulfiller)) {
      dispatcher_.idle_.push_back(fulfiller_.get());  // caller holds the lock
    }
    ~IdleListing() {
      std::lock_guard lock(dispatcher_.mutex_);
      auto& idle = dispatcher_.idle_;
      idle.erase(std::remove(idle.begin(), idle.end(), fulfiller_.get()), idle.end());
    }

   private:
    Dispatcher& dispatcher_;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller_;
  };

  struct AttemptResult {
    bool delivered = false;
    bool retryable = false;
    std::string reason;
  };

  void threadMain() {
    try {
      Loop loop;
      kj::HttpClientSettings settings;
      settings.idleTimeout = 30 * kj::SECONDS;
      loop.client = kj::newHttpClient(loop.io.provider->getTimer(), loop.headerTable,
                                      loop.io.provider->getNetwork(), nullptr, settings);
      loop_ = &loop;
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        std::lock_guard lock(mutex_);
        stopRequested_ = stop.fulfiller.get();
        running_ = true;
      }
      started_.notify_all();

      auto workers = kj::heapArrayBuilder<kj::Promise<void>>(options_.concurrency);
      for (unsigned i = 0; i < options_.concurrency; ++i) workers.add(workerLoop());
      bool flushCut = false;
      auto& timer = loop.io.provider->getTimer();
      auto flushBound = stop.promise.then(
          [&]() { return timer.afterDelay(options_.flushBound.count() * kj::MILLISECONDS); });
      kj::joinPromises(workers.finish())
          .exclusiveJoin(flushBound.then([&]() { flushCut = true; }))
          .wait(loop.io.waitScope);

      std::size_t left = 0;
      {
        std::lock_guard lock(mutex_);
        stopRequested_ = nullptr;
        left = queue_.size() + inFlight_;
        stats_.dropped += left;
        queue_.clear();
        inFlight_ = 0;
      }
      if (flushCut && left > 0) {
        spdlog::error("push webhook sink stopped with {} pushes not delivered", left);
      }
      loop_ = nullptr;
    } catch (const kj::Exception& e) {
      spdlog::error("push webhook thread failed: {}", e.getDescription().cStr());
    } catch (const std::exception& e) {
      spdlog::error("push webhook thread failed: {}", e.what());
    }
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
      stats_.dropped += queue_.size();
      queue_.clear();
    }
    started_.notify_all();
  }

  // One of `concurrency` loops: take a push, deliver it (with retries), repeat; sleep on a
  // cross-thread fulfiller when the queue is empty; end once stopping with nothing queued.
  kj::Promise<void> workerLoop() {
    kj::Own<Push> push;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        if (stopping_) return kj::READY_NOW;
        auto wake = kj::newPromiseAndCrossThreadFulfiller<void>();
        auto listing = kj::heap<IdleListing>(*this, kj::mv(wake.fulfiller));
        return wake.promise.attach(kj::mv(listing)).then([this]() { return workerLoop(); });
      }
      push = kj::heap<Push>(std::move(queue_.front()));
      queue_.pop_front();
      ++inFlight_;
    }
    return deliver(kj::mv(push), 0).then([this]() { return workerLoop(); });
  }

  kj::Promise<void> deliver(kj::Own<Push> push, unsigned attempt) {
    auto sending = attemptOnce(*push);
    return sending.then(
        [this, push = kj::mv(push), attempt](AttemptResult result) mutable -> kj::Promise<void> {
          if (!result.delivered && result.retryable && attempt < options_.maxRetries) {
            auto backoff = options_.firstBackoff.count() * (std::int64_t{1} << attempt);
            spdlog::debug("push to {}: {}; retry {} in {} ms", push->phone, result.reason,
                          attempt + 1, backoff);
            return loop_->io.provider->getTimer()
                .afterDelay(backoff * kj::MILLISECONDS)
                .then([this, push = kj::mv(push), attempt]() mutable {
                  return deliver(kj::mv(push), attempt + 1);
                });
          }
          {
            std::lock_guard lock(mutex_);
            --inFlight_;
            ++(result.delivered ? stats_.sent : stats_.failed);
          }
          if (!result.delivered) {
            spdlog::warn("push to {} failed after {} attempt(s): {}", push->phone, attempt + 1,
                         result.reason);
          }
          return kj::READY_NOW;
        });
  }

  kj::Promise<AttemptResult> attemptOnce(const Push& push) {
    kj::HttpHeaders headers(loop_->headerTable);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
    auto body = kj::heapString(push.body.data(), push.body.size());
    auto request =
        loop_->client->request(kj::HttpMethod::POST, url_.c_str(), headers, uint64_t{body.size()});
    auto written = request.body->write(body.begin(), body.size());
    auto sent = written.attach(kj::mv(request.body), kj::mv(body));
    // The answer's body is read to the end (bounded) so the connection can be reused.
    auto answered = request.response.then([](kj::HttpClient::Response&& response) {
      auto status = response.statusCode;
      return response.body->readAllBytes(1 << 20)
          .attach(kj::mv(response.body))
          .then([status](kj::Array<kj::byte>&&) { return status; });
    });
    auto whole = sent.then([answered = kj::mv(answered)]() mutable { return kj::mv(answered); });
    return loop_->io.provider->getTimer()
        .timeoutAfter(options_.requestTimeout.count() * kj::MILLISECONDS, kj::mv(whole))
        .then(
            [](uint status) {
              AttemptResult result;
              result.delivered = status >= 200 && status < 300;
              result.retryable = status >= 500;
              result.reason = "HTTP status " + std::to_string(status);
              return result;
            },
            [](kj::Exception&& e) {
              AttemptResult result;
              result.retryable = true;  // connection refused/reset, time-out
              result.reason = e.getDescription().cStr();
              return result;
            });
  }

  const std::string url_;
  WebhookPushOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable started_;
  bool running_ = false;
  bool finished_ = false;
  bool stopping_ = false;
  std::deque<Push> queue_;
  std::size_t inFlight_ = 0;
  PushStats stats_;
  std::vector<const kj::CrossThreadPromiseFulfiller<void>*> idle_;        // owned by IdleListing
  const kj::CrossThreadPromiseFulfiller<void>* stopRequested_ = nullptr;  // owned by the thread

  Loop* loop_ = nullptr;  // only touched on the thread; owned by threadMain's frame
  std::thread thread_;    // last: starts after every member above exists
};

WebhookPushSink::WebhookPushSink(const std::string& url, WebhookPushOptions options)
    : dispatcher_(std::make_unique<Dispatcher>(checkedWebhookUrl(url), options)) {}

WebhookPushSink::~WebhookPushSink() = default;

void WebhookPushSink::notify(std::string phone, std::string text, std::uint64_t queued) {
  std::string body = pushJson(phone, text, queued);
  dispatcher_->enqueue(std::move(phone), std::move(body));
}

PushStats WebhookPushSink::stats() const {
  return dispatcher_->stats();
}

// ---------------------------------------------------------------- factory

std::unique_ptr<PushSink> makePushSink(const std::string& webhookUrl) {
  if (webhookUrl.empty()) return std::make_unique<LogPushSink>();
  return std::make_unique<WebhookPushSink>(webhookUrl);
}

}  // namespace switchboard::notify
