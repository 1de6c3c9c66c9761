// The lean phones' checks (bench/lean_phone.*) fail when the server misbehaves: a lean
// phone registers and logs in against a scripted Gateway on a real socket (frames written
// with capnp's builders, as a server's RpcSystem would), which then answers the login with
// an exception, or without a Session, or delivers a message from a stranger. The real host
// is the other side in the bench_*_lean smoke tests; this is the side they cannot reach.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/serialize.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "lean_phone.h"
#include "rpc_frames.h"
#include "server_process.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::bench {
namespace {

namespace proto = switchboard::proto;
namespace rpc = capnp::rpc;

enum class LoginAnswer { session, exception, noSession, sessionThenStranger };

// A Gateway that serves one connection at a time on 127.0.0.1 from its own thread:
// bootstrap, requestCode, verify as the host answers them, and login as `answer` says.
// Counts the Returns the phone sent it (the phone answers the stranger's delivery too).
class ScriptedGateway {
 public:
  explicit ScriptedGateway(LoginAnswer answer) : answer_(answer) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::listen(listener_, 8), 0);
    socklen_t length = sizeof(address);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this]() { serve(); });
  }
  ~ScriptedGateway() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  int returnsFromPhone() const { return returns_.load(); }

 private:
  void serve() {
    while (true) {
      int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      FrameInput input;
      std::vector<capnp::word> shared;
      while (input.receive(fd, shared, [&](rpc::Message::Reader message) {
        answer(fd, message);
        return true;
      }) > 0) {
      }
      ::close(fd);
    }
  }

  // A Return carrying `fill`'s results, the capabilities it sets hosted as export 0, 1, ...
  template <class Fill>
  static void sendReturn(int fd, std::uint32_t answerId, Fill fill) {
    capnp::MallocMessageBuilder message;
    auto ret = message.initRoot<rpc::Message>().initReturn();
    ret.setAnswerId(answerId);
    auto results = ret.initResults();
    capnp::BuilderCapabilityTable caps;
    fill(caps, results.getContent());
    auto table = results.initCapTable(static_cast<unsigned>(caps.getTable().size()));
    for (unsigned i = 0; i < table.size(); ++i) table[i].setSenderHosted(i);
    capnp::writeMessageToFd(fd, message);
  }

  void answer(int fd, rpc::Message::Reader message) {
    auto slot = [](std::uint32_t index) {
      return capnp::Capability::Client(kj::refcounted<CapTableSlot>(index));
    };
    if (message.which() == rpc::Message::RETURN) {
      ++returns_;
      return;
    }
    if (message.which() == rpc::Message::BOOTSTRAP) {
      sendReturn(fd, message.getBootstrap().getQuestionId(), [&](auto& caps, auto content) {
        caps.imbue(content).template setAs<capnp::Capability>(slot(0));
      });
      return;
    }
    if (message.which() != rpc::Message::CALL) return;  // Finish, Release
    auto call = message.getCall();
    std::uint32_t id = call.getQuestionId();
    switch (call.getMethodId()) {
      case 1:  // requestCode
        sendReturn(fd, id, [](auto&, capnp::AnyPointer::Builder content) {
          content.initAs<proto::Gateway::RequestCodeResults>().setExpiresInSeconds(300);
        });
        return;
      case 2:  // verify
        sendReturn(fd, id, [](auto&, capnp::AnyPointer::Builder content) {
          content.initAs<proto::Gateway::VerifyResults>().initKey(32);
        });
        return;
      case 3:  // login
        break;
      default:
        return;
    }
    if (answer_ == LoginAnswer::exception) {
      FrameBuilder frames;
      std::string out;
      frames.exceptionReturn(out, id, "no such key");
      (void)!::write(fd, out.data(), out.size());
      return;
    }
    sendReturn(fd, id, [&](auto& caps, capnp::AnyPointer::Builder content) {
      auto results = caps.imbue(content.initAs<proto::Gateway::LoginResults>());
      if (answer_ != LoginAnswer::noSession) {
        results.setSession(slot(0).castAs<proto::Session>());
      }
    });
    if (answer_ != LoginAnswer::sessionThenStranger) return;
    FrameBuilder frames;
    std::string out;
    auto messages = frames
                        .startCall<proto::Inbox::DeliverParams>(capnp::typeId<proto::Inbox>(),
                                                                /*deliver*/ 0)
                        .initMessages(1);
    messages[0].setId(77);
    messages[0].setFrom("+19999999999");
    messages[0].initBody(16);
    frames.appendCall(out, 0, {CallTarget::Kind::importedCap, 0});
    (void)!::write(fd, out.data(), out.size());
  }

  LoginAnswer answer_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<int> returns_{0};
  std::thread thread_;
};

struct LeanRun {
  ReportFields ready;
  ReportFields result;
  int returnsFromPhone = 0;
};

// One lean phone (`connect` 1) against a ScriptedGateway answering logins with `answer`;
// after setup, its loop runs until `done(result so far)` or 10 s.
template <class Done>
LeanRun runAgainst(LoginAnswer answer, Done done) {
  ScriptedGateway gateway(answer);
  auto log = std::filesystem::temp_directory_path() /
             ("lean_phone_test_" + std::to_string(::getpid()) + ".log");
  std::ofstream(log) << "[info] sms (dev sink) to +15550000000: code 12345: your code\n";
  BenchOptions options;
  options.scenario = "connect";
  options.count = 1;
  options.concurrency = 1;
  options.serverPort = gateway.port();
  options.codeLog = log;
  auto phones = makeLeanPhones(options, 0);
  LeanRun run;
  phones->setup(run.ready);
  std::int64_t deadline = monotonicNs() + 10000000000;
  while (monotonicNs() < deadline) {
    run.result = ReportFields();
    phones->addResult(run.result);
    if (done(run.result, gateway)) break;
    phones->poll(monotonicNs() + 5000000);
  }
  run.returnsFromPhone = gateway.returnsFromPhone();
  std::filesystem::remove(log);
  return run;
}

TEST(LeanPhone, RegistersAndLogsInAgainstAGatewayThatAnswersAsTheHostDoes) {
  LeanRun run = runAgainst(LoginAnswer::session, [](const ReportFields&, auto&) { return true; });
  EXPECT_EQ(run.ready.number("registered"), 1);
  EXPECT_EQ(run.ready.number("logged_in"), 1);
  EXPECT_EQ(run.ready.number("login_failures"), 0);
  EXPECT_EQ(run.ready.text("first_failure"), "none");
}

TEST(LeanPhone, ALoginAnsweredWithAnExceptionIsALoginFailure) {
  LeanRun run = runAgainst(LoginAnswer::exception, [](const ReportFields&, auto&) { return true; });
  EXPECT_EQ(run.ready.number("registered"), 1);
  EXPECT_EQ(run.ready.number("logged_in"), 0);
  EXPECT_EQ(run.ready.number("login_failures"), 1);
  EXPECT_EQ(run.ready.text("first_failure"), "login_failed:_no_such_key");
}

TEST(LeanPhone, ALoginWithoutASessionCapabilityIsALoginFailure) {
  LeanRun run = runAgainst(LoginAnswer::noSession, [](const ReportFields&, auto&) { return true; });
  EXPECT_EQ(run.ready.number("logged_in"), 0);
  EXPECT_EQ(run.ready.number("login_failures"), 1);
  EXPECT_EQ(run.ready.text("first_failure"), "login_returned_no_Session_the_server_hosts");
}

TEST(LeanPhone, ADeliveryFromAStrangerIsAProtocolErrorAndStillAnswered) {
  LeanRun run =
      runAgainst(LoginAnswer::sessionThenStranger, [](const ReportFields& result, auto& gateway) {
        // The login's Finish is not a Return: the deliver's Return is the first one.
        return result.number("protocol_errors") >= 1 && gateway.returnsFromPhone() >= 1;
      });
  EXPECT_EQ(run.ready.number("logged_in"), 1);
  EXPECT_EQ(run.result.number("protocol_errors"), 1);
  EXPECT_EQ(run.returnsFromPhone, 1);
  EXPECT_NE(run.result.text("first_failure").find("not_from_its_partner"), std::string::npos)
      << run.result.text("first_failure");
}

}  // namespace
}  // namespace switchboard::bench
