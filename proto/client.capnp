# The phone protocol: what a Switchboard client speaks over TCP (default port 5222).
#
# Transport: Cap'n Proto RPC, two-party, the client is the vat that connects.
# The bootstrap capability is a Gateway. A phone registers once (requestCode,
# verify) and keeps the key; every connection then logs in with the key and
# hands the server an Inbox it pushes to. The server never polls the phone.
#
# These comments are the protocol documentation (docs/protocol.md is built from them).
#
# Errors: every call that fails returns a Cap'n Proto exception whose
# description is one clear sentence ("body is 70000 bytes, the limit is 65536").
# A failed call changed nothing on the server, with one exception: a verify
# with a wrong code uses up one of the code's 5 attempts (that is what makes
# guessing useless).
#
# Phone numbers are E.164 text: "+" then 8 to 15 digits, no spaces.

@0x94dbb0e29189ad35;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("switchboard::proto");

# ---------------------------------------------------------------- limits
# Enforced by the host on every call; a larger field is refused.

const maxBodyBytes :UInt32 = 65536;      # one message body
const maxNameBytes :UInt32 = 64;         # device and group names
const maxClientMsgIdBytes :UInt32 = 64;  # the sender's own message id
const maxGroupMembers :UInt32 = 256;     # members of one group, creator included
const maxBatch :UInt32 = 256;            # ids per receipt, phones per contacts call
const maxDeliverBatch :UInt32 = 64;      # messages per Inbox.deliver from the server
const codeDigits :UInt32 = 5;            # registration codes

# ---------------------------------------------------------------- the bootstrap

interface Gateway {
  serverInfo @0 () -> (version :Text, node :Text);
  # The server's version and the name of the node this connection reached.

  requestCode @1 (phone :Text) -> (expiresInSeconds :UInt32);
  # Sends a 5-digit registration code to `phone` by SMS. The code expires
  # after `expiresInSeconds` and allows at most 5 wrong attempts. Requests are
  # rate limited per phone and per peer address; a limited request fails with
  # "too many code requests, retry in N s".

  verify @2 (phone :Text, code :Text, deviceName :Text) -> (key :Data);
  # Checks the code and registers this device. Returns a fresh random 32-byte
  # device key; the server keeps only its hash. Any previous device of this
  # phone is replaced: its key stops working and its live session receives
  # Inbox.kicked("replaced by a new device") and is closed.

  login @3 (phone :Text, key :Data, inbox :Inbox) -> (session :Session);
  # Opens a session. A second login of the same phone closes the earlier
  # session (kicked "logged in elsewhere"). Right after login the server
  # delivers everything queued while the phone was offline, oldest first,
  # then queued receipts.
}

# ---------------------------------------------------------------- the session

interface Session {
  send @0 (to :Text, clientMsgId :Text, body :Data)
      -> (id :UInt64, timestamp :Int64, deliveredAt :Int64);
  # Sends `body` to the phone `to`. Returning is the "sent" tick: the message
  # is either delivered (the recipient's Inbox.deliver returned) or durably
  # queued, and will not be lost, even if the server is killed. To an online
  # phone the return usually comes once it is delivered; a message not
  # delivered within a short deadline is stored and then acknowledged. `id` is
  # the server's id for the message, `timestamp` its server time in ms since
  # the epoch. The sender is the session's phone; a message cannot name
  # another. Messages from one sender to one recipient arrive in the order
  # they were sent.
  #
  # The "delivered" tick: when the return comes because the message was
  # delivered, `deliveredAt` is the time of delivery (ms since the epoch) and
  # this return is the tick: no Inbox.receipt(delivered) follows for it. When
  # `deliveredAt` is 0 the tick comes later as Inbox.receipt(delivered) (or
  # is queued for the sender's next login). A re-send answered from the first
  # send repeats the first return's `deliveredAt`, so a return that was lost
  # loses no tick, as long as the phone re-sends (see below).
  #
  # Re-sending: re-send with the same `clientMsgId` when a send did not
  # return (a timeout, a dropped connection). Re-sending an acknowledged
  # `clientMsgId` returns the first send's id and timestamp and delivers
  # nothing twice. If the server died after delivering a message but before
  # acknowledging it, the re-send is a new message to the server: the
  # recipient gets it a second time, with a new `id` but the same
  # (`from`, `clientMsgId`); receivers drop repeats by that pair (the C++ and
  # Python clients do).

  sendGroup @1 (group :UInt64, clientMsgId :Text, body :Data) -> (id :UInt64, timestamp :Int64);
  # Sends to every other member of `group`; the caller must be a member. The
  # same guarantees as send hold per member.

  receipt @2 (ids :List(UInt64), kind :ReceiptKind);
  # Tells the senders of messages `ids` (which this phone received) that they
  # were read. The senders get Inbox.receipt, now or on their next login;
  # returning means each receipt was shown to its sender or is durably queued.
  # Phones send only `read`: the server makes the "delivered" tick itself
  # when Inbox.deliver returns (in the reply to `send`, or as an
  # Inbox.receipt), so a `delivered` receipt from a phone is
  # checked and then ignored (the sender never sees the same tick twice).
  # A message id names its sender; an id this server never issued, one that
  # names no registered sender, or one of the phone's own messages is refused
  # ("unknown message id N"), and the whole call changes nothing. The server
  # keeps no record of delivered messages, so it cannot check more than that.

  setPresence @3 (state :PresenceState);
  # Online or away as the phone's user sees it. Logging in sets online;
  # disconnecting sets offline and the last-seen time.

  typing @4 (to :Text, active :Bool);
  # Shows (or clears) "typing..." to `to`, if `to` may see this phone's
  # presence and is online. Never queued.

  addContacts @5 (phones :List(Text));
  removeContacts @6 (phones :List(Text));
  contacts @7 () -> (contacts :List(Contact));
  # The phone's address book as the server keeps it. Presence, last seen and
  # typing are visible only between phones that have each other as contacts.

  createGroup @8 (name :Text, members :List(Text)) -> (group :UInt64);
  addMembers @9 (group :UInt64, members :List(Text));
  removeMembers @10 (group :UInt64, members :List(Text));
  # Only the group's creator may remove other members.
  leaveGroup @11 (group :UInt64);
  groups @12 () -> (groups :List(GroupInfo));

  logout @13 ();
  # Ends the session; the device key stays valid.
}

# ---------------------------------------------------------------- pushed to the phone

interface Inbox {
  deliver @0 (messages :List(Message));
  # New messages, oldest first per sender. Returning means the device has
  # them: the server then forgets them, never delivers them again, and tells
  # each sender "delivered". A message is delivered again only if a return was
  # lost (the connection dropped first): it then comes with the same `id`.
  # After a server crash a message can also repeat with a new `id` (see
  # Session.send): drop repeats by `id` and by (`from`, `clientMsgId`).

  receipt @1 (receipts :List(Receipt));
  # Delivered/read ticks for messages this phone sent. A "delivered" tick that
  # did not ride in the reply to the send (Session.send: `deliveredAt`) comes
  # here, after that reply, but a "read" tick (it comes
  # from another phone's connection) can arrive just before that reply: keep
  # a tick for an id not known yet until the reply names it.

  presence @2 (updates :List(PresenceUpdate));
  # Presence and typing of this phone's contacts, as it changes.

  kicked @3 (reason :Text);
  # The server is closing this session and says why ("replaced by a new
  # device", "logged in elsewhere", "too slow to read", an operator's kick).
}

# ---------------------------------------------------------------- data

struct Message {
  id @0 :UInt64;          # the server's id, as the sender was given it (one id per
                          # send: every member of a group sees the same id)
  from @1 :Text;          # the sender's phone
  group @2 :UInt64;       # 0 for a direct message
  clientMsgId @3 :Text;   # the sender's own id
  body @4 :Data;
  timestamp @5 :Int64;    # server time of the send, ms since the epoch
}

enum ReceiptKind {
  delivered @0;
  read @1;
}

struct Receipt {
  id @0 :UInt64;         # the message this receipt is about
  by @1 :Text;           # the phone that received or read it
  kind @2 :ReceiptKind;
  timestamp @3 :Int64;
}

enum PresenceState {
  online @0;
  away @1;
  offline @2;
}

struct PresenceUpdate {
  phone @0 :Text;
  state @1 :PresenceState;
  lastSeen @2 :Int64;    # ms since the epoch; meaningful when offline
  typing @3 :Bool;       # true while `phone` is typing to this phone
}

struct Contact {
  phone @0 :Text;
  registered @1 :Bool;
  state @2 :PresenceState;   # offline unless the contact is mutual
  lastSeen @3 :Int64;
}

struct GroupInfo {
  id @0 :UInt64;
  name @1 :Text;
  owner @2 :Text;
  members @3 :List(Text);
}
