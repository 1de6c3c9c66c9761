// How much more memory a process takes under AddressSanitizer (a redzone
// around every allocation, freed blocks held back in quarantine, the
// allocator's own metadata). Tests that bound RSS growth multiply their bound
// by it; it is 1 in the normal build, where the bounds hold as written.
#pragma once

#include <cstdint>

namespace switchboard::testing {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr std::uint64_t kSanitizerMemoryFactor = 8;
#else
inline constexpr std::uint64_t kSanitizerMemoryFactor = 1;
#endif

}  // namespace switchboard::testing
