// The test binary is also the canary executable: the host's plugin manager
// spawns `<this binary> canary <kind> <library>`, as it does the host binary.
#include <gtest/gtest.h>

#include <cstring>

#include "plugin/canary.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "canary") == 0) {
    return switchboard::plugin::runCanary(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
