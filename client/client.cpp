#include "client/client.h"

#include <cxxabi.h>
#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string_view>
#include <unordered_set>

#include "net/cross_thread_completion.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/tls_context.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::client {
namespace {

// Kicks after which reconnecting would only fight another device for the phone.
bool isFinalKick(std::string_view reason) {
  return reason == "replaced by a new device" || reason == "logged in elsewhere";
}

std::string describe(const kj::Exception& exception) {
  std::string text(exception.getDescription().cStr());
  constexpr std::string_view kRemotePrefix = "remote exception: ";
  if (text.starts_with(kRemotePrefix)) text.erase(0, kRemotePrefix.size());
  return text;
}

ClientError toClientError(const kj::Exception& exception) {
  auto kind = exception.getType() == kj::Exception::Type::DISCONNECTED
                  ? ClientError::Kind::disconnected
                  : ClientError::Kind::refused;
  return ClientError(kind, describe(exception));
}

ClientError notLoggedIn() {
  return ClientError(ClientError::Kind::notLoggedIn, "not logged in (no session right now)");
}

capnp::Data::Reader dataOf(const std::string& bytes) {
  return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size());
}

std::string textOf(capnp::Text::Reader text) {
  return std::string(text.cStr(), text.size());
}

std::string bytesOf(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

template <class ListBuilder>
void fillTexts(ListBuilder list, const std::vector<std::string>& texts) {
  for (unsigned i = 0; i < texts.size(); ++i) list.set(i, capnp::Text::Reader(texts[i]));
}

Message toMessage(proto::Message::Reader m) {
  return Message{m.getId(),
                 textOf(m.getFrom()),
                 m.getGroup(),
                 textOf(m.getClientMsgId()),
                 bytesOf(m.getBody()),
                 m.getTimestamp()};
}

// The answer to one call, settled once on the client's thread. If the call is
// cancelled (the client closes) before an answer, the destructor settles it as
// disconnected, so a waiter never sees a bare broken_promise.
template <class T>
struct Reply {
  std::promise<T> promise;
  bool settled = false;

  ~Reply() {
    if (!settled) {
      promise.set_exception(std::make_exception_ptr(
          ClientError(ClientError::Kind::disconnected, "the client closed before an answer")));
    }
  }
  void fail(std::exception_ptr error) {
    if (std::exchange(settled, true)) return;
    promise.set_exception(std::move(error));
  }
  template <class... V>
  void succeed(V&&... value) {
    if (std::exchange(settled, true)) return;
    promise.set_value(std::forward<V>(value)...);
  }
};

// Messages already handed to onMessage, the most recent `capacity` of them,
// known both by server id (a redelivery after a lost return) and by (sender,
// clientMsgId) (a repeat with a new id, after the server died between
// delivering a message and acknowledging it to its sender, who then re-sent).
class DeliveredWindow {
 public:
  explicit DeliveredWindow(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}
  // True if the message is new (and now remembered).
  bool insert(std::uint64_t id, std::string_view from, std::string_view clientMsgId) {
    std::string origin;
    origin.reserve(from.size() + 1 + clientMsgId.size());
    origin.append(from).push_back('\0');
    origin.append(clientMsgId);
    if (ids_.contains(id) || origins_.contains(origin)) return false;
    ids_.insert(id);
    origins_.insert(origin);
    order_.emplace_back(id, std::move(origin));
    if (order_.size() > capacity_) {
      ids_.erase(order_.front().first);
      origins_.erase(order_.front().second);
      order_.pop_front();
    }
    return true;
  }

 private:
  std::size_t capacity_;
  std::unordered_set<std::uint64_t> ids_;
  std::unordered_set<std::string> origins_;
  std::deque<std::pair<std::uint64_t, std::string>> order_;
};

class LoggingErrorHandler final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& exception) override {
    spdlog::debug("client task failed: {}", exception.getDescription().cStr());
  }
};
LoggingErrorHandler errorHandler;

}  // namespace

// ---------------------------------------------------------------- Impl

// The TLS settings of `options` (nullopt: plaintext). Clients trusting the same CA file share
// one context (one parse, one SSL_CTX) while any of them lives: a benchmark runs thousands.
std::optional<net::ClientTls> clientTls(const ClientOptions& options) {
  if (options.tlsCaFile.empty()) return std::nullopt;
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<kj::TlsContext>> contexts;
  std::lock_guard lock(mutex);
  std::shared_ptr<kj::TlsContext> context = contexts[options.tlsCaFile].lock();
  if (!context) {
    context = net::makeClientTlsContext(options.tlsCaFile);
    contexts[options.tlsCaFile] = context;
  }
  return net::ClientTls{std::move(context), options.tlsServerName};
}

// Everything below runs on the client's thread unless it says otherwise.
struct Client::Impl : std::enable_shared_from_this<Impl> {
  // One connection: the socket, the Gateway on it and, once logged in, the Session.
  struct Link {
    kj::Own<net::RpcConnection> connection;  // first: destroyed after the capabilities
    proto::Gateway::Client gateway;
    kj::Maybe<proto::Session::Client> session;
    std::uint64_t generation;
  };

  Impl(ClientOptions options, net::NetworkThread& thread)
      : options(std::move(options)),
        endpoints(this->options.endpoints.empty() ? std::vector{this->options.endpoint}
                                                  : this->options.endpoints),
        tls(clientTls(this->options)),
        thread(thread),
        delivered(this->options.dedupeWindow) {}

  const ClientOptions options;
  const std::vector<std::string> endpoints;  // never empty
  const std::optional<net::ClientTls> tls;   // set: every connection is TLS
  std::size_t currentEndpoint = 0;           // loop thread
  net::NetworkThread& thread;

  // Written by the caller's thread before login, read by phone().
  std::string callerPhone;
  std::atomic<bool> loggedIn{false};

  // Loop-thread state.
  std::function<void(const Message&)> messageCallback;
  std::function<void(const Receipt&)> receiptCallback;
  std::function<void(const PresenceUpdate&)> presenceCallback;
  std::function<void(const std::string&)> kickedCallback;
  std::function<void(ConnectionState)> connectionCallback;

  kj::Own<kj::TaskSet> tasks;  // made on the loop by open(), dropped by close()
  kj::Maybe<kj::Own<Link>> link;
  kj::Maybe<kj::ForkedPromise<void>> connecting;
  bool connectingFailed = false;
  std::uint64_t generations = 0;

  std::string phone;
  std::string key;
  bool wantSession = false;  // login() succeeded and no logout/final kick since
  bool closed = false;
  bool reconnectScheduled = false;
  std::chrono::milliseconds backoff{0};
  std::shared_ptr<asio::steady_timer> reconnectTimer;
  std::mt19937 random{std::random_device{}()};
  DeliveredWindow delivered;

  // ---- cross-thread calls (any thread)

  // Runs `fn` (Impl& -> kj::Promise<T>) on the loop; the future gets its
  // result or a ClientError.
  template <class T, class F>
  std::future<T> call(F fn) {
    auto reply = std::make_shared<Reply<T>>();
    std::future<T> future = reply->promise.get_future();
    auto self = shared_from_this();
    bool posted = thread.post([self, reply, fn = std::move(fn)]() mutable {
      if (self->closed) {
        reply->fail(std::make_exception_ptr(
            ClientError(ClientError::Kind::disconnected, "the client is closed")));
        return;
      }
      try {
        kj::Promise<T> promise = fn(*self);
        if constexpr (std::is_void_v<T>) {
          self->tasks->add(promise.then([reply]() { reply->succeed(); },
                                        [reply](kj::Exception&& e) {
                                          reply->fail(std::make_exception_ptr(toClientError(e)));
                                        }));
        } else {
          self->tasks->add(promise.then([reply](T&& value) { reply->succeed(std::move(value)); },
                                        [reply](kj::Exception&& e) {
                                          reply->fail(std::make_exception_ptr(toClientError(e)));
                                        }));
        }
      } catch (const kj::Exception& e) {
        reply->fail(std::make_exception_ptr(toClientError(e)));
      } catch (...) {
        reply->fail(std::current_exception());
      }
    });
    if (!posted) {
      reply->fail(std::make_exception_ptr(
          ClientError(ClientError::Kind::disconnected, "the client's network thread has stopped")));
    }
    return future;
  }

  void requireOffLoop() const {
    if (thread.isCurrent()) {
      throw std::logic_error(
          "a blocking switchboard::client::Client call on the client's own thread would "
          "deadlock; use the *Async form in callbacks");
    }
  }

  template <class T>
  T await(std::future<T> future) {
    if (future.wait_for(options.callTimeout) != std::future_status::ready) {
      throw ClientError(ClientError::Kind::timedOut,
                        "no answer from the server within " +
                            std::to_string(options.callTimeout.count()) + " ms");
    }
    return future.get();
  }

  template <class T, class F>
  T callSync(F fn) {
    requireOffLoop();
    return await(call<T>(std::move(fn)));
  }

  // Runs `fn` on the loop and waits (for setting callbacks and closing).
  template <class F>
  void onLoop(F fn) {
    if (thread.isCurrent()) {
      fn();
    } else {
      thread.runSync(std::move(fn));
    }
  }

  // ---- callbacks (loop thread)

  template <class Callback, class... Args>
  void emit(const Callback& callback, const char* what, Args&&... args) {
    if (!callback) return;
    try {
      callback(std::forward<Args>(args)...);
    } catch (abi::__forced_unwind&) {
      // The thread is being cancelled (Python ends a thread that asks for the
      // GIL while the interpreter exits): swallowing that aborts the process.
      throw;
    } catch (const std::exception& e) {
      spdlog::warn("client {}: the {} callback threw: {}", phone, what, e.what());
    } catch (...) {
      spdlog::warn("client {}: the {} callback threw", phone, what);
    }
  }

  void deliver(capnp::List<proto::Message>::Reader messages) {
    for (auto m : messages) {
      // A redelivery after a lost return, or a repeat after a server crash.
      if (!delivered.insert(
              m.getId(), std::string_view(m.getFrom().cStr(), m.getFrom().size()),
              std::string_view(m.getClientMsgId().cStr(), m.getClientMsgId().size()))) {
        continue;
      }
      emit(messageCallback, "onMessage", toMessage(m));
    }
  }

  void kicked(const std::string& reason) {
    if (isFinalKick(reason)) wantSession = false;
    emit(kickedCallback, "onKicked", reason);
  }

  // ---- connection (loop thread)

  kj::Promise<void> ensureConnected() {
    if (link != nullptr) return kj::READY_NOW;
    if (connectingFailed) {
      connecting = nullptr;
      connectingFailed = false;
    }
    if (connecting == nullptr) {
      auto attempt = connectToAny(0).then(
          [this](kj::Own<net::RpcConnection> connection) {
            auto gateway = connection->bootstrapAs<proto::Gateway>();
            std::uint64_t generation = ++generations;
            tasks->add(connection->onDisconnect()
                           .catch_([](kj::Exception&&) {})
                           .then([this, generation]() {
                             return kj::evalLater([this, generation]() { linkLost(generation); });
                           }));
            link = kj::heap<Link>(Link{kj::mv(connection), kj::mv(gateway), nullptr, generation});
          },
          [this](kj::Exception&& e) {
            connectingFailed = true;
            kj::throwFatalException(kj::mv(e));
          });
      connecting = attempt.fork();
    }
    KJ_IF_MAYBE (pending, connecting) {
      return pending->addBranch();
    }
    KJ_UNREACHABLE;
  }

  // Connects to endpoints[(current + tried) % n], moving on to the next after
  // a failure until each was tried once; fails with the last endpoint's error.
  kj::Promise<kj::Own<net::RpcConnection>> connectToAny(std::size_t tried) {
    std::size_t index = (currentEndpoint + tried) % endpoints.size();
    return net::RpcConnection::connect(thread, endpoints[index], tls ? &*tls : nullptr)
        .then(
            [this, index](kj::Own<net::RpcConnection> connection)
                -> kj::Promise<kj::Own<net::RpcConnection>> {
              currentEndpoint = index;
              return kj::mv(connection);
            },
            [this, tried](kj::Exception&& e) -> kj::Promise<kj::Own<net::RpcConnection>> {
              if (tried + 1 >= endpoints.size()) return kj::mv(e);
              return connectToAny(tried + 1);
            });
  }

  Link& currentLink() {
    KJ_IF_MAYBE (l, link) {
      return **l;
    }
    throw KJ_EXCEPTION(DISCONNECTED, "not connected");
  }

  proto::Session::Client session() {
    KJ_IF_MAYBE (l, link) {
      KJ_IF_MAYBE (s, (*l)->session) {
        return *s;
      }
    }
    throw notLoggedIn();
  }

  kj::Promise<void> connectAndLogin() {
    return ensureConnected().then([this]() {
      Link& l = currentLink();
      std::uint64_t generation = l.generation;
      auto request = l.gateway.loginRequest();
      request.setPhone(phone);
      request.setKey(dataOf(key));
      request.setInbox(kj::heap<InboxServer>(weak_from_this()));
      return request.send().then([this, generation](auto&& response) {
        KJ_IF_MAYBE (l, link) {
          if ((*l)->generation == generation) {
            (*l)->session = response.getSession();
            loggedIn = true;
            backoff = std::chrono::milliseconds(0);
            emit(connectionCallback, "onConnectionState", ConnectionState::connected);
            return;
          }
        }
        throw KJ_EXCEPTION(DISCONNECTED, "the connection was lost during login");
      });
    });
  }

  void dropLink() {
    KJ_IF_MAYBE (l, link) {
      (*l)->session = nullptr;
    }
    link = nullptr;
    // Not from inside the fork: every caller runs outside the connect attempt.
    connecting = nullptr;
    if (loggedIn.exchange(false)) {
      emit(connectionCallback, "onConnectionState", ConnectionState::disconnected);
    }
  }

  void linkLost(std::uint64_t generation) {
    KJ_IF_MAYBE (l, link) {
      if ((*l)->generation != generation) return;
    } else {
      return;
    }
    dropLink();
    scheduleReconnect();
  }

  void scheduleReconnect() {
    if (closed || !wantSession || !options.autoReconnect || reconnectScheduled) return;
    reconnectScheduled = true;
    backoff =
        backoff.count() == 0 ? options.reconnectMin : std::min(backoff * 2, options.reconnectMax);
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    auto delay = std::chrono::milliseconds(
        std::max<std::int64_t>(1, static_cast<std::int64_t>(backoff.count() * jitter(random))));
    reconnectTimer = std::make_shared<asio::steady_timer>(thread.ioContext(), delay);
    std::weak_ptr<Impl> weak = weak_from_this();
    reconnectTimer->async_wait([weak](const std::error_code& error) {
      if (error) return;
      if (auto self = weak.lock()) {
        self->thread.post([weak]() {
          if (auto self = weak.lock()) self->reconnect();
        });
      }
    });
  }

  // Resolves by throwing DISCONNECTED after `delay`, unless dropped first: an
  // attempt joined with it cannot hang on a server that accepts and never answers.
  kj::Promise<void> deadline(std::chrono::milliseconds delay) {
    auto pending = net::makeCompletion<void>();
    auto timer = std::make_shared<asio::steady_timer>(thread.ioContext(), delay);
    timer->async_wait([completion = pending.completion](const std::error_code& error) {
      if (!error) completion.complete();
    });
    return pending.promise.attach(kj::defer([timer]() { timer->cancel(); })).then([delay]() {
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "no answer within",
                                           static_cast<std::int64_t>(delay.count()), "ms"));
    });
  }

  void reconnect() {
    reconnectScheduled = false;
    if (closed || !wantSession || loggedIn) return;
    tasks->add(connectAndLogin()
                   .exclusiveJoin(deadline(options.callTimeout))
                   .catch_([this](kj::Exception&& e) {
                     if (closed) return;
                     auto type = e.getType();
                     if (type == kj::Exception::Type::DISCONNECTED ||
                         type == kj::Exception::Type::OVERLOADED) {
                       spdlog::debug("client {}: reconnect failed ({}), retrying", phone,
                                     describe(e));
                       dropLink();  // a half-open link (connected, login unanswered) is abandoned
                       scheduleReconnect();
                       return;
                     }
                     // The key no longer logs in: nothing a retry can fix.
                     wantSession = false;
                     dropLink();
                     emit(kickedCallback, "onKicked", "login refused: " + describe(e));
                   }));
  }

  void open() { tasks = kj::heap<kj::TaskSet>(errorHandler); }

  void close() {
    closed = true;
    wantSession = false;
    if (reconnectTimer) reconnectTimer->cancel();
    reconnectTimer.reset();
    connecting = nullptr;
    dropLink();
    tasks = nullptr;  // cancels calls in flight: their replies settle as disconnected
  }

  // ---------------------------------------------------------------- InboxServer

  // What the server pushes to. Holds the client weakly: a late call after the
  // client closed is answered and dropped.
  class InboxServer final : public proto::Inbox::Server {
   public:
    explicit InboxServer(std::weak_ptr<Impl> impl) : impl_(std::move(impl)) {}

    kj::Promise<void> deliver(DeliverContext context) override {
      if (auto impl = impl_.lock()) impl->deliver(context.getParams().getMessages());
      return kj::READY_NOW;
    }
    kj::Promise<void> receipt(ReceiptContext context) override {
      if (auto impl = impl_.lock()) {
        for (auto r : context.getParams().getReceipts()) {
          impl->emit(impl->receiptCallback, "onReceipt",
                     Receipt{r.getId(), textOf(r.getBy()), static_cast<ReceiptKind>(r.getKind()),
                             r.getTimestamp()});
        }
      }
      return kj::READY_NOW;
    }
    kj::Promise<void> presence(PresenceContext context) override {
      if (auto impl = impl_.lock()) {
        for (auto u : context.getParams().getUpdates()) {
          impl->emit(impl->presenceCallback, "onPresence",
                     PresenceUpdate{textOf(u.getPhone()), static_cast<PresenceState>(u.getState()),
                                    u.getLastSeen(), u.getTyping()});
        }
      }
      return kj::READY_NOW;
    }
    kj::Promise<void> kicked(KickedContext context) override {
      if (auto impl = impl_.lock()) impl->kicked(textOf(context.getParams().getReason()));
      return kj::READY_NOW;
    }

   private:
    std::weak_ptr<Impl> impl_;
  };

  // ---- session calls (loop thread)

  kj::Promise<SendResult> send(std::string to, std::string body, std::string clientMsgId) {
    auto request = session().sendRequest();
    request.setTo(to);
    request.setClientMsgId(clientMsgId);
    request.setBody(dataOf(body));
    return request.send().then(
        [this, to = std::move(to), clientMsgId = std::move(clientMsgId)](auto&& response) {
          SendResult result{response.getId(), response.getTimestamp(), clientMsgId,
                            response.getDeliveredAt()};
          // The "delivered" tick rode in the reply: reported like one that came alone.
          if (result.deliveredAt != 0) {
            emit(receiptCallback, "onReceipt",
                 Receipt{result.id, std::move(to), ReceiptKind::delivered, result.deliveredAt});
          }
          return result;
        });
  }
};

// ---------------------------------------------------------------- Client

Client::Client(ClientOptions options)
    : ownedThread_(std::make_unique<net::NetworkThread>("client")) {
  ownedThread_->start();
  impl_ = std::make_shared<Impl>(std::move(options), *ownedThread_);
  impl_->onLoop([impl = impl_.get()]() { impl->open(); });
}

Client::Client(ClientOptions options, net::NetworkThread& thread)
    : impl_(std::make_shared<Impl>(std::move(options), thread)) {
  impl_->onLoop([impl = impl_.get()]() { impl->open(); });
}

Client::~Client() {
  try {
    impl_->onLoop([impl = impl_.get()]() { impl->close(); });
  } catch (const std::exception& e) {
    // The shared thread stopped first: its stop destroyed what was on it.
    spdlog::debug("client close: {}", e.what());
  }
  impl_.reset();
  ownedThread_.reset();
}

void Client::onMessage(std::function<void(const Message&)> callback) {
  impl_->onLoop([&]() { impl_->messageCallback = std::move(callback); });
}
void Client::onReceipt(std::function<void(const Receipt&)> callback) {
  impl_->onLoop([&]() { impl_->receiptCallback = std::move(callback); });
}
void Client::onPresence(std::function<void(const PresenceUpdate&)> callback) {
  impl_->onLoop([&]() { impl_->presenceCallback = std::move(callback); });
}
void Client::onKicked(std::function<void(const std::string&)> callback) {
  impl_->onLoop([&]() { impl_->kickedCallback = std::move(callback); });
}
void Client::onConnectionState(std::function<void(ConnectionState)> callback) {
  impl_->onLoop([&]() { impl_->connectionCallback = std::move(callback); });
}

ServerInfo Client::serverInfo() {
  return impl_->callSync<ServerInfo>([](Impl& impl) {
    return impl.ensureConnected().then([&impl]() {
      return impl.currentLink().gateway.serverInfoRequest().send().then([](auto&& response) {
        return ServerInfo{textOf(response.getVersion()), textOf(response.getNode())};
      });
    });
  });
}

std::uint32_t Client::requestCode(const std::string& phone) {
  return impl_->callSync<std::uint32_t>([phone](Impl& impl) {
    return impl.ensureConnected().then([&impl, phone]() {
      auto request = impl.currentLink().gateway.requestCodeRequest();
      request.setPhone(phone);
      return request.send().then(
          [](auto&& response) -> std::uint32_t { return response.getExpiresInSeconds(); });
    });
  });
}

std::string Client::verify(const std::string& phone, const std::string& code,
                           const std::string& deviceName) {
  return impl_->callSync<std::string>([phone, code, deviceName](Impl& impl) {
    return impl.ensureConnected().then([&impl, phone, code, deviceName]() {
      auto request = impl.currentLink().gateway.verifyRequest();
      request.setPhone(phone);
      request.setCode(code);
      request.setDeviceName(deviceName);
      return request.send().then([](auto&& response) { return bytesOf(response.getKey()); });
    });
  });
}

void Client::login(const std::string& phone, const std::string& key) {
  impl_->requireOffLoop();
  impl_->callerPhone = phone;
  impl_->callSync<void>([phone, key](Impl& impl) -> kj::Promise<void> {
    if (impl.loggedIn) throw ClientError(ClientError::Kind::refused, "already logged in");
    impl.phone = phone;
    impl.key = key;
    return impl.connectAndLogin().then([&impl]() { impl.wantSession = true; });
  });
}

void Client::logout() {
  impl_->callSync<void>([](Impl& impl) -> kj::Promise<void> {
    impl.wantSession = false;
    auto request = impl.session().logoutRequest();
    return request.send().ignoreResult().then(
        [&impl]() { impl.dropLink(); },
        [&impl](kj::Exception&& e) {
          impl.dropLink();
          if (e.getType() != kj::Exception::Type::DISCONNECTED) {
            kj::throwFatalException(kj::mv(e));
          }
        });
  });
}

bool Client::isLoggedIn() const {
  return impl_->loggedIn;
}

const std::string& Client::phone() const {
  return impl_->callerPhone;
}

SendResult Client::send(const std::string& to, const std::string& body,
                        std::optional<std::string> clientMsgId) {
  impl_->requireOffLoop();
  return impl_->await(sendAsync(to, body, std::move(clientMsgId)));
}

std::future<SendResult> Client::sendAsync(const std::string& to, const std::string& body,
                                          std::optional<std::string> clientMsgId) {
  return impl_->call<SendResult>(
      [to, body, id = clientMsgId.value_or(newClientMsgId())](Impl& impl) mutable {
        return impl.send(std::move(to), std::move(body), std::move(id));
      });
}

void Client::sendAsync(const std::string& to, const std::string& body,
                       std::optional<std::string> clientMsgId, SendCallback done) {
  // A holder that reports "disconnected" if the client closes before an answer.
  // Built in place and never copied: a copy's destructor would report
  // "closed" for a send still under way (and the callback would run twice).
  struct Pending {
    explicit Pending(SendCallback callback) : done(std::move(callback)) {}
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    SendCallback done;
    ~Pending() {
      if (done) {
        ClientError error(ClientError::Kind::disconnected, "the client closed before an answer");
        done(std::nullopt, &error);
      }
    }
    void finish(std::optional<SendResult> result, const ClientError* error) {
      if (auto callback = std::exchange(done, nullptr)) callback(std::move(result), error);
    }
  };
  auto pending = std::make_shared<Pending>(std::move(done));
  auto self = impl_;
  bool posted = impl_->thread.post([self, pending, to, body,
                                    id = clientMsgId.value_or(newClientMsgId())]() mutable {
    if (self->closed) return;  // ~Pending reports it
    try {
      self->tasks->add(self->send(std::move(to), std::move(body), std::move(id))
                           .then([pending](SendResult result) { pending->finish(result, nullptr); },
                                 [pending](kj::Exception&& e) {
                                   ClientError error = toClientError(e);
                                   pending->finish(std::nullopt, &error);
                                 }));
    } catch (const ClientError& error) {
      pending->finish(std::nullopt, &error);
    } catch (const kj::Exception& e) {
      ClientError error = toClientError(e);
      pending->finish(std::nullopt, &error);
    }
  });
  if (!posted) {
    ClientError error(ClientError::Kind::disconnected, "the client's network thread has stopped");
    pending->finish(std::nullopt, &error);
  }
}

SendResult Client::sendGroup(std::uint64_t group, const std::string& body,
                             std::optional<std::string> clientMsgId) {
  return impl_->callSync<SendResult>(
      [group, body, id = clientMsgId.value_or(newClientMsgId())](Impl& impl) {
        auto request = impl.session().sendGroupRequest();
        request.setGroup(group);
        request.setClientMsgId(id);
        request.setBody(dataOf(body));
        return request.send().then([id](auto&& response) {
          return SendResult{response.getId(), response.getTimestamp(), id};
        });
      });
}

std::future<void> Client::receiptAsync(const std::vector<std::uint64_t>& ids, ReceiptKind kind) {
  return impl_->call<void>([ids, kind](Impl& impl) {
    auto request = impl.session().receiptRequest();
    auto list = request.initIds(static_cast<unsigned>(ids.size()));
    for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
    request.setKind(static_cast<proto::ReceiptKind>(kind));
    return request.send().ignoreResult();
  });
}

void Client::receipt(const std::vector<std::uint64_t>& ids, ReceiptKind kind) {
  impl_->requireOffLoop();
  impl_->await(receiptAsync(ids, kind));
}

void Client::setPresence(PresenceState state) {
  impl_->callSync<void>([state](Impl& impl) {
    auto request = impl.session().setPresenceRequest();
    request.setState(static_cast<proto::PresenceState>(state));
    return request.send().ignoreResult();
  });
}

void Client::typing(const std::string& to, bool active) {
  impl_->callSync<void>([to, active](Impl& impl) {
    auto request = impl.session().typingRequest();
    request.setTo(to);
    request.setActive(active);
    return request.send().ignoreResult();
  });
}

void Client::addContacts(const std::vector<std::string>& phones) {
  impl_->callSync<void>([phones](Impl& impl) {
    auto request = impl.session().addContactsRequest();
    fillTexts(request.initPhones(static_cast<unsigned>(phones.size())), phones);
    return request.send().ignoreResult();
  });
}

void Client::removeContacts(const std::vector<std::string>& phones) {
  impl_->callSync<void>([phones](Impl& impl) {
    auto request = impl.session().removeContactsRequest();
    fillTexts(request.initPhones(static_cast<unsigned>(phones.size())), phones);
    return request.send().ignoreResult();
  });
}

std::vector<Contact> Client::contacts() {
  return impl_->callSync<std::vector<Contact>>([](Impl& impl) {
    return impl.session().contactsRequest().send().then([](auto&& response) {
      std::vector<Contact> out;
      for (auto c : response.getContacts()) {
        out.push_back(Contact{textOf(c.getPhone()), c.getRegistered(),
                              static_cast<PresenceState>(c.getState()), c.getLastSeen()});
      }
      return out;
    });
  });
}

std::uint64_t Client::createGroup(const std::string& name,
                                  const std::vector<std::string>& members) {
  return impl_->callSync<std::uint64_t>([name, members](Impl& impl) {
    auto request = impl.session().createGroupRequest();
    request.setName(name);
    fillTexts(request.initMembers(static_cast<unsigned>(members.size())), members);
    return request.send().then(
        [](auto&& response) -> std::uint64_t { return response.getGroup(); });
  });
}

void Client::addMembers(std::uint64_t group, const std::vector<std::string>& members) {
  impl_->callSync<void>([group, members](Impl& impl) {
    auto request = impl.session().addMembersRequest();
    request.setGroup(group);
    fillTexts(request.initMembers(static_cast<unsigned>(members.size())), members);
    return request.send().ignoreResult();
  });
}

void Client::removeMembers(std::uint64_t group, const std::vector<std::string>& members) {
  impl_->callSync<void>([group, members](Impl& impl) {
    auto request = impl.session().removeMembersRequest();
    request.setGroup(group);
    fillTexts(request.initMembers(static_cast<unsigned>(members.size())), members);
    return request.send().ignoreResult();
  });
}

void Client::leaveGroup(std::uint64_t group) {
  impl_->callSync<void>([group](Impl& impl) {
    auto request = impl.session().leaveGroupRequest();
    request.setGroup(group);
    return request.send().ignoreResult();
  });
}

std::vector<GroupInfo> Client::groups() {
  return impl_->callSync<std::vector<GroupInfo>>([](Impl& impl) {
    return impl.session().groupsRequest().send().then([](auto&& response) {
      std::vector<GroupInfo> out;
      for (auto g : response.getGroups()) {
        GroupInfo info{g.getId(), textOf(g.getName()), textOf(g.getOwner()), {}};
        for (auto m : g.getMembers()) info.members.push_back(textOf(m));
        out.push_back(std::move(info));
      }
      return out;
    });
  });
}

std::string Client::newClientMsgId() {
  static std::mutex mutex;
  static std::mt19937_64 random{std::random_device{}()};
  std::uint64_t high;
  std::uint64_t low;
  {
    std::lock_guard lock(mutex);
    high = random();
    low = random();
  }
  char text[40];
  std::snprintf(text, sizeof(text), "c-%016llx%016llx", static_cast<unsigned long long>(high),
                static_cast<unsigned long long>(low));
  return text;
}

}  // namespace switchboard::client
