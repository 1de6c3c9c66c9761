#pragma once
// The real switchboard binary in a child process, for end-to-end tests.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "test_support.h"

namespace switchboard::integration {

using switchboard::testing::freePort;
using switchboard::testing::TempDir;
using switchboard::testing::waitUntil;

// Where registration codes go: a shell script the host runs as SCRIPT PHONE CODE,
// appending "PHONE CODE" lines to a file the test reads.
class SmsFile {
 public:
  explicit SmsFile(const std::filesystem::path& dir);
  const std::filesystem::path& script() const { return script_; }
  // Codes sent to `phone` so far, oldest first.
  std::vector<std::string> codes(const std::string& phone) const;

 private:
  std::filesystem::path script_;
  std::filesystem::path lines_;
};

// A plain TCP connection to 127.0.0.1:`port`: its descriptor (the caller closes
// it), or -1 when the connect fails.
int connectToLoopback(std::uint16_t port);

// Requests a code for `phone`, reads it from `sms` and verifies it: the device key.
std::string registerPhone(client::Client& client, const SmsFile& sms, const std::string& phone,
                          const std::string& deviceName = "test phone");

// Owns one running host process: a temp data dir, a port chosen once (kept across
// restarts so clients reconnect to the same address), the SMS script, a log file.
//
// start() spawns the binary and returns once it accepts connections (or throws with
// the log's tail). stop() sends SIGTERM and waits; SIGKILL past 20 s. The destructor
// stops it. Not thread-safe: one test thread drives it.
class RunningHost {
 public:
  // `extraArgs` are appended to the command line (--plugin-setting ..., ...). A
  // default flag (--metrics-listen, --web-listen, --log-level, --threads) that
  // extraArgs also gives is left to extraArgs. By default metrics are served on a
  // port chosen once, like the client port.
  explicit RunningHost(std::vector<std::string> extraArgs = {});
  ~RunningHost();
  RunningHost(const RunningHost&) = delete;
  RunningHost& operator=(const RunningHost&) = delete;

  void start();
  // Returns the exit status (as from waitpid).
  int stop();
  bool running() const { return pid_ > 0; }

  std::string endpoint() const;
  // The client port; the same across restarts.
  std::uint16_t port() const { return port_; }
  client::ClientOptions clientOptions() const;
  const std::filesystem::path& dataDir() const { return dataDir_; }
  // The admin socket (the host's --admin-socket), in the private temp dir.
  std::filesystem::path adminSocket() const { return dir_.path() / "admin.sock"; }
  // The temp dir holding the data dir, the admin socket, the SMS file and the log.
  const std::filesystem::path& workDir() const { return dir_.path(); }
  // The running host's process id (-1 when stopped).
  pid_t pid() const { return pid_; }
  // SIGKILL, no warning, and reaps it: what a crash or the OOM killer does.
  void kill9();
  const SmsFile& sms() const { return sms_; }
  // Everything the host logged so far (all runs).
  std::string log() const;
  // One unlabelled sample of the running host's /metrics ("name value"), or
  // nullopt when it is not there or the endpoint does not answer.
  std::optional<double> metric(const std::string& name) const;

 private:
  bool spawnAndWait();

  TempDir dir_;
  std::filesystem::path dataDir_;
  std::filesystem::path logPath_;
  SmsFile sms_;
  std::vector<std::string> extraArgs_;
  std::uint16_t port_ = 0;
  std::uint16_t metricsPort_ = 0;  // 0: extraArgs chose --metrics-listen
  pid_t pid_ = -1;
};

}  // namespace switchboard::integration
