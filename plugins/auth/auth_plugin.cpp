// The auth plugin: registration codes, their rate limits and attempt limits.
//
// requestCode(phone, peer): the phone must be E.164 ("+" then 8 to 15
// digits). Accepted requests are limited per phone and per peer address in a
// sliding window; a refused request does not count. An accepted request makes
// a fresh 5-digit code (libsodium, uniform) that replaces any earlier one.
// verifyCode(phone, code): the pending code must exist, be unexpired and not
// locked; a wrong code costs an attempt and the last allowed wrong attempt
// locks it until a new code is requested; the right code is consumed.
// An expired or locked code is remembered for one more code-ttl so the phone
// is told why, then pruned with the empty rate-limit windows.
//
// Settings: max-requests-per-phone (3), max-requests-per-peer (20),
// rate-window-seconds (600), code-ttl-seconds (600), max-attempts (5).
// State: pending codes (code, expiry, wrong attempts, locked) and the request
// times of every open rate-limit window. Format 1 (1.0.x), fixed width:
// codes, phone windows, peer windows. Format 2 (1.1.x), compact: peer windows,
// phone windows, then codes with the locked flag folded into the attempt
// count; window times are delta-encoded.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sodium.h>

#include "scratch_host.h"
#include "setting_values.h"
#include "state_codec.h"
#include "switchboard/plugin_sdk.h"

namespace switchboard::plugins::auth {
namespace {

using plugin::AuthPlugin;
using plugin::HostServices;
using plugin::LogLevel;

constexpr char kStateLetter = 'A';
constexpr std::size_t kCodeDigits = 5;
constexpr std::int64_t kSweepIntervalMs = 60'000;

struct AuthSettings {
  std::uint64_t maxRequestsPerPhone = 3;
  std::uint64_t maxRequestsPerPeer = 20;
  std::uint64_t rateWindowSeconds = 600;
  std::uint64_t codeTtlSeconds = 600;
  std::uint64_t maxAttempts = 5;
};

struct PendingCode {
  std::string code;
  std::int64_t expiresAtMs = 0;
  std::uint64_t wrongAttempts = 0;
  bool locked = false;
};

// Request times (ms) inside the current window, oldest first.
// A key's request times in the window, oldest first: a handful at most (the
// window's limit), so a vector: one small allocation, where a deque takes ~600 bytes.
using RequestTimes = std::vector<std::int64_t>;
using Windows = std::map<std::string, RequestTimes, std::less<>>;

bool isE164(std::string_view phone) {
  if (phone.size() < 9 || phone.size() > 16 || phone.front() != '+') return false;
  return std::all_of(phone.begin() + 1, phone.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string quoted(std::string_view text) {
  constexpr std::size_t kShown = 32;
  if (text.size() <= kShown) return "\"" + std::string(text) + "\"";
  return "\"" + std::string(text.substr(0, kShown)) + "...\"";
}

// Decides on code requests and verifications. Owned by the host (descriptor
// create/destroy). Calls arrive concurrently on the network threads; all
// state is guarded by mutex_ and no call blocks. No call throws except
// importState, which refuses malformed state by throwing (ABI contract).
class AuthPolicy final : public AuthPlugin {
 public:
  // Throws when libsodium cannot start: codes would not be random.
  explicit AuthPolicy(HostServices& host) : host_(host) {
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  }

  std::string configure(const std::vector<Setting>& settings) override {
    try {
      AuthSettings next = currentSettings();
      for (const auto& setting : settings) {
        std::string error;
        if (setting.key == "max-requests-per-phone") {
          error = readWholeNumber(setting, 1, 1000, next.maxRequestsPerPhone);
        } else if (setting.key == "max-requests-per-peer") {
          error = readWholeNumber(setting, 1, 1'000'000, next.maxRequestsPerPeer);
        } else if (setting.key == "rate-window-seconds") {
          error = readWholeNumber(setting, 1, 7 * 86400, next.rateWindowSeconds);
        } else if (setting.key == "code-ttl-seconds") {
          error = readWholeNumber(setting, 1, 86400, next.codeTtlSeconds);
        } else if (setting.key == "max-attempts") {
          error = readWholeNumber(setting, 1, 100, next.maxAttempts);
        } else {
          error = unknownSetting("auth", setting,
                                 {"max-requests-per-phone", "max-requests-per-peer",
                                  "rate-window-seconds", "code-ttl-seconds", "max-attempts"});
        }
        if (!error.empty()) return error;
      }
      std::lock_guard lock(mutex_);
      settings_ = next;
      return {};
    } catch (const std::exception& error) {
      return std::string("auth settings could not be read: ") + error.what();
    }
  }

  void start() override {
    host_.log(LogLevel::info, "auth " SWITCHBOARD_PLUGIN_VERSION " started");
  }

  CodeDecision requestCode(std::string_view phone, std::string_view peer) override {
    CodeDecision decision;
    try {
      if (!isE164(phone)) {
        host_.count("code_request_invalid", 1);
        decision.error = "not an E.164 phone number: " + quoted(phone);
        return decision;
      }
      const std::int64_t now = host_.nowMs();
      std::lock_guard lock(mutex_);
      sweepIfDue(now);
      const std::int64_t windowMs = static_cast<std::int64_t>(settings_.rateWindowSeconds) * 1000;
      RequestTimes& byPhone = openWindow(phoneWindows_, phone, now, windowMs);
      RequestTimes& byPeer = openWindow(peerWindows_, peer, now, windowMs);
      std::int64_t retryMs = 0;
      if (byPhone.size() >= settings_.maxRequestsPerPhone)
        retryMs = std::max(retryMs, byPhone.front() + windowMs - now);
      if (byPeer.size() >= settings_.maxRequestsPerPeer)
        retryMs = std::max(retryMs, byPeer.front() + windowMs - now);
      if (retryMs > 0) {
        host_.count("code_request_limited", 1);
        const std::int64_t retrySeconds = std::max<std::int64_t>(1, (retryMs + 999) / 1000);
        decision.error = "too many code requests, retry in " + std::to_string(retrySeconds) + " s";
        return decision;
      }
      byPhone.push_back(now);
      byPeer.push_back(now);
      PendingCode& pending = pending_[std::string(phone)];
      pending = PendingCode{
          newCode(), now + static_cast<std::int64_t>(settings_.codeTtlSeconds) * 1000, 0, false};
      host_.count("code_requested", 1);
      decision.ok = true;
      decision.code = pending.code;
      decision.smsText = "Your Switchboard code is " + pending.code;
      decision.expiresInSeconds = static_cast<std::uint32_t>(settings_.codeTtlSeconds);
      return decision;
    } catch (...) {
      return CodeDecision{false, {}, {}, 0, "the code request failed"};
    }
  }

  VerifyDecision verifyCode(std::string_view phone, std::string_view code) override {
    try {
      const std::int64_t now = host_.nowMs();
      std::lock_guard lock(mutex_);
      sweepIfDue(now);
      auto found = pending_.find(phone);
      if (found == pending_.end())
        return refuse("code_unknown", "no code was requested for this phone");
      PendingCode& pending = found->second;
      if (now >= pending.expiresAtMs)
        return refuse("code_expired", "the code has expired, request a new one");
      if (pending.locked)
        return refuse("code_locked", "too many wrong attempts, request a new code");
      if (code.size() == pending.code.size() &&
          sodium_memcmp(code.data(), pending.code.data(), code.size()) == 0) {
        pending_.erase(found);
        host_.count("code_verified", 1);
        return {true, {}};
      }
      ++pending.wrongAttempts;
      if (pending.wrongAttempts >= settings_.maxAttempts) {
        pending.locked = true;
        return refuse("code_locked", "too many wrong attempts, request a new code");
      }
      const std::uint64_t left = settings_.maxAttempts - pending.wrongAttempts;
      return refuse("code_wrong", "wrong code, " + std::to_string(left) +
                                      (left == 1 ? " attempt left" : " attempts left"));
    } catch (...) {
      return {false, "the code check failed"};
    }
  }

  std::string exportState() override {
    std::lock_guard lock(mutex_);
    sweep(host_.nowMs());
    StateWriter writer(kStateLetter, kOwnStateFormat);
    if (kOwnStateFormat == StateFormat::fixedWidth) {
      writer.u64(pending_.size());
      for (const auto& [phone, pending] : pending_) {
        writer.text(phone);
        writer.text(pending.code);
        writer.i64(pending.expiresAtMs);
        writer.u64(pending.wrongAttempts);
        writer.u64(pending.locked ? 1 : 0);
      }
      writeWindows(writer, phoneWindows_, StateFormat::fixedWidth);
      writeWindows(writer, peerWindows_, StateFormat::fixedWidth);
    } else {
      writeWindows(writer, peerWindows_, StateFormat::compact);
      writeWindows(writer, phoneWindows_, StateFormat::compact);
      writer.u64(pending_.size());
      for (const auto& [phone, pending] : pending_) {
        writer.text(phone);
        writer.i64(pending.expiresAtMs);
        writer.u64(pending.wrongAttempts << 1 | (pending.locked ? 1 : 0));
        writer.text(pending.code);
      }
    }
    return std::move(writer).finish();
  }

  void importState(std::string_view fromVersion, std::string_view bytes) override {
    const StateFormat format = requireStateFormatOf(fromVersion);
    StateReader reader(bytes, kStateLetter, format);
    std::map<std::string, PendingCode, std::less<>> pending;
    Windows phoneWindows, peerWindows;
    if (format == StateFormat::fixedWidth) {
      for (std::uint64_t n = reader.count(4 + 4 + 8 + 8 + 8); n > 0; --n) {
        std::string phone = reader.text();
        PendingCode code;
        code.code = reader.text();
        code.expiresAtMs = reader.i64();
        code.wrongAttempts = reader.u64();
        code.locked = reader.u64() != 0;
        pending.insert_or_assign(std::move(phone), std::move(code));
      }
      phoneWindows = readWindows(reader, format);
      peerWindows = readWindows(reader, format);
    } else {
      peerWindows = readWindows(reader, format);
      phoneWindows = readWindows(reader, format);
      for (std::uint64_t n = reader.count(4); n > 0; --n) {
        std::string phone = reader.text();
        PendingCode code;
        code.expiresAtMs = reader.i64();
        const std::uint64_t attempts = reader.u64();
        code.wrongAttempts = attempts >> 1;
        code.locked = (attempts & 1) != 0;
        code.code = reader.text();
        pending.insert_or_assign(std::move(phone), std::move(code));
      }
    }
    reader.expectEnd();
    std::lock_guard lock(mutex_);
    pending_ = std::move(pending);
    phoneWindows_ = std::move(phoneWindows);
    peerWindows_ = std::move(peerWindows);
    host_.log(LogLevel::info, "auth imported " + std::to_string(pending_.size()) +
                                  " pending codes from " + std::string(fromVersion));
  }

  plugin::SelfTestResult selfTest() override;

 private:
  VerifyDecision refuse(std::string_view counter, std::string error) {
    host_.count(counter, 1);
    return {false, std::move(error)};
  }

  AuthSettings currentSettings() {
    std::lock_guard lock(mutex_);
    return settings_;
  }

  static std::string newCode() {
    char digits[kCodeDigits + 1];
    std::snprintf(digits, sizeof digits, "%05u", randombytes_uniform(100000));
    return std::string(digits, kCodeDigits);
  }

  static void dropOlderThan(RequestTimes& times, std::int64_t oldest) {
    auto kept =
        std::find_if(times.begin(), times.end(), [&](std::int64_t t) { return t > oldest; });
    times.erase(times.begin(), kept);
  }

  // The window of `key`, with requests older than the window dropped.
  static RequestTimes& openWindow(Windows& windows, std::string_view key, std::int64_t now,
                                  std::int64_t windowMs) {
    auto found = windows.find(key);
    if (found == windows.end()) found = windows.emplace(std::string(key), RequestTimes{}).first;
    RequestTimes& times = found->second;
    dropOlderThan(times, now - windowMs);
    return times;
  }

  void sweepIfDue(std::int64_t now) {
    if (now - lastSweepMs_ >= kSweepIntervalMs || now < lastSweepMs_) sweep(now);
  }

  // Forgets what no longer changes a decision: empty windows, and codes
  // expired for longer than one more ttl.
  void sweep(std::int64_t now) {
    lastSweepMs_ = now;
    const std::int64_t windowMs = static_cast<std::int64_t>(settings_.rateWindowSeconds) * 1000;
    for (Windows* windows : {&phoneWindows_, &peerWindows_}) {
      for (auto it = windows->begin(); it != windows->end();) {
        dropOlderThan(it->second, now - windowMs);
        it = it->second.empty() ? windows->erase(it) : std::next(it);
      }
    }
    const std::int64_t graceMs = static_cast<std::int64_t>(settings_.codeTtlSeconds) * 1000;
    std::erase_if(pending_,
                  [&](const auto& entry) { return entry.second.expiresAtMs + graceMs <= now; });
  }

  static void writeWindows(StateWriter& writer, const Windows& windows, StateFormat format) {
    writer.u64(windows.size());
    for (const auto& [key, times] : windows) {
      writer.text(key);
      writer.u64(times.size());
      std::int64_t previous = 0;
      for (const std::int64_t time : times) {
        writer.i64(format == StateFormat::compact ? time - previous : time);
        previous = time;
      }
    }
  }

  static Windows readWindows(StateReader& reader, StateFormat format) {
    Windows windows;
    for (std::uint64_t n = reader.count(2); n > 0; --n) {
      std::string key = reader.text();
      RequestTimes times;
      std::int64_t previous = 0;
      for (std::uint64_t i = reader.count(1); i > 0; --i) {
        const std::int64_t value = reader.i64();
        previous = format == StateFormat::compact ? previous + value : value;
        times.push_back(previous);
      }
      windows.insert_or_assign(std::move(key), std::move(times));
    }
    return windows;
  }

  HostServices& host_;
  std::mutex mutex_;
  AuthSettings settings_;
  std::map<std::string, PendingCode, std::less<>> pending_;
  Windows phoneWindows_;
  Windows peerWindows_;
  std::int64_t lastSweepMs_ = 0;
};

// ---------------------------------------------------------------- self test

plugin::SelfTestResult AuthPolicy::selfTest() {
  try {
    ScratchHost scratchHost(1'700'000'000'000);
    AuthPolicy scratch(scratchHost);
    SelfTestLog log;
    const std::string phone = "+15550000001";
    log.check(!scratch.requestCode("5550000001", "peer").ok, "a number without + accepted");
    log.check(!scratch.requestCode("+1234567", "peer").ok, "a 7-digit number accepted");

    CodeDecision first = scratch.requestCode(phone, "peer");
    log.check(first.ok && first.code.size() == kCodeDigits, "no 5-digit code issued");
    log.check(first.smsText.find(first.code) != std::string::npos, "the SMS lacks the code");
    const std::string wrong = first.code == "00000" ? "00001" : "00000";
    for (int attempt = 1; attempt < 5; ++attempt)
      log.check(scratch.verifyCode(phone, wrong).error.starts_with("wrong code"),
                "a wrong code not reported as wrong");
    log.check(scratch.verifyCode(phone, wrong).error.starts_with("too many wrong attempts"),
              "the fifth wrong code did not lock");
    log.check(!scratch.verifyCode(phone, first.code).ok, "a locked code still verified");

    CodeDecision second = scratch.requestCode(phone, "peer");
    log.check(second.ok, "a new code after a lockout refused");
    log.check(scratch.verifyCode(phone, second.code).ok, "the right code did not verify");
    log.check(!scratch.verifyCode(phone, second.code).ok, "a code verified twice");

    CodeDecision third = scratch.requestCode(phone, "peer");
    log.check(!scratch.requestCode(phone, "peer").ok, "the per-phone limit not enforced");

    AuthPolicy copy(scratchHost);
    copy.importState(SWITCHBOARD_PLUGIN_VERSION, scratch.exportState());
    log.check(!copy.requestCode(phone, "peer").ok, "the rate limit lost in export/import");
    log.check(copy.verifyCode(phone, third.code).ok, "a pending code lost in export/import");

    CodeDecision late = scratch.requestCode("+15550000002", "peer");
    scratchHost.advanceMs(601'000);
    log.check(
        scratch.verifyCode("+15550000002", late.code).error.find("expired") != std::string::npos,
        "an expired code not reported as expired");
    return log.result("auth self test passed");
  } catch (const std::exception& error) {
    return {false, std::string("auth self test threw: ") + error.what()};
  }
}

}  // namespace
}  // namespace switchboard::plugins::auth

SWITCHBOARD_PLUGIN_CLASS(switchboard::plugins::auth::AuthPolicy, auth)
