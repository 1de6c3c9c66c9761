// Numbered, timestamped messages per flow and the checks on what arrives.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.h"
#include "receive_stamp.h"
#include "report_fields.h"

namespace switchboard::bench {

// The books of every load sbbench carries (Switchboard phones, mosquitto, ejabberd). A flow
// is one sender to `receivers` receivers (1 for a pair, the other members for a group). A
// body starts with the intended send time (CLOCK_MONOTONIC ns: the scheduled time in an open
// loop, the time the message was made in a closed one), the flow and the sequence, so the
// receiving side measures latency and spots loss, duplicates and reordering.
//
// Two latencies per arrival, both to its arrival (ArrivalStamp::arrivalNs(): the kernel's
// receive timestamp of the read that completed the message, else the clock read just after
// that read): from the actual send (sentAt(): the clock read just before the bytes went to
// the kernel) and from the intended send. The first is what the server and the network add;
// the second also holds the generator's own lateness, so a stall that kept the generator
// from sending on time still shows (coordinated omission stays visible). The lateness
// itself (actual - intended) has a histogram of its own, and so has the receive lag (the
// read's clock minus the kernel's stamp: how long the bytes waited in the socket for the
// generator's loop); arrivals without a kernel stamp are counted
// (arrivals_without_kernel_stamp). Sender and receivers of a flow live in the same process,
// so the actual send time stays in these books and never travels in the body; an arrival
// whose send was never stamped counts from the intended time in both.
//
// In flight: a message counts against its flow's window from send until every receiver has
// it (the default), or until the server acknowledged it (InFlightUntil::acked, for sends to
// offline phones). Latency is recorded for arrivals inside the measuring window; arrivals
// of messages stamped at or after mark() go to a second pair of histograms (the swap phase).
// Single-threaded: owned by one worker loop.
//
// Diagnostics: with SBBENCH_SLOW_LOG=PATH in the environment, every arrival in the window
// that took longer than SBBENCH_SLOW_US (default 1000) from its actual send is appended to
// PATH as a line "sent_ns latency_ns flow seq receiver" (CLOCK_MONOTONIC), so a tail can be
// checked for a period (a timer, a flush) or a burst.
class DeliveryLedger {
 public:
  static constexpr std::size_t kHeaderBytes = 16;
  enum class InFlightUntil { received, acked };

  explicit DeliveryLedger(std::size_t bodyBytes, InFlightUntil until = InFlightUntil::received)
      : bodyBytes_(std::max(bodyBytes, kHeaderBytes)), until_(until) {
    if (const char* path = std::getenv("SBBENCH_SLOW_LOG")) slowLog_ = std::fopen(path, "a");
    if (const char* us = std::getenv("SBBENCH_SLOW_US")) slowNs_ = std::atoll(us) * 1000;
  }
  ~DeliveryLedger() {
    if (slowLog_ != nullptr) std::fclose(slowLog_);
  }
  DeliveryLedger(const DeliveryLedger&) = delete;
  DeliveryLedger& operator=(const DeliveryLedger&) = delete;

  // Adds a flow whose receivers are known to the caller as firstReceiver + slot.
  std::uint32_t addFlow(std::uint32_t receivers = 1, std::uint32_t firstReceiver = 0) {
    Flow flow;
    flow.receivers = std::max<std::uint32_t>(receivers, 1);
    flow.firstReceiver = firstReceiver;
    flow.lastSeq.assign(flow.receivers, -1);
    flows_.push_back(std::move(flow));
    return static_cast<std::uint32_t>(flows_.size() - 1);
  }

  std::size_t flows() const { return flows_.size(); }
  std::uint32_t inflight(std::uint32_t flow) const { return flows_[flow].inflight; }
  std::uint32_t sent(std::uint32_t flow) const { return flows_[flow].nextSeq; }
  std::size_t bodyBytes() const { return bodyBytes_; }

  // Stamps flow's next message into `out` (bodyBytes() long); returns its sequence.
  std::uint32_t stamp(std::uint32_t flow, std::int64_t stampNs, void* out) {
    Flow& f = flows_[flow];
    std::uint32_t seq = f.nextSeq++;
    f.received.push_back(0);
    f.acked.push_back(false);
    f.intendedNs.push_back(stampNs);
    f.sentNs.push_back(0);
    ++f.inflight;
    auto* bytes = static_cast<char*>(out);
    std::memset(bytes, 'x', bodyBytes_);
    std::memcpy(bytes, &stampNs, 8);
    std::memcpy(bytes + 8, &flow, 4);
    std::memcpy(bytes + 12, &seq, 4);
    return seq;
  }
  std::string nextBody(std::uint32_t flow, std::int64_t stampNs) {
    std::string body(bodyBytes_, 'x');
    stamp(flow, stampNs, body.data());
    return body;
  }

  // The bytes of flow's message `seq` went to the kernel at `actualNs` (the clock read just
  // before the write). Only the first call per message counts.
  void sentAt(std::uint32_t flow, std::uint32_t seq, std::int64_t actualNs) {
    Flow& f = flows_[flow];
    if (seq >= f.sentNs.size() || f.sentNs[seq] != 0) return;
    f.sentNs[seq] = actualNs;
    if (actualNs >= windowStartNs_ && (windowEndNs_ == 0 || actualNs < windowEndNs_)) {
      sendLag_.record(std::max<std::int64_t>(0, actualNs - f.intendedNs[seq]));
    }
  }

  // The server acknowledged (true) or refused (false) a send. Returns true when that opened
  // the flow's window (InFlightUntil::acked).
  bool acked(std::uint32_t flow, std::uint32_t seq, bool ok) {
    Flow& f = flows_[flow];
    if (ok) {
      f.acked[seq] = true;
      ++ackedTotal_;
    } else {
      ++sendErrors_;
    }
    if (until_ == InFlightUntil::acked || !ok) {
      if (f.inflight > 0) --f.inflight;
      return true;
    }
    return false;
  }
  // A send that never left (no session, a closed connection).
  void sendFailed(std::uint32_t flow) {
    ++sendErrors_;
    if (flows_[flow].inflight > 0) --flows_[flow].inflight;
  }

  // A body arrived at `receiver` (`at`: the read that completed it). Returns the flow when
  // every receiver now has this message (its window may have opened).
  std::optional<std::uint32_t> received(const void* data, std::size_t size, const ArrivalStamp& at,
                                        std::uint32_t receiver = 0) {
    if (size < kHeaderBytes) return std::nullopt;
    std::int64_t intendedNs;
    std::uint32_t flow, seq;
    std::memcpy(&intendedNs, data, 8);
    std::memcpy(&flow, static_cast<const char*>(data) + 8, 4);
    std::memcpy(&seq, static_cast<const char*>(data) + 12, 4);
    if (flow >= flows_.size() || seq >= flows_[flow].nextSeq) return std::nullopt;
    Flow& f = flows_[flow];
    std::uint32_t slot = receiver - f.firstReceiver;
    if (slot >= f.receivers) return std::nullopt;
    ++deliveredTotal_;
    if (++f.received[seq] > f.receivers) {
      ++duplicates_;
      return std::nullopt;
    }
    if (static_cast<std::int64_t>(seq) < f.lastSeq[slot]) ++reordered_;
    f.lastSeq[slot] = std::max<std::int64_t>(f.lastSeq[slot], seq);
    std::int64_t nowNs = at.arrivalNs();
    bool inWindow = nowNs >= windowStartNs_ && (windowEndNs_ == 0 || nowNs < windowEndNs_);
    if (inWindow) {
      ++deliveredWindow_;
      if (at.kernelNs != 0) {
        receiveLag_.record(std::max<std::int64_t>(0, at.readNs - at.kernelNs));
      } else {
        ++unstampedArrivals_;
      }
      std::int64_t actualNs = f.sentNs[seq] != 0 ? f.sentNs[seq] : intendedNs;
      Latencies& books = markNs_ != 0 && intendedNs >= markNs_ ? marked_ : unmarked_;
      books.fromActual.record(nowNs - actualNs);
      books.fromIntended.record(nowNs - intendedNs);
      if (slowLog_ != nullptr && nowNs - actualNs > slowNs_) {
        std::fprintf(slowLog_, "%lld %lld %u %u %u\n", static_cast<long long>(actualNs),
                     static_cast<long long>(nowNs - actualNs), flow, seq, receiver);
      }
    }
    if (f.received[seq] != f.receivers) return std::nullopt;
    if (inWindow) ++completedWindow_;
    if (until_ == InFlightUntil::received && f.inflight > 0) --f.inflight;
    return flow;
  }

  void openWindow(std::int64_t startNs) { windowStartNs_ = startNs; }
  void closeWindow(std::int64_t endNs) { windowEndNs_ = endNs; }
  void mark(std::int64_t atNs) { markNs_ = atNs; }
  void skipped() { ++skipped_; }
  bool idle() const {
    for (const auto& f : flows_)
      if (f.inflight > 0) return false;
    return true;
  }
  std::uint64_t ackedTotal() const { return ackedTotal_; }
  std::uint64_t sendErrors() const { return sendErrors_; }
  std::uint64_t deliveredTotal() const { return deliveredTotal_; }

  // Lost counts receivers still missing an acknowledged message (or, for a peer without
  // acknowledgements, any sent message that did not fail to send).
  ReportFields result() const {
    ReportFields r;
    std::uint64_t sent = 0, lost = 0;
    bool anyAcks = ackedTotal_ > 0;
    for (const auto& f : flows_) {
      sent += f.nextSeq;
      for (std::uint32_t seq = 0; seq < f.nextSeq; ++seq) {
        if (anyAcks && !f.acked[seq]) continue;
        lost += f.receivers - std::min<std::uint32_t>(f.received[seq], f.receivers);
      }
    }
    if (!anyAcks) lost = lost >= sendErrors_ ? lost - sendErrors_ : 0;
    r.set("sent", sent);
    r.set("acked", anyAcks ? ackedTotal_ : sent - sendErrors_);
    r.set("send_errors", sendErrors_);
    r.set("delivered_total", deliveredTotal_);
    r.set("delivered_window", deliveredWindow_);
    r.set("completed_window", completedWindow_);
    r.set("window_ns", windowEndNs_ - windowStartNs_);
    r.set("lost", lost);
    r.set("duplicated", duplicates_);
    r.set("reordered", reordered_);
    r.set("skipped", skipped_);
    r.set("hist", unmarked_.fromActual.encode());
    r.set("hist_intended", unmarked_.fromIntended.encode());
    r.set("hist_swap", marked_.fromActual.encode());
    r.set("hist_swap_intended", marked_.fromIntended.encode());
    r.set("hist_send_lag", sendLag_.encode());
    r.set("hist_receive_lag", receiveLag_.encode());
    r.set("arrivals_without_kernel_stamp", unstampedArrivals_);
    return r;
  }

 private:
  struct Flow {
    std::uint32_t receivers = 1;
    std::uint32_t firstReceiver = 0;
    std::uint32_t nextSeq = 0;
    std::uint32_t inflight = 0;
    std::vector<std::uint16_t> received;   // by sequence: receivers that have it
    std::vector<bool> acked;               // by sequence
    std::vector<std::int64_t> intendedNs;  // by sequence: the body's stamp
    std::vector<std::int64_t> sentNs;      // by sequence: the actual send, 0 until known
    std::vector<std::int64_t> lastSeq;     // by receiver slot
  };
  std::vector<Flow> flows_;
  std::size_t bodyBytes_;
  InFlightUntil until_;
  std::int64_t windowStartNs_ = 0, windowEndNs_ = 0, markNs_ = 0;
  std::uint64_t deliveredTotal_ = 0, deliveredWindow_ = 0, completedWindow_ = 0;
  std::uint64_t ackedTotal_ = 0, duplicates_ = 0, reordered_ = 0, sendErrors_ = 0, skipped_ = 0;
  std::uint64_t unstampedArrivals_ = 0;  // in the window, without a kernel stamp
  struct Latencies {
    LatencyHistogram fromActual;
    LatencyHistogram fromIntended;
  };
  Latencies unmarked_, marked_;
  LatencyHistogram sendLag_;
  LatencyHistogram receiveLag_;   // read - kernel stamp, in the window
  std::FILE* slowLog_ = nullptr;  // SBBENCH_SLOW_LOG
  std::int64_t slowNs_ = 1000 * 1000;
};

}  // namespace switchboard::bench
