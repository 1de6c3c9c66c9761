// The host's flags and config file: what parses, what wins, what is refused.
#include "host_config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace switchboard {
namespace {

using Outcome = ParsedConfig::Outcome;

ParsedConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "switchboard");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return parseHostConfig(static_cast<int>(argv.size()), argv.data());
}

// A config file in a fresh temporary directory, removed at the end of the test.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) { std::ofstream(path()) << text; }
  std::string path() const { return (dir_.path() / "switchboard.toml").string(); }

 private:
  testing::TempDir dir_;
};

TEST(HostConfig, DefaultsAreTheEmbeddedSingleNodeSetup) {
  ParsedConfig parsed = parse({});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.listen, "127.0.0.1:5222");
  EXPECT_EQ(parsed.config.dataDir, "var");
  EXPECT_EQ(parsed.config.adminSocket, "var/admin.sock");
  EXPECT_EQ(parsed.config.threads, 0u);
  EXPECT_TRUE(parsed.config.pluginSettings.empty());
  EXPECT_EQ(parsed.config.cluster, "");  // single node: no NATS
}

TEST(HostConfig, TlsCertAndKeyComeTogetherFromTheFlagsOrTheFile) {
  ParsedConfig parsed = parse({"--tls-cert", "/etc/sb/cert.pem", "--tls-key", "/etc/sb/key.pem"});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.tlsCert, "/etc/sb/cert.pem");
  EXPECT_EQ(parsed.config.tlsKey, "/etc/sb/key.pem");
  ConfigFile file("tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n");
  parsed = parse({"--config", file.path()});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.tlsCert, "c.pem");
  EXPECT_EQ(parsed.config.tlsKey, "k.pem");
  EXPECT_TRUE(parse({}).config.tlsCert.empty());  // plaintext by default
  parsed = parse({"--tls-cert", "/etc/sb/cert.pem"});
  EXPECT_EQ(parsed.outcome, Outcome::error);
  EXPECT_EQ(parsed.text, "tls-cert and tls-key go together: give both, or neither for plaintext");
}

TEST(HostConfig, ClusterTakesANatsUrlFromTheFlagOrTheFile) {
  ParsedConfig parsed = parse({"--cluster", "nats://127.0.0.1:4222", "--node-name", "n2"});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.cluster, "nats://127.0.0.1:4222");
  EXPECT_EQ(parsed.config.nodeName, "n2");
  ConfigFile file("cluster = \"nats://10.0.0.1:4222\"\nnode-name = \"n3\"\n");
  parsed = parse({"--config", file.path()});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.cluster, "nats://10.0.0.1:4222");
  EXPECT_EQ(parsed.config.nodeName, "n3");
  parsed = parse({"--cluster", "127.0.0.1:4222"});
  EXPECT_EQ(parsed.outcome, Outcome::error);
  EXPECT_EQ(parsed.text, "--cluster wants nats://HOST:PORT, got '127.0.0.1:4222'");
}

TEST(HostConfig, TheAdminSocketFollowsTheDataDirUnlessPlacedOnPurpose) {
  EXPECT_EQ(parse({"--data-dir", "/srv/sb"}).config.adminSocket, "/srv/sb/admin.sock");
  EXPECT_EQ(parse({"--data-dir", "/srv/sb", "--admin-socket", "/run/sb.sock"}).config.adminSocket,
            "/run/sb.sock");
  EXPECT_EQ(parse({"--admin-socket", ""}).config.adminSocket, "");  // none
  ConfigFile file("data-dir = \"/srv/a\"\nadmin-socket = \"/run/a.sock\"\n");
  EXPECT_EQ(parse({"--config", file.path()}).config.adminSocket, "/run/a.sock");
  ConfigFile dirOnly("data-dir = \"/srv/b\"\n");
  EXPECT_EQ(parse({"--config", dirOnly.path()}).config.adminSocket, "/srv/b/admin.sock");
}

TEST(HostConfig, FlagsSetEveryField) {
  ParsedConfig parsed = parse({"--listen", "127.0.0.1:6000", "--data-dir", "/tmp/x", "--threads",
                               "3", "--log-level", "debug", "--plugin-setting",
                               "auth.code-ttl-seconds=5", "--session-queue-limit", "77"});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.listen, "127.0.0.1:6000");
  EXPECT_EQ(parsed.config.dataDir, "/tmp/x");
  EXPECT_EQ(parsed.config.threads, 3u);
  EXPECT_EQ(parsed.config.logLevel, "debug");
  EXPECT_EQ(parsed.config.sessionQueueLimit, 77u);
  ASSERT_EQ(parsed.config.pluginSettings["auth"].size(), 1u);
  EXPECT_EQ(parsed.config.pluginSettings["auth"][0].first, "code-ttl-seconds");
  EXPECT_EQ(parsed.config.pluginSettings["auth"][0].second, "5");
}

TEST(HostConfig, TheFileFillsInAndFlagsWin) {
  ConfigFile file(
      "listen = \"127.0.0.1:7000\"\n"
      "threads = 4\n"
      "data-dir = \"/srv/sb\"\n"
      "[plugin.offline]\n"
      "ttl-seconds = 3600\n"
      "[plugin.presence]\n"
      "require-mutual-contacts = false\n");
  ParsedConfig parsed = parse({"--config", file.path(), "--threads", "2"});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.listen, "127.0.0.1:7000");
  EXPECT_EQ(parsed.config.dataDir, "/srv/sb");
  EXPECT_EQ(parsed.config.threads, 2u);  // the flag wins over the file
  ASSERT_EQ(parsed.config.pluginSettings["offline"].size(), 1u);
  EXPECT_EQ(parsed.config.pluginSettings["offline"][0].second, "3600");
  EXPECT_EQ(parsed.config.pluginSettings["presence"][0].second, "false");
}

TEST(HostConfig, BadInputIsOneClearError) {
  struct Case {
    std::vector<std::string> args;
    std::string contains;
  };
  std::vector<Case> cases = {
      {{"--bogus"}, "--bogus"},
      {{"--threads", "many"}, "threads"},
      {{"--threads", "1000"}, "--threads must be between 0 and 256"},
      {{"--log-level", "loud"}, "loud"},
      {{"--plugin-setting", "auth"}, "KIND.KEY=VALUE"},
      {{"--plugin-setting", "billing.x=1"}, "unknown plugin kind 'billing'"},
      {{"--config", "/nonexistent/switchboard.toml"}, "/nonexistent/switchboard.toml"},
  };
  for (const Case& c : cases) {
    ParsedConfig parsed = parse(c.args);
    EXPECT_EQ(parsed.outcome, Outcome::error) << c.args[0];
    EXPECT_NE(parsed.text.find(c.contains), std::string::npos) << parsed.text;
    EXPECT_EQ(parsed.text.find('\n'), std::string::npos) << "one line: " << parsed.text;
  }
}

TEST(HostConfig, BadFilesNameTheKeyOrLine) {
  ConfigFile unknown("colour = \"blue\"\n");
  ParsedConfig parsed = parse({"--config", unknown.path()});
  EXPECT_EQ(parsed.outcome, Outcome::error);
  EXPECT_NE(parsed.text.find("unknown key 'colour'"), std::string::npos) << parsed.text;

  ConfigFile wrongType("threads = \"two\"\n");
  parsed = parse({"--config", wrongType.path()});
  EXPECT_EQ(parsed.outcome, Outcome::error);
  EXPECT_NE(parsed.text.find("'threads' has the wrong type"), std::string::npos) << parsed.text;

  ConfigFile broken("listen = \n");
  parsed = parse({"--config", broken.path()});
  EXPECT_EQ(parsed.outcome, Outcome::error);
  EXPECT_NE(parsed.text.find("line 1"), std::string::npos) << parsed.text;
}

TEST(HostConfig, HelpAndVersionArePrintedNotErrors) {
  EXPECT_EQ(parse({"--help"}).outcome, Outcome::print);
  ParsedConfig version = parse({"--version"});
  EXPECT_EQ(version.outcome, Outcome::print);
  EXPECT_NE(version.text.find("switchboard"), std::string::npos);
}

TEST(HostConfig, LogOptionsAreCheckedInTheFileToo) {
  ParsedConfig parsed = parse({"--log-file", "/tmp/sb.log", "--log-format", "json",
                               "--log-max-bytes", "8192", "--log-max-files", "3"});
  ASSERT_EQ(parsed.outcome, Outcome::run) << parsed.text;
  EXPECT_EQ(parsed.config.logFile, "/tmp/sb.log");
  EXPECT_EQ(parsed.config.logFormat, "json");
  EXPECT_EQ(parsed.config.logMaxBytes, 8192u);
  EXPECT_EQ(parsed.config.logMaxFiles, 3u);
  EXPECT_EQ(parse({"--log-format", "xml"}).outcome, Outcome::error);
  ConfigFile badFormat("log-format = \"xml\"\n");
  EXPECT_EQ(parse({"--config", badFormat.path()}).text,
            "log-format must be text or json, got 'xml'");
  ConfigFile badLevel("log-level = \"loud\"\n");
  EXPECT_EQ(parse({"--config", badLevel.path()}).text,
            "log-level must be debug, info, warn or error, got 'loud'");
  EXPECT_EQ(parse({"--log-max-bytes", "100"}).text,
            "log-max-bytes must be at least 4096 and log-max-files at least 1");
}

TEST(HostConfig, ChangedSettingsNamesEachKeyAndPluginKindThatDiffers) {
  ConfigFile before("log-level = \"info\"\n[plugin.auth]\nmax-attempts = 5\n");
  ConfigFile after(
      "log-level = \"debug\"\nlisten = \"127.0.0.1:7000\"\n"
      "[plugin.presence]\nrequire-mutual-contacts = false\n");
  HostConfig a = parse({"--config", before.path()}).config;
  HostConfig b = parse({"--config", after.path()}).config;
  EXPECT_EQ(changedSettings(a, a), std::vector<std::string>{});
  const std::vector<std::string> changed = changedSettings(a, b);
  EXPECT_EQ(changed,
            (std::vector<std::string>{"listen", "log-level", "plugin.auth", "plugin.presence"}));
  for (const std::string& key : changed) copySetting(key, b, a);
  EXPECT_EQ(changedSettings(a, b), std::vector<std::string>{});
  EXPECT_EQ(a.logLevel, "debug");
  EXPECT_FALSE(a.pluginSettings.contains("auth"));
}

}  // namespace
}  // namespace switchboard
