// libFuzzer target: the host's configuration parsing (host_config.h) with arbitrary input.
//
// First byte even: the rest is a TOML file given as --config FILE (toml++ and the key table).
// First byte odd: the rest is a command line, arguments separated by NUL bytes (CLI11, the
// plugin-setting parser and the cross-checks). Parsing must return an outcome, never crash,
// throw or exit; a "run" outcome must hold a config whose values are within their bounds.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "host_config.h"

namespace {

const std::string& configPath() {
  static const std::string* path = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sb-fuzz-config-XXXXXX";
    int fd = ::mkstemp(pattern.data());
    if (fd < 0) std::abort();
    ::close(fd);
    return new std::string(pattern);
  }();
  return *path;
}

void check(const switchboard::ParsedConfig& parsed) {
  using Outcome = switchboard::ParsedConfig::Outcome;
  if (parsed.outcome == Outcome::error && parsed.text.empty()) {
    std::fprintf(stderr, "an error outcome without a message\n");
    std::abort();
  }
  if (parsed.outcome == Outcome::run && parsed.config.threads > 256) {
    std::fprintf(stderr, "accepted --threads %u\n", parsed.config.threads);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<std::string> args{"switchboard"};
  if (data[0] % 2 == 0) {
    {
      std::ofstream file(configPath(), std::ios::binary | std::ios::trunc);
      file << rest;
    }
    args.push_back("--config");
    args.push_back(configPath());
  } else {
    size_t start = 0;
    while (start <= rest.size() && args.size() < 64) {
      size_t end = rest.find('\0', start);
      if (end == std::string::npos) end = rest.size();
      args.push_back(rest.substr(start, end - start));
      start = end + 1;
    }
  }
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  check(switchboard::parseHostConfig(static_cast<int>(args.size()), argv.data()));
  return 0;
}
