// A plugin shared object: checked and copied to an immutable path on disk,
// mapped into a process, and the instances made from it.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <boost/dll/shared_library.hpp>

#include "switchboard/plugin_api.h"

namespace switchboard::plugin {

// ---------------------------------------------------------------- staging

// A library file copied to its content-addressed place under the data dir.
struct StagedLibrary {
  std::filesystem::path path;  // <dataDir>/plugins/<kind>/<sha256>.so (or <version>-<sha>.so)
  std::string sha256;          // lowercase hex of the file's bytes
};

// Checks that `source` is a readable ELF file, hashes it and copies it to
// <pluginDir>/<sha256>.so (read-only, written under a temporary name and
// renamed, so a path always holds the same bytes). Reuses an existing copy.
// Throws PluginError ("not a shared object: <path>", "no such file: <path>").
StagedLibrary stageLibrary(const std::filesystem::path& source,
                           const std::filesystem::path& pluginDir);

// Gives a staged copy its final name <version>-<sha256>.so in the same dir
// (hard link, so the staged path is not reused for other bytes). Throws
// PluginError if `version` is not a safe file-name component.
std::filesystem::path finalLibraryPath(const StagedLibrary& staged, std::string_view version);

std::string sha256Hex(const std::filesystem::path& file);

// ---------------------------------------------------------------- mapping

// One mapped library and its descriptor. Shared by everything made from it:
// the library is unmapped when the last PluginLibrary reference goes, which
// happens only after every instance made from it was destroyed (each
// PluginInstance holds a reference). Immutable after open; thread-safe.
class PluginLibrary {
 public:
  // dlopen (RTLD_NOW | RTLD_LOCAL) and look up the descriptor. Checks the ABI
  // version and, when `expected` is given, the kind. Throws PluginError.
  // Note: dlopen runs the library's static constructors: only call this on a
  // library that passed its canary (or inside the canary child itself).
  static std::shared_ptr<PluginLibrary> open(const std::filesystem::path& path, Kind expected);

  const Descriptor& descriptor() const { return *descriptor_; }
  const std::filesystem::path& path() const { return path_; }
  std::string version() const { return descriptor_->version ? descriptor_->version : ""; }
  std::string buildId() const { return descriptor_->buildId ? descriptor_->buildId : ""; }

  PluginLibrary(boost::dll::shared_library library, const Descriptor* descriptor,
                std::filesystem::path path);

 private:
  boost::dll::shared_library library_;
  const Descriptor* descriptor_;
  std::filesystem::path path_;
};

// One plugin object. Owns it (destroyed through the descriptor's destroy, in
// the library that made it) and keeps the library mapped until then. Not
// copyable; the methods of the Plugin are called by the owner.
class PluginInstance {
 public:
  // Calls descriptor.create(host). Throws PluginError if create throws or
  // returns null. `host` must outlive the instance.
  PluginInstance(std::shared_ptr<PluginLibrary> library, HostServices& host);
  ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  Plugin& plugin() const { return *plugin_; }
  const PluginLibrary& library() const { return *library_; }

 private:
  std::shared_ptr<PluginLibrary> library_;  // declared first: outlives plugin_
  Plugin* plugin_;                          // owned; freed by descriptor().destroy
};

}  // namespace switchboard::plugin
