// `moemesh`: one binary, one subcommand per job. `moemesh help` lists them.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tools/moemesh/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const moemesh::cli::Arguments&);
  const char* summary;
};

const Command kCommands[] = {
    {"generate", moemesh::cli::RunGenerate,
     "run the model in one process on token ids and print JSON"},
    {"make-checkpoint", moemesh::cli::RunMakeCheckpoint,
     "write a random DeepSeek-V3-shaped checkpoint (FP8 blocks, shards, index)"},
    {"convert", moemesh::cli::RunConvert, "write the BF16 cast of an FP8 checkpoint"},
    {"tokenize", moemesh::cli::RunTokenize, "text on stdin -> JSON array of token ids"},
    {"detokenize", moemesh::cli::RunDetokenize, "JSON array of token ids on stdin -> text"},
    {"render-chat", moemesh::cli::RunRenderChat,
     "JSON array of OpenAI messages on stdin -> prompt text"},
    {"make-r1-tokenizer", moemesh::cli::RunMakeR1Tokenizer,
     "turn DeepSeek-V3 tokenizer files into DeepSeek-R1's (<think> tokens, R1 template)"},
    {"chat", moemesh::cli::RunChat, "stream one chat request to a server and print it"},
    {"place", moemesh::cli::RunPlace,
     "plan an expert placement (replicas, nodes) from the router's /v1/experts/load JSON"},
    {"up", moemesh::cli::RunUp,
     "start a local cluster (router, attention and expert nodes) and wait for it"},
    {"plan", moemesh::cli::RunPlan,
     "size a deployment on GPUs: weight and KV bytes, experts per node, a Kubernetes overlay"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: moemesh <command> [options]\n\ncommands:\n");
  for (const Command& command : kCommands) {
    std::fprintf(out, "  %-16s %s\n", command.name, command.summary);
  }
  std::fprintf(out, "\n`moemesh <command> --help` describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Command& command : kCommands) {
    if (name == command.name) {
      return command.run(moemesh::cli::Arguments(argv + 2, argv + argc));
    }
  }
  std::fprintf(stderr, "moemesh: unknown command '%s'\n\n", name.c_str());
  PrintUsage(stderr);
  return 2;
}
