// A logged-in phone's Session capability (proto/client.capnp Session). It
// holds the LiveSession: when the phone drops this capability, or its
// connection ends, the session ends. Every call acts as the session's own
// phone; nothing in a request can name another sender.
#pragma once

#include <memory>

#include "messaging/messaging_service.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::messaging {

class SessionServer final : public proto::Session::Server {
 public:
  SessionServer(MessagingService& service, std::shared_ptr<session::LiveSession> session);
  ~SessionServer();

 protected:
  kj::Promise<void> send(SendContext context) override;
  kj::Promise<void> sendGroup(SendGroupContext context) override;
  kj::Promise<void> receipt(ReceiptContext context) override;
  kj::Promise<void> setPresence(SetPresenceContext context) override;
  kj::Promise<void> typing(TypingContext context) override;
  kj::Promise<void> addContacts(AddContactsContext context) override;
  kj::Promise<void> removeContacts(RemoveContactsContext context) override;
  kj::Promise<void> contacts(ContactsContext context) override;
  kj::Promise<void> createGroup(CreateGroupContext context) override;
  kj::Promise<void> addMembers(AddMembersContext context) override;
  kj::Promise<void> removeMembers(RemoveMembersContext context) override;
  kj::Promise<void> leaveGroup(LeaveGroupContext context) override;
  kj::Promise<void> groups(GroupsContext context) override;
  kj::Promise<void> logout(LogoutContext context) override;

 private:
  // The phone, after checking the session has not ended (logout, kick).
  const std::string& phone() const;
  session::LiveSession& live() const;

  MessagingService& service_;
  std::shared_ptr<session::LiveSession> session_;
};

}  // namespace switchboard::messaging
