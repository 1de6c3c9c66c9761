#include "fuzzed_host.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "client/client.h"
#include "host_process.h"
#include "plugin/canary.h"

namespace switchboard::fuzz {
namespace {

// After the last byte is written, this long without a byte from the server counts as done.
constexpr int kQuietMs = 15;
// Hang guards: never reached by a healthy host.
constexpr int kWriteGuardMs = 5000;
constexpr int kCloseGuardMs = 10000;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzzed host: %s\n", what.c_str());
  std::abort();
}

int connectTo(const std::string& endpoint) {
  int fd;
  if (endpoint.front() == '/') {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, endpoint.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
      fail("cannot connect to " + endpoint + ": " + std::strerror(errno));
  } else {
    auto colon = endpoint.rfind(':');
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(colon + 1))));
    ::inet_pton(AF_INET, endpoint.substr(0, colon).c_str(), &address.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
      fail("cannot connect to " + endpoint + ": " + std::strerror(errno));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// Writes `bytes`, reading (and dropping) replies meanwhile; then waits for quiet, half-closes
// and waits for the server to close the connection.
void converse(const std::string& endpoint, const std::string& bytes) {
  int fd = connectTo(endpoint);
  char buffer[65536];
  size_t written = 0;
  bool closed = false;
  auto guard = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWriteGuardMs);
  while (!closed && std::chrono::steady_clock::now() < guard) {
    bool writing = written < bytes.size();
    pollfd p{fd, static_cast<short>(POLLIN | (writing ? POLLOUT : 0)), 0};
    int ready = ::poll(&p, 1, writing ? 100 : kQuietMs);
    if (ready == 0) {
      if (!writing) break;  // quiet: the server has done what the input asked
      continue;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) closed = true;
    }
    if (!closed && writing && (p.revents & POLLOUT)) {
      ssize_t n = ::send(fd, bytes.data() + written, bytes.size() - written, MSG_NOSIGNAL);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) closed = true;
    }
  }
  if (!closed) {
    ::shutdown(fd, SHUT_WR);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kCloseGuardMs);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        closed = true;
        break;
      }
    }
    if (!closed) fail("the server kept a half-closed connection open for 10 s");
  }
  ::close(fd);
}

// The last code sent to `phone`, from the SMS script's file.
std::string lastCode(const std::string& file, const std::string& phone) {
  std::ifstream in(file);
  std::string who, code, last;
  while (in >> who >> code)
    if (who == phone) last = code;
  return last;
}

}  // namespace

void runCanaryIfAsked(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "canary") == 0) std::exit(plugin::runCanary(argc, argv));
}

FuzzedHost& FuzzedHost::instance() {
  // Never destroyed: the host serves until the process exits.
  static FuzzedHost* host = new FuzzedHost();
  return *host;
}

FuzzedHost::FuzzedHost() {
  // Under $TMPDIR (scripts/fuzz points it at a directory it removes afterwards).
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sb-fuzz-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) fail("mkdtemp failed in " + pattern);
  dir_ = pattern;
  std::string smsScript = dir_ + "/sms.sh";
  {
    std::ofstream script(smsScript);
    script << "#!/bin/sh\necho \"$1 $2\" >> " << dir_ << "/sms.txt\n";
  }
  std::filesystem::permissions(smsScript, std::filesystem::perms::owner_all);

  spdlog::set_level(std::getenv("SWITCHBOARD_FUZZ_LOG") ? spdlog::level::debug
                                                        : spdlog::level::critical);
  HostConfig config;
  config.listen = "127.0.0.1:0";
  config.dataDir = dir_ + "/data";
  config.adminSocket = dir_ + "/admin.sock";
  config.metricsListen = "";
  config.pluginDir = SWITCHBOARD_FUZZ_PLUGIN_DIR;
  config.threads = 1;
  config.canaryTimeoutMs = 60000;  // a sanitized canary starts slowly
  config.smsCommand = smsScript;
  HostProcess* host;
  try {
    host = new HostProcess(config);  // never destroyed, like this object
  } catch (const std::exception& e) {
    fail(std::string("the host did not start: ") + e.what());
  }
  phoneEndpoint_ = host->clientEndpoint();
  adminSocket_ = config.adminSocket.string();
  registerPhones();
}

void FuzzedHost::registerPhones() {
  client::ClientOptions options;
  options.endpoint = phoneEndpoint_;
  options.autoReconnect = false;
  client::Client phone(options);
  for (size_t i = 0; i < kPhones.size(); ++i) {
    phone.requestCode(kPhones[i]);
    std::string code;
    for (int tries = 0; tries < 2000 && code.empty(); ++tries) {
      code = lastCode(dir_ + "/sms.txt", kPhones[i]);
      if (code.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (code.empty()) fail(std::string("no SMS code arrived for ") + kPhones[i]);
    keys_[i] = phone.verify(kPhones[i], code, "fuzz phone");
    if (keys_[i].size() != 32) fail("a device key is not 32 bytes");
  }
}

void FuzzedHost::feedPhone(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  for (size_t i = 0; i < kKeyMarkers.size(); ++i) {
    std::string_view marker = kKeyMarkers[i];
    for (size_t at = bytes.find(marker); at != std::string::npos;
         at = bytes.find(marker, at + marker.size())) {
      bytes.replace(at, marker.size(), keys_[i]);
    }
  }
  converse(phoneEndpoint_, bytes);
}

void FuzzedHost::feedAdmin(const uint8_t* data, size_t size) {
  converse(adminSocket_, std::string(reinterpret_cast<const char*>(data), size));
}

}  // namespace switchboard::fuzz
