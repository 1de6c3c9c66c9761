// The bounds every field of the phone protocol must respect (proto/client.capnp
// "limits"). Each check throws a KJ exception whose description is one clear
// sentence, which Cap'n Proto hands to the caller as the call's error; a call
// refused here has changed nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace switchboard::messaging {

// Throws a kj::Exception (FAILED) with exactly `message` as its description.
[[noreturn]] void refuse(std::string_view message);

// "+" then 8 to 15 digits. `what` names the field in the error ("recipient").
void requirePhone(std::string_view phone, std::string_view what);
void requireName(std::string_view name, std::string_view what);  // 1..maxNameBytes
void requireClientMsgId(std::string_view id);                    // 1..maxClientMsgIdBytes
void requireBody(std::size_t bytes);                             // 1..maxBodyBytes
void requireBatch(std::size_t count, std::string_view what);     // 1..maxBatch

bool isPhone(std::string_view phone);

// The words of the group refusals, one place for every path that refuses
// (a single node, a cluster's worker): they must read the same.
std::string groupTooLarge();  // over proto MAX_GROUP_MEMBERS
std::string notAMember(std::uint64_t group, std::string_view phone);
inline constexpr std::string_view kOnlyTheCreatorRemoves =
    "only the group's creator may remove members";

}  // namespace switchboard::messaging
