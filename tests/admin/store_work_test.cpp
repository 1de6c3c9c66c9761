// The store does O(1) work per stored message: the SQLite VM steps one send to
// an away phone costs do not grow with that phone's backlog (no statement
// counts or scans it). A figure of work, not of time: it cannot flake.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>

#include "admin_test_host.h"
#include "client/client.h"
#include "metrics_scrape.h"

namespace switchboard::admin::testing {
namespace {

struct StoreWork {
  double writes = 0;
  double vmSteps = 0;
};

StoreWork storeWork(const std::string& metricsEndpoint) {
  auto metrics = Exposition::parse(httpGet(metricsEndpoint, "/metrics").body);
  return StoreWork{metrics.value("switchboard_store_writes_total").value_or(-1),
                   metrics.value("switchboard_store_write_vm_steps_total").value_or(-1)};
}

TEST_F(AdminHostTest, StoreWorkPerSendDoesNotGrowWithTheBacklog) {
  const std::string sender = "+15550007001";
  const std::string away = "+15550007002";
  std::string senderKey = client->registerPhone(phones(), sender);
  client->registerPhone(phones(), away);  // registered, never logged in
  client::ClientOptions options;
  options.endpoint = phones();
  client::Client phone(options);
  phone.login(sender, senderKey);

  // One send to the away phone, acknowledged once durable: the VM steps of its write.
  auto stepsOfOneSend = [&]() {
    StoreWork before = storeWork(host->metricsEndpoint());
    phone.send(away, "measured");
    StoreWork after = storeWork(host->metricsEndpoint());
    EXPECT_EQ(after.writes - before.writes, 1.0) << "one send, one store write";
    return after.vmSteps - before.vmSteps;
  };
  auto queueUp = [&](int count) {
    std::mutex mutex;
    std::condition_variable done;
    int left = count;
    int failed = 0;
    for (int i = 0; i < count; ++i) {
      phone.sendAsync(away, "backlog", std::nullopt,
                      [&](std::optional<client::SendResult> result, const client::ClientError*) {
                        std::lock_guard lock(mutex);
                        if (!result) ++failed;
                        if (--left == 0) done.notify_all();
                      });
    }
    std::unique_lock lock(mutex);
    done.wait(lock, [&] { return left == 0; });
    EXPECT_EQ(failed, 0);
  };

  queueUp(10);
  double small = stepsOfOneSend();
  queueUp(10000);
  double large = stepsOfOneSend();
  EXPECT_GT(small, 0.0);
  EXPECT_EQ(small, large) << "VM steps of one stored send with a backlog of 11 vs 10,011";
}

}  // namespace
}  // namespace switchboard::admin::testing
