// The lean phones' frames (bench/rpc_frames.*): what FrameBuilder writes, capnp's own readers
// read back as the rpc.capnp message meant; FrameInput hands out whole messages however the
// bytes arrive; senderHostedCap finds a capability only where the cap table really has one.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/serialize.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "rpc_frames.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::bench {
namespace {

namespace proto = switchboard::proto;
namespace rpc = capnp::rpc;

// The messages serialized in `bytes`, read back one by one with capnp's FlatArrayMessageReader.
std::vector<std::vector<capnp::word>> splitFrames(const std::string& bytes) {
  std::vector<capnp::word> words(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.data(), bytes.data(), bytes.size());
  std::vector<std::vector<capnp::word>> frames;
  kj::ArrayPtr<const capnp::word> rest(words.data(), words.size());
  while (rest.size() > 0) {
    capnp::FlatArrayMessageReader reader(rest);
    auto end = reader.getEnd();
    frames.emplace_back(rest.begin(), end);
    rest = kj::arrayPtr(end, rest.end());
  }
  return frames;
}

TEST(RpcFrames, ALoginCallReadsBackWithTheInboxAsCapTableEntryZero) {
  FrameBuilder frames;
  std::string out;
  frames.bootstrap(out, 0);
  capnp::BuilderCapabilityTable caps;
  auto params =
      caps.imbue(frames.startCall<proto::Gateway::LoginParams>(capnp::typeId<proto::Gateway>(), 3));
  params.setPhone("+15550000001");
  params.setInbox(proto::Inbox::Client(kj::refcounted<CapTableSlot>(0)));
  frames.appendCall(out, 1, {CallTarget::Kind::promisedAnswer, 0}, {7});
  frames.finish(out, 0, true);

  auto raw = splitFrames(out);
  ASSERT_EQ(raw.size(), 3u);
  capnp::FlatArrayMessageReader bootstrap(kj::arrayPtr(raw[0].data(), raw[0].size()));
  EXPECT_EQ(bootstrap.getRoot<rpc::Message>().which(), rpc::Message::BOOTSTRAP);

  capnp::FlatArrayMessageReader callMessage(kj::arrayPtr(raw[1].data(), raw[1].size()));
  auto message = callMessage.getRoot<rpc::Message>();
  ASSERT_EQ(message.which(), rpc::Message::CALL);
  auto call = message.getCall();
  EXPECT_EQ(call.getQuestionId(), 1u);
  EXPECT_EQ(call.getInterfaceId(), capnp::typeId<proto::Gateway>());
  EXPECT_EQ(call.getMethodId(), 3u);
  ASSERT_EQ(call.getTarget().which(), rpc::MessageTarget::PROMISED_ANSWER);
  EXPECT_EQ(call.getTarget().getPromisedAnswer().getQuestionId(), 0u);
  EXPECT_EQ(call.getSendResultsTo().which(), rpc::Call::SendResultsTo::CALLER);
  auto read = call.getParams().getContent().getAs<proto::Gateway::LoginParams>();
  EXPECT_EQ(std::string(read.getPhone().cStr()), "+15550000001");
  auto inbox =
      senderHostedCap(call.getParams(), [](auto& table, capnp::AnyPointer::Reader content) {
        return table.imbue(content.getAs<proto::Gateway::LoginParams>()).getInbox();
      });
  ASSERT_TRUE(inbox.has_value());
  EXPECT_EQ(*inbox, 7u);

  capnp::FlatArrayMessageReader finishMessage(kj::arrayPtr(raw[2].data(), raw[2].size()));
  auto finish = finishMessage.getRoot<rpc::Message>();
  ASSERT_EQ(finish.which(), rpc::Message::FINISH);
  EXPECT_EQ(finish.getFinish().getQuestionId(), 0u);
  EXPECT_TRUE(finish.getFinish().getReleaseResultCaps());
}

// A Return's results as a server would write them: `session` set to cap table entry 0 (or
// left null), and that entry described as `hosted` (senderHosted) or as a promise.
std::optional<std::uint32_t> sessionOf(bool setSession, bool hosted) {
  capnp::MallocMessageBuilder message;
  auto payload = message.initRoot<rpc::Payload>();
  capnp::BuilderCapabilityTable caps;
  auto results = caps.imbue(payload.getContent().initAs<proto::Gateway::LoginResults>());
  if (setSession) results.setSession(proto::Session::Client(kj::refcounted<CapTableSlot>(0)));
  auto entry = payload.initCapTable(1)[0];
  if (hosted) {
    entry.setSenderHosted(4);
  } else {
    entry.setSenderPromise(4);
  }
  return senderHostedCap(payload.asReader(), [](auto& table, capnp::AnyPointer::Reader content) {
    return table.imbue(content.getAs<proto::Gateway::LoginResults>()).getSession();
  });
}

TEST(RpcFrames, TheSessionIsFoundOnlyWhereTheServerHostsOne) {
  EXPECT_EQ(sessionOf(true, true), std::optional<std::uint32_t>(4));
  EXPECT_EQ(sessionOf(false, true), std::nullopt);  // a null pointer names no entry
  EXPECT_EQ(sessionOf(true, false), std::nullopt);  // a promise is not taken
}

TEST(RpcFrames, InputHandsOutWholeMessagesHoweverTheBytesArrive) {
  FrameBuilder frames;
  std::string out;
  for (std::uint32_t id = 0; id < 5; ++id) frames.finish(out, id, id % 2 == 0);
  frames.emptyReturn(out, 9);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  FrameInput input;
  std::vector<capnp::word> shared;
  std::vector<std::uint32_t> seen;
  auto onMessage = [&](rpc::Message::Reader message) {
    if (message.which() == rpc::Message::FINISH) {
      seen.push_back(message.getFinish().getQuestionId());
    } else if (message.which() == rpc::Message::RETURN) {
      seen.push_back(1000 + message.getReturn().getAnswerId());
    }
    return true;
  };
  // 1, 7, 13, ... bytes at a time: messages split mid-header and mid-body.
  std::size_t at = 0, step = 1;
  while (at < out.size()) {
    std::size_t n = std::min(step, out.size() - at);
    ASSERT_EQ(::write(fds[1], out.data() + at, n), static_cast<ssize_t>(n));
    at += n;
    step += 6;
    ASSERT_EQ(input.receive(fds[0], shared, onMessage), static_cast<ssize_t>(n));
  }
  EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 1009}));
  ::close(fds[1]);
  EXPECT_EQ(input.receive(fds[0], shared, onMessage), 0);  // the peer closed
  ::close(fds[0]);
}

}  // namespace
}  // namespace switchboard::bench
