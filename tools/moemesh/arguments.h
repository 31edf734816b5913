// Minimal `--name value` / `--flag` parser shared by the moemesh subcommands.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {

// Options a subcommand accepts: names without "--"; `boolean` options take no value.
struct OptionSpec {
  std::string name;
  bool boolean = false;
};

// Parsed command line: repeated options keep every value in order; positionals are the rest.
class ParsedArguments {
 public:
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // Last value given for `name`, if any.
  std::optional<std::string> Get(const std::string& name) const;
  const std::vector<std::string>& GetAll(const std::string& name) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

  // Typed getters: InvalidArgument naming the option when the value does not parse.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t default_value) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double default_value) const;

 private:
  friend absl::StatusOr<ParsedArguments> ParseArguments(const Arguments&,
                                                        const std::vector<OptionSpec>&);
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
};

// Accepts `--name value`, `--name=value` and boolean `--name`. Unknown options are an error.
absl::StatusOr<ParsedArguments> ParseArguments(const Arguments& arguments,
                                               const std::vector<OptionSpec>& specs);

}  // namespace moemesh::cli
