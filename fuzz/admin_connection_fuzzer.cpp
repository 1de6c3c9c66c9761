// libFuzzer target: arbitrary bytes on the admin socket of the real host (AdminServer),
// in this process. The corpus holds recorded Cap'n Proto
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
  switchboard::fuzz::FuzzedHost::instance().feedAdmin(data, size);
  return 0;
}
