#include "nats_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace switchboard::testing {

namespace {
bool accepts(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

NatsServer::NatsServer(std::string config) : config_(std::move(config)), port_(freePort()) {}

NatsServer::~NatsServer() {
  if (running()) signalAndWait(SIGKILL);
}

void NatsServer::start() {
  if (running()) return;
  std::string port = std::to_string(port_);
  std::string store = (dir_.path() / "jetstream").string();
  std::string log = (dir_.path() / "nats.log").string();
  std::vector<std::string> args = {"nats-server", "-a", "127.0.0.1", "-p", port, "-l", log};
  if (config_.empty()) {
    args.insert(args.end(), {"-js", "-sd", store});
  } else {
    // JetStream in the file (writeConfig), not in flags: a reload applies
    // the file alone, and one without JetStream in it shuts JetStream down.
    writeConfig();
    args.push_back("-c");
    args.push_back((dir_.path() / "nats.conf").string());
  }
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, "nats-server", nullptr, nullptr, argv.data(), environ) != 0) {
    throw std::runtime_error("cannot start nats-server (is the nats-server package installed?)");
  }
  pid_ = pid;
  if (!waitUntil([&] { return accepts(port_); })) {
    signalAndWait(SIGKILL);
    throw std::runtime_error("nats-server did not accept connections on port " + port);
  }
}

void NatsServer::writeConfig() const {
  std::ofstream(dir_.path() / "nats.conf")
      << "jetstream { store_dir: \"" << (dir_.path() / "jetstream").string() << "\" }\n"
      << config_;
}

void NatsServer::reload(std::string config) {
  if (config_.empty() || !running()) {
    throw std::runtime_error("nats-server: reload needs a running server started with a config");
  }
  auto reloads = [&] {
    std::ifstream in(dir_.path() / "nats.log");
    std::string line;
    std::size_t n = 0;
    while (std::getline(in, line)) n += line.find("Reloaded server configuration") != line.npos;
    return n;
  };
  std::size_t before = reloads();
  config_ = std::move(config);
  writeConfig();
  ::kill(pid_, SIGHUP);
  if (!waitUntil([&] { return reloads() > before; })) {
    throw std::runtime_error("nats-server did not reload its configuration");
  }
}

void NatsServer::stop() {
  signalAndWait(SIGTERM);
}

void NatsServer::kill() {
  signalAndWait(SIGKILL);
}

void NatsServer::signalAndWait(int signal) {
  if (!running()) return;
  ::kill(pid_, signal);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string NatsServer::url() const {
  return "nats://127.0.0.1:" + std::to_string(port_);
}

std::string NatsServer::url(const std::string& user, const std::string& password) const {
  return "nats://" + user + ":" + password + "@127.0.0.1:" + std::to_string(port_);
}

}  // namespace switchboard::testing
