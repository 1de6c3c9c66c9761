// The byte formats plugin state crosses versions in (exportState/importState).
//
// Every state blob starts with a 4-byte tag: 'S' 'B', a letter for the kind
// ('R'outing, 'A'uth, 'P'resence, 'O'ffline) and the format number as a digit.
// After the tag each format encodes integers and text its own way:
//   format 1 (plugin versions 1.0.x): fixed width; u64/i64 as 8 bytes little
//            endian, text as a 4-byte little-endian length then the bytes;
//   format 2 (plugin versions 1.1.x): compact; u64 as LEB128, i64 zigzag
//            LEB128, text as a LEB128 length then the bytes.
// Each plugin also orders its fields differently per format, so the two
// versions really disagree on the bytes and must migrate, up and down.
//
// Header-only and compiled into every plugin (hidden visibility): nothing here
// crosses the library boundary except the std::string a writer returns.
// StateReader throws StateError on any malformed input; importState lets it
// escape, which is how the ABI says "refuse this swap".
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace switchboard::plugins {

enum class StateFormat : std::uint8_t { fixedWidth = 1, compact = 2 };

// The format this build writes: chosen by the build (the -next build defines
// SWITCHBOARD_STATE_FORMAT=2).
#ifndef SWITCHBOARD_STATE_FORMAT
#define SWITCHBOARD_STATE_FORMAT 1
#endif
inline constexpr StateFormat kOwnStateFormat = static_cast<StateFormat>(SWITCHBOARD_STATE_FORMAT);

class StateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The format a plugin version exported its state in: 1.0.x wrote format 1,
// 1.1.x format 2. Any other version is one this build does not know how to
// read, and the swap is refused rather than guessed at.
inline std::optional<StateFormat> stateFormatOf(std::string_view version) {
  if (version.starts_with("1.0.") || version == "1.0") return StateFormat::fixedWidth;
  if (version.starts_with("1.1.") || version == "1.1") return StateFormat::compact;
  return std::nullopt;
}

inline StateFormat requireStateFormatOf(std::string_view version) {
  if (auto format = stateFormatOf(version)) return *format;
  throw StateError("cannot import state from version \"" + std::string(version) +
                   "\": only 1.0.x and 1.1.x state formats are known");
}

// Builds one state blob. Not thread-safe; used with the plugin's lock held.
class StateWriter {
 public:
  StateWriter(char kindLetter, StateFormat format) : format_(format) {
    bytes_ = {'S', 'B', kindLetter, static_cast<char>('0' + static_cast<int>(format))};
  }

  void u64(std::uint64_t value) {
    if (format_ == StateFormat::fixedWidth) {
      for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
      return;
    }
    do {
      std::uint8_t byte = value & 0x7f;
      value >>= 7;
      if (value != 0) byte |= 0x80;
      bytes_.push_back(static_cast<char>(byte));
    } while (value != 0);
  }

  void i64(std::int64_t value) {
    const auto raw = static_cast<std::uint64_t>(value);
    if (format_ == StateFormat::fixedWidth) return u64(raw);
    u64((raw << 1) ^ (value < 0 ? ~std::uint64_t{0} : 0));  // zigzag: small magnitudes stay short
  }

  void text(std::string_view value) {
    if (format_ == StateFormat::fixedWidth) {
      const auto size = static_cast<std::uint32_t>(value.size());
      for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
    } else {
      u64(value.size());
    }
    bytes_.append(value);
  }

  std::string finish() && { return std::move(bytes_); }

 private:
  StateFormat format_;
  std::string bytes_;
};

// Reads one state blob, checking its tag against the kind and the format the
// exporting version is known to write. Views `bytes`; does not copy it.
class StateReader {
 public:
  StateReader(std::string_view bytes, char kindLetter, StateFormat format)
      : format_(format), bytes_(bytes) {
    const char expected[4] = {'S', 'B', kindLetter,
                              static_cast<char>('0' + static_cast<int>(format))};
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), expected, 4) != 0)
      throw StateError("state does not start with the tag " + std::string(expected, 4));
    position_ = 4;
  }

  std::uint64_t u64() {
    if (format_ == StateFormat::fixedWidth) {
      need(8);
      std::uint64_t value = 0;
      for (int i = 0; i < 8; ++i)
        value |= std::uint64_t{static_cast<std::uint8_t>(bytes_[position_ + i])} << (8 * i);
      position_ += 8;
      return value;
    }
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const auto byte = static_cast<std::uint8_t>(bytes_[position_++]);
      value |= std::uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw StateError("state holds a varint longer than 64 bits");
  }

  std::int64_t i64() {
    const std::uint64_t raw = u64();
    if (format_ == StateFormat::fixedWidth) return static_cast<std::int64_t>(raw);
    return static_cast<std::int64_t>((raw >> 1) ^ (~(raw & 1) + 1));
  }

  std::string text() {
    std::uint64_t size = 0;
    if (format_ == StateFormat::fixedWidth) {
      need(4);
      for (int i = 0; i < 4; ++i)
        size |= std::uint64_t{static_cast<std::uint8_t>(bytes_[position_ + i])} << (8 * i);
      position_ += 4;
    } else {
      size = u64();
    }
    need(size);
    std::string value(bytes_.substr(position_, size));
    position_ += size;
    return value;
  }

  // A count of entries that follow, each at least `minEntryBytes` long:
  // refused when the blob cannot hold that many, so a corrupt count never
  // turns into a huge allocation.
  std::uint64_t count(std::size_t minEntryBytes) {
    const std::uint64_t entries = u64();
    if (minEntryBytes > 0 && entries > (bytes_.size() - position_) / minEntryBytes)
      throw StateError("state claims " + std::to_string(entries) + " entries but is too short");
    return entries;
  }

  void expectEnd() const {
    if (position_ != bytes_.size())
      throw StateError("state has " + std::to_string(bytes_.size() - position_) +
                       " unexpected trailing bytes");
  }

 private:
  void need(std::uint64_t size) const {
    if (size > bytes_.size() - position_) throw StateError("state is truncated");
  }

  StateFormat format_;
  std::string_view bytes_;
  std::size_t position_ = 0;
};

}  // namespace switchboard::plugins
