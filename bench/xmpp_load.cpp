#include "xmpp_load.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "deadline_epoll.h"
#include "peer_load.h"
#include "peer_servers.h"
#include "server_process.h"
#include "source_socket.h"

namespace switchboard::bench {

namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kSecond = 1000000000;
constexpr const char* kPassword = "bench-secret";

// The users a run needs: u<worker>x<index>, the same names in startEjabberd and the workers.
std::string userName(int worker, std::size_t index) {
  return "u" + std::to_string(worker) + "x" + std::to_string(index);
}

std::size_t usersOfWorker(const BenchOptions& options, int worker) {
  BenchOptions mine = options;
  mine.workerIndex = worker;
  if (options.scenario == "connect") return shareOf(options.count, options.procs, worker);
  return peerFlows(mine) * 2;
}

std::string base64(const std::string& in) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += table[v & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    unsigned v =
        (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string unhex(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return 0;
  };
  std::string out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
    out += static_cast<char>(value(text[i]) * 16 + value(text[i + 1]));
  }
  return out;
}

// Runs a command to completion with its output appended to `log`; returns its exit code.
int runLogged(const std::vector<std::string>& argv, const fs::path& log, int timeoutSeconds) {
  ServerProcess command;
  command.start(argv, log, -1, "ejabberd");
  std::int64_t deadline = monotonicNs() + static_cast<std::int64_t>(timeoutSeconds) * kSecond;
  while (command.running() && monotonicNs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  int status = command.stop(std::chrono::milliseconds(1000));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A minimal XMPP client session over a raw socket (RFC 6120/6121, no TLS): stream header,
// SASL PLAIN, stream restart, resource bind, session, initial presence; then chat message
// stanzas whose <body> is the hex of the benchmark's binary body.
struct XmppClient {
  enum class Step { features, auth, features2, bind, session, online, failed };
  int fd = -1;
  std::size_t index = 0;
  std::string user;
  Step step = Step::features;
  std::string in;
  std::string out;
};

// A stanza is sent by a send() syscall right after the clock read that stamps it (unless
// earlier bytes still wait for the socket); an arrival carries the stamps of the recvmsg()
// that completed it (the kernel's receive timestamp, and the clock read just after it).
class XmppClients final : public PeerClients {
 public:
  XmppClients(const BenchOptions& options, std::size_t flows) : options_(options), flows_(flows) {}
  ~XmppClients() override {
    for (auto& c : clients_)
      if (c->fd >= 0) ::close(c->fd);
  }

  void setup(ReportFields& ready) override {
    std::size_t count = usersOfWorker(options_, options_.workerIndex);
    std::size_t limit = std::max<std::uint32_t>(1, options_.concurrency / 2);
    LoginClock logins;
    for (std::size_t i = 0; i < count; ++i) {
      while (handshaking_ >= limit) poll(monotonicNs() + 5000000);
      auto client = std::make_unique<XmppClient>();
      client->index = i;
      client->user = userName(options_.workerIndex, i);
      if (open(*client)) ++handshaking_;
      clients_.push_back(std::move(client));
    }
    std::int64_t deadline = monotonicNs() + 120 * kSecond;
    while (handshaking_ > 0 && monotonicNs() < deadline) poll(monotonicNs() + 5000000);
    ready.set("registered", count);
    ready.set("register_failures", 0);
    ready.set("logged_in", online_);
    ready.set("login_failures", static_cast<std::uint64_t>(count) - online_);
    logins.report(ready);
    ready.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
  }

  void poll(std::int64_t deadlineNs) override {
    epoll_event events[256];
    int n = epoll_.wait(events, 256, deadlineNs);
    for (int i = 0; i < n; ++i) {
      auto* client = static_cast<XmppClient*>(events[i].data.ptr);
      if (client->fd < 0) continue;
      if (events[i].events & EPOLLOUT) flush(*client);
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readFrom(*client);
    }
  }

  bool send(std::uint32_t flow, std::uint32_t, const std::string& body,
            std::int64_t& sentNs) override {
    XmppClient& sender = *clients_[flow * 2];
    XmppClient& receiver = *clients_[flow * 2 + 1];
    if (sender.step != XmppClient::Step::online) return false;
    std::string stanza = "<message type='chat' to='" + receiver.user + "@" + options_.xmppDomain +
                         "'><body>" + hex(body) + "</body></message>";
    sentNs = monotonicNs();
    write(sender, stanza);
    return true;
  }

 private:
  bool open(XmppClient& client) {
    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_port = htons(static_cast<uint16_t>(options_.serverPort));
    ::inet_pton(AF_INET, options_.serverHost.c_str(), &server.sin_addr);
    std::string error;
    client.fd = connectFromSource(
        server, sourceHostOf(options_.workerIndex, static_cast<std::uint32_t>(client.index)),
        error);
    if (client.fd < 0) {
      fail(error);
      client.step = XmppClient::Step::failed;
      return false;
    }
    epoll_.add(client.fd, EPOLLIN | EPOLLOUT | EPOLLET, &client);
    write(client, streamHeader());
    return true;
  }

  std::string streamHeader() const {
    return "<?xml version='1.0'?><stream:stream to='" + options_.xmppDomain +
           "' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
           "version='1.0'>";
  }

  void write(XmppClient& client, const std::string& text) {
    client.out += text;
    flush(client);
  }

  void flush(XmppClient& client) {
    while (!client.out.empty() && client.fd >= 0) {
      ssize_t n = ::send(client.fd, client.out.data(), client.out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == ENOTCONN) return;  // EPOLLOUT (edge) resumes
        lose(client, std::string("send: ") + strerror(errno));
        return;
      }
      client.out.erase(0, static_cast<std::size_t>(n));
    }
  }

  void readFrom(XmppClient& client) {
    char chunk[65536];
    while (client.fd >= 0) {
      ArrivalStamp at;
      ssize_t n = receiveStamped(client.fd, chunk, sizeof(chunk), 0, at);
      if (n == 0) {
        lose(client, "closed by the server");
        return;
      }
      if (n < 0) {
        if (errno != EAGAIN) lose(client, std::string("recv: ") + strerror(errno));
        break;
      }
      client.in.append(chunk, static_cast<std::size_t>(n));
      advance(client, at);
    }
  }

  // Moves the handshake on, or hands complete message stanzas (completed by the read `at`)
  // to arrived().
  void advance(XmppClient& client, const ArrivalStamp& at) {
    using Step = XmppClient::Step;
    while (client.fd >= 0) {
      std::string& in = client.in;
      if (client.step == Step::features || client.step == Step::features2) {
        auto end = in.find("</stream:features>");
        if (end == std::string::npos) return;
        in.erase(0, end + 18);
        if (client.step == Step::features) {
          std::string credentials = std::string(1, '\0') + client.user + '\0' + kPassword;
          write(client, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
                            base64(credentials) + "</auth>");
          client.step = Step::auth;
        } else {
          write(client,
                "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>bench</resource></bind></iq>");
          client.step = Step::bind;
        }
      } else if (client.step == Step::auth) {
        if (in.find("<failure") != std::string::npos) {
          lose(client, "SASL failure for " + client.user);
          return;
        }
        auto end = in.find("<success");
        if (end == std::string::npos) return;
        auto close = in.find('>', end);
        if (close == std::string::npos) return;
        in.erase(0, close + 1);
        if (in.rfind("</success>", 0) == 0) in.erase(0, 10);
        write(client, streamHeader());
        client.step = Step::features2;
      } else if (client.step == Step::bind) {
        auto at = in.find("id='bind1'");
        if (at == std::string::npos) return;
        auto end = in.find("</iq>", at);
        if (end == std::string::npos) return;
        in.erase(0, end + 5);
        write(client,
              "<iq type='set' id='sess1'><session "
              "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq><presence/>");
        client.step = Step::session;
      } else if (client.step == Step::session) {
        auto at = in.find("id='sess1'");
        if (at == std::string::npos) return;
        auto end = in.find('>', at);
        if (end == std::string::npos) return;
        in.erase(0, end + 1);
        client.step = Step::online;
        ++online_;
        if (handshaking_ > 0) --handshaking_;
      } else if (client.step == Step::online) {
        auto end = in.find("</message>");
        if (end == std::string::npos) {
          if (in.size() > (1u << 20) && in.find("<message") == std::string::npos) in.clear();
          return;
        }
        std::string_view stanza(in.data(), end);
        auto body = stanza.find("<body>");
        if (body != std::string_view::npos) {
          auto bodyEnd = stanza.find("</body>", body);
          if (bodyEnd != std::string_view::npos && arrived) {
            std::string bytes = unhex(stanza.substr(body + 6, bodyEnd - body - 6));
            arrived(bytes.data(), bytes.size(), at);
          }
        }
        in.erase(0, end + 10);
      } else {
        return;
      }
    }
  }

  void lose(XmppClient& client, const std::string& why) {
    fail(why);
    if (client.step != XmppClient::Step::online && handshaking_ > 0) --handshaking_;
    epoll_.remove(client.fd);
    ::close(client.fd);
    client.fd = -1;
    client.step = XmppClient::Step::failed;
  }

  void fail(const std::string& why) {
    if (!firstFailure_.empty()) return;
    firstFailure_ = why;
    for (char& c : firstFailure_)
      if (c == ' ' || c == '=') c = '_';
  }

  const BenchOptions& options_;
  std::size_t flows_;
  DeadlineEpoll epoll_;
  std::vector<std::unique_ptr<XmppClient>> clients_;
  std::size_t handshaking_ = 0;
  std::uint64_t online_ = 0;
  std::string firstFailure_;
};

}  // namespace

int runXmppWorker(const BenchOptions& options, WorkerLink& link) {
  return runPeerWorkerWith<XmppClients>(options, link);
}

void startEjabberd(const BenchOptions& options, const fs::path& runDir, PeerServer& server) {
  // ejabberdctl runs ejabberd as the package's `ejabberd` user: it needs to reach its files.
  fs::path dir = runDir / "ejabberd";
  fs::create_directories(dir / "spool");
  fs::create_directories(dir / "logs");
  std::string port = std::to_string(server.port);
  std::string node = "sbbench" + port + "@localhost";
  auto fill = [&](const fs::path& from, const fs::path& to) {
    std::ifstream in(from);
    if (!in) throw std::runtime_error("missing configuration template " + from.string());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (auto [key, value] : {std::pair<std::string, std::string>{"@PORT@", port},
                              {"@DOMAIN@", options.xmppDomain},
                              {"@NODE@", node}}) {
      for (auto at = text.find(key); at != std::string::npos; at = text.find(key)) {
        text.replace(at, key.size(), value);
      }
    }
    std::ofstream(to) << text;
  };
  fill(options.benchDir / "ejabberd.yml", dir / "ejabberd.yml");
  fill(options.benchDir / "ejabberdctl.cfg", dir / "ejabberdctl.cfg");
  fs::copy_file("/etc/ejabberd/inetrc", dir / "inetrc", fs::copy_options::overwrite_existing);
  // The users, all at once in XEP-0227 form: one ejabberdctl call instead of one per user.
  {
    std::ofstream users(dir / "users.xml");
    users << "<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n"
          << "<host jid='" << options.xmppDomain << "'>\n";
    for (int w = 0; w < options.procs; ++w) {
      for (std::size_t i = 0; i < usersOfWorker(options, w); ++i) {
        users << "<user name='" << userName(w, i) << "' password='" << kPassword << "'/>\n";
      }
    }
    users << "</host>\n</server-data>\n";
  }
  ::chmod(runDir.c_str(), 0755);
  (void)!::system(("chown -R ejabberd:ejabberd '" + dir.string() + "'").c_str());
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"ejabberdctl",
                                  "--config-dir",
                                  dir.string(),
                                  "--config",
                                  (dir / "ejabberd.yml").string(),
                                  "--ctl-config",
                                  (dir / "ejabberdctl.cfg").string(),
                                  "--logs",
                                  (dir / "logs").string(),
                                  "--spool",
                                  (dir / "spool").string(),
                                  "--node",
                                  node};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  server.process->start(ctl({"foreground"}), server.logPath, options.pin ? 0 : -1, "ejabberd");
  server.process->waitForPort("127.0.0.1", server.port, std::chrono::seconds(90));
  int status = runLogged(ctl({"started"}), dir / "ctl.log", 60);
  if (status != 0) throw std::runtime_error("ejabberd did not report started (see ctl.log)");
  status = runLogged(ctl({"import_piefxis", (dir / "users.xml").string()}), dir / "ctl.log", 300);
  if (status != 0) throw std::runtime_error("ejabberdctl import_piefxis failed (see ctl.log)");
}

}  // namespace switchboard::bench
