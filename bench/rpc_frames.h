// Cap'n Proto RPC messages (capnp/rpc.capnp) as frames on a byte stream, without an
// RpcSystem: what sbbench's lean phones speak. Outgoing messages are built with capnp's
// builders and serialized with capnp/serialize.h; incoming bytes are cut into messages and
// read with capnp's readers. Capabilities in params and results are found through capnp's
// own cap-table readers (CapTableSlot), never by byte offsets.
#pragma once

#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/function.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "receive_stamp.h"

namespace switchboard::bench {

// ---------------------------------------------------------------- cap tables

// A stand-in capability that only knows its index in a message's cap table. Written into a
// builder (through capnp::BuilderCapabilityTable) it makes a capability pointer to that
// index; read back through a capnp::ReaderCapabilityTable of slots, it tells which index a
// capability pointer names. Nothing can be called on it (every call throws).
class CapTableSlot final : public capnp::ClientHook, public kj::Refcounted {
 public:
  explicit CapTableSlot(std::uint32_t index) : index_(index) {}
  std::uint32_t index() const { return index_; }
  // The slot `hook` is, if it is one.
  static const CapTableSlot* of(capnp::ClientHook& hook);

  capnp::Request<capnp::AnyPointer, capnp::AnyPointer> newCall(
      std::uint64_t interfaceId, std::uint16_t methodId,
      kj::Maybe<capnp::MessageSize> sizeHint) override;
  VoidPromiseAndPipeline call(std::uint64_t interfaceId, std::uint16_t methodId,
                              kj::Own<capnp::CallContextHook>&& context) override;
  kj::Maybe<capnp::ClientHook&> getResolved() override { return nullptr; }
  kj::Maybe<kj::Promise<kj::Own<capnp::ClientHook>>> whenMoreResolved() override { return nullptr; }
  kj::Own<capnp::ClientHook> addRef() override { return kj::addRef(*this); }
  const void* getBrand() override;
  kj::Maybe<int> getFd() override { return nullptr; }

 private:
  std::uint32_t index_;
};

// The export id under which the sender hosts the capability `pick` reads out of `payload`:
// `pick` reads it with capnp's readers from the payload's content, imbued with a table of
// CapTableSlots as long as the payload's cap table. Nothing when the pointer is null, names
// no entry, or the entry is not senderHosted (a promise or a third-party capability, which a
// lean phone does not take).
std::optional<std::uint32_t> senderHostedCap(
    capnp::rpc::Payload::Reader payload,
    kj::FunctionParam<capnp::Capability::Client(capnp::ReaderCapabilityTable&,
                                                capnp::AnyPointer::Reader)>
        pick);

// ---------------------------------------------------------------- outgoing

// The target of a call: a capability the peer exported to us (importedCap) or the pending
// answer to one of our questions (promisedAnswer, pipelining; an empty transform).
struct CallTarget {
  enum class Kind : std::uint8_t { importedCap, promisedAnswer };
  Kind kind;
  std::uint32_t id;
};

// Builds one rpc::Message at a time and appends it, framed (segment table + segments), to a
// connection's output bytes. The first segment is a reusable buffer of its own, so a message
// of the usual size costs no allocation. Not thread-safe; one per loop thread.
class FrameBuilder {
 public:
  FrameBuilder();

  // Starts a message; the builder is valid until append().
  capnp::rpc::Message::Builder start();
  // Starts a Call whose params content is a `Params` struct, to be filled, then sent with
  // appendCall(). The pieces go into the message in the order capnp's RpcSystem writes them
  // (the call and its params first; target, question id and cap table when it is sent), so
  // the bytes are the ones a full client would write.
  template <class Params>
  typename Params::Builder startCall(std::uint64_t interfaceId, std::uint16_t methodId) {
    return startCallParams(interfaceId, methodId).getContent().template initAs<Params>();
  }
  // Completes the Call started last as question `questionId` to `target` (sendResultsTo the
  // caller), with one cap table entry per id in `senderHosted` (capabilities this side
  // exports, in the order the params name them), and appends it to `out`.
  void appendCall(std::string& out, std::uint32_t questionId, CallTarget target,
                  std::initializer_list<std::uint32_t> senderHosted = {});
  // Serializes the message started last onto `out` and makes room for the next.
  void append(std::string& out);

  // Whole messages, appended to `out` at once.
  void bootstrap(std::string& out, std::uint32_t questionId);
  void finish(std::string& out, std::uint32_t questionId, bool releaseResultCaps);
  void release(std::string& out, std::uint32_t importId, std::uint32_t count);
  // A Return with empty results (a void method's), as capnp's RpcSystem writes it: no content,
  // no cap table, releaseParamCaps false.
  void emptyReturn(std::string& out, std::uint32_t answerId);
  void exceptionReturn(std::string& out, std::uint32_t answerId, kj::StringPtr reason);
  // Unimplemented, echoing a message this side does not handle (as rpc.capnp asks).
  void unimplemented(std::string& out, capnp::rpc::Message::Reader original);

 private:
  capnp::rpc::Payload::Builder startCallParams(std::uint64_t interfaceId, std::uint16_t methodId);
  std::vector<capnp::word> scratch_;  // zero except while a message is built in it
  std::optional<capnp::MallocMessageBuilder> message_;
};

// ---------------------------------------------------------------- incoming

// One connection's incoming bytes, cut into whole messages. A receive reads into a buffer
// shared by every connection of the loop (`shared`), and keeps only the bytes of an
// unfinished message as its own, so an idle connection holds no read buffer.
class FrameInput {
 public:
  // One recvmsg() on `fd` (with the kernel's receive stamp, receiveStamped()): then
  // `onMessage` for each whole message now here, in order, until it returns false (the
  // connection was closed). Returns what recvmsg() returned (0: the peer closed; -1: see
  // errno, EAGAIN when nothing was there). A message capnp cannot read throws kj::Exception
  // out of here (the bytes after it are then not read).
  ssize_t receive(int fd, std::vector<capnp::word>& shared,
                  kj::FunctionParam<bool(capnp::rpc::Message::Reader)> onMessage);
  // The stamps of the last recvmsg() that returned bytes: the arrival of every message that
  // receive() handed out from it is at most lastArrival().arrivalNs().
  const ArrivalStamp& lastArrival() const { return lastArrival_; }

 private:
  std::vector<capnp::word> pending_;  // an unfinished message's first bytes
  std::size_t pendingBytes_ = 0;
  ArrivalStamp lastArrival_;
};

}  // namespace switchboard::bench
