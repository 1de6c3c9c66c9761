// The real host, in the fuzzer's process, for the connection fuzz targets.
//
// FuzzedHost::instance() builds one HostProcess on first use, through its public
// constructor, exactly as main() does: a SQLite store in a fresh temp directory, the plugins
// of this build (each proven by a canary child, which is this same executable re-run as
// `<exe> canary KIND PATH`: call runCanaryIfAsked from LLVMFuzzerInitialize), one network
// thread, the phone port on 127.0.0.1 (a free port), the admin socket in the temp dir, no
// metrics port, SMS codes written to a file. It then registers kPhones through the phone
// protocol, so recorded sessions that log in can succeed.
//
// feedPhone / feedAdmin open a fresh connection, write the input (after putting the real
// device keys where the input holds kKeyMarkers), read whatever comes back until the
// server closes or falls quiet, then half-close and wait for the server to close. The host
// lives until the process exits; nothing is reset between inputs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace switchboard::fuzz {

// The phones registered at start-up and the 32-byte stand-ins for their keys in the corpus.
constexpr std::array<const char*, 2> kPhones = {"+15550000001", "+15550000002"};
constexpr std::array<const char*, 2> kKeyMarkers = {"switchboard-fuzz-device-key-0001",
                                                    "switchboard-fuzz-device-key-0002"};

// In LLVMFuzzerInitialize: if this process is a canary child, run it and exit.
void runCanaryIfAsked(int argc, char** argv);

class FuzzedHost {
 public:
  static FuzzedHost& instance();

  void feedPhone(const uint8_t* data, size_t size);
  void feedAdmin(const uint8_t* data, size_t size);

 private:
  FuzzedHost();
  void registerPhones();

  std::string dir_;
  std::string phoneEndpoint_;  // "127.0.0.1:PORT"
  std::string adminSocket_;
  std::array<std::string, kPhones.size()> keys_;
};

}  // namespace switchboard::fuzz
