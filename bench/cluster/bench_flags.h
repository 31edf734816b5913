// Command-line flags shared by the cluster benchmarks (bench_cluster, bench_rebalance,
// bench_chaos): `--name value` pairs parsed into typed variables.
//
//   BenchFlags flags("bench_chaos");
//   flags.Add("--url", &url);
//   flags.Add("--concurrency", &concurrency);
//   flags.Parse(argc, argv);  // exits 1 naming an unknown flag or a bad / missing value
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace moemesh::bench {

class BenchFlags {
 public:
  explicit BenchFlags(std::string program) : program_(std::move(program)) {}

  void Add(const std::string& name, std::string* value) {
    setters_[name] = [value](const std::string& text) {
      *value = text;
      return true;
    };
  }
  void Add(const std::string& name, int* value) {
    setters_[name] = [value](const std::string& text) { return absl::SimpleAtoi(text, value); };
  }
  void Add(const std::string& name, double* value) {
    setters_[name] = [value](const std::string& text) { return absl::SimpleAtod(text, value); };
  }
  // A comma-separated list of integers ("1,8,32").
  void Add(const std::string& name, std::vector<int>* value) {
    setters_[name] = [value](const std::string& text) {
      std::vector<int> parsed;
      for (absl::string_view part : absl::StrSplit(text, ',')) {
        int number = 0;
        if (!absl::SimpleAtoi(part, &number)) return false;
        parsed.push_back(number);
      }
      *value = std::move(parsed);
      return !value->empty();
    };
  }

  // Parses argv[1..]; on an unknown flag or a missing or bad value prints "PROGRAM: ..." and the
  // known flags on stderr, and exits 1.
  void Parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      auto it = setters_.find(flag);
      if (it == setters_.end()) Fail("unknown flag " + flag);
      if (i + 1 >= argc) Fail("missing value for " + flag);
      if (!it->second(argv[++i])) Fail("bad value for " + flag + ": " + argv[i]);
    }
  }

  // Prints "PROGRAM: message" on stderr and exits 1.
  [[noreturn]] void Fail(const std::string& message) const {
    std::string known;
    for (const auto& [name, setter] : setters_) known += " " + name;
    std::fprintf(stderr, "%s: %s (flags:%s)\n", program_.c_str(), message.c_str(), known.c_str());
    std::exit(1);
  }

 private:
  std::string program_;
  std::map<std::string, std::function<bool(const std::string&)>> setters_;
};

}  // namespace moemesh::bench
