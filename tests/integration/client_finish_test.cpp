// End to end against the real host binary: the client library's connection (RpcConnection,
// whose TwoPartyRpcClient holds Finishes) sends its Finish of a Session.send with its next
// message, so a message costs the host one read from the sender instead of two; a Finish with
// nothing after it still goes out, by the flush (FinishFlush::kDelay); and closing either end
// with a Finish held is clean. The frames are seen at the phone's stream: a FrameTap
// (tests/net/frame_tap.h) records each write() as the messages it carried.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <capnp/rpc.capnp.h>
#include <kj/async.h>
#include <kj/debug.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "frame_tap.h"
#include "net/asio_stream.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "recording_phone.h"
#include "running_host.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::integration {
namespace {

using Kind = capnp::rpc::Message::Which;
using Written = net::FrameTap::Written;

// An Inbox that takes whatever the host pushes.
class AcceptingInbox final : public proto::Inbox::Server {
 protected:
  kj::Promise<void> deliver(DeliverContext) override { return kj::READY_NOW; }
  kj::Promise<void> receipt(ReceiptContext) override { return kj::READY_NOW; }
  kj::Promise<void> presence(PresenceContext) override { return kj::READY_NOW; }
  kj::Promise<void> kicked(KickedContext) override { return kj::READY_NOW; }
};

// A phone on the client library's RpcConnection over a FrameTap, logged in on `host`. Lives
// on, and is only touched on, its own network thread; the test reads through runSync.
class TappedPhone {
 public:
  TappedPhone(const RunningHost& host, const std::string& number, const std::string& key) {
    thread_.start();
    thread_.runSync([&] {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(host.port());
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      KJ_SYSCALL(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)));
      KJ_SYSCALL(::fcntl(fd, F_SETFL, O_NONBLOCK));
      auto stream = kj::heap<net::FrameTap>(kj::heap<net::AsioStream>(thread_.ioContext(), fd));
      tap_ = stream.get();
      connection_ = kj::heap<net::RpcConnection>(thread_.ioContext(), kj::mv(stream));
    });
    thread_.runSync([&] {
      auto request = connection_->bootstrapAs<proto::Gateway>().loginRequest();
      request.setPhone(number);
      request.setKey(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(key.data()), key.size()));
      request.setInbox(kj::heap<AcceptingInbox>());
      return request.send().then([this](auto&& response) { session_ = response.getSession(); });
    });
  }
  ~TappedPhone() {
    thread_.runSync([&] { closeOnLoop(); });
  }

  // Loop thread only: drops the session and closes the connection.
  void closeOnLoop() {
    session_ = nullptr;
    tap_ = nullptr;
    connection_ = nullptr;
  }

  net::NetworkThread& thread() { return thread_; }
  // Loop thread only.
  kj::Promise<void> sendOnLoop(const std::string& to, const std::string& body) {
    auto request = KJ_ASSERT_NONNULL(session_).sendRequest();
    request.setTo(to);
    request.setClientMsgId(body);
    request.setBody(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(body.data()), body.size()));
    return request.send().then([](capnp::Response<proto::Session::SendResults>&& response) {
      KJ_ASSERT(response.getId() != 0);
      // The response is dropped here: capnp sends its Finish now.
    });
  }
  // Loop thread only.
  const std::vector<std::vector<Written>>& writes() const { return tap_->writes(); }
  std::vector<std::vector<Written>> writesNow() {
    return thread_.runSync([&] { return writes(); });
  }
  kj::Promise<void> onDisconnect() { return connection_->onDisconnect(); }

 private:
  net::NetworkThread thread_{"tapped-phone"};
  net::FrameTap* tap_ = nullptr;               // owned by connection_
  kj::Own<net::RpcConnection> connection_;     // loop thread only
  kj::Maybe<proto::Session::Client> session_;  // loop thread only
};

// The one Call in `writes` from index `from` on: its question and the write that carried it.
struct AskedCall {
  std::uint32_t question = 0;
  std::size_t write = 0;
};
AskedCall onlyCallFrom(const std::vector<std::vector<Written>>& writes, std::size_t from) {
  std::vector<AskedCall> calls;
  for (std::size_t i = from; i < writes.size(); ++i) {
    for (const Written& message : writes[i]) {
      if (message.kind == Kind::CALL) calls.push_back({message.question, i});
    }
  }
  EXPECT_EQ(calls.size(), 1u) << "Calls written from write " << from;
  return calls.size() == 1 ? calls[0] : AskedCall{};
}

// Where `question`'s Finish was first written from write `from` on: the write's index, or
// nullopt. (Capnp reuses a question id once its Finish is sent: look after the Call.)
std::optional<std::size_t> finishOf(const std::vector<std::vector<Written>>& writes,
                                    std::uint32_t question, std::size_t from = 0) {
  for (std::size_t i = from; i < writes.size(); ++i) {
    for (const Written& message : writes[i]) {
      if (message.kind == Kind::FINISH && message.question == question) return i;
    }
  }
  return std::nullopt;
}

std::string describe(const std::vector<Written>& write) {
  std::string text;
  for (const Written& message : write) {
    text += message.kind == Kind::CALL     ? " Call"
            : message.kind == Kind::FINISH ? " Finish"
            : message.kind == Kind::RETURN ? " Return"
                                           : " other";
    text += "(" + std::to_string(message.question) + ")";
  }
  return text;
}

TEST(ClientFinish, ASendsFinishGoesOutWithTheNextSendAndALastOneByTheFlush) {
  RunningHost host;
  host.start();
  RecordingPhone b(host.clientOptions(), "+15550081002");
  b.registerAndLogin(host.sms());
  TappedPhone a(host, "+15550081001", registerAway(host, "+15550081001"));

  // Two sends, the second asked as soon as the first's answer was dropped (its Finish sent).
  std::size_t beforeFirst = 0;
  std::size_t beforeSecond = 0;
  a.thread().runSync([&] {
    beforeFirst = a.writes().size();
    return a.sendOnLoop(b.number(), "one").then([&] {
      beforeSecond = a.writes().size();
      return a.sendOnLoop(b.number(), "two");
    });
  });
  ASSERT_TRUE(b.waitForMessages(2));
  auto writes = a.writesNow();
  AskedCall first = onlyCallFrom({writes.begin(), writes.begin() + beforeSecond}, beforeFirst);
  AskedCall second = onlyCallFrom(writes, beforeSecond);

  // The first send's Finish waited for the second send and went out in its write, first.
  auto firstFinish = finishOf(writes, first.question, first.write + 1);
  ASSERT_TRUE(firstFinish.has_value()) << "the first send's Finish was never written";
  EXPECT_GE(*firstFinish, beforeSecond) << "written before the second send was asked";
  const std::vector<Written>& carrier = writes[*firstFinish];
  auto finishAt = std::find_if(carrier.begin(), carrier.end(), [&](const Written& m) {
    return m.kind == Kind::FINISH && m.question == first.question;
  });
  auto callAt = std::find_if(carrier.begin(), carrier.end(), [&](const Written& m) {
    return m.kind == Kind::CALL && m.question == second.question;
  });
  EXPECT_NE(callAt, carrier.end())
      << "the first send's Finish went out alone, in write" << describe(carrier);
  EXPECT_LT(finishAt, callAt) << "the Finish must precede the next message:" << describe(carrier);

  // Nothing follows the second send: its Finish still goes out, by the flush, alone.
  auto lastFinishWritten = [&] {
    return finishOf(a.writesNow(), second.question, second.write + 1).has_value();
  };
  ASSERT_TRUE(waitUntil(lastFinishWritten)) << "the last send's Finish was never written";
  writes = a.writesNow();
  std::size_t lastFinish = *finishOf(writes, second.question, second.write + 1);
  for (const Written& message : writes[lastFinish]) {
    EXPECT_EQ(message.kind, Kind::FINISH) << "write" << describe(writes[lastFinish]);
  }
  ASSERT_EQ(bodiesOf(b.messages()), (std::vector<std::string>{"one", "two"}));
}

// A Finish still held when the phone closes its connection, or when the host dies, goes with
// the connection: no crash, the host serves on, the client sees the end.
TEST(ClientFinish, ClosingEitherEndWithAFinishHeldIsClean) {
  RunningHost host;
  host.start();
  RecordingPhone b(host.clientOptions(), "+15550082002");
  b.registerAndLogin(host.sms());
  std::string aKey = registerAway(host, "+15550082001");
  {
    TappedPhone a(host, "+15550082001", aKey);
    // Closed in the same turns as the answer came: its Finish is certainly still held.
    a.thread().runSync(
        [&] { return a.sendOnLoop(b.number(), "before closing").then([&] { a.closeOnLoop(); }); });
  }
  ASSERT_TRUE(b.waitUntilMessage("before closing"));
  // The host served the close, and serves the same phone again.
  TappedPhone again(host, "+15550082001", aKey);
  bool disconnected = false;  // loop thread only
  again.thread().runSync([&] {
    return again.sendOnLoop(b.number(), "before the host dies").then([&] {
      host.kill9();  // from the phone's own thread: its Finish is still held
      again.thread().addTask(again.onDisconnect().then([&] { disconnected = true; }));
    });
  });
  EXPECT_TRUE(waitUntil([&] { return again.thread().runSync([&] { return disconnected; }); }));
}

}  // namespace
}  // namespace switchboard::integration
