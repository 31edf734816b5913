// The image (deploy/docker/Dockerfile, built by deploy/docker/build-image.sh) starts a cluster
// with podman as Kubernetes would start the local overlay's pods: the commands and flags of the
// rendered manifests (deploy/k8s/overlays/local, $(VAR)s from its ConfigMap), only the
// addresses replaced (one host instead of one IP per pod): the init container writes the toy
// model into a shared volume, then router + 1 attention node + 2 expert nodes run non-root with
// a read-only root file system and no capabilities. Its greedy tokens equal the single-process
// engine's on the same checkpoint. Skips, naming what is missing, without podman, the image,
// kubectl or the npm validators.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/deploy/manifest_command.h"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kImage = "localhost/moemesh:0.1.0";
const std::string kMoemesh = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh";
const std::string kSource = MOEMESH_SOURCE_DIR;

std::string Join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

class ContainerClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    podman_ = FindTool("podman");
    if (podman_.empty()) GTEST_SKIP() << "podman is not installed (apt-get install podman)";
    std::string output;
    if (RunCommand(podman_ + " image exists " + kImage, &output) != 0) {
      GTEST_SKIP() << "image " << kImage << " is not built: bash deploy/docker/build-image.sh";
    }
    if (FindTool("curl").empty()) GTEST_SKIP() << "curl is not installed";
    if (FindTool("kubectl").empty()) GTEST_SKIP() << "kubectl is not installed";
    if (FindTool("node").empty() ||
        !fs::exists(kSource + "/tests/integration/deploy/node_modules/yaml")) {
      GTEST_SKIP() << "node and the npm validators: bash scripts/install-deps.sh --with-tests";
    }
    // The runtime and rlimits containers start with here (as deploy/docker/build-image.sh
    // probes them): crun refuses cgroups v1 with a cgroup2 mount, and without CAP_SYS_RESOURCE
    // podman's default rlimits cannot be set.
    bool started = false;
    for (const char* runtime : {"", "--runtime runc "}) {
      for (const char* limits : {"", "--ulimit nofile=16384:16384 --ulimit nproc=16384:16384 "}) {
        if (!started && RunCommand(podman_ + " " + runtime + "run --rm " + limits + kImage + " true",
                                   &output) == 0) {
          runtime_ = runtime;
          limits_ = limits;
          started = true;
        }
      }
    }
    ASSERT_TRUE(started) << "podman cannot start " << kImage << " here: " << output;
    dir_ = TempDir("moemesh_container_test");
    fs::permissions(dir_, fs::perms::all);  // the containers' uid 10001 writes the model here
    prefix_ = "moemesh-test-" + std::to_string(::getpid()) + "-";
  }
  void TearDown() override {
    std::string ignored;
    for (const std::string& name : containers_) {
      RunCommand(podman_ + " " + runtime_ + "rm -f -t 2 " + name, &ignored);
    }
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // `podman run` with the pods' security settings; `detach` for the services.
  int Run(const std::string& name, const std::string& command, bool detach, std::string* output) {
    const std::string full_name = prefix_ + name;
    if (detach) containers_.push_back(full_name);
    return RunCommand(podman_ + " " + runtime_ + "run " + limits_ + (detach ? "-d" : "--rm") +
                          " --name " + full_name + " --network host --read-only --cap-drop ALL"
                          " --security-opt no-new-privileges -v " + dir_ + ":/models " + kImage +
                          " " + command,
                      output);
  }

  std::string podman_;
  std::string runtime_;  // "" or "--runtime runc "
  std::string limits_;   // "" or "--ulimit ... "
  std::string dir_;
  std::string prefix_;
  std::vector<std::string> containers_;
};

TEST_F(ContainerClusterTest, ImageServesTheToyModelLikeTheSingleProcess) {
  std::string output;
  const std::string rendered = dir_ + "/local.yaml";
  ASSERT_EQ(RunCommand("kubectl kustomize " + kSource + "/deploy/k8s/overlays/local > " + rendered,
                       &output),
            0)
      << output;
  ASSERT_EQ(RunCommand("node " + kSource + "/tests/integration/deploy/validate_manifests.mjs " +
                           rendered,
                       &output, /*with_stderr=*/false),
            0);
  const json summary = json::parse(output, nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << output;
  std::string error;
  auto command = [&](const std::string& kind, const std::string& name,
                     const std::string& container, const std::string& pod,
                     const std::map<std::string, std::string>& overrides) {
    const std::vector<std::string> argv = ManifestCommand(
        summary, kind, name, container, {{"POD_IP", "127.0.0.1"}, {"POD_NAME", pod}}, overrides,
        &error);
    EXPECT_FALSE(argv.empty()) << error;
    std::printf("%s/%s: %s\n", name.c_str(), container.c_str(), Join(argv).c_str());
    return Join(argv);
  };

  // The init container (the same in every pod of the overlay).
  const std::string init =
      command("Deployment", "moemesh-router", "toy-model", "moemesh-router-0", {});
  ASSERT_NE(init.find("make-checkpoint"), std::string::npos) << init;
  ASSERT_EQ(Run("init", init, false, &output), 0) << output;
  ASSERT_TRUE(fs::exists(dir_ + "/tiny-r1/tokenizer.json"));

  const int http = FreePort();
  const int control = FreePort();
  const std::string router = "127.0.0.1:" + std::to_string(control);
  const std::string router_command =
      command("Deployment", "moemesh-router", "router", "moemesh-router-0",
              {{"--host", "127.0.0.1"}, {"--port", std::to_string(http)},
               {"--control-port", std::to_string(control)}});
  ASSERT_EQ(Run("router", router_command, true, &output), 0) << output;
  ASSERT_EQ(Run("attention-0",
                command("Deployment", "moemesh-attention-node", "attention-node",
                        "moemesh-attention-node-0",
                        {{"--router", router}, {"--port", std::to_string(FreePort())},
                         {"--metrics-port", "-1"}}),
                true, &output),
            0)
      << output;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Run("expert-" + std::to_string(i),
                  command("StatefulSet", "moemesh-expert-node", "expert-node",
                          "moemesh-expert-node-" + std::to_string(i),
                          {{"--router", router}, {"--port", std::to_string(FreePort())},
                           {"--metrics-port", "-1"}}),
                  true, &output),
              0)
        << output;
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(http);
  bool ready = false;
  for (int i = 0; i < 240 && !ready; ++i) {  // at most 120 s
    ready = RunCommand("curl -sf -o /dev/null " + url + "/ready", &output) == 0;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (!ready) {
    std::string logs;
    for (const std::string& name : containers_) {
      std::string log;
      RunCommand(podman_ + " " + runtime_ + "logs " + name, &log);
      logs += name + ":\n" + log + "\n";
    }
    FAIL() << "the cluster did not become ready in 120 s\n" << logs;
  }

  const std::vector<int> prompt = {0, 128803, 19923, 3437, 128804};
  json request = {{"model", "tiny-r1"}, {"prompt", prompt}, {"max_tokens", 12},
                  {"temperature", 0},   {"return_token_ids", true}};
  const std::string body = dir_ + "/request.json";
  { std::ofstream(body) << request.dump(); }
  ASSERT_EQ(RunCommand("curl -sf " + url + "/v1/completions -H 'Content-Type: application/json' "
                       "--data @" + body, &output, /*with_stderr=*/false),
            0)
      << output;
  const json reply = json::parse(output, nullptr, false);
  ASSERT_FALSE(reply.is_discarded()) << output;
  const json cluster_tokens = reply["choices"][0]["token_ids"];

  std::string ids;
  for (int id : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  ASSERT_EQ(RunCommand(kMoemesh + " generate --model " + dir_ + "/tiny-r1 --prompt-ids " + ids +
                           " --max-new-tokens 12 --json",
                       &output, /*with_stderr=*/false),
            0)
      << output;
  const json reference = json::parse(output, nullptr, false);
  ASSERT_FALSE(reference.is_discarded()) << output;
  EXPECT_FALSE(cluster_tokens.empty());
  EXPECT_EQ(cluster_tokens, reference["generated_ids"]);
}

}  // namespace
}  // namespace moemesh::integration
