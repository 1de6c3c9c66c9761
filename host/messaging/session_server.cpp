#include "messaging/session_server.h"

#include "messaging/field_rules.h"

namespace switchboard::messaging {
namespace {

// send results (id, timestamp, deliveredAt) and sendGroup's (id, timestamp).
// Stated, because without a size hint Cap'n Proto zero-fills an 8 KiB first
// segment for every reply.
constexpr capnp::MessageSize kSentSize{3, 0};
constexpr capnp::MessageSize kGroupSentSize{2, 0};

std::string text(capnp::Text::Reader reader) {
  return std::string(reader.cStr(), reader.size());
}

std::string bytes(capnp::Data::Reader reader) {
  return std::string(reinterpret_cast<const char*>(reader.begin()), reader.size());
}

// A list of phones from the wire, refused past the batch limit before copying.
std::vector<std::string> phones(capnp::List<capnp::Text>::Reader list, std::string_view what) {
  requireBatch(list.size(), what);
  std::vector<std::string> out;
  out.reserve(list.size());
  for (auto phone : list) out.push_back(text(phone));
  return out;
}

}  // namespace

SessionServer::SessionServer(MessagingService& service,
                             std::shared_ptr<session::LiveSession> session)
    : service_(service), session_(std::move(session)) {}

SessionServer::~SessionServer() {
  session_->end();
}

const std::string& SessionServer::phone() const {
  return live().phone();
}

session::LiveSession& SessionServer::live() const {
  if (session_->ended()) refuse("the session has ended; log in again");
  return *session_;
}

kj::Promise<void> SessionServer::send(SendContext context) {
  auto params = context.getParams();
  requireBody(params.getBody().size());
  return service_
      .send(live(), text(params.getTo()), text(params.getClientMsgId()), bytes(params.getBody()))
      .then([context](SentMessage sent) mutable {
        auto results = context.getResults(kSentSize);
        results.setId(sent.id);
        results.setTimestamp(sent.timestamp);
        results.setDeliveredAt(sent.deliveredAt);
      });
}

kj::Promise<void> SessionServer::sendGroup(SendGroupContext context) {
  auto params = context.getParams();
  requireBody(params.getBody().size());
  return service_
      .sendGroup(live(), params.getGroup(), text(params.getClientMsgId()), bytes(params.getBody()))
      .then([context](SentMessage sent) mutable {
        auto results = context.getResults(kGroupSentSize);
        results.setId(sent.id);
        results.setTimestamp(sent.timestamp);
      });
}

kj::Promise<void> SessionServer::receipt(ReceiptContext context) {
  auto params = context.getParams();
  requireBatch(params.getIds().size(), "ids");
  std::vector<std::uint64_t> ids;
  ids.reserve(params.getIds().size());
  for (std::uint64_t id : params.getIds()) ids.push_back(id);
  return service_.receipt(live(), std::move(ids),
                          static_cast<session::ReceiptKind>(params.getKind()));
}

kj::Promise<void> SessionServer::setPresence(SetPresenceContext context) {
  phone();
  service_.setPresence(*session_,
                       static_cast<session::PresenceState>(context.getParams().getState()));
  return kj::READY_NOW;
}

kj::Promise<void> SessionServer::typing(TypingContext context) {
  auto params = context.getParams();
  service_.typing(live(), text(params.getTo()), params.getActive());
  return kj::READY_NOW;
}

kj::Promise<void> SessionServer::addContacts(AddContactsContext context) {
  return service_.addContacts(phone(), phones(context.getParams().getPhones(), "phones"));
}

kj::Promise<void> SessionServer::removeContacts(RemoveContactsContext context) {
  return service_.removeContacts(phone(), phones(context.getParams().getPhones(), "phones"));
}

kj::Promise<void> SessionServer::contacts(ContactsContext context) {
  std::vector<ContactView> found = service_.contacts(phone());
  auto list = context.getResults().initContacts(static_cast<unsigned>(found.size()));
  for (unsigned i = 0; i < found.size(); ++i) {
    list[i].setPhone(found[i].phone);
    list[i].setRegistered(found[i].registered);
    list[i].setState(static_cast<proto::PresenceState>(found[i].state));
    list[i].setLastSeen(found[i].lastSeen);
  }
  return kj::READY_NOW;
}

kj::Promise<void> SessionServer::createGroup(CreateGroupContext context) {
  auto params = context.getParams();
  // Bounded before copying; the service counts distinct members, creator included.
  if (params.getMembers().size() > proto::MAX_GROUP_MEMBERS) {
    refuse(groupTooLarge());
  }
  std::vector<std::string> members;
  for (auto m : params.getMembers()) members.push_back(text(m));
  return service_.createGroup(phone(), text(params.getName()), std::move(members))
      .then([context](std::uint64_t id) mutable { context.getResults().setGroup(id); });
}

kj::Promise<void> SessionServer::addMembers(AddMembersContext context) {
  auto params = context.getParams();
  return service_.addMembers(phone(), params.getGroup(), phones(params.getMembers(), "members"));
}

kj::Promise<void> SessionServer::removeMembers(RemoveMembersContext context) {
  auto params = context.getParams();
  return service_.removeMembers(phone(), params.getGroup(), phones(params.getMembers(), "members"));
}

kj::Promise<void> SessionServer::leaveGroup(LeaveGroupContext context) {
  return service_.leaveGroup(phone(), context.getParams().getGroup());
}

kj::Promise<void> SessionServer::groups(GroupsContext context) {
  return service_.groups(phone()).then([context](std::vector<GroupView> found) mutable {
    auto list = context.getResults().initGroups(static_cast<unsigned>(found.size()));
    for (unsigned i = 0; i < found.size(); ++i) {
      list[i].setId(found[i].id);
      list[i].setName(found[i].name);
      list[i].setOwner(found[i].owner);
      auto members = list[i].initMembers(static_cast<unsigned>(found[i].members.size()));
      for (unsigned j = 0; j < found[i].members.size(); ++j) members.set(j, found[i].members[j]);
    }
  });
}

kj::Promise<void> SessionServer::logout(LogoutContext) {
  phone();
  session_->end();
  return kj::READY_NOW;
}

}  // namespace switchboard::messaging
