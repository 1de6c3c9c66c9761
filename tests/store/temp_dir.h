// A fresh directory under /tmp for one test, removed with everything in it.
#pragma once

#include <filesystem>

namespace switchboard::store::testing {

// Created by mkdtemp in the constructor, removed recursively in the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace switchboard::store::testing
