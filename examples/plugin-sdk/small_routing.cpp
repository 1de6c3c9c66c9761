// A routing plugin with no settings and no state: it refuses bodies over
// 4 KiB and otherwise routes as the production plugin does. configure,
// start, stop, exportState and importState are the SDK's defaults.
#include <switchboard/plugin_sdk.h>

using namespace switchboard::plugin;

class SmallRouting final : public RoutingPlugin {
 public:
  explicit SmallRouting(HostServices&) {}

  Decision route(const Envelope& envelope) override {
    if (envelope.to.empty()) return {Destination::reject, {}, "no recipient"};
    if (envelope.bodyBytes > 4096) return {Destination::reject, {}, "body over 4 KiB"};
    if (envelope.group != 0 && envelope.to == envelope.from) return {Destination::drop, {}, {}};
    if (envelope.recipientOnline) return {Destination::localSession, {}, {}};
    if (!envelope.recipientNode.empty())
      return {Destination::remoteNode, envelope.recipientNode, {}};
    return {Destination::offlineQueue, {}, {}};
  }

  SelfTestResult selfTest() override {
    Envelope big;
    big.from = "+15550000001";
    big.to = "+15550000002";
    big.bodyBytes = 5000;
    if (route(big).destination != Destination::reject) return {false, "a 5000-byte body passed"};
    Envelope small = big;
    small.bodyBytes = 10;
    if (route(small).destination != Destination::offlineQueue)
      return {false, "an offline recipient was not queued"};
    return {true, "small-routing self test passed"};
  }
};

SWITCHBOARD_PLUGIN_CLASS(SmallRouting, routing)
