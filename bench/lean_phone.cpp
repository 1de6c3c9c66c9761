#include "lean_phone.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/schema.h>
#include <kj/debug.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "code_log.h"
#include "deadline_epoll.h"
#include "peer_load.h"
#include "rpc_frames.h"
#include "server_process.h"
#include "source_socket.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::bench {

namespace {

namespace proto = switchboard::proto;
namespace rpc = capnp::rpc;

constexpr std::int64_t kSecond = 1000000000;
// A registration or login that takes longer fails (the full phones' "phone setup" timeout).
constexpr std::int64_t kSetupStepNs = 30 * kSecond;
// A registration waits for its code in the host's log this long.
constexpr std::int64_t kCodeWaitNs = 20 * kSecond;
// The one capability a lean phone exports: its Inbox, export id 0 on every connection (the
// first id capnp's export table gives out).
constexpr std::uint32_t kInboxExport = 0;
// How long a Finish waits for the phone's next write: as long as the full client's
// (net::FinishFlush::kDelay, host/net/two_party_connection.h; lean phones do not link host/net).
constexpr std::int64_t kFinishDelayNs = 100 * 1000000;

// The interface ids and method ordinals of proto/client.capnp, looked up by name in the
// schema compiled into the generated code.
struct PhoneProtocol {
  template <class Interface>
  static std::uint16_t method(kj::StringPtr name) {
    return capnp::Schema::from<Interface>().asInterface().getMethodByName(name).getOrdinal();
  }

  std::uint64_t gateway = capnp::typeId<proto::Gateway>();
  std::uint64_t session = capnp::typeId<proto::Session>();
  std::uint64_t inbox = capnp::typeId<proto::Inbox>();
  std::uint16_t requestCode = method<proto::Gateway>("requestCode");
  std::uint16_t verify = method<proto::Gateway>("verify");
  std::uint16_t login = method<proto::Gateway>("login");
  std::uint16_t send = method<proto::Session>("send");
  std::uint16_t deliver = method<proto::Inbox>("deliver");
  std::uint16_t receipt = method<proto::Inbox>("receipt");
  std::uint16_t presence = method<proto::Inbox>("presence");
  std::uint16_t kicked = method<proto::Inbox>("kicked");
};

// ---------------------------------------------------------------- one phone

// What one of a phone's questions (its calls, and its bootstrap) asked, so that the Return
// is read as the answer to that.
enum class Asked : std::uint8_t { free, bootstrap, requestCode, verify, login, send };

const char* nameOf(Asked asked) {
  switch (asked) {
    case Asked::bootstrap:
      return "bootstrap";
    case Asked::requestCode:
      return "requestCode";
    case Asked::verify:
      return "verify";
    case Asked::login:
      return "login";
    case Asked::send:
      return "send";
    case Asked::free:
      break;
  }
  return "nothing";
}

struct Question {
  Asked asked = Asked::free;
  bool finished = false;            // its Finish went out before the Return (the login's bootstrap)
  std::uint32_t flow = 0, seq = 0;  // a send: the ledger's message
};

enum class Stage : std::uint8_t {
  unregistered,
  registering,   // bootstrap + requestCode asked
  awaitingCode,  // the code is not in the host's log yet
  verifying,     // verify asked
  registered,    // has its key; not connected
  loggingIn,     // bootstrap + login asked
  online,        // holds its session
  failed
};

// One phone and its connection's RPC state: the four tables of rpc.capnp reduced to what a
// phone uses. Questions: its own calls, by question id, ids reused lowest first as capnp's
// export table does. Answers: the server's calls on its Inbox, each returned at once and
// remembered until the server's Finish. Exports: the Inbox alone (kInboxExport), with the
// references the server holds. Imports: the Gateway (registration) and the Session.
struct LeanPhone {
  std::uint32_t index = 0;
  std::string number;
  std::string partner;  // the other phone of its pair (empty in `connect`)
  std::string key;
  Stage stage = Stage::unregistered;
  std::int64_t deadlineNs = 0;  // of the current setup step
  std::int64_t codeDeadlineNs = 0;

  int fd = -1;
  bool writeWatched = false;     // EPOLLOUT is in the epoll set: output waits for the socket
  bool dirty = false;            // output waits for the end of the loop's turn
  std::int64_t finishDueNs = 0;  // a held Finish waits in output until then (or the next write)
  std::string output;
  FrameInput input;
  std::vector<Question> questions;
  std::vector<std::uint32_t> freeIds;  // a min-heap of the free ids below questions.size()
  std::vector<bool> answering;         // by the server's question id: returned, Finish due
  std::uint32_t gateway = 0;           // the Gateway's import id while registering
  std::optional<std::uint32_t> session;
  std::uint32_t inboxRefs = 0;  // references to the Inbox the server holds
  bool kicked = false;          // Inbox.kicked came: the server is closing the session
  // Ids of its sends whose reply said Inbox.receipt(delivered) will bring the tick.
  std::unordered_set<std::uint64_t> awaitingTick;
};

// ---------------------------------------------------------------- the fleet

// All lean phones of one worker, on the loop thread runPeerWorker gives them. Frames are
// built with FrameBuilder and read with capnp's readers (rpc_frames.h). A send is written
// to the socket at once (one send() right after the clock read that stamps it, as the MQTT
// and XMPP clients do); Return frames wait for the end of the loop's turn and go out with
// whatever else that turn wrote; a Finish waits for the phone's next write, or 100 ms with
// nothing written (holdFinish), as the full client's does. An arrival carries the stamps of the
// recvmsg() that brought it: the kernel's receive timestamp and the clock read just after it.
//
// Every answer is checked: a Return that is an exception, names a question not asked, or
// lacks the capability it should carry; a call on anything but the Inbox or of a method the
// Inbox does not have; a Finish or Release the phone did not expect; a delivery from a phone
// that is not its partner; a delivered tick that is not owed (checkReceipts); an Abort or
// a closed connection. During setup such a failure
// fails that phone's registration or login; after it, it counts in protocol_errors (and in
// sbbench's failures). A refused or lost send also counts as a send error in the ledger.
class LeanPhones final : public PeerClients {
 public:
  LeanPhones(const BenchOptions& options, std::size_t flows)
      : options_(options),
        flows_(flows),
        codes_(options.codeLog.string()),
        inboxSlot_(kj::refcounted<CapTableSlot>(0)) {
    server_.sin_family = AF_INET;
    server_.sin_port = htons(static_cast<uint16_t>(options.serverPort));
    ::inet_pton(AF_INET, options.serverHost.c_str(), &server_.sin_addr);
  }
  ~LeanPhones() noexcept override {
    for (auto& phone : phones_)
      if (phone->fd >= 0) ::close(phone->fd);
  }

  void setup(ReportFields& ready) override {
    std::size_t count = options_.scenario == "connect"
                            ? shareOf(options_.count, options_.procs, options_.workerIndex)
                            : flows_ * 2;
    // The full phones' numbers, so either generator registers the same phones.
    auto firstGlobal = static_cast<std::uint32_t>(options_.workerIndex) * 200000;
    for (std::size_t i = 0; i < count; ++i) {
      auto phone = std::make_unique<LeanPhone>();
      phone->index = static_cast<std::uint32_t>(i);
      char number[32];
      std::snprintf(number, sizeof(number), "+1555%07u",
                    firstGlobal + static_cast<std::uint32_t>(i));
      phone->number = number;
      phones_.push_back(std::move(phone));
    }
    if (options_.scenario != "connect") {
      for (std::size_t f = 0; f < flows_; ++f) {
        phones_[2 * f]->partner = phones_[2 * f + 1]->number;
        phones_[2 * f + 1]->partner = phones_[2 * f]->number;
      }
    }
    std::vector<LeanPhone*> all;
    for (auto& phone : phones_) all.push_back(phone.get());
    ready.set("register_start_ns", monotonicNs());
    runSetup(all, &LeanPhones::startRegistration);
    ready.set("register_end_ns", monotonicNs());
    std::vector<LeanPhone*> registered;
    for (LeanPhone* phone : all)
      if (phone->stage == Stage::registered) registered.push_back(phone);
    LoginClock logins;
    runSetup(registered, &LeanPhones::startLogin);
    logins.report(ready);
    ready.set("registered", registered_);
    ready.set("register_failures", registerFailures_);
    ready.set("logged_in", loggedIn_);
    ready.set("login_failures", loginFailures_);
    ready.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
  }

  void poll(std::int64_t deadlineNs) override {
    epoll_event events[256];
    int n = epoll_.wait(
        events, 256, holding_.empty() ? deadlineNs : std::min(deadlineNs, holding_.front().first));
    for (int i = 0; i < n; ++i) {
      auto* phone = static_cast<LeanPhone*>(events[i].data.ptr);
      if (phone->fd >= 0 && (events[i].events & EPOLLOUT)) flush(*phone);
      if (phone->fd >= 0 && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        readFrom(*phone);
      }
    }
    // The turn's Return frames (and Finishes held before them), each connection's in one
    // send(); then the held Finishes that are due.
    for (std::size_t i = 0; i < dirty_.size(); ++i) {
      LeanPhone& phone = *dirty_[i];
      phone.dirty = false;
      if (phone.fd >= 0) flush(phone);
    }
    dirty_.clear();
    flushHeldFinishes(monotonicNs());
  }

  bool send(std::uint32_t flow, std::uint32_t seq, const std::string& body,
            std::int64_t& sentNs) override {
    LeanPhone& sender = *phones_[2 * flow];
    if (sender.stage != Stage::online || !sender.session || sender.fd < 0) return false;
    std::uint32_t id = ask(sender, Asked::send);
    sender.questions[id].flow = flow;
    sender.questions[id].seq = seq;
    auto params = frames_.startCall<proto::Session::SendParams>(protocol_.session, protocol_.send);
    params.setTo(sender.partner);
    params.setBody(
        capnp::Data::Reader(reinterpret_cast<const kj::byte*>(body.data()), body.size()));
    char clientMsgId[32];
    std::snprintf(clientMsgId, sizeof(clientMsgId), "%u-%u", flow, seq);
    params.setClientMsgId(clientMsgId);
    frames_.appendCall(sender.output, id, {CallTarget::Kind::importedCap, *sender.session});
    sentNs = monotonicNs();
    flush(sender);
    return true;
  }

  void addResult(ReportFields& r) override {
    r.set("protocol_errors", protocolErrors_);
    r.set("disconnects", disconnects_);
    std::uint64_t awaiting = 0;
    for (const auto& phone : phones_) awaiting += phone->awaitingTick.size();
    r.set("delivered_ticks", deliveredTicks_);
    r.set("ticks_awaited", awaiting);
    if (!firstFailure_.empty()) r.set("first_failure", firstFailure_);
  }

 private:
  // ---------------------------------------------------------------- setup

  // Starts `start` for each phone in `phones`, at most options.concurrency at a time, and
  // drives the loop until every one of them got through or failed.
  void runSetup(const std::vector<LeanPhone*>& phones, void (LeanPhones::*start)(LeanPhone&)) {
    std::size_t limit = std::max<std::uint32_t>(1, options_.concurrency);
    std::size_t next = 0;
    while (next < phones.size() || !inSetup_.empty()) {
      while (inSetup_.size() < limit && next < phones.size()) (this->*start)(*phones[next++]);
      poll(monotonicNs() + (awaitingCode_.empty() ? 5000000 : 2000000));
      handOutCodes();
      std::int64_t now = monotonicNs();
      std::erase_if(inSetup_, [&](LeanPhone* phone) {
        if (inProgress(*phone) && now > phone->deadlineNs) {
          failSetup(*phone, std::string("timed out in ") + stageName(phone->stage));
        }
        return !inProgress(*phone);
      });
    }
  }

  static bool inProgress(const LeanPhone& phone) {
    return phone.stage == Stage::registering || phone.stage == Stage::awaitingCode ||
           phone.stage == Stage::verifying || phone.stage == Stage::loggingIn;
  }

  static const char* stageName(Stage stage) {
    switch (stage) {
      case Stage::registering:
        return "registration";
      case Stage::awaitingCode:
        return "waiting for the code";
      case Stage::verifying:
        return "verify";
      case Stage::loggingIn:
        return "login";
      default:
        return "setup";
    }
  }

  // Bootstrap, and requestCode pipelined on the bootstrap's answer (as the full client's
  // first call on TwoPartyClient::bootstrap() goes).
  void startRegistration(LeanPhone& phone) {
    if (!open(phone, Stage::registering)) return;
    std::uint32_t bootstrap = ask(phone, Asked::bootstrap);
    frames_.bootstrap(phone.output, bootstrap);
    std::uint32_t id = ask(phone, Asked::requestCode);
    frames_.startCall<proto::Gateway::RequestCodeParams>(protocol_.gateway, protocol_.requestCode)
        .setPhone(phone.number);
    frames_.appendCall(phone.output, id, {CallTarget::Kind::promisedAnswer, bootstrap});
    flush(phone);
  }

  void handOutCodes() {
    if (awaitingCode_.empty()) return;
    codes_.scan();
    std::int64_t now = monotonicNs();
    std::erase_if(awaitingCode_, [&](LeanPhone* phone) {
      if (phone->stage != Stage::awaitingCode) return true;
      if (auto code = codes_.take(phone->number)) {
        verify(*phone, *code);
        return true;
      }
      if (now > phone->codeDeadlineNs) {
        failSetup(*phone, "no registration code in the host log for " + phone->number);
        return true;
      }
      return false;
    });
  }

  // verify on the Gateway the bootstrap returned, which the phone then releases (the full
  // client drops it once verify is asked).
  void verify(LeanPhone& phone, const std::string& code) {
    std::uint32_t id = ask(phone, Asked::verify);
    auto params =
        frames_.startCall<proto::Gateway::VerifyParams>(protocol_.gateway, protocol_.verify);
    params.setPhone(phone.number);
    params.setCode(code);
    params.setDeviceName("sbbench");
    frames_.appendCall(phone.output, id, {CallTarget::Kind::importedCap, phone.gateway});
    frames_.release(phone.output, phone.gateway, 1);
    phone.stage = Stage::verifying;
    flush(phone);
  }

  // Bootstrap; login pipelined on it, handing over the Inbox (senderHosted in the call's cap
  // table); and Finish of the bootstrap with releaseResultCaps, all in one send(): what the
  // full client writes when it drops the Gateway right after asking for the login.
  void startLogin(LeanPhone& phone) {
    if (!open(phone, Stage::loggingIn)) return;
    std::uint32_t bootstrap = ask(phone, Asked::bootstrap);
    frames_.bootstrap(phone.output, bootstrap);
    std::uint32_t id = ask(phone, Asked::login);
    capnp::BuilderCapabilityTable caps;
    auto params = caps.imbue(
        frames_.startCall<proto::Gateway::LoginParams>(protocol_.gateway, protocol_.login));
    params.setPhone(phone.number);
    params.setKey(
        capnp::Data::Reader(reinterpret_cast<const kj::byte*>(phone.key.data()), phone.key.size()));
    params.setInbox(proto::Inbox::Client(inboxSlot_->addRef()));
    // The params hold one capability, the Inbox: cap table entry 0.
    KJ_ASSERT(caps.getTable().size() == 1);
    frames_.appendCall(phone.output, id, {CallTarget::Kind::promisedAnswer, bootstrap},
                       {kInboxExport});
    phone.inboxRefs = 1;
    frames_.finish(phone.output, bootstrap, true);
    phone.questions[bootstrap].finished = true;
    flush(phone);
  }

  // A new connection for `phone`'s next setup step, with fresh RPC tables.
  bool open(LeanPhone& phone, Stage stage) {
    std::string error;
    int fd = connectFromSource(server_, sourceHostOf(options_.workerIndex, connections_++), error);
    phone.stage = stage;
    phone.deadlineNs = monotonicNs() + kSetupStepNs;
    if (fd < 0) {
      failSetup(phone, error);
      return false;
    }
    phone.fd = fd;
    phone.writeWatched = false;
    phone.output.clear();
    phone.input = FrameInput();
    phone.questions.clear();
    phone.freeIds.clear();
    phone.answering.clear();
    phone.session.reset();
    phone.inboxRefs = 0;
    phone.kicked = false;
    epoll_.add(fd, EPOLLIN, &phone);
    inSetup_.push_back(&phone);
    return true;
  }

  void failSetup(LeanPhone& phone, const std::string& why) {
    if (phone.stage == Stage::failed) return;  // counted when it failed
    bool registering = phone.stage != Stage::loggingIn;
    ++(registering ? registerFailures_ : loginFailures_);
    fail(why);
    close(phone);
    phone.stage = Stage::failed;
  }

  // ---------------------------------------------------------------- questions

  std::uint32_t ask(LeanPhone& phone, Asked asked) {
    std::uint32_t id;
    if (!phone.freeIds.empty()) {
      std::pop_heap(phone.freeIds.begin(), phone.freeIds.end(), std::greater<>());
      id = phone.freeIds.back();
      phone.freeIds.pop_back();
    } else {
      id = static_cast<std::uint32_t>(phone.questions.size());
      phone.questions.emplace_back();
    }
    phone.questions[id] = Question{asked};
    return id;
  }

  void retire(LeanPhone& phone, std::uint32_t id) {
    phone.questions[id] = Question{};
    phone.freeIds.push_back(id);
    std::push_heap(phone.freeIds.begin(), phone.freeIds.end(), std::greater<>());
  }

  // ---------------------------------------------------------------- incoming

  void readFrom(LeanPhone& phone) {
    try {
      ssize_t n = phone.input.receive(phone.fd, received_, [&](rpc::Message::Reader message) {
        return onMessage(phone, message);
      });
      if (n == 0) {
        lose(phone, "the server closed the connection");
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        lose(phone, std::string("recv: ") + strerror(errno));
      }
    } catch (const kj::Exception& e) {
      lose(phone, std::string("unreadable message: ") + e.getDescription().cStr());
    }
  }

  // Handles one message; false when the connection was closed by it.
  bool onMessage(LeanPhone& phone, rpc::Message::Reader message) {
    switch (message.which()) {
      case rpc::Message::RETURN:
        return onReturn(phone, message.getReturn());
      case rpc::Message::CALL:
        return onCall(phone, message.getCall());
      case rpc::Message::FINISH: {
        std::uint32_t id = message.getFinish().getQuestionId();
        if (id >= phone.answering.size() || !phone.answering[id]) {
          return violation(phone, "Finish of question " + std::to_string(id) +
                                      ", which the phone was not answering");
        }
        phone.answering[id] = false;
        return true;
      }
      case rpc::Message::RELEASE: {
        auto release = message.getRelease();
        if (release.getId() != kInboxExport || release.getReferenceCount() > phone.inboxRefs) {
          return violation(phone, "Release of export " + std::to_string(release.getId()) + " x" +
                                      std::to_string(release.getReferenceCount()) +
                                      ", which the server does not hold");
        }
        phone.inboxRefs -= release.getReferenceCount();
        return true;
      }
      case rpc::Message::ABORT:
        return lose(phone,
                    std::string("the server aborted: ") + message.getAbort().getReason().cStr());
      case rpc::Message::UNIMPLEMENTED:
        return violation(phone, "the server did not implement a message the phone sent");
      default:
        frames_.unimplemented(phone.output, message);
        markDirty(phone);
        return violation(phone, "unexpected RPC message kind " +
                                    std::to_string(static_cast<int>(message.which())));
    }
  }

  bool onReturn(LeanPhone& phone, rpc::Return::Reader ret) {
    std::uint32_t id = ret.getAnswerId();
    if (id >= phone.questions.size() || phone.questions[id].asked == Asked::free) {
      return violation(phone, "Return for question " + std::to_string(id) + ", never asked");
    }
    Question question = phone.questions[id];
    // A Finish for every Return, as capnp's client sends when it drops the response, held as
    // the full client holds it (holdFinish); verify's connection is closed instead (the full
    // client's registration ends that way).
    if (!question.finished && question.asked != Asked::verify) {
      frames_.finish(phone.output, id, false);
      holdFinish(phone);
    }
    retire(phone, id);
    if (ret.which() != rpc::Return::RESULTS) {
      std::string why = ret.which() == rpc::Return::EXCEPTION
                            ? std::string(ret.getException().getReason().cStr())
                            : "a Return of kind " + std::to_string(static_cast<int>(ret.which()));
      if (question.asked == Asked::send) {
        fail(std::string("send failed: ") + why);
        if (acked) acked(question.flow, question.seq, false);
        return phone.fd >= 0;
      }
      return violation(phone, std::string(nameOf(question.asked)) + " failed: " + why);
    }
    auto results = ret.getResults();
    switch (question.asked) {
      case Asked::bootstrap: {
        // The Gateway: the bootstrap's content is the capability itself.
        auto gateway = senderHostedCap(results, [](auto& table, capnp::AnyPointer::Reader content) {
          return table.imbue(content).template getAs<capnp::Capability>();
        });
        if (!gateway) return violation(phone, "the bootstrap returned no Gateway the server hosts");
        // A login's bootstrap was finished with releaseResultCaps: the server dropped it.
        if (!question.finished) phone.gateway = *gateway;
        return true;
      }
      case Asked::requestCode:
        if (results.getContent()
                .getAs<proto::Gateway::RequestCodeResults>()
                .getExpiresInSeconds() == 0) {
          return violation(phone, "requestCode returned a code that never lives");
        }
        phone.stage = Stage::awaitingCode;
        phone.codeDeadlineNs = monotonicNs() + kCodeWaitNs;
        awaitingCode_.push_back(&phone);
        return true;
      case Asked::verify: {
        auto key = results.getContent().getAs<proto::Gateway::VerifyResults>().getKey();
        if (key.size() == 0) return violation(phone, "verify returned no key");
        phone.key.assign(reinterpret_cast<const char*>(key.begin()), key.size());
        close(phone);
        phone.stage = Stage::registered;
        ++registered_;
        return false;
      }
      case Asked::login: {
        auto session = senderHostedCap(results, [](auto& table, capnp::AnyPointer::Reader content) {
          return table.imbue(content.getAs<proto::Gateway::LoginResults>()).getSession();
        });
        if (!session) return violation(phone, "login returned no Session the server hosts");
        phone.session = *session;
        phone.stage = Stage::online;
        ++loggedIn_;
        return true;
      }
      case Asked::send: {
        auto sent = results.getContent().getAs<proto::Session::SendResults>();
        bool ok = sent.getId() != 0;
        if (ok && sent.getDeliveredAt() != 0) {
          ++deliveredTicks_;  // the reply is the tick
        } else if (ok) {
          phone.awaitingTick.insert(sent.getId());  // Inbox.receipt(delivered) follows
        }
        if (acked) acked(question.flow, question.seq, ok);
        if (!ok) return violation(phone, "send returned message id 0");
        return phone.fd >= 0;
      }
      case Asked::free:
        break;
    }
    return true;
  }

  // The server's calls on the Inbox: each gets its Return at once (at the end of the turn).
  bool onCall(LeanPhone& phone, rpc::Call::Reader call) {
    std::uint32_t id = call.getQuestionId();
    if (id >= phone.answering.size()) phone.answering.resize(id + 1);
    if (phone.answering[id]) {
      return violation(phone,
                       "a call reuses question " + std::to_string(id) + " before its Finish");
    }
    phone.answering[id] = true;
    markDirty(phone);
    auto target = call.getTarget();
    if (target.which() != rpc::MessageTarget::IMPORTED_CAP ||
        target.getImportedCap() != kInboxExport || phone.inboxRefs == 0 ||
        call.getInterfaceId() != protocol_.inbox) {
      frames_.exceptionReturn(phone.output, id, "no such capability here");
      return violation(phone, "a call on something other than the phone's Inbox");
    }
    auto content = call.getParams().getContent();
    std::uint16_t method = call.getMethodId();
    if (method == protocol_.deliver) {
      for (auto message : content.getAs<proto::Inbox::DeliverParams>().getMessages()) {
        auto from = message.getFrom();
        if (std::string_view(from.cStr(), from.size()) != phone.partner) {
          frames_.emptyReturn(phone.output, id);
          return violation(phone, std::string("a delivery to ") + phone.number + " from " +
                                      from.cStr() + ", not from its partner");
        }
        auto body = message.getBody();
        if (arrived) {
          arrived(reinterpret_cast<const char*>(body.begin()), body.size(),
                  phone.input.lastArrival());
        }
      }
    } else if (method == protocol_.receipt) {
      std::string problem = checkReceipts(phone, content.getAs<proto::Inbox::ReceiptParams>());
      if (!problem.empty()) {
        frames_.emptyReturn(phone.output, id);
        return violation(phone, problem);
      }
    } else if (method == protocol_.kicked) {
      ++disconnects_;
      phone.kicked = true;
      fail(std::string("kicked: ") +
           content.getAs<proto::Inbox::KickedParams>().getReason().cStr());
    } else if (method != protocol_.presence) {
      frames_.exceptionReturn(phone.output, id, "Inbox has no such method");
      return violation(phone, "a call of Inbox method " + std::to_string(method));
    }
    frames_.emptyReturn(phone.output, id);
    return true;
  }

  // Books the delivered ticks of an Inbox.receipt call; says what is wrong with it, if
  // anything. The phones send no read receipts, so every tick is "delivered", by the
  // partner, for a send whose reply said the tick would follow (deliveredAt 0), once: a
  // tick for a send whose reply was the tick, a second one, or one before the reply is a
  // tick the protocol says never comes.
  std::string checkReceipts(LeanPhone& phone, proto::Inbox::ReceiptParams::Reader params) {
    for (auto receipt : params.getReceipts()) {
      auto by = receipt.getBy();
      if (receipt.getKind() != proto::ReceiptKind::DELIVERED ||
          std::string_view(by.cStr(), by.size()) != phone.partner) {
        return std::string("a receipt for ") + phone.number + " that is not its partner's " +
               "delivered tick (by " + by.cStr() + ")";
      }
      if (phone.awaitingTick.erase(receipt.getId()) == 0) {
        return "a delivered tick for message " + std::to_string(receipt.getId()) +
               " that was not awaiting one";
      }
      ++deliveredTicks_;
    }
    return {};
  }

  // A check failed. During setup the phone's step fails (false: its connection is closed);
  // after it the failure is counted and the connection kept.
  bool violation(LeanPhone& phone, const std::string& why) {
    if (phone.stage != Stage::online) {
      failSetup(phone, why);
      return false;
    }
    ++protocolErrors_;
    fail(why);
    return true;
  }

  // The connection is gone or unusable; returns false.
  bool lose(LeanPhone& phone, const std::string& why) {
    if (phone.stage != Stage::online) {
      failSetup(phone, why);
      return false;
    }
    // A kicked phone's connection closing is the kick's end, counted with the kick.
    if (!phone.kicked) {
      ++protocolErrors_;
      ++disconnects_;
    }
    fail(why);
    close(phone);
    phone.stage = Stage::failed;
    return false;
  }

  // ---------------------------------------------------------------- outgoing

  void markDirty(LeanPhone& phone) {
    if (phone.dirty) return;
    phone.dirty = true;
    dirty_.push_back(&phone);
  }

  // A Finish waits in `phone`'s output, as the full client's (net::TwoPartyConnection) does:
  // for the phone's next write (a send, a Return), which takes it along, or for
  // flushHeldFinishes() once FinishFlush::kDelay has passed.
  void holdFinish(LeanPhone& phone) {
    if (phone.finishDueNs != 0) return;
    phone.finishDueNs = monotonicNs() + kFinishDelayNs;
    holding_.emplace_back(phone.finishDueNs, &phone);
  }

  // Writes the held Finishes that are due by `nowNs`.
  void flushHeldFinishes(std::int64_t nowNs) {
    while (!holding_.empty() && holding_.front().first <= nowNs) {
      LeanPhone& phone = *holding_.front().second;
      holding_.pop_front();
      // A later write took the Finish (0), or it was held again later (its own entry follows).
      if (phone.finishDueNs != 0 && phone.finishDueNs <= nowNs && phone.fd >= 0) flush(phone);
    }
  }

  // Writes what `phone` has queued; what the socket does not take waits for EPOLLOUT.
  void flush(LeanPhone& phone) {
    phone.finishDueNs = 0;  // a held Finish goes with it
    while (!phone.output.empty() && phone.fd >= 0) {
      ssize_t n =
          ::send(phone.fd, phone.output.data(), phone.output.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOTCONN) {
          watchWrites(phone, true);
        } else {
          lose(phone, std::string("send: ") + strerror(errno));
        }
        return;
      }
      phone.output.erase(0, static_cast<std::size_t>(n));
    }
    if (phone.fd >= 0) watchWrites(phone, false);
  }

  void watchWrites(LeanPhone& phone, bool watch) {
    if (phone.writeWatched == watch) return;
    phone.writeWatched = watch;
    epoll_.modify(phone.fd, watch ? EPOLLIN | EPOLLOUT : EPOLLIN, &phone);
  }

  // Closes the connection; its sends still unanswered are lost sends.
  void close(LeanPhone& phone) {
    if (phone.fd < 0) return;
    epoll_.remove(phone.fd);
    ::close(phone.fd);
    phone.fd = -1;
    phone.output.clear();
    phone.finishDueNs = 0;
    for (Question& question : phone.questions) {
      if (question.asked == Asked::send && acked) acked(question.flow, question.seq, false);
      question = Question{};
    }
  }

  void fail(const std::string& why) {
    if (!firstFailure_.empty()) return;
    firstFailure_ = why.substr(0, 120);
    for (char& c : firstFailure_)
      if (c == ' ' || c == '=' || c == '\n') c = '_';
  }

  const BenchOptions& options_;
  std::size_t flows_;
  const PhoneProtocol protocol_;
  sockaddr_in server_{};
  CodeLog codes_;
  DeadlineEpoll epoll_;
  FrameBuilder frames_;
  std::vector<capnp::word> received_;  // the loop's receive buffer (FrameInput)
  kj::Own<CapTableSlot> inboxSlot_;    // the Inbox as written into a login's params
  std::vector<std::unique_ptr<LeanPhone>> phones_;
  std::vector<LeanPhone*> inSetup_;       // in a registration or login step
  std::vector<LeanPhone*> awaitingCode_;  // their code is not in the log yet
  std::vector<LeanPhone*> dirty_;         // with output for the end of the turn
  // Phones holding a Finish, by when it is due (in order: every hold waits as long).
  std::deque<std::pair<std::int64_t, LeanPhone*>> holding_;
  std::uint32_t connections_ = 0;
  std::uint64_t registered_ = 0, registerFailures_ = 0, loggedIn_ = 0, loginFailures_ = 0;
  std::uint64_t protocolErrors_ = 0, disconnects_ = 0, deliveredTicks_ = 0;
  std::string firstFailure_;
};

}  // namespace

std::unique_ptr<PeerClients> makeLeanPhones(const BenchOptions& options, std::size_t flows) {
  return std::make_unique<LeanPhones>(options, flows);
}

int runLeanPhoneWorker(const BenchOptions& options, WorkerLink& link) {
  return runPeerWorkerWith<LeanPhones>(options, link);
}

}  // namespace switchboard::bench
