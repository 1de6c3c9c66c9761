// How the cluster names things in NATS and turns its records into bytes.
//
// Keys and subject tokens: NATS keys allow [-/_=.a-zA-Z0-9] and '.' separates
// subject tokens, so anything else (the '+' of a phone number, '.', '_') is
// written as _XX (two hex digits): "+15550001" -> "_2B15550001". The mapping is
// one-to-one, so a key can always be read back into the phone it names.
//
// Records: one Cap'n Proto message per value (proto/cluster.capnp), flat and
// unpacked. RecordReader copies the bytes once into word-aligned memory, so a
// value straight out of libnats can be read whatever its alignment.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard::cluster {

std::string encodeKeyToken(std::string_view text);
// The text a token names; nullopt for a token encodeKeyToken never makes.
std::optional<std::string> decodeKeyToken(std::string_view token);

std::string recordBytes(capnp::MessageBuilder& message);

// A message a sender put into the stream, by its clientMsgId: the id and time
// it was given (KV bucket sb_sent, key sentKey, value sentValue: "<id> <ms>").
struct SentRecord {
  std::string clientMsgId;
  std::uint64_t messageId = 0;
  std::int64_t sentAtMs = 0;
};
inline constexpr const char* kSentBucket = "sb_sent";
std::string sentKey(std::string_view sender, std::string_view clientMsgId);
std::string sentValue(std::uint64_t messageId, std::int64_t sentAtMs);
// nullopt for a key or value these never make.
std::optional<SentRecord> sentRecordOf(std::string_view key, std::string_view value);

class RecordReader {
 public:
  RecordReader(const void* data, std::size_t size);
  template <class T>
  typename T::Reader get() {
    return reader_->getRoot<T>();
  }

 private:
  kj::Array<capnp::word> words_;
  std::optional<capnp::FlatArrayMessageReader> reader_;
};

// Wall-clock milliseconds since the epoch (what records carry as *AtMs).
std::int64_t wallClockMs();

}  // namespace switchboard::cluster
