// The "abi-check" step of a load: what can be proven about a plugin library
// from its bytes alone, before any of its code runs anywhere (the canary, which
// runs it in a child process, comes next and checks the descriptor's ABI
// version and kind).
#pragma once

#include <filesystem>

namespace switchboard::plugin {

// Reads the ELF file at `library` (never maps or runs it) and checks that:
// - it is a shared object for this host: 64-bit, the host's byte order and
//   machine, ELF type ET_DYN;
// - its dynamic symbol table defines the descriptor alias
//   `switchboard_plugin_descriptor` (SWITCHBOARD_PLUGIN);
// - it defines no STB_GNU_UNIQUE symbol: glibc never unloads a library that
//   has one, so an old version would stay mapped forever (plugins are built
//   with -fno-gnu-unique).
// Throws PluginError with one sentence naming what is wrong.
void checkLibraryAbi(const std::filesystem::path& library);

}  // namespace switchboard::plugin
