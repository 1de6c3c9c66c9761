#include "plugin/plugin_library.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "plugin/plugin_error.h"

namespace switchboard::plugin {

namespace fs = std::filesystem;

namespace {

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 15]);
  }
  return out;
}

bool safeVersion(std::string_view version) {
  if (version.empty() || version.size() > 64) return false;
  for (char c : version) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '-' || c == '+' || c == '_';
    if (!ok) return false;
  }
  return version != "." && version != "..";
}

}  // namespace

// ---------------------------------------------------------------- staging

std::string sha256Hex(const fs::path& file) {
  if (sodium_init() < 0) throw PluginError("libsodium failed to initialise");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw PluginError("cannot read " + file.string());
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  std::array<char, 1 << 16> buffer;
  while (in) {
    in.read(buffer.data(), buffer.size());
    auto got = in.gcount();
    if (got > 0) {
      crypto_hash_sha256_update(&state, reinterpret_cast<const unsigned char*>(buffer.data()),
                                static_cast<unsigned long long>(got));
    }
  }
  if (in.bad()) throw PluginError("read error on " + file.string());
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest;
  crypto_hash_sha256_final(&state, digest.data());
  return hex(digest.data(), digest.size());
}

StagedLibrary stageLibrary(const fs::path& source, const fs::path& pluginDir) {
  std::error_code ec;
  auto status = fs::status(source, ec);
  if (ec || !fs::exists(status)) throw PluginError("no such file: " + source.string());
  if (!fs::is_regular_file(status)) throw PluginError("not a regular file: " + source.string());
  {
    std::ifstream in(source, std::ios::binary);
    if (!in) throw PluginError("cannot read " + source.string() + ": " + std::strerror(errno));
    std::array<char, 4> magic{};
    in.read(magic.data(), magic.size());
    if (in.gcount() != 4 || std::memcmp(magic.data(),
                                        "\x7f"
                                        "ELF",
                                        4) != 0) {
      throw PluginError("not a shared object: " + source.string());
    }
  }
  StagedLibrary staged;
  staged.sha256 = sha256Hex(source);
  fs::create_directories(pluginDir, ec);
  if (ec) throw PluginError("cannot create " + pluginDir.string() + ": " + ec.message());
  staged.path = pluginDir / (staged.sha256 + ".so");
  if (fs::exists(staged.path, ec)) return staged;

  // Copy under a unique temporary name, then rename: the content-addressed
  // name only ever appears holding the complete bytes.
  static std::atomic<unsigned> counter{0};
  fs::path temp = pluginDir / (".incoming-" + std::to_string(::getpid()) + "-" +
                               std::to_string(counter.fetch_add(1)) + ".tmp");
  fs::copy_file(source, temp, fs::copy_options::overwrite_existing, ec);
  if (ec) throw PluginError("cannot copy " + source.string() + ": " + ec.message());
  fs::permissions(temp,
                  fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read |
                      fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                  ec);
  // The copy must hash the same as what was checked: the source may have
  // changed in between (a build writing it).
  if (sha256Hex(temp) != staged.sha256) {
    fs::remove(temp, ec);
    throw PluginError("file changed while being copied: " + source.string());
  }
  fs::rename(temp, staged.path, ec);
  if (ec) {
    fs::remove(temp, ec);
    throw PluginError("cannot place " + staged.path.string() + ": " + ec.message());
  }
  return staged;
}

fs::path finalLibraryPath(const StagedLibrary& staged, std::string_view version) {
  if (!safeVersion(version)) {
    throw PluginError("invalid version string \"" + std::string(version).substr(0, 80) + "\"");
  }
  fs::path target =
      staged.path.parent_path() / (std::string(version) + "-" + staged.sha256 + ".so");
  std::error_code ec;
  if (fs::exists(target, ec)) return target;
  fs::create_hard_link(staged.path, target, ec);
  if (ec) fs::copy_file(staged.path, target, ec);
  if (ec) throw PluginError("cannot place " + target.string() + ": " + ec.message());
  return target;
}

// ---------------------------------------------------------------- mapping

PluginLibrary::PluginLibrary(boost::dll::shared_library library, const Descriptor* descriptor,
                             fs::path path)
    : library_(std::move(library)), descriptor_(descriptor), path_(std::move(path)) {}

std::shared_ptr<PluginLibrary> PluginLibrary::open(const fs::path& path, Kind expected) {
  boost::dll::shared_library library;
  try {
    library.load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw PluginError("cannot load " + path.string() + ": " + e.what());
  }
  if (!library.has(kDescriptorSymbol)) {
    throw PluginError("no plugin descriptor (symbol " + std::string(kDescriptorSymbol) + ") in " +
                      path.string());
  }
  using DescriptorFn = const Descriptor*();
  const Descriptor* descriptor = nullptr;
  try {
    descriptor = library.get_alias<DescriptorFn>(kDescriptorSymbol)();
  } catch (const std::exception& e) {
    throw PluginError("descriptor lookup failed in " + path.string() + ": " + e.what());
  }
  if (descriptor == nullptr) throw PluginError("plugin descriptor is null in " + path.string());
  if (descriptor->abiVersion != kAbiVersion) {
    throw PluginError("ABI version mismatch: library has " +
                      std::to_string(descriptor->abiVersion) + ", host expects " +
                      std::to_string(kAbiVersion));
  }
  if (descriptor->kind != expected) {
    throw PluginError("kind mismatch: library is of kind " +
                      std::string(kindName(descriptor->kind)) + ", slot is " +
                      std::string(kindName(expected)));
  }
  if (descriptor->create == nullptr || descriptor->destroy == nullptr ||
      descriptor->version == nullptr) {
    throw PluginError("incomplete plugin descriptor in " + path.string());
  }
  return std::make_shared<PluginLibrary>(std::move(library), descriptor, path);
}

PluginInstance::PluginInstance(std::shared_ptr<PluginLibrary> library, HostServices& host)
    : library_(std::move(library)), plugin_(nullptr) {
  try {
    plugin_ = library_->descriptor().create(host);
  } catch (const std::exception& e) {
    throw PluginError("create failed: " + std::string(e.what()));
  } catch (...) {
    throw PluginError("create failed: unknown exception");
  }
  if (plugin_ == nullptr) throw PluginError("create returned no instance");
}

PluginInstance::~PluginInstance() {
  try {
    library_->descriptor().destroy(plugin_);
  } catch (...) {
    // Never let a plugin's destructor take the host down.
  }
}

}  // namespace switchboard::plugin
