// switchboard: the host process. See host_process.h for what it owns.
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>

#include "host_config.h"
#include "host_process.h"
#include "log_output.h"
#include "plugin/canary.h"

int main(int argc, char** argv) {
  // The plugin manager re-executes this binary to prove a library in a
  // throwaway process before the host maps it (plugin/canary.h).
  if (argc > 1 && std::strcmp(argv[1], "canary") == 0) {
    return switchboard::plugin::runCanary(argc, argv);
  }

  switchboard::ParsedConfig parsed = switchboard::parseHostConfig(argc, argv);
  using Outcome = switchboard::ParsedConfig::Outcome;
  if (parsed.outcome == Outcome::print) {
    std::cout << parsed.text << "\n";
    return 0;
  }
  if (parsed.outcome == Outcome::error) {
    std::cerr << "switchboard: " << parsed.text << "\n";
    return 2;
  }
  try {
    switchboard::installHostLog(parsed.config);
  } catch (const std::exception& e) {
    std::cerr << "switchboard: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(parsed.config.logLevel));

  try {
    switchboard::HostProcess host(parsed.config);
    // SIGHUP reads the flags and the config file again, as at startup.
    host.setConfigSource([argc, argv] { return switchboard::parseHostConfig(argc, argv); });
    return host.run();
  } catch (const switchboard::HostStartError& e) {
    std::cerr << "switchboard: " << e.what() << "\n";
    return 2;
  }
}
