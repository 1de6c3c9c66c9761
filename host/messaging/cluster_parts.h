// What the cluster parts of MessagingService (cluster_*.cpp) share. Private to
// host/messaging: include it from those files only.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "cluster/cluster_node.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "net/cross_thread_completion.h"

namespace switchboard::messaging {

// Stream envelopes read per request (and rows moved out of the store per export).
inline constexpr std::size_t kImportPage = 256;

// What names the row an envelope becomes (StreamCopies).
inline std::string copyKey(const cluster::Envelope& e) {
  if (e.kind == cluster::Envelope::Kind::message) return StreamCopies::messageKey(e.messageId);
  session::ReceiptKind kind = e.kind == cluster::Envelope::Kind::read
                                  ? session::ReceiptKind::read
                                  : session::ReceiptKind::delivered;
  return StreamCopies::receiptKey(e.receiptOf, static_cast<int>(kind), e.sender);
}

// Runs `job` on the link's worker thread; the promise resolves (or fails with
// the job's exception text) on the calling network thread.
template <class T>
kj::Promise<T> MessagingService::onClusterWorker(std::function<T()> job) {
  auto pending = net::makeCompletion<T>();
  cluster_->link().post([job = std::move(job), completion = pending.completion]() {
    try {
      completion.complete(job());
    } catch (const std::exception& e) {
      completion.fail(e.what());
    }
  });
  return kj::mv(pending.promise);
}

}  // namespace switchboard::messaging
