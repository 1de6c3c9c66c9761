// Writes the fuzz targets' seed corpus: `seed_recorder DIR` fills
// DIR/{phone_connection,admin_connection, plugin_state,config}/. The committed corpus in
// fuzz/corpus/ was made by it.
//
// Connection seeds are the bytes a real Cap'n Proto client writes for a session: the
// client's calls go over an in-memory pipe and whatever reaches the far end is recorded.
// Every call is pipelined (session calls on the login's promised Session), so the session
// needs no server to be recorded, and replays against the fuzzed host as one burst. Logins
// carry fuzzed_host.h's key markers, which the phone target swaps for the real keys.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "fuzzed_host.h"
#include "loaded_plugin.h"
#include "switchboard/proto/admin.capnp.h"
#include "switchboard/proto/client.capnp.h"

namespace {

using namespace switchboard;
using switchboard::fuzz::kKeyMarkers;
using switchboard::fuzz::kPhones;

class IdleInbox final : public proto::Inbox::Server {};

kj::ArrayPtr<const kj::byte> bytesOf(const char* text) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(text), std::strlen(text));
}

void writeFile(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
  std::printf("%s: %zu bytes\n", path.c_str(), bytes.size());
}

// Runs `session` against a client whose bootstrap is `Bootstrap` and returns the bytes the
// client wrote. `session` returns the promises to keep alive (dropping one cancels a call).
template <class Bootstrap>
std::string record(kj::AsyncIoContext& io,
                   const std::function<void(typename Bootstrap::Client&,
                                            kj::Vector<kj::Promise<void>>&)>& session) {
  auto pipe = io.provider->newTwoWayPipe();
  std::string recorded;
  {
    capnp::TwoPartyClient client(*pipe.ends[0]);
    auto bootstrap = client.bootstrap().castAs<Bootstrap>();
    kj::Vector<kj::Promise<void>> calls;
    session(bootstrap, calls);
    kj::byte buffer[65536];
    int emptyWaits = 0;
    for (;;) {
      auto read =
          pipe.ends[1]
              ->tryRead(buffer, 1, sizeof(buffer))
              .exclusiveJoin(
                  io.provider->getTimer().afterDelay(200 * kj::MILLISECONDS).then([]() -> size_t {
                    return 0;
                  }));
      size_t n = read.wait(io.waitScope);
      if (n == 0) {
        if (recorded.empty() && ++emptyWaits < 10) continue;  // nothing written yet
        break;
      }
      recorded.append(reinterpret_cast<char*>(buffer), n);
    }
  }
  return recorded;
}

template <class Response>
void keep(kj::Vector<kj::Promise<void>>& calls, capnp::RemotePromise<Response>&& promise) {
  calls.add(promise.ignoreResult().eagerlyEvaluate([](kj::Exception&&) {}));
}

void phoneSeeds(kj::AsyncIoContext& io, const std::filesystem::path& dir) {
  using Calls = kj::Vector<kj::Promise<void>>;
  writeFile(dir / "server_info", record<proto::Gateway>(io, [](auto& gateway, Calls& calls) {
              keep(calls, gateway.serverInfoRequest().send());
            }));
  writeFile(dir / "register", record<proto::Gateway>(io, [](auto& gateway, Calls& calls) {
              auto code = gateway.requestCodeRequest();
              code.setPhone("+15550000009");
              keep(calls, code.send());
              auto verify = gateway.verifyRequest();
              verify.setPhone("+15550000009");
              verify.setCode("12345");
              verify.setDeviceName("seed phone");
              keep(calls, verify.send());
            }));
  writeFile(dir / "login_wrong_key", record<proto::Gateway>(io, [](auto& gateway, Calls& calls) {
              auto login = gateway.loginRequest();
              login.setPhone(kPhones[0]);
              login.setKey(bytesOf("not-the-key-of-this-phone-012345"));
              login.setInbox(kj::heap<IdleInbox>());
              keep(calls, login.send());
            }));
  // A full session of phone 1: sends, receipts, presence, contacts, groups, logout.
  writeFile(dir / "login_session", record<proto::Gateway>(io, [](auto& gateway, Calls& calls) {
              auto login = gateway.loginRequest();
              login.setPhone(kPhones[0]);
              login.setKey(bytesOf(kKeyMarkers[0]));
              login.setInbox(kj::heap<IdleInbox>());
              auto loggedIn = login.send();
              auto session = loggedIn.getSession();
              keep(calls, kj::mv(loggedIn));
              auto send = session.sendRequest();
              send.setTo(kPhones[1]);
              send.setClientMsgId("seed-1");
              send.setBody(bytesOf("hello from the seed"));
              keep(calls, send.send());
              auto presence = session.setPresenceRequest();
              presence.setState(proto::PresenceState::AWAY);
              keep(calls, presence.send());
              auto typing = session.typingRequest();
              typing.setTo(kPhones[1]);
              typing.setActive(true);
              keep(calls, typing.send());
              auto add = session.addContactsRequest();
              add.initPhones(1).set(0, kPhones[1]);
              keep(calls, add.send());
              keep(calls, session.contactsRequest().send());
              auto group = session.createGroupRequest();
              group.setName("seed group");
              group.initMembers(1).set(0, kPhones[1]);
              keep(calls, group.send());
              auto sendGroup = session.sendGroupRequest();
              sendGroup.setGroup(1);
              sendGroup.setClientMsgId("seed-2");
              sendGroup.setBody(bytesOf("to the group"));
              keep(calls, sendGroup.send());
              auto receipt = session.receiptRequest();
              receipt.initIds(2).set(0, 1);
              receipt.setKind(proto::ReceiptKind::READ);
              keep(calls, receipt.send());
              keep(calls, session.groupsRequest().send());
              auto members = session.addMembersRequest();
              members.setGroup(1);
              members.initMembers(1).set(0, "+15550000009");
              keep(calls, members.send());
              auto remove = session.removeMembersRequest();
              remove.setGroup(1);
              remove.initMembers(1).set(0, "+15550000009");
              keep(calls, remove.send());
              auto leave = session.leaveGroupRequest();
              leave.setGroup(1);
              keep(calls, leave.send());
              auto drop = session.removeContactsRequest();
              drop.initPhones(1).set(0, kPhones[1]);
              keep(calls, drop.send());
              keep(calls, session.logoutRequest().send());
            }));
  // Phone 2 logs in (its queue pages out to the idle inbox) and answers with a receipt.
  writeFile(dir / "login_receive", record<proto::Gateway>(io, [](auto& gateway, Calls& calls) {
              auto login = gateway.loginRequest();
              login.setPhone(kPhones[1]);
              login.setKey(bytesOf(kKeyMarkers[1]));
              login.setInbox(kj::heap<IdleInbox>());
              auto loggedIn = login.send();
              auto session = loggedIn.getSession();
              keep(calls, kj::mv(loggedIn));
              auto receipt = session.receiptRequest();
              receipt.initIds(1).set(0, 1);
              receipt.setKind(proto::ReceiptKind::DELIVERED);
              keep(calls, receipt.send());
              auto send = session.sendRequest();
              send.setTo(kPhones[0]);
              send.setClientMsgId("seed-3");
              send.setBody(bytesOf("reply"));
              keep(calls, send.send());
            }));
}

void adminSeeds(kj::AsyncIoContext& io, const std::filesystem::path& dir) {
  using Calls = kj::Vector<kj::Promise<void>>;
  writeFile(dir / "status", record<proto::Admin>(io, [](auto& admin, Calls& calls) {
              keep(calls, admin.statusRequest().send());
              keep(calls, admin.pluginsRequest().send());
              keep(calls, admin.statsRequest().send());
              auto history = admin.pluginHistoryRequest();
              history.setKind("auth");
              history.setLimit(5);
              keep(calls, history.send());
            }));
  writeFile(dir / "users", record<proto::Admin>(io, [](auto& admin, Calls& calls) {
              auto users = admin.usersRequest();
              users.setPhonePrefix("+1555");
              users.setLimit(10);
              keep(calls, users.send());
              auto user = admin.userRequest();
              user.setPhone(kPhones[0]);
              keep(calls, user.send());
              auto sessions = admin.sessionsRequest();
              sessions.setLimit(10);
              keep(calls, sessions.send());
              auto session = admin.sessionRequest();
              session.setPhone(kPhones[1]);
              keep(calls, session.send());
              auto queues = admin.queuesRequest();
              queues.setLimit(10);
              keep(calls, queues.send());
              auto outbox = admin.outboxRequest();
              outbox.setPhone(kPhones[0]);
              outbox.setLimit(5);
              keep(calls, outbox.send());
            }));
  writeFile(dir / "operations", record<proto::Admin>(io, [](auto& admin, Calls& calls) {
              auto kick = admin.kickRequest();
              kick.setPhone("+15550000009");
              kick.setReason("seed kick");
              keep(calls, kick.send());
              auto broadcast = admin.broadcastRequest();
              broadcast.setPhone(kPhones[1]);
              broadcast.setBody("seed broadcast");
              keep(calls, broadcast.send());
              auto rollback = admin.rollbackPluginRequest();
              rollback.setKind("auth");
              rollback.setVersion("0.0.1");
              keep(calls, rollback.send());
              auto revoke = admin.revokeKeyRequest();
              revoke.setPhone("+15550000009");
              keep(calls, revoke.send());
              auto remove = admin.deleteUserRequest();
              remove.setPhone("+15550000009");
              keep(calls, remove.send());
            }));
}

// [build index][from-version index][state]: see plugin_state_fuzzer.cpp for the tables.
void pluginSeeds(const std::filesystem::path& pluginDir, const std::filesystem::path& dir) {
  struct Build {
    plugin::Kind kind;
    const char* file;
    char versionIndex;  // "1.0.0" is 0, "1.1.0" is 1
  };
  const Build builds[] = {
      {plugin::Kind::routing, "routing/librouting.so", 0},
      {plugin::Kind::routing, "routing/librouting-next.so", 1},
      {plugin::Kind::auth, "auth/libauth.so", 0},
      {plugin::Kind::auth, "auth/libauth-next.so", 1},
      {plugin::Kind::presence, "presence/libpresence.so", 0},
      {plugin::Kind::presence, "presence/libpresence-next.so", 1},
      {plugin::Kind::offline, "offline/liboffline.so", 0},
      {plugin::Kind::offline, "offline/liboffline-next.so", 1},
  };
  plugins::testing::TestHost host;
  for (char i = 0; i < 8; ++i) {
    const Build& build = builds[static_cast<int>(i)];
    std::string path = (pluginDir / build.file).string();
    auto instance = plugins::testing::loadPlugin<plugin::Plugin>(path.c_str(), build.kind, host);
    if (build.kind == plugin::Kind::auth) {
      auto& auth = static_cast<plugin::AuthPlugin&>(*instance);
      auth.requestCode("+15550000001", "10.0.0.1");
      auth.requestCode("+15550000002", "10.0.0.1");
      auth.verifyCode("+15550000002", "00000");
    } else if (build.kind == plugin::Kind::presence) {
      static_cast<plugin::PresencePlugin&>(*instance).visible("+15550000001", "+15550000002", true,
                                                              false);
    } else if (build.kind == plugin::Kind::offline) {
      static_cast<plugin::OfflinePlugin&>(*instance).onQueued("+15550000001", "+15550000002", 3);
    }
    std::string state = instance->exportState();
    // As exported, to the same build; and to the other build of its kind (an upgrade or a
    // rollback migrating it).
    char other = static_cast<char>(i ^ 1);
    writeFile(dir / ("own_" + std::to_string(i)), std::string{i, build.versionIndex} + state);
    writeFile(dir / ("migrate_" + std::to_string(i)),
              std::string{other, build.versionIndex} + state);
  }
}

void configSeeds(const std::filesystem::path& dir) {
  writeFile(dir / "file", std::string(1, '\0') +
                              "listen = \"127.0.0.1:5222\"\n"
                              "data-dir = \"var\"\n"
                              "threads = 2\n"
                              "log-level = \"warn\"\n"
                              "session-queue-limit = 5000\n"
                              "login-deadline-ms = 10000\n"
                              "max-connections-per-peer = 64\n"
                              "[plugin.auth]\n"
                              "max-attempts = 3\n"
                              "code-ttl-seconds = 300\n"
                              "[plugin.offline]\n"
                              "push = true\n");
  std::string args[] = {"--listen",         "0.0.0.0:5222",
                        "--threads",        "4",
                        "--plugin-setting", "auth.max-attempts=3",
                        "--log-level",      "debug",
                        "--admin-socket",   ""};
  std::string joined(1, '\1');
  for (const auto& arg : args) joined += arg + std::string(1, '\0');
  joined.pop_back();
  writeFile(dir / "flags", joined);
  writeFile(dir / "help", std::string("\1--help"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: seed_recorder DIR\n");
    return 2;
  }
  std::filesystem::path dir = argv[1];
  auto io = kj::setupAsyncIo();
  phoneSeeds(io, dir / "phone_connection");
  adminSeeds(io, dir / "admin_connection");
  pluginSeeds(SWITCHBOARD_FUZZ_PLUGIN_DIR, dir / "plugin_state");
  configSeeds(dir / "config");
  return 0;
}
