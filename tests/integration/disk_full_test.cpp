// A full disk under the real host binary: the data dir is a small tmpfs, filled
// up by a ballast file. Sends are then refused with SQLite's reason, nothing
// acknowledged is lost, and once the ballast goes the host takes sends again
// without a restart. Mounting needs root (CI and the dev machines are root);
// a machine that refuses the mount fails this test rather than skip it.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;
using ::testing::HasSubstr;

// A tmpfs of `megabytes` mounted on `where` for the guard's lifetime. The
// unmount is lazy (MNT_DETACH), so it also works while the host still has files
// open there.
class SmallTmpfs {
 public:
  SmallTmpfs(const std::filesystem::path& where, int megabytes) : where_(where) {
    std::string options = "size=" + std::to_string(megabytes) + "m,mode=0700";
    if (::mount("tmpfs", where.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = std::string("cannot mount a tmpfs on ") + where.string() + ": " +
               std::strerror(errno) + " (this test needs root)";
    }
  }
  ~SmallTmpfs() {
    if (error_.empty()) ::umount2(where_.c_str(), MNT_DETACH);
  }
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path where_;
  std::string error_;
};

std::uint64_t freeBytes(const std::filesystem::path& dir) {
  struct statvfs info {};
  if (::statvfs(dir.c_str(), &info) != 0) return 0;
  return static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
}

// Takes all but `leave` bytes of the free space of `dir`'s file system.
bool fillLeaving(const std::filesystem::path& ballast, std::uint64_t leave) {
  std::uint64_t free = freeBytes(ballast.parent_path());
  if (free <= leave) return true;
  int fd = ::open(ballast.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = ::posix_fallocate(fd, 0, static_cast<off_t>(free - leave)) == 0;
  ::close(fd);
  return ok;
}

TEST(DiskFull, SendsAreRefusedNothingAckedIsLostAndTheHostRecovers) {
  RunningHost host({"--plugin-setting", "offline.push-interval-seconds=0"});
  SmallTmpfs disk(host.dataDir(), 64);
  ASSERT_EQ(disk.error(), "");
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550001201");
  RecordingPhone b(host.clientOptions(), "+15550001202");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));  // offline: everything is stored

  auto ballast = host.dataDir() / "ballast";
  ASSERT_TRUE(fillLeaving(ballast, 256 * 1024)) << std::strerror(errno);
  ASSERT_LT(freeBytes(host.dataDir()), 512u * 1024);

  // 32 KiB messages until the store cannot take one more.
  const std::string filler(32 * 1024, 'x');
  std::vector<std::string> acked;
  std::vector<std::string> refusals;
  for (int i = 0; i < 2000 && refusals.size() < 3; ++i) {
    std::string body = std::to_string(i) + " " + filler;
    try {
      a.client().send(b.number(), body);
      acked.push_back(body);
    } catch (const ClientError& e) {
      EXPECT_EQ(e.kind(), ClientError::Kind::refused) << e.what();
      refusals.push_back(e.what());
    }
  }
  ASSERT_EQ(refusals.size(), 3u) << "2000 sends of 32 KiB fit in 256 KiB of free space";
  std::cout << "[ figures  ] " << acked.size()
            << " sends of 32 KiB taken before the disk was full; "
            << "then refused: " << refusals.front() << "\n";
  for (const auto& refusal : refusals) EXPECT_THAT(refusal, HasSubstr("disk is full"));
  EXPECT_TRUE(a.client().isLoggedIn()) << "the sender was disconnected by the full disk";

  // Space returns: the very next send is taken, without a restart.
  std::filesystem::remove(ballast);
  ASSERT_GT(freeBytes(host.dataDir()), 16u * 1024 * 1024);
  for (int i = 0; i < 5; ++i) {
    std::string body = "after " + std::to_string(i);
    ASSERT_NO_THROW(a.client().send(b.number(), body)) << body;
    acked.push_back(body);
  }

  // Every acknowledged message arrives once, in order, and nothing refused does.
  b.login();
  ASSERT_TRUE(b.waitForMessages(acked.size()));
  a.client().send(b.number(), "fence");
  ASSERT_TRUE(b.waitForMessages(acked.size() + 1));
  acked.push_back("fence");
  EXPECT_EQ(b.messages().size(), acked.size());
  EXPECT_TRUE(bodiesOf(b.messages()) == acked) << "b got other messages than the acked ones";
  EXPECT_TRUE(host.running());
}

}  // namespace
}  // namespace switchboard::integration
