// The image (deploy/docker/Dockerfile, built by deploy/docker/build-image.sh) starts a cluster
// with podman as Kubernetes would start the pods: the toy model written by an init step into a
// shared volume, router + 1 attention node + 2 expert nodes with the manifests' flags, non-root,
// read-only root file system, no capabilities. Its greedy tokens equal the single-process
// engine's on the same checkpoint. Skips, naming what is missing, without podman or the image.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kImage = "localhost/moemesh:0.1.0";
const std::string kMoemesh = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh";

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
  // The local overlay's init container.
  ASSERT_EQ(Run("init", "moemesh make-checkpoint --preset tiny --seed 1 --tokenizer-from "
                        "/opt/moemesh/tokenizer /models/tiny-r1",
                false, &output),
            0)
      << output;
  ASSERT_TRUE(fs::exists(dir_ + "/tiny-r1/tokenizer.json"));

  const int http = FreePort();
  const int control = FreePort();
  const std::string router = "127.0.0.1:" + std::to_string(control);
  ASSERT_EQ(Run("router",
                "moemesh-router --model=/models/tiny-r1 --served-model-name=tiny-r1 "
                "--host=127.0.0.1 --port=" + std::to_string(http) + " --control-port=" +
                    std::to_string(control) + " --attention-nodes=1 --expert-nodes=2 "
                    "--max-model-len=65536",
                true, &output),
            0)
      << output;
  ASSERT_EQ(Run("attention-0",
                "moemesh-attention-node --model=/models/tiny-r1 --router=" + router +
                    " --host=127.0.0.1 --port=" + std::to_string(FreePort()) +
                    " --node-name=attention-0 --cache-tokens=65536 --cache-block-size=64 "
                    "--max-batch-tokens=512 --compute-threads=1 --metrics-port=-1",
                true, &output),
            0)
      << output;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Run("expert-" + std::to_string(i),
                  "moemesh-expert-node --model=/models/tiny-r1 --router=" + router +
                      " --host=127.0.0.1 --port=" + std::to_string(FreePort()) +
                      " --node-name=expert-" + std::to_string(i) + " --metrics-port=-1",
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
