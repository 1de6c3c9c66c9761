// A fresh directory under /tmp for one test (tests/support).
#pragma once

#include "test_support.h"

namespace switchboard::store::testing {
using switchboard::testing::TempDir;
}  // namespace switchboard::store::testing
