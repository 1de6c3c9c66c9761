// Polling for a condition another thread makes true (tests/support).
#pragma once

#include "test_support.h"

namespace switchboard::notify::testing {
using switchboard::testing::waitUntil;
}  // namespace switchboard::notify::testing
