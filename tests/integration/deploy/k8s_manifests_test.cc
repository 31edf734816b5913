// deploy/k8s: every overlay renders with `kubectl kustomize`, every rendered object passes its
// API schema offline (validate_manifests.mjs: npm kubernetes-models and its KEDA and
// prometheus-operator packages) and moemesh's rules (non-root, drop ALL, seccomp, tagged
// images, GPU requests = limits, labels, probes); the 671B overlay's generated part is what
// `moemesh plan` writes today and its rendered requests are the plan's; the PrometheusRule
// holds the same rules as deploy/prometheus/alerts.yml and passes promtool.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSource = MOEMESH_SOURCE_DIR;
const std::string kK8s = kSource + "/deploy/k8s";
const std::string kValidator = kSource + "/tests/integration/deploy/validate_manifests.mjs";
const std::string kMoemesh = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh";

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Why the tools are missing ("" when all are there). CI installs them (scripts/install-deps.sh
// --with-tests); kubectl is not a Debian package.
std::string MissingTools() {
  if (FindTool("kubectl").empty()) return "kubectl is not installed";
  if (FindTool("node").empty()) return "node is not installed (Debian package nodejs)";
  if (!fs::exists(kSource + "/tests/integration/deploy/node_modules/kubernetes-models")) {
    return "the npm validators are not installed: bash scripts/install-deps.sh --with-tests";
  }
  return "";
}

// `value` with every run of whitespace in its strings replaced by one space.
json CollapseWhitespace(const json& value) {
  if (value.is_string()) {
    std::string out;
    for (char c : value.get<std::string>()) {
      const bool space = c == ' ' || c == '\n' || c == '\t';
      if (space && (out.empty() || out.back() == ' ')) continue;
      out += space ? ' ' : c;
    }
    if (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
  }
  json result = value;
  if (value.is_array() || value.is_object()) {
    for (auto it = result.begin(); it != result.end(); ++it) *it = CollapseWhitespace(*it);
  }
  return result;
}

class K8sManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = MissingTools();
    if (!missing.empty()) GTEST_SKIP() << missing;
    dir_ = TempDir("moemesh_k8s_test");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // `kubectl kustomize` of `path` into a file; "" (and a failure) when it does not render.
  std::string Render(const std::string& path, const std::string& name) {
    const std::string out = dir_ + "/" + name + ".yaml";
    std::string output;
    const int status = RunCommand("kubectl kustomize " + path + " > " + out, &output);
    EXPECT_EQ(status, 0) << path << ": " << output;
    return status == 0 ? out : "";
  }

  // The validator's summary of a rendered file.
  json Validate(const std::string& rendered) {
    std::string output;
    EXPECT_EQ(RunCommand("node " + kValidator + " " + rendered, &output, /*with_stderr=*/false), 0);
    json summary = json::parse(output, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(summary.is_discarded()) << output;
    return summary;
  }

  json YamlToJson(const std::string& path) {
    std::string output;
    EXPECT_EQ(RunCommand("node " + kValidator + " --to-json " + path, &output, false), 0);
    return json::parse(output, nullptr, false);
  }

  static const json* Find(const json& summary, const std::string& kind, const std::string& name) {
    for (const json& object : summary["objects"]) {
      if (object["kind"] == kind && object["name"] == name) return &object;
    }
    return nullptr;
  }
  static const json* Container(const json& workload, const std::string& name) {
    for (const json& container : workload["containers"]) {
      if (container["name"] == name) return &container;
    }
    return nullptr;
  }

  std::string dir_;
};

TEST_F(K8sManifestsTest, EveryOverlayRendersAndPassesSchemaValidation) {
  int overlays = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(kK8s + "/overlays")) {
    if (!entry.is_directory()) continue;
    ++overlays;
    const std::string name = entry.path().filename().string();
    const std::string rendered = Render(entry.path().string(), name);
    ASSERT_FALSE(rendered.empty()) << name;
    const json summary = Validate(rendered);
    EXPECT_EQ(summary["errors"], json::array()) << name << ": " << summary["errors"].dump(2);
    // Every overlay runs the three services, each node with native gRPC probes and a preStop.
    for (const auto& [kind, workload, container, probe] :
         std::vector<std::tuple<std::string, std::string, std::string, std::string>>{
             {"Deployment", "moemesh-router", "router", "httpGet"},
             {"Deployment", "moemesh-attention-node", "attention-node", "grpc"},
             {"StatefulSet", "moemesh-expert-node", "expert-node", "grpc"}}) {
      const json* object = Find(summary, kind, workload);
      ASSERT_NE(object, nullptr) << name << " has no " << kind << " " << workload;
      const json* main = Container(*object, container);
      ASSERT_NE(main, nullptr) << name << " " << workload;
      for (const char* key : {"startupProbe", "livenessProbe", "readinessProbe"}) {
        EXPECT_EQ((*main)[key], probe) << name << " " << workload << " " << key;
      }
      if (workload != "moemesh-router") EXPECT_TRUE((*main)["preStop"].get<bool>()) << workload;
    }
    EXPECT_NE(Find(summary, "NetworkPolicy", "moemesh-default-deny"), nullptr) << name;
    EXPECT_NE(Find(summary, "PodDisruptionBudget", "moemesh-expert-node"), nullptr) << name;
  }
  EXPECT_GE(overlays, 3);  // local, deepseek-r1-671b, deepseek-r1-671b-keda
}

// What `binary` accepts: absl's --helpfull of the services, the usage of a moemesh command.
std::string FlagsText(const std::vector<std::string>& command) {
  const std::string bin = std::string(MOEMESH_BINARY_DIR) + "/bin/";
  std::string output;
  if (command[0] == "moemesh") {
    RunCommand(bin + "moemesh " + command.at(1) + " --help", &output);
  } else {
    RunCommand(bin + command[0] + " --helpfull", &output);
  }
  return output;
}

TEST_F(K8sManifestsTest, ContainerFlagsAreFlagsOfTheirBinaries) {
  // A misspelt flag in a manifest would only show when a pod crash-loops: check every
  // `--flag` of every moemesh container against what its binary accepts.
  int checked = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(kK8s + "/overlays")) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    const json summary = Validate(Render(entry.path().string(), name));
    for (const json& object : summary["objects"]) {
      if (!object.contains("containers")) continue;
      for (const json& container : object["containers"]) {
        const std::vector<std::string> command = container["command"];
        if (command.empty() || command[0].rfind("moemesh", 0) != 0) continue;
        const std::string accepted = FlagsText(command);
        ASSERT_FALSE(accepted.empty()) << command[0];
        std::vector<std::string> words = command;
        for (const json& arg : container["args"]) words.push_back(arg);
        for (const std::string& word : words) {
          if (word.rfind("--", 0) != 0) continue;
          std::string flag = word.substr(0, word.find('='));
          if (command[0] != "moemesh") {  // services: absl names, dashes read as underscores
            std::replace(flag.begin() + 2, flag.end(), '-', '_');
            flag += " (";
          }
          ++checked;
          EXPECT_NE(accepted.find(flag), std::string::npos)
              << name << " " << object["name"] << " " << container["name"] << ": " << command[0]
              << " has no flag " << word;
        }
      }
    }
  }
  EXPECT_GT(checked, 40);
}

TEST_F(K8sManifestsTest, ValidatorRejectsBrokenManifests) {
  // A wrong type, a missing container name, `latest`, root, unequal GPU request and limit, an
  // undefined $(VAR).
  const std::string bad = dir_ + "/bad.yaml";
  std::ofstream(bad) << "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n"
                        "spec:\n  replicas: two\n  selector:\n    matchLabels: {a: b}\n"
                        "  template:\n    spec:\n      containers:\n        - image: x:latest\n"
                        "          args: [\"--model=$(NOPE)\"]\n"
                        "          resources:\n            requests: {nvidia.com/gpu: 1}\n"
                        "            limits: {nvidia.com/gpu: 2}\n"
                        "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n"
                        "  name: bad\nspec:\n  triggers: []\n";
  const json summary = Validate(bad);
  const std::string errors = summary["errors"].dump();
  for (const char* part : {"replicas must be integer", "required property name",
                           "uses the latest tag", "runAsNonRoot", "requests 1 != limits 2",
                           "$(NOPE) is not defined", "ScaledObject/bad", "scaleTargetRef"}) {
    EXPECT_NE(errors.find(part), std::string::npos) << part << " not in " << errors;
  }
}

TEST_F(K8sManifestsTest, DeepSeekOverlayIsWhatThePlanWrites) {
  const std::string overlay = kK8s + "/overlays/deepseek-r1-671b";
  // plan.yaml's first line names the command that wrote it; run it again.
  const std::string plan_yaml = ReadFile(overlay + "/plan.yaml");
  const std::string prefix = "# Written by `moemesh plan ";
  ASSERT_EQ(plan_yaml.rfind(prefix, 0), 0u) << plan_yaml.substr(0, 200);
  const std::string flags =
      plan_yaml.substr(prefix.size(), plan_yaml.find("`.", prefix.size()) - prefix.size());
  ASSERT_NE(flags.find("--gpu-memory"), std::string::npos) << flags;
  std::string output;
  ASSERT_EQ(RunCommand("cd " + kSource + " && " + kMoemesh + " plan " + flags +
                           " --json --write-overlay " + dir_ + "/regenerated",
                       &output, /*with_stderr=*/false),
            0)
      << output;
  const json plan = json::parse(output, nullptr, false);
  ASSERT_FALSE(plan.is_discarded()) << output;
  EXPECT_EQ(ReadFile(dir_ + "/regenerated/plan.yaml"), plan_yaml)
      << "deploy/k8s/overlays/deepseek-r1-671b/plan.yaml is stale: run `moemesh plan " << flags
      << " --write-overlay deploy/k8s/overlays/deepseek-r1-671b`";
  EXPECT_EQ(ReadFile(dir_ + "/regenerated/plan.env"), ReadFile(overlay + "/plan.env"));

  // The rendered overlay requests what the plan says.
  const json summary = Validate(Render(overlay, "deepseek"));
  EXPECT_EQ(summary["errors"], json::array()) << summary["errors"].dump(2);
  const auto gi = [](const json& bytes) {
    return std::to_string(bytes.get<uint64_t>() >> 30) + "Gi";
  };
  for (const auto& [kind, workload, container, pod, nodes] :
       std::vector<std::tuple<std::string, std::string, std::string, std::string, std::string>>{
           {"StatefulSet", "moemesh-expert-node", "expert-node", "expert_pod", "expert_nodes"},
           {"Deployment", "moemesh-attention-node", "attention-node", "attention_pod",
            "attention_nodes"}}) {
    const json* object = Find(summary, kind, workload);
    ASSERT_NE(object, nullptr) << workload;
    EXPECT_EQ((*object)["replicas"], plan[nodes]) << workload;
    const json* main = Container(*object, container);
    ASSERT_NE(main, nullptr);
    for (const char* side : {"requests", "limits"}) {
      EXPECT_EQ((*main)[side]["nvidia.com/gpu"],
                std::to_string(plan[pod]["nvidia.com/gpu"].get<int>()))
          << workload << " " << side;
      EXPECT_EQ((*main)[side]["memory"], gi(plan[pod]["memory_bytes"])) << workload << " " << side;
    }
  }
  const json* expert_hpa = Find(summary, "HorizontalPodAutoscaler", "moemesh-expert-node");
  ASSERT_NE(expert_hpa, nullptr);
  EXPECT_EQ((*expert_hpa)["minReplicas"], plan["min_expert_nodes"]);
  EXPECT_EQ((*expert_hpa)["metrics"], json::array({"moemesh_expert_rows_per_second"}));
  // A scale-down drains an expert node: grace period >= the drain time (minutes at 671B).
  const json* experts = Find(summary, "StatefulSet", "moemesh-expert-node");
  EXPECT_GE((*experts)["terminationGracePeriodSeconds"].get<int>(), 600);
  // The serving flags the router and nodes get.
  bool found_config = false;
  for (const json& object : summary["objects"]) {
    if (object["kind"] != "ConfigMap" || object["name"].get<std::string>().rfind(
                                             "moemesh-serving-", 0) != 0) {
      continue;
    }
    found_config = true;
    EXPECT_EQ(object["data"]["EXPERT_NODES"], std::to_string(plan["expert_nodes"].get<int>()));
    EXPECT_EQ(object["data"]["CACHE_TOKENS"],
              std::to_string(plan["cache_tokens_per_attention_node"].get<int64_t>()));
  }
  EXPECT_TRUE(found_config) << "no hash-suffixed moemesh-serving ConfigMap";
}

TEST_F(K8sManifestsTest, PrometheusRuleIsTheAlertFileAndPassesPromtool) {
  const json summary = Validate(Render(kK8s + "/overlays/deepseek-r1-671b", "deepseek"));
  const json* rule = Find(summary, "PrometheusRule", "moemesh-alerts");
  ASSERT_NE(rule, nullptr);
  const json alerts = YamlToJson(kSource + "/deploy/prometheus/alerts.yml");
  ASSERT_TRUE(alerts.is_array() && alerts.size() == 1u) << alerts.dump();
  // kustomize re-folds multi-line strings (a more-indented line of a `>-` block gains a blank
  // line): compare with whitespace runs collapsed, which PromQL and annotations ignore.
  EXPECT_EQ(CollapseWhitespace((*rule)["groups"]), CollapseWhitespace(alerts[0]["groups"]))
      << "the PrometheusRule and alerts.yml differ";
  const std::string promtool = FindTool("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  // A rules file may be JSON (YAML's subset).
  const std::string file = dir_ + "/rules.json";
  std::ofstream(file) << json{{"groups", (*rule)["groups"]}}.dump();
  std::string output;
  EXPECT_EQ(RunCommand(promtool + " check rules " + file, &output), 0) << output;
  EXPECT_NE(output.find("SUCCESS: 4 rules found"), std::string::npos) << output;
}

TEST_F(K8sManifestsTest, AutoscalerMetricsHaveAdapterRules) {
  const json summary = Validate(Render(kK8s + "/overlays/deepseek-r1-671b", "deepseek"));
  const json* rules = Find(summary, "ConfigMap", "moemesh-prometheus-adapter-rules");
  ASSERT_NE(rules, nullptr);
  const std::string config = dir_ + "/adapter.yaml";
  std::ofstream(config) << (*rules)["data"]["config.yaml"].get<std::string>();
  const json adapter = YamlToJson(config);
  std::set<std::string> exposed;
  for (const json& rule : adapter[0]["rules"]) exposed.insert(rule["name"]["as"].get<std::string>());
  int metrics = 0;
  for (const json& object : summary["objects"]) {
    if (object["kind"] != "HorizontalPodAutoscaler") continue;
    for (const json& metric : object["metrics"]) {
      ++metrics;
      EXPECT_EQ(exposed.count(metric.get<std::string>()), 1u)
          << object["name"] << " scales on " << metric << ", which no adapter rule exposes";
    }
  }
  EXPECT_EQ(metrics, 3);  // expert rows/s; attention cache usage and waiting sequences
}

}  // namespace
}  // namespace moemesh::integration
