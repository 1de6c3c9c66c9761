// A real nats-server (JetStream on) in a child process, for the cluster tests.
//
// It listens on 127.0.0.1 at a port picked once and keeps its JetStream data
// in a temporary directory; both stay the same across stop()/start(), so a
// restart is the same server coming back with its data, as in production.
// start() returns once the port accepts connections; stop() is SIGTERM and
// wait, kill() is SIGKILL and wait. The destructor kills it and removes the
// directory. One test thread drives it. `config` (nats-server's configuration
// syntax, e.g. an authorization block with users and their permissions) is
// given to it as its configuration file; the flags above still apply.
// reload() replaces that file and has the running server reload it (SIGHUP),
// returning once its log says it did: the users' permissions change on their
// open connections, which stay open.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "test_support.h"

namespace switchboard::testing {

class NatsServer {
 public:
  explicit NatsServer(std::string config = {});
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  void start();
  void stop();
  void kill();
  void reload(std::string config);
  bool running() const { return pid_ > 0; }

  std::string url() const;  // nats://127.0.0.1:PORT
  // nats://USER:PASSWORD@127.0.0.1:PORT, for a user of `config`.
  std::string url(const std::string& user, const std::string& password) const;
  std::uint16_t port() const { return port_; }

 private:
  void signalAndWait(int signal);
  void writeConfig() const;

  TempDir dir_;
  std::string config_;
  std::uint16_t port_;
  pid_t pid_ = -1;
};

}  // namespace switchboard::testing
