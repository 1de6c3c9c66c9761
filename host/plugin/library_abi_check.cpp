#include "plugin/library_abi_check.h"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/plugin_error.h"

namespace switchboard::plugin {

namespace {

#if defined(__x86_64__)
constexpr Elf64_Half kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr Elf64_Half kHostMachine = EM_AARCH64;
#else
#error "library_abi_check: add this machine's ELF e_machine"
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr unsigned char kHostByteOrder = ELFDATA2LSB;
#else
constexpr unsigned char kHostByteOrder = ELFDATA2MSB;
#endif

constexpr std::string_view kDescriptorSymbol = "switchboard_plugin_descriptor";

// The file's bytes, with every read bounds-checked: the file is untrusted.
class ElfBytes {
 public:
  explicit ElfBytes(std::vector<char> bytes) : bytes_(std::move(bytes)) {}

  template <class T>
  std::optional<T> read(std::uint64_t offset) const {
    if (offset > bytes_.size() || bytes_.size() - offset < sizeof(T)) return std::nullopt;
    T value;
    std::memcpy(&value, bytes_.data() + offset, sizeof(T));
    return value;
  }

  // The NUL-terminated string at `offset` inside [begin, begin + size).
  std::optional<std::string_view> string(std::uint64_t begin, std::uint64_t size,
                                         std::uint64_t offset) const {
    if (begin > bytes_.size() || bytes_.size() - begin < size || offset >= size) {
      return std::nullopt;
    }
    const char* start = bytes_.data() + begin + offset;
    const void* end = std::memchr(start, '\0', size - offset);
    if (end == nullptr) return std::nullopt;
    return std::string_view(start, static_cast<const char*>(end) - start);
  }

 private:
  std::vector<char> bytes_;
};

}  // namespace

void checkLibraryAbi(const std::filesystem::path& library) {
  const std::string name = library.string();
  std::ifstream in(library, std::ios::binary);
  if (!in) throw PluginError("abi-check: cannot read " + name);
  ElfBytes elf(std::vector<char>(std::istreambuf_iterator<char>(in), {}));

  auto header = elf.read<Elf64_Ehdr>(0);
  if (!header || std::memcmp(header->e_ident, ELFMAG, SELFMAG) != 0) {
    throw PluginError("not a shared object: " + name);
  }
  if (header->e_ident[EI_CLASS] != ELFCLASS64) {
    throw PluginError("abi-check: " + name + " is not a 64-bit ELF file");
  }
  if (header->e_ident[EI_DATA] != kHostByteOrder) {
    throw PluginError("abi-check: " + name + " has the wrong byte order for this host");
  }
  if (header->e_type != ET_DYN) {
    throw PluginError("abi-check: " + name + " is ELF type " + std::to_string(header->e_type) +
                      ", not a shared object (ET_DYN)");
  }
  if (header->e_machine != kHostMachine) {
    throw PluginError("abi-check: " + name + " is built for ELF machine " +
                      std::to_string(header->e_machine) + ", this host is " +
                      std::to_string(kHostMachine));
  }
  if (header->e_shentsize != sizeof(Elf64_Shdr)) {
    throw PluginError("abi-check: " + name + " has malformed section headers");
  }

  bool haveDynsym = false;
  bool exportsDescriptor = false;
  std::optional<std::string> uniqueSymbol;
  for (std::uint64_t i = 0; i < header->e_shnum; ++i) {
    auto section = elf.read<Elf64_Shdr>(header->e_shoff + i * sizeof(Elf64_Shdr));
    if (!section) throw PluginError("abi-check: " + name + " is truncated (section headers)");
    if (section->sh_type != SHT_DYNSYM) continue;
    haveDynsym = true;
    auto strings = elf.read<Elf64_Shdr>(header->e_shoff +
                                        std::uint64_t{section->sh_link} * sizeof(Elf64_Shdr));
    if (section->sh_link >= header->e_shnum || !strings ||
        section->sh_entsize != sizeof(Elf64_Sym)) {
      throw PluginError("abi-check: " + name + " has a malformed dynamic symbol table");
    }
    for (std::uint64_t s = 0; s < section->sh_size / sizeof(Elf64_Sym); ++s) {
      auto symbol = elf.read<Elf64_Sym>(section->sh_offset + s * sizeof(Elf64_Sym));
      if (!symbol) throw PluginError("abi-check: " + name + " is truncated (dynamic symbols)");
      if (symbol->st_shndx == SHN_UNDEF) continue;  // imported, not defined here
      auto symbolName = elf.string(strings->sh_offset, strings->sh_size, symbol->st_name);
      if (!symbolName) throw PluginError("abi-check: " + name + " has a malformed symbol name");
      if (*symbolName == kDescriptorSymbol) exportsDescriptor = true;
      if (ELF64_ST_BIND(symbol->st_info) == STB_GNU_UNIQUE && !uniqueSymbol) {
        uniqueSymbol = std::string(*symbolName);
      }
    }
  }
  if (!haveDynsym || !exportsDescriptor) {
    throw PluginError("no plugin descriptor (symbol switchboard_plugin_descriptor) in " + name);
  }
  if (uniqueSymbol) {
    throw PluginError("abi-check: " + name + " defines the STB_GNU_UNIQUE symbol " + *uniqueSymbol +
                      ", which glibc never unloads; build the plugin with -fno-gnu-unique");
  }
}

}  // namespace switchboard::plugin
