#pragma once
// A client-side kj::AsyncIoStream wrapper for tests that look at the Cap'n Proto RPC messages on
// a connection: which the server sent (in order), and which the client wrote in each write().

#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace switchboard::net {

// Passes everything through to `inner`. Counts the RPC messages read from the server, and
// records each write() the client's RPC stack makes as the messages it holds, in order: a
// held Finish shows as a write that carries it together with a later message. Used on the
// stream's loop thread only (read the records there too).
class FrameTap final : public kj::AsyncIoStream {
 public:
  using Kinds = std::vector<capnp::rpc::Message::Which>;
  // One message the client wrote: its kind, and the question it finishes or asks (a Finish's
  // or a Call's question id; 0 for other kinds).
  struct Written {
    capnp::rpc::Message::Which kind;
    std::uint32_t question;
  };

  explicit FrameTap(kj::Own<kj::AsyncIoStream> inner) : inner_(kj::mv(inner)) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return inner_->tryRead(buffer, minBytes, maxBytes).then([this, buffer](size_t n) {
      auto* bytes = static_cast<const kj::byte*>(buffer);
      pending_.insert(pending_.end(), bytes, bytes + n);
      takeFrames(pending_, [this](capnp::rpc::Message::Reader message) {
        received_.push_back(message.which());
      });
      return n;
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    const kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
    record(kj::arrayPtr(&piece, 1));
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    record(pieces);
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }

  // Messages received so far, in order (capnp::rpc::Message::Which).
  const Kinds& received() const { return received_; }
  // The client's writes so far, each as the messages it carried.
  const std::vector<std::vector<Written>>& writes() const { return writes_; }

 private:
  void record(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
    std::vector<kj::byte> bytes;
    for (auto piece : pieces) bytes.insert(bytes.end(), piece.begin(), piece.end());
    std::vector<Written> messages;
    takeFrames(bytes, [&](capnp::rpc::Message::Reader message) {
      std::uint32_t question = 0;
      if (message.isFinish()) question = message.getFinish().getQuestionId();
      if (message.isCall()) question = message.getCall().getQuestionId();
      messages.push_back({message.which(), question});
    });
    writes_.push_back(std::move(messages));
  }

  // Takes every whole frame (segment table, then segments) off the front of `bytes`.
  template <class OnMessage>
  static void takeFrames(std::vector<kj::byte>& bytes, OnMessage&& onMessage) {
    while (bytes.size() >= 4) {
      uint32_t segments = read32(bytes, 0) + 1;
      size_t header = (4 + 4 * segments + 7) / 8 * 8;
      if (bytes.size() < header) return;
      size_t words = 0;
      for (uint32_t i = 0; i < segments; ++i) words += read32(bytes, 4 + 4 * i);
      size_t total = header + words * sizeof(capnp::word);
      if (bytes.size() < total) return;
      auto frame = kj::heapArray<capnp::word>(total / sizeof(capnp::word));
      std::memcpy(frame.begin(), bytes.data(), total);
      capnp::FlatArrayMessageReader reader(frame);
      onMessage(reader.getRoot<capnp::rpc::Message>());
      bytes.erase(bytes.begin(), bytes.begin() + static_cast<long>(total));
    }
  }
  static uint32_t read32(const std::vector<kj::byte>& bytes, size_t at) {
    uint32_t value;
    std::memcpy(&value, bytes.data() + at, sizeof(value));
    return value;  // little-endian, as capnp's framing is on this machine
  }

  kj::Own<kj::AsyncIoStream> inner_;
  std::vector<kj::byte> pending_;
  Kinds received_;
  std::vector<std::vector<Written>> writes_;
};

}  // namespace switchboard::net
