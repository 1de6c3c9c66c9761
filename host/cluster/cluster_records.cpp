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

}  // namespace switchboard::cluster
