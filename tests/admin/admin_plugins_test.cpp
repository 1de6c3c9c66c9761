// Admin plugin calls against a real host: status, load with progress,
// rollback, the ledger, and refusals.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "admin_test_host.h"

namespace switchboard::admin::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kPlugins = SWITCHBOARD_TEST_PLUGIN_DIR;

struct Operation {
  bool ok = false;
  std::string error;
  std::string from;
  std::string to;
  std::string sha256;
};

Operation toOperation(proto::PluginOperation::Reader result) {
  return {result.getOk(), result.getError().cStr(), result.getFromVersion().cStr(),
          result.getToVersion().cStr(), result.getSha256().cStr()};
}

struct Kind {
  std::string kind, state, version;
  std::vector<std::string> versions;
  std::uint64_t swaps = 0;
};

// Steps heard by the test's PluginProgress, on the client thread.
class RecordingProgress final : public proto::PluginProgress::Server {
 public:
  explicit RecordingProgress(std::shared_ptr<std::vector<std::string>> steps)
      : steps_(std::move(steps)) {}

 protected:
  kj::Promise<void> step(StepContext context) override {
    steps_->push_back(context.getParams().getName().cStr());
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<std::vector<std::string>> steps_;
};

class AdminPluginsTest : public AdminHostTest {
 protected:
  Operation load(const std::string& kind, const std::string& path,
                 std::shared_ptr<std::vector<std::string>> steps = nullptr) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.loadPluginRequest();
      request.setKind(kind);
      request.setPath(path);
      if (steps) request.setProgress(kj::heap<RecordingProgress>(steps));
      return request.send().then([](auto&& r) { return toOperation(r.getResult()); });
    });
  }
  Operation rollback(const std::string& kind, const std::string& version) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.rollbackPluginRequest();
      request.setKind(kind);
      request.setVersion(version);
      return request.send().then([](auto&& r) { return toOperation(r.getResult()); });
    });
  }
  std::map<std::string, Kind> plugins() {
    return client->admin([&](proto::Admin::Client& admin) {
      return admin.pluginsRequest().send().then([](auto&& r) {
        std::map<std::string, Kind> out;
        for (auto p : r.getPlugins()) {
          Kind k{p.getKind().cStr(), p.getState().cStr(), p.getVersion().cStr(), {}, p.getSwaps()};
          for (auto v : p.getVersions()) k.versions.push_back(v.getVersion().cStr());
          out[k.kind] = k;
        }
        return out;
      });
    });
  }
  // (result, toVersion, actor) of the ledger rows, newest first.
  std::vector<std::string> history(const std::string& kind) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.pluginHistoryRequest();
      request.setKind(kind);
      return request.send().then([](auto&& r) {
        std::vector<std::string> rows;
        for (auto e : r.getEntries()) {
          rows.push_back(std::string(e.getResult().cStr()) + " " + e.getToVersion().cStr() + " " +
                         e.getActor().cStr());
        }
        return rows;
      });
    });
  }
};

TEST_F(AdminPluginsTest, StatusShowsTheHostAndEveryKindServing) {
  struct Status {
    std::string version, node, endpoint, dataDir;
    std::uint32_t threads = 0;
    std::vector<std::string> plugins;
  };
  auto status = client->admin([&](proto::Admin::Client& admin) {
    return admin.statusRequest().send().then([](auto&& r) {
      auto s = r.getStatus();
      Status out{s.getVersion().cStr(), s.getNode().cStr(), s.getClientEndpoint().cStr(),
                 s.getDataDir().cStr(), s.getThreads(),     {}};
      for (auto p : s.getPlugins()) {
        out.plugins.push_back(std::string(p.getKind().cStr()) + " " + p.getState().cStr() + " " +
                              p.getVersion().cStr());
      }
      return out;
    });
  });
  EXPECT_FALSE(status.version.empty());
  EXPECT_EQ(status.node, "node1");
  EXPECT_EQ(status.endpoint, host->clientEndpoint());
  EXPECT_EQ(status.dataDir, (dir.path() / "var").string());
  EXPECT_EQ(status.threads, 2u);
  EXPECT_THAT(status.plugins, ElementsAre("routing serving 1.0.0", "auth serving 1.0.0",
                                          "presence serving 1.0.0", "offline serving 1.0.0"));
}

TEST_F(AdminPluginsTest, LoadNextVersionReportsEachStepThenRollsBack) {
  auto steps = std::make_shared<std::vector<std::string>>();
  auto loaded = load("routing", kPlugins + "/routing/librouting-next.so", steps);
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.from, "1.0.0");
  EXPECT_EQ(loaded.to, "1.1.0");
  EXPECT_EQ(loaded.sha256.size(), 64u);
  // Every step is answered before the load's own answer.
  EXPECT_THAT(*steps, ElementsAre("copy", "abi-check", "canary", "swap", "probation", "done"));

  auto kinds = plugins();
  EXPECT_EQ(kinds["routing"].version, "1.1.0");
  EXPECT_EQ(kinds["routing"].state, "probation");
  EXPECT_THAT(kinds["routing"].versions, ElementsAre("1.1.0", "1.0.0"));
  EXPECT_EQ(kinds["routing"].swaps, 2u);  // the startup load is the first
  EXPECT_EQ(kinds["auth"].version, "1.0.0");

  auto back = rollback("routing", "");
  ASSERT_TRUE(back.ok) << back.error;
  EXPECT_EQ(back.from, "1.1.0");
  EXPECT_EQ(back.to, "1.0.0");
  EXPECT_EQ(plugins()["routing"].version, "1.0.0");

  auto forward = rollback("routing", "1.1.0");
  ASSERT_TRUE(forward.ok) << forward.error;
  EXPECT_EQ(plugins()["routing"].version, "1.1.0");

  EXPECT_THAT(history("routing"), ElementsAre("rolled_back 1.1.0 admin", "rolled_back 1.0.0 admin",
                                              "swapped 1.1.0 admin", "loaded 1.0.0 startup"));
  EXPECT_EQ(history("").size(), 7u);  // the four startup loads too
}

TEST_F(AdminPluginsTest, LoadRunsOffTheAdminThread) {
  // A status call sent right behind a load on the same connection is answered
  // while the load (copy, canary process, swap) is still running.
  plugins();  // the bootstrap capability is resolved before the calls that race
  auto order = client->admin([&](proto::Admin::Client& admin) {
    auto finished = std::make_shared<std::vector<std::string>>();
    auto load = admin.loadPluginRequest();
    load.setKind("presence");
    load.setPath(kPlugins + "/presence/libpresence-next.so");
    auto loaded = load.send()
                      .then([finished](auto&& r) {
                        KJ_REQUIRE(r.getResult().getOk(), r.getResult().getError());
                        finished->push_back("load");
                      })
                      .eagerlyEvaluate(nullptr);
    auto status = admin.statusRequest()
                      .send()
                      .then([finished](auto&&) { finished->push_back("status"); })
                      .eagerlyEvaluate(nullptr);
    return loaded.then([status = kj::mv(status)]() mutable { return kj::mv(status); })
        .then([finished] { return *finished; });
  });
  EXPECT_THAT(order, ElementsAre("status", "load"));
  EXPECT_EQ(plugins()["presence"].version, "1.1.0");
}

TEST_F(AdminPluginsTest, RefusedLoadIsAnAnswerNotAnError) {
  auto steps = std::make_shared<std::vector<std::string>>();
  // An auth build offered as routing: the canary refuses it.
  auto refused = load("routing", kPlugins + "/auth/libauth.so", steps);
  EXPECT_FALSE(refused.ok);
  EXPECT_FALSE(refused.error.empty());
  ASSERT_FALSE(steps->empty());
  EXPECT_EQ(steps->back(), "refused");
  EXPECT_EQ(plugins()["routing"].version, "1.0.0");
  EXPECT_THAT(history("routing").front(), HasSubstr("rejected"));
}

TEST_F(AdminPluginsTest, RefusesUnknownKindMissingFileAndUnloadedVersion) {
  EXPECT_THAT(refusal([&] { load("routin", kPlugins + "/routing/librouting-next.so"); }),
              HasSubstr("no plugin kind 'routin': expected routing, auth, presence or offline"));
  EXPECT_THAT(refusal([&] { load("routing", (dir.path() / "missing.so").string()); }),
              HasSubstr("no file " + (dir.path() / "missing.so").string()));
  EXPECT_THAT(refusal([&] { rollback("routing", "9.9.9"); }),
              HasSubstr("version 9.9.9 of routing is not loaded (loaded: 1.0.0)"));
  // No previous version is an answer (recorded in the ledger), not an RPC error.
  auto nothing = rollback("presence", "");
  EXPECT_FALSE(nothing.ok);
  EXPECT_THAT(nothing.error, HasSubstr("no previous presence version"));
  EXPECT_THAT(refusal([&] { history("bogus"); }), HasSubstr("no plugin kind 'bogus'"));
  // Nothing changed, and refusals before the operation leave no ledger row.
  EXPECT_EQ(history("routing").size(), 1u);
}

}  // namespace
}  // namespace switchboard::admin::testing
