// Presence: online, away, offline with last seen, and typing. Visible only
// between phones the presence plugin allows (by default: mutual contacts).
// Lazy fan-out: only watchers online now hear of a change; the others read it
// from contacts() when they come back. Never stored.

#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/network_thread.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::PresencePlugin;
using session::LiveSession;
using session::OutboundPresence;
using session::PresenceState;

bool MessagingService::presenceVisible(const std::string& user, const std::string& watcher) {
  bool watcherHasUser = false;
  bool userHasWatcher = false;
  store_.read([&](store::Connection& db) {
    auto has = db.prepare("SELECT 1 FROM contacts WHERE owner = ? AND contact = ?");
    has.bind(1, watcher).bind(2, user);
    watcherHasUser = has.step();
    has.reset();
    has.bind(1, user).bind(2, watcher);
    userHasWatcher = has.step();
  });
  return presencePolicy(user, watcher, watcherHasUser, userHasWatcher);
}

bool MessagingService::presencePolicy(const std::string& user, const std::string& watcher,
                                      bool watcherHasUser, bool userHasWatcher) {
  auto visible = plugins_.call<PresencePlugin>([&](PresencePlugin& presence) {
    return presence.visible(user, watcher, watcherHasUser, userHasWatcher);
  });
  return visible.ok() && *visible.value;
}

void MessagingService::fanOutPresence(const std::string& phone, PresenceState state,
                                      std::int64_t lastSeen) {
  // Watchers have `phone` as a contact; the query also says whether `phone`
  // has each of them, so the policy needs no further reads. On a single node
  // a phone that is nobody's contact has none to read (watched_phones.h).
  std::vector<std::pair<std::string, bool>> watchers;
  if (cluster_ || watched_.mayBeWatched(phone)) {
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare(
                        "SELECT w.owner, EXISTS(SELECT 1 FROM contacts m "
                        "WHERE m.owner = w.contact AND m.contact = w.owner) "
                        "FROM contacts w WHERE w.contact = ?")
                      .bind(1, phone);
      while (rows.step()) watchers.emplace_back(rows.columnText(0), rows.columnInt(1) != 0);
    });
  }
  // Lazy fan-out: only watchers online now hear of it; the others read it
  // from contacts() when they come back.
  for (const auto& [watcher, mutual] : watchers) {
    auto address = sessions_.locate(watcher);
    if (!address || !presencePolicy(phone, watcher, true, mutual)) continue;
    pushPresence(*address, OutboundPresence{phone, state, lastSeen, false});
  }
  if (cluster_) publishPresence(phone, state, lastSeen, false, std::string());
}

void MessagingService::setPresence(const LiveSession& session, PresenceState state) {
  if (state == PresenceState::offline) refuse("offline is set by disconnecting");
  session.ref().gauges->presence = static_cast<std::uint8_t>(state);
  fanOutPresence(session.phone(), state, 0);
}

void MessagingService::typing(const LiveSession& session, const std::string& to, bool active) {
  requirePhone(to, "to");
  const std::string& from = session.phone();
  auto address = sessions_.locate(to);
  // The typing phone's own state: a phone can type while it shows "away".
  auto state = static_cast<PresenceState>(session.ref().gauges->presence.load());
  if (!address && cluster_) {
    publishPresence(from, state, 0, active, to);  // `to` may be on another node
    return;
  }
  if (!address || !presenceVisible(from, to)) return;
  pushPresence(*address, OutboundPresence{from, state, 0, active});
}

void MessagingService::pushPresence(const session::SessionAddress& address,
                                    OutboundPresence update) {
  postTo(address.threadIndex, [weak = address.session, update = std::move(update)]() {
    if (auto s = weak.lock()) s->push(update);
  });
}

}  // namespace switchboard::messaging
