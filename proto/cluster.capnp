# What nodes of one cluster store in NATS and send each other. Nothing here is
# seen by phones or operators: it is the cluster's own record format, stored
# in JetStream key-value buckets and streams (docs/cluster.md says which).
#
# Every record is one Cap'n Proto message (unpacked, single segment as written
# by capnp::messageToFlatArray). Fields are only ever added, never renumbered,
# so nodes of different versions can read each other's records during a
# rolling upgrade.

@0xd6a1f0c3b2e49a87;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("switchboard::proto::cluster");

struct NodeRecord {
  # Bucket sb_nodes, key = node name. Rewritten every heartbeat; the bucket's
  # TTL removes the record of a node that stopped writing it.
  name @0 :Text;
  address @1 :Text;          # the node's client endpoint, HOST:PORT
  sessions @2 :UInt32;       # live phone sessions on the node
  pluginVersions @3 :Text;   # "auth=1.0.0 routing=1.0.0 ..." (empty kind: not loaded)
  heardAtMs @4 :Int64;       # wall clock of the writer when it wrote this record
  startedAtMs @5 :Int64;
  instance @6 :UInt64;       # random per process start: tells a restart from a twin
  version @7 :Text;          # the host binary's version
}

struct UserRecord {
  # Bucket sb_users, key = phone. The device key is stored only as its hash.
  phone @0 :Text;
  keyHash @1 :Data;
  deviceName @2 :Text;
  registeredAtMs @3 :Int64;
  number @4 :UInt64;         # the user's cluster-unique number (message ids carry it)
}

struct SessionRecord {
  # Bucket sb_sessions, key = phone: the node holding the phone's session.
  node @0 :Text;
  sessionId @1 :UInt64;      # unique per login: tells a newer login from an older one
  atMs @2 :Int64;
  lastNode @3 :Text;         # released (node empty): the node that held the phone last
}

struct ContactList {
  # Bucket sb_contacts, key = owner phone: the phones the owner added.
  contacts @0 :List(Text);
}

struct GroupRecord {
  # Bucket sb_groups, key = group id.
  id @0 :Text;
  name @1 :Text;
  owner @2 :Text;
  members @3 :List(Text);
}

struct Envelope {
  # Stream SB_INBOX, subject sb.inbox.<recipient key>; also what a live
  # notice (NoticeBatch, on sb.node.<node>.inbox) carries.
  kind @0 :Kind;
  sender @1 :Text;
  recipient @2 :Text;
  clientMsgId @3 :Text;      # with `sender`: the exactly-once key (Nats-Msg-Id)
  body @4 :Data;
  sentAtMs @5 :Int64;
  group @6 :Text;            # the group a message was sent to; empty for 1:1
  receiptOf @7 :UInt64;      # receipts: the server id of the message they are about
  serverId @8 :UInt64;       # live notices only: the envelope's stream sequence
  messageId @9 :UInt64;      # messages: the id the sender was given (the phone sees it)
  prevServerId @10 :UInt64;  # live notices only: the server id of the envelope the noticing
                             # node put into the stream for the same recipient before this
                             # one (0: none it knows of); a live phone that has not seen it
                             # lost its notice, and imports rather than overtake it

  enum Kind {
    message @0;
    delivered @1;
    read @2;
  }
}

struct NoticeBatch {
  # Core NATS subject sb.node.<node>.inbox: the live notices one node sends
  # another at once, in the order their PubAcks came in. Sent as a request
  # when the sender counts it against its window (the receiving node answers
  # once every envelope is delivered, durable there, or left in the stream).
  envelopes @0 :List(Envelope);
  node @1 :Text;             # the node that sent the batch (prevServerId is per node)
}

struct KickNotice {
  # Core NATS subject sb.node.<node>.kick: close the phone's session there if
  # it is still `sessionId` (0: none), telling the phone `reason`. Published,
  # it is fire and forget. Sent as a request it is a handover, from the node a
  # phone just logged in on: the receiver also moves what its store holds for
  # the phone into the stream, then answers (an empty reply); the new node
  # imports after the answer, so what the old node held arrives before what
  # came after it. One subject for both keeps them in the order sent.
  phone @0 :Text;
  sessionId @1 :UInt64;
  reason @2 :Text;
}

struct PresenceNotice {
  # Core NATS subject sb.presence.<phone>: a phone's presence, or its typing to
  # one phone, for the sessions on other nodes that may see it. Fire and forget.
  node @0 :Text;              # the sending node (it ignores its own notices)
  phone @1 :Text;
  state @2 :UInt8;            # a PresenceState
  lastSeen @3 :Int64;
  typing @4 :Bool;
  to @5 :Text;                # typing: the phone told; empty: every watcher
  contacts @6 :List(Text);    # presence: the phone's own contacts (a policy may ask)
}

struct PluginRequest {
  # Core NATS request on sb.node.<node>.admin: a plugin load or rollback for
  # that node's admin room, forwarded by the node an operator talks to
  # (sbctl plugin load --node). Answered with a PluginReply on the request's
  # reply subject.
  operation @0 :Operation;
  kind @1 :Text;
  path @2 :Text;              # load: the library, a path on the target's machine
  version @3 :Text;           # rollback: the version to go back to; empty: the previous
  waitProbation @4 :Bool;     # load: answer once the probation window has closed
  actor @5 :Text;             # for the target's ledger: "admin via <node>"

  enum Operation {
    load @0;
    rollback @1;
  }
}

struct PluginReply {
  # The answer to a PluginRequest: the target's outcome, or its error text.
  node @0 :Text;
  ok @1 :Bool;
  error @2 :Text;
  fromVersion @3 :Text;
  toVersion @4 :Text;
  sha256 @5 :Text;
  pauseUs @6 :UInt64;
}
