// The admin socket's file: its mode, and what the host refuses to bind over.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "admin_test_host.h"

namespace switchboard::admin::testing {
namespace {

using ::testing::HasSubstr;

TEST_F(AdminHostTest, AdminSocketIsASocketOnlyItsOwnerMayUse) {
  struct stat info {};
  ASSERT_EQ(::stat(adminSocket().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_EQ(info.st_uid, ::getuid());
}

TEST_F(AdminHostTest, SecondHostCannotTakeALiveAdminSocket) {
  TempDir other;
  HostConfig config = testConfig(other.path());
  config.adminSocket = adminSocket();
  try {
    HostProcess second(config);
    ADD_FAILURE() << "a second host took the live admin socket";
  } catch (const HostStartError& e) {
    EXPECT_THAT(e.what(), HasSubstr("admin socket: cannot listen on " + adminSocket()));
  }
  // The first host still answers on it.
  auto status = client->admin([](proto::Admin::Client& admin) {
    return admin.statusRequest().send().then([](auto&& r) { return r.getStatus().getThreads(); });
  });
  EXPECT_EQ(status, 2u);
}

TEST(AdminSocket, RefusesToStartOverAFileThatIsNotASocket) {
  TempDir dir;
  HostConfig config = testConfig(dir.path());
  std::ofstream(config.adminSocket) << "precious";
  try {
    HostProcess host(config);
    FAIL() << "the host started over a regular file";
  } catch (const HostStartError& e) {
    EXPECT_THAT(e.what(), HasSubstr("exists and is not a socket"));
  }
  std::ifstream kept(config.adminSocket);
  std::string content;
  kept >> content;
  EXPECT_EQ(content, "precious");
}

TEST(AdminSocket, EmptyPathMeansNoAdminSocket) {
  TempDir dir;
  HostConfig config = testConfig(dir.path());
  config.adminSocket.clear();
  config.metricsListen.clear();
  HostProcess host(config);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "admin.sock"));
  EXPECT_EQ(host.metricsEndpoint(), "");
}

}  // namespace
}  // namespace switchboard::admin::testing
