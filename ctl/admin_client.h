// The operator's side of the admin protocol (proto/admin.capnp): what sbctl and the
// Python module `switchboard.Admin` use to talk to a running host.
//
// This header is free of Cap'n Proto, KJ and Asio on purpose (pimpl): the results are
// plain structs whose fields mirror the schema one for one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace switchboard::ctl {

// ---------------------------------------------------------------- errors

// Every failure of an admin call. what() is one sentence: the server's reason when it
// refused ("no user +15550001", with Cap'n Proto's "remote exception: " prefix
// stripped), "cannot connect to PATH: ..." when there is no host, or a local time-out.
class AdminError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- data

struct PluginVersion {
  std::string version;
  std::string buildId;
  std::string sha256;
  bool current = false;
  std::uint64_t calls = 0;
  std::uint64_t errors = 0;
  std::uint64_t p50Ns = 0;
  std::uint64_t p99Ns = 0;
};

struct PluginStatus {
  std::string kind;
  std::string state;  // "empty", "serving", "probation"
  std::string version;
  std::string buildId;
  std::string sha256;
  std::int64_t probationRemainingMs = 0;
  std::vector<PluginVersion> versions;  // most recently serving first
  std::uint64_t swaps = 0;
  std::uint64_t pauseP50Us = 0;
  std::uint64_t pauseP99Us = 0;
  std::uint64_t pauseMaxUs = 0;
};

struct Status {
  std::string version;
  std::string node;
  std::uint64_t uptimeSeconds = 0;
  std::uint32_t threads = 0;
  std::uint32_t sessions = 0;
  std::uint32_t connections = 0;
  std::vector<PluginStatus> plugins;
  std::string dataDir;
  std::string clientEndpoint;
  std::string cluster;  // "single-node", "connected" or "degraded"
};

struct NodeInfo {
  std::string name;
  std::string address;
  std::uint32_t sessions = 0;
  std::string pluginVersions;
  std::int64_t heardAtMs = 0;
  std::int64_t lastHeardMsAgo = 0;
  std::string version;
  std::int64_t startedAtMs = 0;
};

struct ClusterStatus {
  std::string state;
  std::string url;
  std::string node;
  std::uint64_t disconnects = 0;
  std::uint64_t reconnects = 0;
  std::vector<NodeInfo> nodes;
  std::string error;
};

struct PluginOperation {
  bool ok = false;
  std::string error;
  std::string fromVersion;
  std::string toVersion;
  std::string sha256;
  std::uint64_t pauseUs = 0;
};

// One node's outcome of a load or rollback forwarded with --node.
struct NodeOperation {
  std::string node;
  bool answered = false;  // false: no answer within the time-out (result.error says so)
  PluginOperation result;
};

struct LedgerEntry {
  std::int64_t id = 0;
  std::int64_t atMs = 0;
  std::string actor;
  std::string kind;
  std::string fromVersion;
  std::string toVersion;
  std::string sha256;
  std::uint64_t pauseUs = 0;
  std::string result;
  std::string reason;
};

struct SessionInfo {
  std::string phone;
  std::uint64_t sessionId = 0;
  std::string peer;
  std::uint32_t thread = 0;
  std::int64_t sinceMs = 0;
  std::uint64_t queueLength = 0;
  std::uint64_t maxQueueLength = 0;
  std::uint64_t delivered = 0;
};

struct UserInfo {
  std::string phone;
  std::int64_t createdMs = 0;
  std::int64_t lastSeenMs = 0;
  std::string deviceName;  // empty when the key was revoked
  bool online = false;
  std::uint64_t queuedMessages = 0;
  std::uint32_t contacts = 0;
  std::uint32_t groups = 0;
};

struct SmsEntry {
  std::string phone;
  std::string code;
  std::string text;
  std::int64_t atMs = 0;
  std::string outcome;
};

struct Stats {
  std::uint64_t connections = 0;
  std::uint64_t sessions = 0;
  std::uint64_t logins = 0;
  std::uint64_t failedLogins = 0;
  std::uint64_t messagesIn = 0;
  std::uint64_t messagesOut = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t codesRequested = 0;
  std::uint64_t registrations = 0;
  std::uint64_t pushes = 0;
  std::uint64_t queueAlerts = 0;
  std::uint64_t slowConsumerKicks = 0;
  std::uint64_t maxQueueLength = 0;
  std::uint64_t storeWrites = 0;
  std::uint64_t storeCommits = 0;
  std::uint64_t storeCommitP50Us = 0;
  std::uint64_t storeCommitP99Us = 0;
  std::uint64_t smsSent = 0;
  std::uint64_t smsFailed = 0;
  std::uint64_t pushSent = 0;
  std::uint64_t pushFailed = 0;
  std::uint64_t uptimeSeconds = 0;
};

// The admin socket sbctl and switchboard.Admin use when none is named:
// $SWITCHBOARD_ADMIN_SOCKET; else ./var/admin.sock (a host started in this
// directory with its defaults) if it exists; else the packaged service's
// /run/switchboard/admin.sock if it exists; else ./var/admin.sock, so that the
// connect error names the local default.
std::string defaultAdminSocket();

struct AdminClientOptions {
  std::string socketPath = "./var/admin.sock";  // or "HOST:PORT"
  // Upper bound of one call (connect included); enforced on the KJ side, so a call
  // to a host that stopped answering still returns, with an AdminError.
  std::chrono::milliseconds callTimeout{15000};
  // loadPlugin runs a canary and a probation window: it gets longer.
  std::chrono::milliseconds loadTimeout{180000};
};

// ---------------------------------------------------------------- the client

// One connection to a host's admin socket.
//
// The constructor connects (throws AdminError if it cannot); the destructor closes.
// It owns a private NetworkThread on which every RPC runs; each public method blocks the
// caller until the answer or the time-out, and KJ exceptions become AdminError on that
// thread before they cross back. Methods are thread-safe (calls from several threads are
// serialised onto the network thread and may be in flight together).
//
// loadPlugin's progress callback runs on the network thread, once per step, while the
// caller is still blocked in loadPlugin; it must not call back into this client. An
// exception it throws is swallowed (the load goes on).
//
// If the host goes away, pending and later calls fail with AdminError; nothing
// reconnects (a new AdminClient does).
class AdminClient {
 public:
  using ProgressCallback = std::function<void(const std::string& step, const std::string& detail)>;

  explicit AdminClient(AdminClientOptions options);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  const AdminClientOptions& options() const;

  Status status();
  std::vector<PluginStatus> plugins();
  // With `waitProbation` the answer comes once the probation window has closed.
  PluginOperation loadPlugin(const std::string& kind, const std::string& path,
                             ProgressCallback progress = nullptr, bool waitProbation = false);
  // `version` empty: back to the previous one.
  PluginOperation rollbackPlugin(const std::string& kind, const std::string& version = "");
  // The same on another node of the cluster or on every node (`node` "all"),
  // forwarded by the host this client talks to; one result per node, by name.
  // Each node has `nodeTimeout` to answer (the call itself gets that plus
  // callTimeout). Unknown node names and single or degraded hosts are refused
  // (AdminError).
  std::vector<NodeOperation> loadPluginOnNodes(const std::string& node, const std::string& kind,
                                               const std::string& path, bool waitProbation,
                                               std::chrono::milliseconds nodeTimeout);
  std::vector<NodeOperation> rollbackPluginOnNodes(const std::string& node, const std::string& kind,
                                                   const std::string& version,
                                                   std::chrono::milliseconds nodeTimeout);
  std::vector<LedgerEntry> pluginHistory(const std::string& kind = "", std::uint32_t limit = 0);

  std::vector<SessionInfo> sessions(const std::string& phonePrefix = "", std::uint32_t minQueue = 0,
                                    std::uint32_t limit = 0);
  SessionInfo session(const std::string& phone);
  void kick(const std::string& phone, const std::string& reason = "");
  std::vector<SessionInfo> queues(std::uint32_t limit = 0);

  std::vector<UserInfo> users(const std::string& phonePrefix = "", std::uint32_t limit = 0);
  UserInfo user(const std::string& phone);
  void deleteUser(const std::string& phone);
  void revokeKey(const std::string& phone);
  std::vector<SmsEntry> outbox(const std::string& phone = "", std::uint32_t limit = 0);

  Stats stats();
  // `phone` empty: every registered user. Returns how many got it.
  std::uint32_t broadcast(const std::string& phone, const std::string& body);

  ClusterStatus cluster();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The message of an error as shown to an operator: Cap'n Proto's "remote exception: "
// prefix removed.
std::string operatorMessage(const std::string& description);

}  // namespace switchboard::ctl
