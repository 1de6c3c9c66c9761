// The C++ client of the phone protocol (proto/client.capnp): what tests, the
// benchmark and the Python module use to be a phone.
//
// This header is free of Cap'n Proto, KJ and Asio on purpose (pimpl): whoever
// includes it compiles fast and needs no RPC headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::client {

// ---------------------------------------------------------------- errors

// Every failure of a client call. what() is the server's one-sentence reason
// when the server refused ("unknown recipient +15550000001"), with Cap'n
// Proto's "remote exception: " prefix stripped; otherwise it says what went
// wrong locally.
class ClientError : public std::runtime_error {
 public:
  enum class Kind {
    refused,       // the server answered with an error; the call changed nothing
    disconnected,  // the connection was lost (or never made) before an answer
    notLoggedIn,   // a session call while there is no session (see Client, "Sends")
    timedOut,      // no answer within ClientOptions::callTimeout; the call may still land
  };
  ClientError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// ---------------------------------------------------------------- data

enum class ReceiptKind { delivered, read };
enum class PresenceState { online, away, offline };
enum class ConnectionState { connected, disconnected };

struct Message {
  std::uint64_t id = 0;  // the server's id
  std::string from;      // the sender's phone, as the server knows it
  std::uint64_t group = 0;
  std::string clientMsgId;
  std::string body;  // bytes
  std::int64_t timestamp = 0;
};

struct Receipt {
  std::uint64_t id = 0;  // the message this receipt is about
  std::string by;
  ReceiptKind kind = ReceiptKind::delivered;
  std::int64_t timestamp = 0;
};

struct PresenceUpdate {
  std::string phone;
  PresenceState state = PresenceState::offline;
  std::int64_t lastSeen = 0;
  bool typing = false;
};

struct Contact {
  std::string phone;
  bool registered = false;
  PresenceState state = PresenceState::offline;
  std::int64_t lastSeen = 0;
};

struct GroupInfo {
  std::uint64_t id = 0;
  std::string name;
  std::string owner;
  std::vector<std::string> members;
};

struct SendResult {
  std::uint64_t id = 0;
  std::int64_t timestamp = 0;
  std::string clientMsgId;  // the one sent (generated when none was given)
  // When the message was delivered, if the server put the "delivered" tick in
  // the reply (ms since the epoch; 0: the tick comes later as a Receipt). The
  // client also reports such a tick to onReceipt, as if it had come alone.
  std::int64_t deliveredAt = 0;
};

struct ServerInfo {
  std::string version;
  std::string node;
};

struct ClientOptions {
  std::string endpoint = "127.0.0.1:5222";  // HOST:PORT (or a Unix socket path)
  // The nodes of a cluster, tried in turn (when not empty, `endpoint` is not
  // used). A connect that fails moves to the next endpoint; the client stays
  // on an endpoint as long as it accepts connections.
  std::vector<std::string> endpoints;
  // How long a blocking call waits for its answer before throwing timedOut.
  std::chrono::milliseconds callTimeout{20000};
  // Reconnect back-off after an unexpected disconnect: starts at the minimum,
  // doubles per failed attempt up to the maximum, each delay jittered by +-25%.
  std::chrono::milliseconds reconnectMin{50};
  std::chrono::milliseconds reconnectMax{5000};
  bool autoReconnect = true;
  // TLS: when tlsCaFile is set, every connection is TLS and the server's
  // certificate must chain to a certificate in this PEM file (only those are
  // trusted, not the system's store) and name tlsServerName (empty: the host
  // part of the endpoint connected to, e.g. "127.0.0.1"). The constructor
  // reads the file and throws std::runtime_error naming it when it cannot be
  // read or holds no certificate. A failed handshake is a connect failure:
  // ClientError::Kind::disconnected, "TLS handshake with HOST:PORT failed: "
  // and the reason ("TLS peer's certificate is not trusted; reason = hostname
  // mismatch", see net/rpc_connection.h). A server that expects TLS closes a
  // plaintext client's connection: "Peer disconnected.".
  std::string tlsCaFile;
  std::string tlsServerName;
  // How many delivered messages are remembered to drop repeats: by server id
  // (a redelivery after a lost return) and by (sender, clientMsgId) (a repeat
  // with a new id after the server died before acknowledging the send).
  std::size_t dedupeWindow = 65536;
};

// ---------------------------------------------------------------- the client

// One phone's connection to a Switchboard server.
//
// Threads: the client runs on one NetworkThread, its own (made and started by
// the first constructor, stopped by the destructor) or one the caller owns and
// that outlives it (many clients may share one). Every public method is
// thread-safe. The blocking methods wait at most callTimeout and must not be
// called on the client's thread (from inside a callback): they throw
// std::logic_error there; use the *Async forms, which work from anywhere.
//
// Callbacks run on the client's thread, one at a time, in arrival order; set
// them before login(). Inbox.deliver is answered only after onMessage has
// returned for every message of the batch, so the server's "delivered" means
// the application has the message. A callback that throws is logged and
// treated as having returned. A callback that blocks stalls this client (and
// every client sharing its thread).
//
// Connection: connects on first use, to `endpoint` or to the first of
// `endpoints` that accepts (each one tried once per attempt, starting from
// the one that worked last). login() keeps phone and key; after an
// unexpected disconnect (the network, the server restarting, kicked for
// "too slow to read" or "server shutting down") the client reconnects with
// back-off and logs in again, and the server delivers what was queued. Each
// attempt (connect + login) is bounded by callTimeout: a server that accepts
// and never answers costs one time-out, then the next attempt.
// Messages are handed to onMessage once: ids already delivered (a bounded
// window, kept across reconnects) are acknowledged to the server and dropped.
// Kicked for "replaced by a new device" or "logged in elsewhere" is final: no
// reconnect (so two devices never fight over a phone). A reconnect whose login
// is refused (the key is no longer valid) is final too, and is reported as
// onKicked("login refused: <reason>").
//
// Sends: a session call made while there is no session (before login, during
// a reconnect) fails at once with ClientError::Kind::notLoggedIn; nothing is
// queued. The application retries with the same clientMsgId, and the server
// returns the first send's id and delivers nothing twice. A disconnected or
// timed-out send may or may not have landed: retry it the same way.
//
// Destruction: logs nothing out (the session just ends with the connection);
// pending async calls fail with disconnected.
class Client {
 public:
  explicit Client(ClientOptions options);
  Client(ClientOptions options, net::NetworkThread& thread);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- callbacks (set before login)
  void onMessage(std::function<void(const Message&)> callback);
  void onReceipt(std::function<void(const Receipt&)> callback);
  void onPresence(std::function<void(const PresenceUpdate&)> callback);
  void onKicked(std::function<void(const std::string& reason)> callback);
  void onConnectionState(std::function<void(ConnectionState)> callback);

  // ---- registration (no session needed)
  ServerInfo serverInfo();
  // Returns the code's lifetime in seconds; the code itself arrives by SMS.
  std::uint32_t requestCode(const std::string& phone);
  // Returns the device key (32 bytes); keep it to log in.
  std::string verify(const std::string& phone, const std::string& code,
                     const std::string& deviceName);

  // ---- the session
  // Opens a session and keeps (phone, key) for reconnects.
  void login(const std::string& phone, const std::string& key);
  // Ends the session on the server and stops reconnecting. The key stays valid.
  void logout();
  bool isLoggedIn() const;
  const std::string& phone() const;

  SendResult send(const std::string& to, const std::string& body,
                  std::optional<std::string> clientMsgId = std::nullopt);
  std::future<SendResult> sendAsync(const std::string& to, const std::string& body,
                                    std::optional<std::string> clientMsgId = std::nullopt);
  // Callback form for many sends in flight without a future each. `done` runs
  // on the client's thread with the result or the error.
  using SendCallback =
      std::function<void(std::optional<SendResult> result, const ClientError* error)>;
  void sendAsync(const std::string& to, const std::string& body,
                 std::optional<std::string> clientMsgId, SendCallback done);
  SendResult sendGroup(std::uint64_t group, const std::string& body,
                       std::optional<std::string> clientMsgId = std::nullopt);

  void receipt(const std::vector<std::uint64_t>& ids, ReceiptKind kind);
  std::future<void> receiptAsync(const std::vector<std::uint64_t>& ids, ReceiptKind kind);
  void setPresence(PresenceState state);
  void typing(const std::string& to, bool active);

  void addContacts(const std::vector<std::string>& phones);
  void removeContacts(const std::vector<std::string>& phones);
  std::vector<Contact> contacts();

  std::uint64_t createGroup(const std::string& name, const std::vector<std::string>& members);
  void addMembers(std::uint64_t group, const std::vector<std::string>& members);
  void removeMembers(std::uint64_t group, const std::vector<std::string>& members);
  void leaveGroup(std::uint64_t group);
  std::vector<GroupInfo> groups();

  // A fresh client message id ("c-" then 32 random hex digits).
  static std::string newClientMsgId();

 private:
  struct Impl;
  std::unique_ptr<net::NetworkThread> ownedThread_;  // null when given a thread; outlives impl_
  std::shared_ptr<Impl> impl_;
};

}  // namespace switchboard::client
