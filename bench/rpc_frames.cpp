#include "rpc_frames.h"

#include <sys/socket.h>

#include <kj/debug.h>
#include <kj/io.h>

#include <cstring>

#include "server_process.h"

namespace switchboard::bench {

namespace {
const char kSlotBrand = 0;
constexpr std::size_t kScratchWords = 1024;  // 8 KiB: every message a phone sends fits
constexpr std::size_t kReceiveBytes = 65536;
}  // namespace

// ---------------------------------------------------------------- cap tables

const CapTableSlot* CapTableSlot::of(capnp::ClientHook& hook) {
  return hook.getBrand() == &kSlotBrand ? static_cast<const CapTableSlot*>(&hook) : nullptr;
}

const void* CapTableSlot::getBrand() {
  return &kSlotBrand;
}

capnp::Request<capnp::AnyPointer, capnp::AnyPointer> CapTableSlot::newCall(
    std::uint64_t, std::uint16_t, kj::Maybe<capnp::MessageSize>) {
  KJ_UNIMPLEMENTED("a cap-table slot only names an index; it cannot be called");
}

capnp::ClientHook::VoidPromiseAndPipeline CapTableSlot::call(std::uint64_t, std::uint16_t,
                                                             kj::Own<capnp::CallContextHook>&&) {
  KJ_UNIMPLEMENTED("a cap-table slot only names an index; it cannot be called");
}

std::optional<std::uint32_t> senderHostedCap(
    capnp::rpc::Payload::Reader payload,
    kj::FunctionParam<capnp::Capability::Client(capnp::ReaderCapabilityTable&,
                                                capnp::AnyPointer::Reader)>
        pick) {
  auto capTable = payload.getCapTable();
  auto slots = kj::heapArrayBuilder<kj::Maybe<kj::Own<capnp::ClientHook>>>(capTable.size());
  for (std::uint32_t i = 0; i < capTable.size(); ++i) {
    slots.add(kj::Own<capnp::ClientHook>(kj::refcounted<CapTableSlot>(i)));
  }
  capnp::ReaderCapabilityTable table(slots.finish());
  kj::Own<capnp::ClientHook> hook = capnp::ClientHook::from(pick(table, payload.getContent()));
  const CapTableSlot* slot = CapTableSlot::of(*hook);
  if (slot == nullptr || slot->index() >= capTable.size()) return std::nullopt;
  auto entry = capTable[slot->index()];
  if (entry.which() != capnp::rpc::CapDescriptor::SENDER_HOSTED) return std::nullopt;
  return entry.getSenderHosted();
}

// ---------------------------------------------------------------- outgoing

FrameBuilder::FrameBuilder() : scratch_(kScratchWords) {
  std::memset(scratch_.data(), 0, scratch_.size() * sizeof(capnp::word));
}

capnp::rpc::Message::Builder FrameBuilder::start() {
  KJ_REQUIRE(!message_.has_value(), "the previous message was not appended");
  message_.emplace(kj::arrayPtr(scratch_.data(), scratch_.size()));
  return message_->initRoot<capnp::rpc::Message>();
}

capnp::rpc::Payload::Builder FrameBuilder::startCallParams(std::uint64_t interfaceId,
                                                           std::uint16_t methodId) {
  auto call = start().initCall();
  call.setInterfaceId(interfaceId);
  call.setMethodId(methodId);
  return call.getParams();
}

void FrameBuilder::appendCall(std::string& out, std::uint32_t questionId, CallTarget target,
                              std::initializer_list<std::uint32_t> senderHosted) {
  KJ_REQUIRE(message_.has_value(), "no call started");
  auto call = message_->getRoot<capnp::rpc::Message>().getCall();
  call.setQuestionId(questionId);
  auto to = call.getTarget();
  if (target.kind == CallTarget::Kind::importedCap) {
    to.setImportedCap(target.id);
  } else {
    auto answer = to.initPromisedAnswer();
    answer.setQuestionId(target.id);
    answer.initTransform(0);
  }
  call.getSendResultsTo().setCaller();
  if (senderHosted.size() > 0) {
    auto capTable = call.getParams().initCapTable(static_cast<unsigned>(senderHosted.size()));
    unsigned i = 0;
    for (std::uint32_t id : senderHosted) capTable[i++].setSenderHosted(id);
  }
  append(out);
}

void FrameBuilder::append(std::string& out) {
  KJ_REQUIRE(message_.has_value(), "no message started");
  auto segments = message_->getSegmentsForOutput();
  std::size_t bytes = capnp::computeSerializedSizeInWords(segments) * sizeof(capnp::word);
  std::size_t at = out.size();
  out.resize(at + bytes);
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(&out[at]), bytes));
  capnp::writeMessage(stream, segments);
  message_.reset();  // zeroes what it used of scratch_ again
}

void FrameBuilder::bootstrap(std::string& out, std::uint32_t questionId) {
  start().initBootstrap().setQuestionId(questionId);
  append(out);
}

void FrameBuilder::finish(std::string& out, std::uint32_t questionId, bool releaseResultCaps) {
  auto finish = start().initFinish();
  finish.setQuestionId(questionId);
  finish.setReleaseResultCaps(releaseResultCaps);
  append(out);
}

void FrameBuilder::release(std::string& out, std::uint32_t importId, std::uint32_t count) {
  auto release = start().initRelease();
  release.setId(importId);
  release.setReferenceCount(count);
  append(out);
}

void FrameBuilder::emptyReturn(std::string& out, std::uint32_t answerId) {
  auto ret = start().initReturn();
  ret.setAnswerId(answerId);
  ret.setReleaseParamCaps(false);
  ret.initResults();
  append(out);
}

void FrameBuilder::exceptionReturn(std::string& out, std::uint32_t answerId, kj::StringPtr reason) {
  auto ret = start().initReturn();
  ret.setAnswerId(answerId);
  ret.setReleaseParamCaps(false);
  auto exception = ret.initException();
  exception.setReason(reason);
  exception.setType(capnp::rpc::Exception::Type::FAILED);
  append(out);
}

void FrameBuilder::unimplemented(std::string& out, capnp::rpc::Message::Reader original) {
  start().setUnimplemented(original);
  append(out);
}

// ---------------------------------------------------------------- incoming

ssize_t FrameInput::receive(int fd, std::vector<capnp::word>& shared,
                            kj::FunctionParam<bool(capnp::rpc::Message::Reader)> onMessage) {
  bool own = pendingBytes_ > 0;
  std::vector<capnp::word>& buffer = own ? pending_ : shared;
  std::size_t have = own ? pendingBytes_ : 0;
  std::size_t wantWords = (have + kReceiveBytes) / sizeof(capnp::word);
  if (buffer.size() < wantWords) buffer.resize(wantWords);
  capnp::word* base = buffer.data();
  ssize_t n = receiveStamped(fd, reinterpret_cast<char*>(base) + have,
                             buffer.size() * sizeof(capnp::word) - have, 0, lastArrival_);
  if (n <= 0) return n;
  have += static_cast<std::size_t>(n);
  std::size_t at = 0;  // words of whole messages handled
  while (true) {
    std::size_t words = have / sizeof(capnp::word) - at;
    if (words == 0) break;
    kj::ArrayPtr<const capnp::word> rest(base + at, words);
    std::size_t size = capnp::expectedSizeInWordsFromPrefix(rest);
    if (size > words) break;
    capnp::FlatArrayMessageReader reader(rest.slice(0, size));
    at += size;
    if (!onMessage(reader.getRoot<capnp::rpc::Message>())) {
      pending_ = {};
      pendingBytes_ = 0;
      return n;
    }
  }
  std::size_t left = have - at * sizeof(capnp::word);
  if (own) {
    std::memmove(base, base + at, left);
  } else if (left > 0) {
    pending_.resize((left + sizeof(capnp::word) - 1) / sizeof(capnp::word));
    std::memcpy(pending_.data(), base + at, left);
  }
  pendingBytes_ = left;
  if (left == 0 && own) pending_ = {};
  return n;
}

}  // namespace switchboard::bench
