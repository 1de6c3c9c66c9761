// Numbered, timestamped messages per flow and the checks on what arrives.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.h"
#include "report_fields.h"

namespace switchboard::bench {

// The peers' load (mosquitto, ejabberd) keeps its books here: each flow is one sender to
// one receiver. A body starts with the send time (CLOCK_MONOTONIC ns), the flow and the
// sequence, so any receiver in any process can measure latency and spot loss, duplicates
// and reordering. A message counts as in flight from send until its receiver has it.
// Single-threaded: owned by one worker loop.
class DeliveryLedger {
 public:
  static constexpr std::size_t kHeaderBytes = 16;

  DeliveryLedger(std::size_t flows, std::size_t bodyBytes)
      : flows_(flows), bodyBytes_(std::max(bodyBytes, kHeaderBytes)) {}

  std::size_t flows() const { return flows_.size(); }
  std::uint32_t inflight(std::uint32_t flow) const { return flows_[flow].inflight; }

  // The body of flow's next message, stamped `stampNs`; counts it in flight.
  std::string nextBody(std::uint32_t flow, std::int64_t stampNs) {
    Flow& f = flows_[flow];
    std::uint32_t seq = f.nextSeq++;
    f.received.push_back(0);
    ++f.inflight;
    std::string body(bodyBytes_, 'x');
    std::memcpy(body.data(), &stampNs, 8);
    std::memcpy(body.data() + 8, &flow, 4);
    std::memcpy(body.data() + 12, &seq, 4);
    return body;
  }

  void sendFailed(std::uint32_t flow) {
    ++sendErrors_;
    if (flows_[flow].inflight > 0) --flows_[flow].inflight;
  }

  // A body arrived at its receiver at `nowNs`; returns the flow whose window opened.
  std::optional<std::uint32_t> received(const void* data, std::size_t size, std::int64_t nowNs) {
    if (size < kHeaderBytes) return std::nullopt;
    std::int64_t sendNs;
    std::uint32_t flow, seq;
    std::memcpy(&sendNs, data, 8);
    std::memcpy(&flow, static_cast<const char*>(data) + 8, 4);
    std::memcpy(&seq, static_cast<const char*>(data) + 12, 4);
    if (flow >= flows_.size() || seq >= flows_[flow].nextSeq) return std::nullopt;
    Flow& f = flows_[flow];
    ++deliveredTotal_;
    if (++f.received[seq] > 1) {
      ++duplicates_;
      return std::nullopt;
    }
    if (static_cast<std::int64_t>(seq) < f.lastSeq) ++reordered_;
    f.lastSeq = std::max<std::int64_t>(f.lastSeq, seq);
    if (nowNs >= windowStartNs_ && (windowEndNs_ == 0 || nowNs < windowEndNs_)) {
      ++deliveredWindow_;
      latency_.record(nowNs - sendNs);
    }
    if (f.inflight > 0) --f.inflight;
    return flow;
  }

  void openWindow(std::int64_t startNs) { windowStartNs_ = startNs; }
  void closeWindow(std::int64_t endNs) { windowEndNs_ = endNs; }
  bool idle() const {
    for (const auto& f : flows_)
      if (f.inflight > 0) return false;
    return true;
  }
  void skipped() { ++skipped_; }

  ReportFields result() const {
    ReportFields r;
    std::uint64_t sent = 0, lost = 0;
    for (const auto& f : flows_) {
      sent += f.nextSeq;
      for (auto n : f.received) lost += n == 0 ? 1 : 0;
    }
    r.set("sent", sent);
    r.set("acked", sent - sendErrors_);
    r.set("send_errors", sendErrors_);
    r.set("delivered_total", deliveredTotal_);
    r.set("delivered_window", deliveredWindow_);
    r.set("completed_window", deliveredWindow_);
    r.set("window_ns", windowEndNs_ - windowStartNs_);
    r.set("lost", lost >= sendErrors_ ? lost - sendErrors_ : 0);
    r.set("duplicated", duplicates_);
    r.set("reordered", reordered_);
    r.set("skipped", skipped_);
    r.set("hist", latency_.encode());
    r.set("hist_swap", LatencyHistogram().encode());
    return r;
  }

 private:
  struct Flow {
    std::uint32_t nextSeq = 0;
    std::uint32_t inflight = 0;
    std::int64_t lastSeq = -1;
    std::vector<std::uint16_t> received;
  };
  std::vector<Flow> flows_;
  std::size_t bodyBytes_;
  std::int64_t windowStartNs_ = 0, windowEndNs_ = 0;
  std::uint64_t deliveredTotal_ = 0, deliveredWindow_ = 0;
  std::uint64_t duplicates_ = 0, reordered_ = 0, sendErrors_ = 0, skipped_ = 0;
  LatencyHistogram latency_;
};

}  // namespace switchboard::bench
