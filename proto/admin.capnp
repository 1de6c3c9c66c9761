# The operator protocol: what sbctl and the Python module speak to a running
# host over its admin Unix socket (default ./var/admin.sock, mode 0600: only the
# socket's owner can connect, which is the whole of admin authentication).
#
# Transport: Cap'n Proto RPC, two-party; the bootstrap capability is an Admin.
# Errors: a refused call returns an exception whose description is one clear
# sentence ("no plugin kind 'routin': expected routing, auth, presence or
# offline", "no user +15550001"). A refused call changed nothing.
#
# These comments are the protocol documentation (docs/operations.md).

@0xbe8db03c248ab4f1;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("switchboard::proto");

interface Admin {
  status @0 () -> (status :Status);
  # The host at a glance: version, uptime, threads, sessions and each plugin.

  # ---- plugins

  plugins @1 () -> (plugins :List(PluginStatus));
  # Every kind, with its serving version, the versions kept for rollback and
  # per-version call counts, errors and latency.

  loadPlugin @2 (kind :Text, path :Text, progress :PluginProgress, waitProbation :Bool)
      -> (result :PluginOperation);
  # Loads the shared object at `path` (a path on the host's machine) as a new
  # version of `kind` and swaps it in: copy, ABI check, canary, swap,
  # probation. `progress` (may be null) hears each step as it happens. A
  # refused load leaves the serving version in place; `result.ok` is false and
  # `result.error` says why (this is not an RPC error: the refusal is recorded
  # in the ledger like any other outcome). Unknown kinds and missing files are
  # RPC errors. With `waitProbation` the answer comes once the probation
  # window has closed: ok when the new version kept serving, else ok false and
  # `error` "probation failed: ..." (the host rolled it back by itself).

  rollbackPlugin @3 (kind :Text, version :Text) -> (result :PluginOperation);
  # Back to the previous version (`version` empty) or to a named version
  # among those kept loaded.

  pluginHistory @4 (kind :Text, limit :UInt32) -> (entries :List(LedgerEntry));
  # The ledger, newest first; `kind` empty means every kind. limit 0 means 100.

  # ---- sessions

  sessions @5 (phonePrefix :Text, minQueue :UInt32, limit :UInt32) -> (sessions :List(SessionInfo));
  # Live sessions whose phone starts with `phonePrefix` and whose outbound
  # queue is at least `minQueue`, ordered by phone. limit 0 means 1000.

  session @6 (phone :Text) -> (session :SessionInfo);
  # The phone's live session; an error if it has none.

  kick @7 (phone :Text, reason :Text);
  # Tells the phone's session `reason` (default "kicked by an operator") and
  # closes it. An error if the phone has no live session.

  queues @8 (limit :UInt32) -> (sessions :List(SessionInfo));
  # The sessions with the longest outbound queues, longest first. limit 0 means 10.

  # ---- users

  users @9 (phonePrefix :Text, limit :UInt32) -> (users :List(UserInfo));
  user @10 (phone :Text) -> (user :UserInfo);
  deleteUser @11 (phone :Text);
  # Removes the user, its device, contacts, group memberships and queued
  # messages, and kicks its session.
  revokeKey @12 (phone :Text);
  # The device key stops working and the session is kicked; the phone must
  # register again with a code.

  outbox @13 (phone :Text, limit :UInt32) -> (entries :List(SmsEntry));
  # SMS the host sent (codes in clear only with the development sink),
  # newest first; `phone` empty means every phone.

  # ---- traffic

  stats @14 () -> (stats :Stats);
  # Counters since start (rates are the caller's: read twice and divide).

  broadcast @15 (phone :Text, body :Text) -> (recipients :UInt32);
  # A system message (sender "system") to one user, or to every registered
  # user when `phone` is empty. Queued durably like any message.

  # ---- cluster

  cluster @16 () -> (cluster :ClusterStatus);
  # The cluster as this node sees it: its link to NATS and every node in the
  # registry (docs/cluster.md). A single node (no --cluster) answers with
  # state "single-node" and no nodes; a degraded node with no nodes and
  # `error` saying why.

  loadPluginOnNodes @17 (node :Text, kind :Text, path :Text, waitProbation :Bool,
                         timeoutMs :UInt32) -> (results :List(NodeOperation));
  # loadPlugin on another node of the cluster, or on every node: `node` is a
  # node name or "all" (every node in the registry, this one included). This
  # node forwards the operation over NATS (sb.node.<node>.admin); each target
  # runs it through its own admin path (canary, probation, its own ledger,
  # actor "admin via <this node>") and answers. `path` is a path on the
  # target's machine. One result per node, by name; a node that gave no
  # answer within `timeoutMs` (0 means 120 s) has `answered` false. Refused as
  # an RPC error: a single node (no --cluster), a degraded node, a node name
  # not in the registry. No progress steps come back from other nodes.

  rollbackPluginOnNodes @18 (node :Text, kind :Text, version :Text, timeoutMs :UInt32)
      -> (results :List(NodeOperation));
  # rollbackPlugin on one node or "all", as loadPluginOnNodes.
}

struct NodeOperation {
  node @0 :Text;
  answered @1 :Bool;            # false: no answer within the time-out (result.error says so)
  result @2 :PluginOperation;   # the node's own outcome; result.error is its exact text
}

interface PluginProgress {
  step @0 (name :Text, detail :Text);
  # name: "copy", "abi-check", "canary", "swap", "probation", "done", "refused".
}

struct Status {
  version @0 :Text;
  node @1 :Text;
  uptimeSeconds @2 :UInt64;
  threads @3 :UInt32;
  sessions @4 :UInt32;
  connections @5 :UInt32;
  plugins @6 :List(PluginStatus);
  dataDir @7 :Text;
  clientEndpoint @8 :Text;
  cluster @9 :Text;             # "single-node", "connected" or "degraded"
}

struct ClusterStatus {
  state @0 :Text;               # "single-node", "connected" or "degraded"
  url @1 :Text;                 # the NATS server, nats://HOST:PORT
  node @2 :Text;                # this node's name
  disconnects @3 :UInt64;       # times NATS was lost since start
  reconnects @4 :UInt64;        # times it came back (the first connect counts)
  nodes @5 :List(NodeInfo);     # by name
  error @6 :Text;               # why `nodes` could not be read; empty when it could
}

struct NodeInfo {
  name @0 :Text;
  address @1 :Text;             # client endpoint HOST:PORT
  sessions @2 :UInt32;
  pluginVersions @3 :Text;      # "auth=1.0.0 routing=1.0.0 ..."
  heardAtMs @4 :Int64;          # the node's wall clock at its last heartbeat
  lastHeardMsAgo @5 :Int64;     # by this node's clock
  version @6 :Text;
  startedAtMs @7 :Int64;
}

struct PluginStatus {
  kind @0 :Text;
  state @1 :Text;               # "empty", "serving", "probation"
  version @2 :Text;             # serving version; empty when none
  buildId @3 :Text;
  sha256 @4 :Text;
  probationRemainingMs @5 :Int64;
  versions @6 :List(PluginVersion);   # kept loaded, most recently serving first
  swaps @7 :UInt64;
  pauseP50Us @8 :UInt64;
  pauseP99Us @9 :UInt64;
  pauseMaxUs @10 :UInt64;
}

struct PluginVersion {
  version @0 :Text;
  buildId @1 :Text;
  sha256 @2 :Text;
  current @3 :Bool;
  calls @4 :UInt64;
  errors @5 :UInt64;
  p50Ns @6 :UInt64;
  p99Ns @7 :UInt64;
}

struct PluginOperation {
  ok @0 :Bool;
  error @1 :Text;
  fromVersion @2 :Text;
  toVersion @3 :Text;
  sha256 @4 :Text;
  pauseUs @5 :UInt64;
}

struct LedgerEntry {
  id @0 :Int64;
  atMs @1 :Int64;
  actor @2 :Text;
  kind @3 :Text;
  fromVersion @4 :Text;
  toVersion @5 :Text;
  sha256 @6 :Text;
  pauseUs @7 :UInt64;
  result @8 :Text;
  reason @9 :Text;
}

struct SessionInfo {
  phone @0 :Text;
  sessionId @1 :UInt64;
  peer @2 :Text;
  thread @3 :UInt32;
  sinceMs @4 :Int64;
  queueLength @5 :UInt64;
  maxQueueLength @6 :UInt64;
  delivered @7 :UInt64;
}

struct UserInfo {
  phone @0 :Text;
  createdMs @1 :Int64;
  lastSeenMs @2 :Int64;
  deviceName @3 :Text;      # empty when the key was revoked
  online @4 :Bool;
  queuedMessages @5 :UInt64;
  contacts @6 :UInt32;
  groups @7 :UInt32;
}

struct SmsEntry {
  phone @0 :Text;
  code @1 :Text;
  text @2 :Text;
  atMs @3 :Int64;
  outcome @4 :Text;
}

struct Stats {
  connections @0 :UInt64;
  sessions @1 :UInt64;
  logins @2 :UInt64;
  failedLogins @3 :UInt64;
  messagesIn @4 :UInt64;
  messagesOut @5 :UInt64;
  duplicates @6 :UInt64;
  codesRequested @7 :UInt64;
  registrations @8 :UInt64;
  pushes @9 :UInt64;
  queueAlerts @10 :UInt64;
  slowConsumerKicks @11 :UInt64;
  maxQueueLength @12 :UInt64;       # the longest live queue now
  storeWrites @13 :UInt64;
  storeCommits @14 :UInt64;
  storeCommitP50Us @15 :UInt64;
  storeCommitP99Us @16 :UInt64;
  smsSent @17 :UInt64;
  smsFailed @18 :UInt64;
  pushSent @19 :UInt64;
  pushFailed @20 :UInt64;
  uptimeSeconds @21 :UInt64;
}
