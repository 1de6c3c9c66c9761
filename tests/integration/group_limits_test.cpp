// Group membership rules against the real host binary: the 256-member limit
// (creator included) on create and on add, and removal by the creator only.
#include <gtest/gtest.h>

#include <algorithm>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;

constexpr std::size_t kMaxMembers = 256;  // proto::MAX_GROUP_MEMBERS, creator included

std::string memberNumber(std::size_t i) {
  std::string digits = std::to_string(i);
  return "+1555100" + std::string(4 - digits.size(), '0') + digits;
}

// A host where one address may request enough codes for a big group.
class GroupLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { host.start(); }

  // Registers `count` more phones (not logged in); returns their numbers.
  std::vector<std::string> registerMembers(std::size_t count) {
    client::Client registrar(host.clientOptions());
    std::vector<std::string> numbers;
    for (std::size_t i = 0; i < count; ++i) {
      numbers.push_back(memberNumber(registered_++));
      registerPhone(registrar, host.sms(), numbers.back());
    }
    return numbers;
  }

  std::vector<std::string> membersOf(RecordingPhone& phone, std::uint64_t group) {
    for (const auto& info : phone.client().groups()) {
      if (info.id == group) {
        auto members = info.members;
        std::sort(members.begin(), members.end());
        return members;
      }
    }
    ADD_FAILURE() << phone.number() << " is in no group " << group;
    return {};
  }

  // One registrar connection registers 256 phones and never logs in: on a loaded box that
  // took longer than the default login deadline (10 s), and the host cut it ("not logged in
  // within 10000 ms"; the phone saw "Peer disconnected").
  RunningHost host{
      {"--plugin-setting", "auth.max-requests-per-peer=1000", "--login-deadline-ms", "600000"}};
  std::size_t registered_ = 0;
};

TEST_F(GroupLimitsTest, TwoHundredFiftySixMembersFitAndOneMoreIsRefused) {
  RecordingPhone owner(host.clientOptions(), "+15551009999");
  owner.registerAndLogin(host.sms());
  auto others = registerMembers(kMaxMembers);  // one more than fits beside the owner

  // 256 others + the owner = 257: refused, and no group was made.
  std::string tooMany = refusal([&] { owner.client().createGroup("too many", others); });
  EXPECT_EQ(tooMany, "a group has at most 256 members");
  EXPECT_TRUE(owner.client().groups().empty());

  // 255 others + the owner = 256: the limit exactly.
  std::vector<std::string> fit(others.begin(), others.end() - 1);
  std::uint64_t group = owner.client().createGroup("full", fit);
  auto members = membersOf(owner, group);
  ASSERT_EQ(members.size(), kMaxMembers);
  EXPECT_TRUE(std::binary_search(members.begin(), members.end(), owner.number()));

  // Adding the 257th is refused and changes nothing; adding someone already in does not count.
  std::string full = refusal([&] { owner.client().addMembers(group, {others.back()}); });
  EXPECT_EQ(full, "a group has at most 256 members");
  EXPECT_EQ(membersOf(owner, group).size(), kMaxMembers);
  EXPECT_NO_THROW(owner.client().addMembers(group, {fit.front()}));
  EXPECT_EQ(membersOf(owner, group).size(), kMaxMembers);

  // Once one leaves, the 257th fits.
  owner.client().removeMembers(group, {fit.front()});
  owner.client().addMembers(group, {others.back()});
  members = membersOf(owner, group);
  ASSERT_EQ(members.size(), kMaxMembers);
  EXPECT_TRUE(std::binary_search(members.begin(), members.end(), others.back()));
  EXPECT_FALSE(std::binary_search(members.begin(), members.end(), fit.front()));
}

// Issue 8: createGroup counts the members as listed, so a list naming the creator
// among 255 others (256 in all, within the limit) is refused. The creator and
// duplicates must not count twice.
TEST_F(GroupLimitsTest, TheCreatorListedAmongTwoHundredFiftyFiveOthersCountsOnce) {
  RecordingPhone owner(host.clientOptions(), "+15551009998");
  owner.registerAndLogin(host.sms());
  auto others = registerMembers(kMaxMembers - 1);
  std::vector<std::string> listed = others;
  listed.push_back(owner.number());
  std::uint64_t group = owner.client().createGroup("creator listed", listed);
  EXPECT_EQ(membersOf(owner, group).size(), kMaxMembers);

  std::vector<std::string> twice = others;
  twice.push_back(others.front());
  std::uint64_t again = owner.client().createGroup("a duplicate", twice);
  EXPECT_EQ(membersOf(owner, again).size(), kMaxMembers);
}

TEST_F(GroupLimitsTest, OnlyTheCreatorRemovesOthers) {
  RecordingPhone owner(host.clientOptions(), "+15551009997");
  RecordingPhone member(host.clientOptions(), "+15551009996");
  owner.registerAndLogin(host.sms());
  member.registerAndLogin(host.sms());
  auto third = registerMembers(1);
  std::uint64_t group = owner.client().createGroup("owned", {member.number(), third[0]});
  auto before = membersOf(owner, group);
  ASSERT_EQ(before.size(), 3u);

  std::string notOwner = refusal([&] {
    member.client().removeMembers(group, {third[0], owner.number()});
  });
  EXPECT_EQ(notOwner, "only the group's creator may remove members");
  EXPECT_EQ(membersOf(owner, group), before);

  std::string noGroup = refusal([&] { member.client().removeMembers(group + 1000, {third[0]}); });
  EXPECT_EQ(noGroup, "no group " + std::to_string(group + 1000));

  // A member may still leave by itself, and the creator may remove others.
  member.client().leaveGroup(group);
  owner.client().removeMembers(group, {third[0]});
  EXPECT_EQ(membersOf(owner, group), std::vector<std::string>{owner.number()});
}

}  // namespace
}  // namespace switchboard::integration
