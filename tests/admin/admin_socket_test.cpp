// The admin socket's file: its mode, its directory, who may use it, and what
// the host refuses to bind over.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <vector>

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

// What `command` printed on stdout and stderr, and its exit status.
using Ran = switchboard::testing::CommandRun;
using switchboard::testing::runCommand;

// setpriv as the unprivileged user nobody, no supplementary groups.
std::vector<std::string> asNobody(std::vector<std::string> command) {
  std::vector<std::string> wrapped = {"setpriv", "--reuid=nobody", "--regid=nogroup",
                                      "--clear-groups"};
  wrapped.insert(wrapped.end(), command.begin(), command.end());
  return wrapped;
}

// Only the socket's owner may use it: another user who can reach the path (the
// directory is opened to traversal here on purpose) is refused by the socket's
// mode. Needs root, to have another user to be: CI and the dev machines run as
// root, and a run as another user fails here rather than pass unproven.
TEST_F(AdminHostTest, AnotherUserIsRefusedByTheAdminSocket) {
  ASSERT_EQ(::geteuid(), 0u) << "this test must run as root to act as the user nobody";
  std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all |
                                               std::filesystem::perms::group_exec |
                                               std::filesystem::perms::others_exec);
  // A copy of sbctl nobody may run wherever the build tree is.
  auto sbctl = dir.path() / "sbctl";
  std::filesystem::copy_file(SWITCHBOARD_SBCTL, sbctl);
  ::chmod(sbctl.c_str(), 0755);
  Ran reach = runCommand(asNobody({"test", "-S", adminSocket()}));
  ASSERT_EQ(reach.status, 0) << "nobody cannot even see the socket: " << reach.output;

  Ran refused =
      runCommand(asNobody({sbctl.string(), "--socket", adminSocket(), "--json", "status"}));
  EXPECT_NE(refused.status, 0) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("cannot connect to " + adminSocket()));
  EXPECT_THAT(refused.output, HasSubstr("Permission denied"));

  // The owner, with the same command, gets an answer.
  Ran owner = runCommand({sbctl.string(), "--socket", adminSocket(), "--json", "status"});
  EXPECT_EQ(owner.status, 0) << owner.output;
  EXPECT_THAT(owner.output, HasSubstr("clientEndpoint"));
}

TEST(AdminSocket, RefusesADirectoryOthersMayWriteUnlessSticky) {
  TempDir dir;
  auto open = dir.path() / "open";
  std::filesystem::create_directory(open);
  ::chmod(open.c_str(), 0777);
  HostConfig config = testConfig(dir.path());
  config.adminSocket = open / "admin.sock";
  try {
    HostProcess host(config);
    FAIL() << "the host put its admin socket in a world-writable directory";
  } catch (const HostStartError& e) {
    EXPECT_THAT(e.what(), HasSubstr("the admin socket's directory " + open.string() +
                                    " (mode 0777) is writable by group or others"));
  }
  EXPECT_FALSE(std::filesystem::exists(config.adminSocket));

  ::chmod(open.c_str(), 01777);  // sticky, as /tmp: only an entry's owner may replace it
  HostProcess host(config);
  struct stat info {};
  ASSERT_EQ(::stat(config.adminSocket.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST(AdminSocket, RefusesADirectoryOwnedByAnotherUser) {
  ASSERT_EQ(::geteuid(), 0u) << "this test must run as root to give a directory away";
  TempDir dir;
  auto theirs = dir.path() / "theirs";
  std::filesystem::create_directory(theirs);
  ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
  HostConfig config = testConfig(dir.path());
  config.adminSocket = theirs / "admin.sock";
  try {
    HostProcess host(config);
    FAIL() << "the host put its admin socket in another user's directory";
  } catch (const HostStartError& e) {
    EXPECT_THAT(e.what(), HasSubstr("the admin socket's directory " + theirs.string() +
                                    " belongs to uid 65534"));
  }
}

TEST(AdminSocket, CreatesAMissingDirectoryForItsOwnerOnly) {
  TempDir dir;
  HostConfig config = testConfig(dir.path());
  config.adminSocket = dir.path() / "made" / "admin.sock";
  HostProcess host(config);
  struct stat info {};
  ASSERT_EQ(::stat((dir.path() / "made").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
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
