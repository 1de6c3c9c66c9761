#include "admin_test_host.h"

#include <kj/debug.h>
#include <stdlib.h>

#include <stdexcept>

namespace switchboard::admin::testing {

HostConfig testConfig(const std::filesystem::path& dir) {
  HostConfig config;
  config.listen = "127.0.0.1:0";
  config.adminSocket = dir / "admin.sock";
  config.metricsListen = "127.0.0.1:0";
  config.webListen = "";  // not the shared default port: tests run side by side
  config.dataDir = dir / "var";
  config.pluginDir = SWITCHBOARD_TEST_PLUGIN_DIR;
  config.threads = 2;
  config.canaryTimeoutMs = 30000;  // a failure guard on a loaded machine, not a measurement
  return config;
}

std::size_t InboxLog::kickCount() {
  std::lock_guard lock(mutex);
  return kicked.size();
}

std::size_t InboxLog::messageCount() {
  std::lock_guard lock(mutex);
  return messages.size();
}

namespace {

std::string bytes(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

// The phone side of a session: records what the server pushes.
class TestInbox final : public proto::Inbox::Server {
 public:
  explicit TestInbox(std::shared_ptr<InboxLog> log) : log_(std::move(log)) {}

 protected:
  kj::Promise<void> deliver(DeliverContext context) override {
    std::lock_guard lock(log_->mutex);
    for (auto message : context.getParams().getMessages()) {
      log_->messages.emplace_back(message.getFrom().cStr(), bytes(message.getBody()));
    }
    return kj::READY_NOW;
  }
  kj::Promise<void> receipt(ReceiptContext) override { return kj::READY_NOW; }
  kj::Promise<void> presence(PresenceContext) override { return kj::READY_NOW; }
  kj::Promise<void> kicked(KickedContext context) override {
    std::lock_guard lock(log_->mutex);
    log_->kicked.emplace_back(context.getParams().getReason().cStr());
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<InboxLog> log_;
};

}  // namespace

struct AdminTestClient::Phone {
  kj::Own<net::RpcConnection> connection;
  std::unique_ptr<proto::Session::Client> session;
};

AdminTestClient::AdminTestClient(const std::string& adminSocket) {
  thread_.start();
  thread_.runSync([&] {
    return net::RpcConnection::connect(thread_, adminSocket)
        .then([this](kj::Own<net::RpcConnection> connection) {
          adminConnection_ = kj::mv(connection);
          admin_ =
              std::make_unique<proto::Admin::Client>(adminConnection_->bootstrapAs<proto::Admin>());
        });
  });
}

AdminTestClient::~AdminTestClient() {
  thread_.runSync([&] {
    phones_.clear();
    admin_.reset();
    adminConnection_ = nullptr;
  });
  thread_.stop();
}

std::string AdminTestClient::registerPhone(const std::string& clientEndpoint,
                                           const std::string& phone) {
  return thread_.runSync([&]() -> kj::Promise<std::string> {
    return net::RpcConnection::connect(thread_, clientEndpoint)
        .then([this, phone](kj::Own<net::RpcConnection> connection) {
          auto gateway = connection->bootstrapAs<proto::Gateway>();
          auto request = gateway.requestCodeRequest();
          request.setPhone(phone);
          return request.send()
              .then([this, phone, gateway](auto&&) mutable {
                auto outbox = admin_->outboxRequest();
                outbox.setPhone(phone);
                outbox.setLimit(1);
                return outbox.send().then([phone, gateway](auto&& sms) mutable {
                  KJ_REQUIRE(sms.getEntries().size() == 1, "no SMS in the outbox");
                  auto verify = gateway.verifyRequest();
                  verify.setPhone(phone);
                  verify.setCode(sms.getEntries()[0].getCode());
                  verify.setDeviceName("admin test phone");
                  return verify.send().then(
                      [](auto&& verified) { return bytes(verified.getKey()); });
                });
              })
              .attach(kj::mv(connection));
        });
  });
}

std::size_t AdminTestClient::login(const std::string& clientEndpoint, const std::string& phone,
                                   const std::string& key, std::shared_ptr<InboxLog> log) {
  return thread_.runSync([&]() -> kj::Promise<std::size_t> {
    return net::RpcConnection::connect(thread_, clientEndpoint)
        .then([this, phone, key, log](kj::Own<net::RpcConnection> connection) {
          auto gateway = connection->bootstrapAs<proto::Gateway>();
          auto request = gateway.loginRequest();
          request.setPhone(phone);
          request.setKey(
              capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
          request.setInbox(kj::heap<TestInbox>(log));
          return request.send().then(
              [this, connection = kj::mv(connection)](auto&& response) mutable {
                auto phone = std::make_unique<Phone>();
                phone->connection = kj::mv(connection);
                phone->session = std::make_unique<proto::Session::Client>(response.getSession());
                phones_.push_back(std::move(phone));
                return phones_.size() - 1;
              });
        });
  });
}

void AdminHostTest::SetUp() {
  host = std::make_unique<HostProcess>(testConfig(dir.path()));
  client = std::make_unique<AdminTestClient>(adminSocket());
}

void AdminHostTest::TearDown() {
  client.reset();
  host.reset();
}

}  // namespace switchboard::admin::testing
