#include "activity_report.h"

#include "admin_json.h"
#include "text_table.h"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>

namespace switchboard::ctl {
namespace {

// ---------------------------------------------------------------- terminal

volatile std::sig_atomic_t gStopRequested = 0;

void requestStop(int) {
  gStopRequested = 1;
}

// Puts the controlling terminal in non-canonical, no-echo mode for as long as it lives
// (so a single 'q' arrives without Enter) and restores the saved mode in its destructor.
// SIGINT and SIGTERM only set a flag that the report loop checks, so the destructor runs
// on those too. Does nothing when stdin is not a terminal.
class RawTerminal {
 public:
  RawTerminal() {
    std::signal(SIGINT, requestStop);
    std::signal(SIGTERM, requestStop);
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    std::fputs("\x1b[?25l", stdout);  // hide the cursor while redrawing
  }
  ~RawTerminal() {
    std::fputs("\x1b[?25h", stdout);
    std::fflush(stdout);
    if (active_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

  // Waits up to `limit` for a key; true when the operator asked to quit.
  bool waitForQuit(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!gStopRequested) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd in{STDIN_FILENO, POLLIN, 0};
      int ready = ::poll(&in, 1, static_cast<int>(left.count()));
      if (ready > 0) {
        char key = 0;
        ssize_t n = ::read(STDIN_FILENO, &key, 1);
        if (n == 0) return true;  // stdin closed: nobody can press q any more
        if (n == 1 && (key == 'q' || key == 'Q')) return true;
      }
    }
    return true;
  }

 private:
  termios saved_{};
  bool active_ = false;
};

double rate(std::uint64_t before, std::uint64_t after, double seconds) {
  if (seconds <= 0 || after < before) return 0;
  return static_cast<double>(after - before) / seconds;
}

std::string fixed(double value, int decimals = 1) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

}  // namespace

// ---------------------------------------------------------------- samples and frames

ActivitySample ActivitySample::read(AdminClient& admin, std::uint32_t queueRows) {
  ActivitySample sample;
  sample.stats = admin.stats();
  sample.plugins = admin.plugins();
  sample.queues = admin.queues(queueRows);
  sample.at = std::chrono::steady_clock::now();
  return sample;
}

ActivityFrame ActivityFrame::between(const ActivitySample& before, const ActivitySample& after) {
  ActivityFrame frame;
  frame.seconds = std::chrono::duration<double>(after.at - before.at).count();
  const Stats& a = before.stats;
  const Stats& b = after.stats;
  frame.connections = b.connections;
  frame.sessions = b.sessions;
  frame.loginsPerSecond = rate(a.logins, b.logins, frame.seconds);
  frame.messagesInPerSecond = rate(a.messagesIn, b.messagesIn, frame.seconds);
  frame.messagesOutPerSecond = rate(a.messagesOut, b.messagesOut, frame.seconds);
  frame.maxQueueLength = b.maxQueueLength;
  frame.queueAlerts = b.queueAlerts;
  frame.slowConsumerKicks = b.slowConsumerKicks;
  frame.storeCommitP50Us = b.storeCommitP50Us;
  frame.storeCommitP99Us = b.storeCommitP99Us;
  frame.uptimeSeconds = b.uptimeSeconds;
  for (const auto& plugin : after.plugins) {
    PluginActivity activity{plugin.kind,  plugin.state,      plugin.version,   0, 0, 0,
                            plugin.swaps, plugin.pauseP99Us, plugin.pauseMaxUs};
    for (const auto& version : plugin.versions) {
      if (version.version != plugin.version) continue;
      activity.errors = version.errors;
      activity.p99Ns = version.p99Ns;
      std::uint64_t previousCalls = version.calls;
      for (const auto& old : before.plugins) {
        if (old.kind != plugin.kind) continue;
        for (const auto& oldVersion : old.versions) {
          if (oldVersion.version == version.version) previousCalls = oldVersion.calls;
        }
      }
      activity.callsPerSecond = rate(previousCalls, version.calls, frame.seconds);
    }
    frame.plugins.push_back(std::move(activity));
  }
  frame.queues = after.queues;
  return frame;
}

void ActivityFrame::render(std::ostream& out, const std::string& endpoint) const {
  out << "switchboard activity  " << endpoint << "  up " << formatDuration(uptimeSeconds)
      << "  (q quits)\n\n";
  out << "connections " << connections << "   sessions " << sessions << "   logins/s "
      << fixed(loginsPerSecond) << "   msgs in/s " << fixed(messagesInPerSecond) << "   msgs out/s "
      << fixed(messagesOutPerSecond) << '\n';
  out << "longest queue " << maxQueueLength << "   queue alerts " << queueAlerts
      << "   slow-consumer kicks " << slowConsumerKicks << "   store commit p50 "
      << formatNanos(storeCommitP50Us * 1000) << " p99 " << formatNanos(storeCommitP99Us * 1000)
      << "\n\n";

  TextTable plugins(
      {"kind", "version", "state", "calls/s", "errors", "p99", "swaps", "pause p99", "pause max"});
  for (const auto& p : this->plugins) {
    plugins.addRow({p.kind, p.version.empty() ? "-" : p.version, p.state, fixed(p.callsPerSecond),
                    std::to_string(p.errors), formatNanos(p.p99Ns), std::to_string(p.swaps),
                    formatNanos(p.pauseP99Us * 1000), formatNanos(p.pauseMaxUs * 1000)});
  }
  plugins.print(out);
  out << '\n';

  TextTable queueTable({"phone", "queue", "max queue", "delivered", "peer", "thread"});
  for (const auto& s : queues) {
    queueTable.addRow({s.phone, std::to_string(s.queueLength), std::to_string(s.maxQueueLength),
                       std::to_string(s.delivered), s.peer, std::to_string(s.thread)});
  }
  if (queueTable.empty()) {
    out << "no live sessions\n";
  } else {
    queueTable.print(out);
  }
}

void to_json(nlohmann::json& out, const ActivityFrame& in) {
  nlohmann::json plugins = nlohmann::json::array();
  for (const auto& p : in.plugins) {
    plugins.push_back({{"kind", p.kind},
                       {"state", p.state},
                       {"version", p.version},
                       {"callsPerSecond", p.callsPerSecond},
                       {"errors", p.errors},
                       {"p99Ns", p.p99Ns},
                       {"swaps", p.swaps},
                       {"pauseP99Us", p.pauseP99Us},
                       {"pauseMaxUs", p.pauseMaxUs}});
  }
  out = {{"seconds", in.seconds},
         {"connections", in.connections},
         {"sessions", in.sessions},
         {"loginsPerSecond", in.loginsPerSecond},
         {"messagesInPerSecond", in.messagesInPerSecond},
         {"messagesOutPerSecond", in.messagesOutPerSecond},
         {"maxQueueLength", in.maxQueueLength},
         {"queueAlerts", in.queueAlerts},
         {"slowConsumerKicks", in.slowConsumerKicks},
         {"storeCommitP50Us", in.storeCommitP50Us},
         {"storeCommitP99Us", in.storeCommitP99Us},
         {"uptimeSeconds", in.uptimeSeconds},
         {"plugins", plugins},
         {"queues", in.queues}};
}

// ---------------------------------------------------------------- the loop

int runTop(AdminClient& admin, const TopOptions& options) {
  const std::string& endpoint = admin.options().socketPath;
  ActivitySample previous = ActivitySample::read(admin, options.queueRows);

  if (options.iterations > 0) {
    nlohmann::json frames = nlohmann::json::array();
    for (unsigned i = 0; i < options.iterations; ++i) {
      std::this_thread::sleep_for(options.interval);
      ActivitySample current = ActivitySample::read(admin, options.queueRows);
      ActivityFrame frame = ActivityFrame::between(previous, current);
      if (options.json) {
        frames.push_back(frame);
      } else {
        if (i > 0) std::cout << '\n';
        frame.render(std::cout, endpoint);
        std::cout.flush();
      }
      previous = std::move(current);
    }
    if (options.json) {
      std::cout << frames.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    }
    return 0;
  }

  RawTerminal terminal;
  while (!terminal.waitForQuit(options.interval)) {
    ActivitySample current = ActivitySample::read(admin, options.queueRows);
    std::ostringstream frameText;
    ActivityFrame::between(previous, current).render(frameText, endpoint);
    // Home, draw, then clear what is left of an older, longer frame: no flicker.
    std::string text = frameText.str();
    std::string drawn;
    for (char c : text) {
      if (c == '\n')
        drawn += "\x1b[K\r\n";
      else
        drawn += c;
    }
    std::cout << "\x1b[H" << drawn << "\x1b[J" << std::flush;
    previous = std::move(current);
  }
  return 0;
}

}  // namespace switchboard::ctl
