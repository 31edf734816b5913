// Subcommands of the `moemesh` binary. Each takes the arguments after the subcommand name and
// returns the process exit code (0 success, 1 runtime error, 2 usage error). Errors go to stderr.
#pragma once

#include <string>
#include <vector>

namespace moemesh::cli {

using Arguments = std::vector<std::string>;

int RunGenerate(const Arguments& arguments);        // generate_command.cc
int RunMakeCheckpoint(const Arguments& arguments);  // make_checkpoint_command.cc
int RunConvert(const Arguments& arguments);         // convert_command.cc
int RunTokenize(const Arguments& arguments);        // text_commands.cc
int RunDetokenize(const Arguments& arguments);      // text_commands.cc
int RunRenderChat(const Arguments& arguments);      // text_commands.cc
int RunUp(const Arguments& arguments);              // up_command.cc
int RunChat(const Arguments& arguments);            // chat_command.cc
int RunMakeR1Tokenizer(const Arguments& arguments); // r1_tokenizer_command.cc
int RunPlace(const Arguments& arguments);           // place_command.cc
int RunPlan(const Arguments& arguments);            // plan_command.cc

}  // namespace moemesh::cli
