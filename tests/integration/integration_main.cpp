// The integration test binary is also a canary executable: the in-process host's
// plugin manager re-executes /proc/self/exe as `<binary> canary <kind> <library>`.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "plugin/canary.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "canary") == 0) {
    return switchboard::plugin::runCanary(argc, argv);
  }
  spdlog::set_level(spdlog::level::warn);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
