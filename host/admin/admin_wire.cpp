#include "admin/admin_wire.h"

#include "messaging/field_rules.h"

namespace switchboard::admin {

using messaging::refuse;

plugin::Kind requireKind(capnp::Text::Reader name) {
  std::string kind(name.cStr(), name.size());
  auto parsed = plugin::parseKind(kind);
  if (!parsed) {
    refuse("no plugin kind '" + kind + "': expected routing, auth, presence or offline");
  }
  return *parsed;
}

std::string requireAdminPhone(capnp::Text::Reader phone) {
  std::string value(phone.cStr(), phone.size());
  messaging::requirePhone(value, "phone");
  return value;
}

std::string requirePhonePrefix(capnp::Text::Reader prefix) {
  std::string value(prefix.cStr(), prefix.size());
  if (value.empty()) return value;
  bool ok = value[0] == '+' && value.size() <= 16;
  for (std::size_t i = 1; ok && i < value.size(); ++i) ok = value[i] >= '0' && value[i] <= '9';
  if (!ok) refuse("phone prefix '" + value + "' is not '+' followed by up to 15 digits");
  return value;
}

std::size_t requireLimit(std::uint32_t limit, std::size_t fallback) {
  if (limit == 0) return fallback;
  if (limit > kMaxListLimit) {
    refuse("limit " + std::to_string(limit) + " is above the maximum of " +
           std::to_string(kMaxListLimit));
  }
  return limit;
}

void fillPluginStatus(proto::PluginStatus::Builder out, const plugin::KindStatus& status) {
  std::string kind(plugin::kindName(status.kind));
  out.setKind(text(kind));
  out.setState(text(status.state));
  if (status.currentVersion) out.setVersion(text(*status.currentVersion));
  out.setBuildId(text(status.currentBuildId));
  out.setSha256(text(status.currentSha256));
  out.setProbationRemainingMs(status.probationRemainingMs);
  auto versions = out.initVersions(static_cast<unsigned>(status.versions.size()));
  for (unsigned i = 0; i < status.versions.size(); ++i) {
    const auto& v = status.versions[i];
    versions[i].setVersion(text(v.version));
    versions[i].setBuildId(text(v.buildId));
    versions[i].setSha256(text(v.sha256));
    versions[i].setCurrent(v.current);
    versions[i].setCalls(v.calls);
    versions[i].setErrors(v.errors);
    versions[i].setP50Ns(v.p50Ns);
    versions[i].setP99Ns(v.p99Ns);
  }
  out.setSwaps(status.swaps);
  out.setPauseP50Us(status.pauseP50Us);
  out.setPauseP99Us(status.pauseP99Us);
  out.setPauseMaxUs(status.pauseMaxUs);
}

void fillOperation(proto::PluginOperation::Builder out, const plugin::OperationResult& result) {
  out.setOk(result.ok);
  out.setError(text(result.error));
  out.setFromVersion(text(result.fromVersion));
  out.setToVersion(text(result.toVersion));
  out.setSha256(text(result.sha256));
  out.setPauseUs(result.pauseUs);
}

}  // namespace switchboard::admin
