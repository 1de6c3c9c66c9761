// What every test room needs and nobody should write twice: a scratch
// directory, a free port, a bounded wait for a condition, and a command run to
// its end with its output.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace switchboard::testing {

// A fresh directory under /tmp (short, so Unix socket paths inside it fit),
// made by mkdtemp and removed with everything in it by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A TCP port on 127.0.0.1 that nobody listened on a moment ago (bound to port
// 0, read back, closed). Another process may still take it first.
std::uint16_t freePort();

// Polls `predicate` until it holds; false after `guard`. The guard only stops
// a hang: never use it to measure anything.
template <class Predicate>
bool waitUntil(Predicate predicate, std::chrono::seconds guard = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + guard;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A command run through the shell (each word quoted) to its end: its exit
// status as pclose gives it, and what it wrote to stdout and stderr together.
struct CommandRun {
  int status = -1;
  std::string output;
};
CommandRun runCommand(const std::vector<std::string>& command);

}  // namespace switchboard::testing
