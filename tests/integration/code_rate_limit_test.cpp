// The per-address limit on registration codes, through the real host binary:
// the auth plugin must be given the peer's address without its port, so that
// new connections from one address share one budget.
#include <gtest/gtest.h>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;

TEST(CodeRateLimit, NewConnectionsFromOneAddressShareItsBudget) {
  RunningHost host({"--plugin-setting", "auth.max-requests-per-peer=3", "--plugin-setting",
                    "auth.max-requests-per-phone=100"});
  host.start();
  // Every request on a connection of its own (a new source port each time), for a
  // phone of its own (the per-phone limit is far away).
  for (int i = 0; i < 3; ++i) {
    client::Client phone(host.clientOptions());
    EXPECT_NO_THROW(phone.requestCode("+1555000090" + std::to_string(i))) << "request " << i;
  }
  client::Client fourth(host.clientOptions());
  try {
    fourth.requestCode("+15550000903");
    FAIL() << "a fourth code request from 127.0.0.1 was accepted: the limit is not per address";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.kind(), ClientError::Kind::refused);
    EXPECT_NE(std::string(e.what()).find("too many code requests, retry in"), std::string::npos)
        << e.what();
  }
  // The three accepted requests sent their codes; the refused one sent none.
  auto sentCodes = [&] {
    std::size_t count = 0;
    for (int i = 0; i < 4; ++i) count += host.sms().codes("+1555000090" + std::to_string(i)).size();
    return count;
  };
  EXPECT_TRUE(waitUntil([&] { return sentCodes() == 3; })) << sentCodes();
  EXPECT_TRUE(host.sms().codes("+15550000903").empty());
}

}  // namespace
}  // namespace switchboard::integration
