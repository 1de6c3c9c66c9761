// libFuzzer target: arbitrary bytes on a phone connection of the real host (GatewayServer,
// then SessionServer after a login), in this process. The corpus holds recorded Cap'n Proto
// RPC sessions (fuzz/seed_recorder.cpp) for the fuzzer to mutate. See fuzzed_host.h.
#include <cstddef>
#include <cstdint>

#include "fuzzed_host.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  switchboard::fuzz::runCanaryIfAsked(*argc, *argv);
  switchboard::fuzz::FuzzedHost::instance();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  switchboard::fuzz::FuzzedHost::instance().feedPhone(data, size);
  return 0;
}
