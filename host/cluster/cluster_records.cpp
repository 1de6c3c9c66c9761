#include "cluster/cluster_records.h"

#include <cstring>

namespace switchboard::cluster {

namespace {
bool passesAsIs(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string encodeKeyToken(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() + 4);
  for (char c : text) {
    if (passesAsIs(c)) {
      out += c;
    } else {
      auto byte = static_cast<unsigned char>(c);
      out += '_';
      out += kHex[byte >> 4];
      out += kHex[byte & 0xF];
    }
  }
  return out;
}

std::optional<std::string> decodeKeyToken(std::string_view token) {
  std::string out;
  for (std::size_t i = 0; i < token.size(); ++i) {
    char c = token[i];
    if (passesAsIs(c)) {
      out += c;
      continue;
    }
    if (c != '_' || i + 2 >= token.size()) return std::nullopt;
    int high = hexValue(token[i + 1]);
    int low = hexValue(token[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

std::string recordBytes(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

RecordReader::RecordReader(const void* data, std::size_t size)
    : words_(kj::heapArray<capnp::word>(size / sizeof(capnp::word))) {
  std::memcpy(words_.begin(), data, words_.size() * sizeof(capnp::word));
  reader_.emplace(words_.asPtr());
}

std::int64_t wallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string sentKey(std::string_view sender, std::string_view clientMsgId) {
  return encodeKeyToken(sender) + "." + encodeKeyToken(clientMsgId);
}

std::string sentValue(std::uint64_t messageId, std::int64_t sentAtMs) {
  return std::to_string(messageId) + " " + std::to_string(sentAtMs);
}

std::optional<SentRecord> sentRecordOf(std::string_view key, std::string_view value) {
  auto dot = key.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto clientMsgId = decodeKeyToken(key.substr(dot + 1));
  auto space = value.find(' ');
  if (!clientMsgId || space == std::string_view::npos) return std::nullopt;
  SentRecord record;
  record.clientMsgId = std::move(*clientMsgId);
  try {
    record.messageId = std::stoull(std::string(value.substr(0, space)));
    record.sentAtMs = std::stoll(std::string(value.substr(space + 1)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return record;
}

}  // namespace switchboard::cluster
