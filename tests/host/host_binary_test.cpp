// The host binary as an operator meets it: exit codes, one-line errors, a
// clean stop on SIGTERM. Runs the real build/host/switchboard.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

extern char** environ;

namespace {

struct Finished {
  int exitCode = -1;
  std::string output;  // stdout and stderr
};

using switchboard::testing::TempDir;

// Starts the host with `args`, output to `log`. Returns its pid.
pid_t start(const std::vector<std::string>& args, const std::filesystem::path& log) {
  std::vector<std::string> all = {SWITCHBOARD_HOST_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot spawn " << argv[0];
  return pid;
}

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Waits up to `guard` for the process to exit (a failure guard, not a timing).
int waitExit(pid_t pid, std::chrono::seconds guard = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + guard;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ADD_FAILURE() << "the host did not exit within the guard";
  return -1;
}

Finished run(const std::vector<std::string>& args, const TempDir& dir) {
  auto log = dir.path() / "run.log";
  pid_t pid = start(args, log);
  Finished finished;
  finished.exitCode = waitExit(pid);
  finished.output = slurp(log);
  return finished;
}

bool waitForLine(const std::filesystem::path& log, const std::string& needle) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (slurp(log).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

using switchboard::testing::freePort;

std::vector<std::string> baseArgs(const TempDir& dir, int port) {
  return {"--listen",         "127.0.0.1:" + std::to_string(port),
          "--data-dir",       (dir.path() / "var").string(),
          "--admin-socket",   (dir.path() / "admin.sock").string(),
          "--plugin-dir",     SWITCHBOARD_PLUGIN_DIR,
          "--threads",        "1",
          "--metrics-listen", ""};  // tests run side by side: no fixed port
}

TEST(HostBinary, ABadFlagExitsTwoWithOneLine) {
  TempDir dir;
  Finished finished = run({"--no-such-flag"}, dir);
  EXPECT_EQ(finished.exitCode, 2);
  EXPECT_NE(finished.output.find("switchboard: "), std::string::npos) << finished.output;
  EXPECT_NE(finished.output.find("--no-such-flag"), std::string::npos) << finished.output;
}

TEST(HostBinary, AnUnwritableDataDirExitsTwo) {
  TempDir dir;
  std::ofstream(dir.path() / "file") << "not a directory";
  auto args = baseArgs(dir, freePort());
  args[3] = (dir.path() / "file" / "var").string();
  Finished finished = run(args, dir);
  EXPECT_EQ(finished.exitCode, 2);
  EXPECT_NE(finished.output.find("Not a directory"), std::string::npos) << finished.output;
}

TEST(HostBinary, ServesThenStopsCleanlyOnSigtermAndABusyPortExitsTwo) {
  TempDir dir;
  int port = freePort();
  auto log = dir.path() / "host.log";
  pid_t host = start(baseArgs(dir, port), log);
  ASSERT_TRUE(waitForLine(log, "serving phones on 127.0.0.1:" + std::to_string(port)))
      << slurp(log);

  TempDir other;
  Finished busy = run(baseArgs(other, port), other);
  EXPECT_EQ(busy.exitCode, 2);
  EXPECT_NE(busy.output.find("Address already in use"), std::string::npos) << busy.output;

  ::kill(host, SIGTERM);
  EXPECT_EQ(waitExit(host), 0) << slurp(log);
  EXPECT_NE(slurp(log).find("shutting down"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "var" / "switchboard.db"));
}

}  // namespace
