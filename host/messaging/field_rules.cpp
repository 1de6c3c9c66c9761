#include "messaging/field_rules.h"

#include <kj/exception.h>

#include <algorithm>

#include "switchboard/proto/client.capnp.h"

namespace switchboard::messaging {

void refuse(std::string_view message) {
  kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                        kj::heapString(message.data(), message.size())));
}

bool isPhone(std::string_view phone) {
  if (phone.size() < 9 || phone.size() > 16 || phone.front() != '+') return false;
  return std::all_of(phone.begin() + 1, phone.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void requirePhone(std::string_view phone, std::string_view what) {
  if (!isPhone(phone)) {
    refuse(std::string(what) + " '" + std::string(phone.substr(0, 32)) +
           "' is not an E.164 phone number (+ and 8 to 15 digits)");
  }
}

void requireName(std::string_view name, std::string_view what) {
  if (name.empty()) refuse(std::string(what) + " is empty");
  if (name.size() > proto::MAX_NAME_BYTES) {
    refuse(std::string(what) + " is " + std::to_string(name.size()) + " bytes, the limit is " +
           std::to_string(proto::MAX_NAME_BYTES));
  }
}

void requireClientMsgId(std::string_view id) {
  if (id.empty()) refuse("clientMsgId is empty");
  if (id.size() > proto::MAX_CLIENT_MSG_ID_BYTES) {
    refuse("clientMsgId is " + std::to_string(id.size()) + " bytes, the limit is " +
           std::to_string(proto::MAX_CLIENT_MSG_ID_BYTES));
  }
}

void requireBody(std::size_t bytes) {
  if (bytes == 0) refuse("body is empty");
  if (bytes > proto::MAX_BODY_BYTES) {
    refuse("body is " + std::to_string(bytes) + " bytes, the limit is " +
           std::to_string(proto::MAX_BODY_BYTES));
  }
}

void requireBatch(std::size_t count, std::string_view what) {
  if (count == 0) refuse(std::string(what) + " is empty");
  if (count > proto::MAX_BATCH) {
    refuse(std::string(what) + " has " + std::to_string(count) + " entries, the limit is " +
           std::to_string(proto::MAX_BATCH));
  }
}

std::string groupTooLarge() {
  return "a group has at most " + std::to_string(proto::MAX_GROUP_MEMBERS) + " members";
}

std::string notAMember(std::uint64_t group, std::string_view phone) {
  return "no group " + std::to_string(group) + " with " + std::string(phone) + " as a member";
}

}  // namespace switchboard::messaging
