// The canary: a library is exercised in a throwaway process before the host
// maps it. dlopen runs a library's static constructors, so the host never runs
// code from an unvalidated library in its own process.
//
// The child is a fresh process image (posix_spawn of an executable whose main
// dispatches `<exe> canary <kind> <library-path>` to runCanary), never a bare
// fork of the multi-threaded host, which could inherit a lock held by a thread
// that does not exist in the child.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include "switchboard/plugin_api.h"

namespace switchboard::plugin {

// Exit codes of the canary child; anything else (or a signal) is a rejection.
enum CanaryExit : int {
  kCanaryPassed = 0,
  kCanaryUsage = 64,
  kCanaryLoadFailed = 65,    // dlopen failed, no descriptor, wrong ABI or kind
  kCanaryCreateFailed = 66,  // create threw or returned null
  kCanarySelfTestFailed = 67,
  kCanarySelfTestThrew = 68,
};

// The child's side. Call from main() when argv[1] == "canary": loads the
// library, checks the descriptor, creates an instance with a HostServices
// that logs to stderr, runs selfTest(), prints one line on stdout
// ("ok version=<v> build=<id>" or the reason) and returns the exit code.
int runCanary(int argc, char** argv);

struct CanaryOptions {
  std::filesystem::path executable = "/proc/self/exe";
  std::chrono::milliseconds timeout{5000};
};

struct CanaryVerdict {
  bool passed = false;
  std::string version;  // from the child's line, when passed
  std::string buildId;
  std::string reason;  // one line, when !passed
};

// The parent's side: spawns the child, reads its line, enforces the time-out
// (SIGKILL and reap), and turns a crash into "canary crashed: signal N (name)".
// Blocks the calling thread for at most about `timeout`. Thread-safe.
CanaryVerdict runCanaryProcess(const CanaryOptions& options, Kind kind,
                               const std::filesystem::path& library);

}  // namespace switchboard::plugin
