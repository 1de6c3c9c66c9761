#include "plugin_swapper.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <chrono>
#include <exception>

#include "admin_client.h"
#include "rolling_upgrade.h"
#include "switchboard/proto/admin.capnp.h"

namespace switchboard::bench {

PluginSwapper::PluginSwapper(std::filesystem::path adminSocket)
    : adminSocket_(std::move(adminSocket)) {}

SwapFigures PluginSwapper::swapEach(const std::filesystem::path& pluginDir, std::uint32_t rounds) {
  SwapFigures figures;
  auto fail = [&figures](const std::string& why) {
    ++figures.failed;
    if (figures.firstFailure.empty()) figures.firstFailure = why;
  };
  try {
    auto io = kj::setupAsyncIo();
    auto address = io.provider->getNetwork()
                       .parseAddress(kj::str("unix:", adminSocket_.c_str()))
                       .wait(io.waitScope);
    auto stream = address->connect().wait(io.waitScope);
    capnp::TwoPartyClient client(*stream);
    auto admin = client.bootstrap().castAs<proto::Admin>();
    for (std::uint32_t round = 0; round < rounds; ++round) {
      for (const char* kind : {"routing", "auth", "presence", "offline"}) {
        auto next = pluginDir / kind / (std::string("lib") + kind + "-next.so");
        try {
          auto load = admin.loadPluginRequest();
          load.setKind(kind);
          load.setPath(next.string());
          auto loaded = load.send().wait(io.waitScope);
          auto op = loaded.getResult();
          if (op.getOk()) {
            ++figures.ok;
            figures.pausesUs.push_back(op.getPauseUs());
          } else {
            fail(std::string(kind) + " load: " + op.getError().cStr());
            continue;
          }
          auto back = admin.rollbackPluginRequest();
          back.setKind(kind);
          back.setVersion("");
          auto rolled = back.send().wait(io.waitScope);
          auto rop = rolled.getResult();
          if (rop.getOk()) {
            ++figures.ok;
            figures.pausesUs.push_back(rop.getPauseUs());
          } else {
            fail(std::string(kind) + " rollback: " + rop.getError().cStr());
          }
        } catch (const kj::Exception& e) {
          fail(std::string(kind) + ": " + e.getDescription().cStr());
        }
      }
    }
  } catch (const kj::Exception& e) {
    fail(std::string("admin socket: ") + e.getDescription().cStr());
  } catch (const std::exception& e) {
    fail(std::string("admin socket: ") + e.what());
  }
  return figures;
}

SwapFigures PluginSwapper::upgradeCluster(const std::filesystem::path& pluginDir,
                                          std::uint32_t rounds) {
  SwapFigures figures;
  auto fail = [&figures](const std::string& why) {
    ++figures.failed;
    if (figures.firstFailure.empty()) figures.firstFailure = why;
  };
  auto count = [&](const std::string& what, const ctl::NodeOperation& step) {
    if (step.answered && step.result.ok) {
      ++figures.ok;
      figures.pausesUs.push_back(step.result.pauseUs);
    } else {
      fail(what + " on " + step.node + ": " + step.result.error);
    }
  };
  try {
    ctl::AdminClient admin(ctl::AdminClientOptions{adminSocket_.string()});
    constexpr std::chrono::milliseconds kNodeTimeout{120000};
    for (std::uint32_t round = 0; round < rounds; ++round) {
      for (const char* kind : {"routing", "auth", "presence", "offline"}) {
        auto next = pluginDir / kind / (std::string("lib") + kind + "-next.so");
        try {
          // What `sbctl cluster upgrade KIND NEXT` runs: node by node, each after its probation.
          auto report =
              ctl::rollingUpgrade(admin, {kind, next.string(), {}, kNodeTimeout}, nullptr);
          for (const auto& step : report.steps) count(std::string(kind) + " upgrade", step.load);
          if (!report.ok) continue;  // the nodes it reached are counted; rolled back below anyway
          for (const auto& step : admin.rollbackPluginOnNodes("all", kind, "", kNodeTimeout)) {
            count(std::string(kind) + " rollback", step);
          }
        } catch (const std::exception& e) {
          fail(std::string(kind) + ": " + e.what());
        }
      }
    }
  } catch (const std::exception& e) {
    fail(std::string("admin socket: ") + e.what());
  }
  return figures;
}

}  // namespace switchboard::bench
