// bench_placement: the placement planner (core/placement) against DeepSeek's EPLB (global
// policy, eplb_baseline.cc) on synthetic skewed loads of the real model's shape (58 MoE layers x
// 256 experts), 8 to 64 expert nodes. Prints one row per setting: imbalance (mean over layers of
// max / mean node load) of EPLB and of ours, our worst layer, the planner's CPU (and wall) time
// for all layers (best of --repeats), and for a re-plan after the load drifted (10% of each
// layer replaced by a fresh Zipf load): replicas moved with `previous` vs from scratch.
//
// Loads: layer l follows Zipf with exponent s_l spread evenly over [s_min, s_max] across layers,
// the ranks assigned to experts by a random permutation per layer (the hot experts differ by
// layer), scaled to 1,000,000 rows per layer and rounded to whole rows.
//
// usage: bench_placement [--seed S] [--layers L] [--experts E] [--repeats N]
//        bench_placement --write-load FILE [--very-skewed 1] [--seed S] ...
// The second form writes the Zipf loads (or the very skewed ones) as a /v1/experts/load body
// (MoE layers numbered 3.. as in DeepSeek-V3) for `moemesh place --load FILE`, and exits.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/placement/eplb_baseline.h"
#include "core/placement/planner.h"
#include "nlohmann/json.hpp"

namespace {

using moemesh::placement::PlacementPlan;
using moemesh::placement::PlannerInput;
using moemesh::placement::PlannerNode;
using Loads = std::vector<std::vector<double>>;

Loads ZipfLoads(int layers, int experts, double s_min, double s_max, uint64_t seed) {
  std::mt19937_64 engine(seed);
  Loads loads(layers, std::vector<double>(experts));
  for (int l = 0; l < layers; ++l) {
    const double s = layers == 1 ? s_min : s_min + (s_max - s_min) * l / (layers - 1);
    std::vector<int> permutation(experts);
    std::iota(permutation.begin(), permutation.end(), 0);
    std::shuffle(permutation.begin(), permutation.end(), engine);
    double norm = 0;
    for (int r = 0; r < experts; ++r) norm += std::pow(r + 1.0, -s);
    for (int r = 0; r < experts; ++r) {
      loads[l][permutation[r]] = std::round(1e6 * std::pow(r + 1.0, -s) / norm);
    }
  }
  return loads;
}

PlannerInput Input(const Loads& loads, int experts, int nodes, int redundant) {
  PlannerInput input;
  input.num_experts = experts;
  input.load = loads;
  input.redundant_experts = redundant;
  for (int n = 0; n < nodes; ++n) input.nodes.push_back(PlannerNode{std::to_string(n), 0});
  return input;
}

std::vector<std::vector<std::vector<std::string>>> ById(const PlacementPlan& plan) {
  std::vector<std::vector<std::vector<std::string>>> out;
  for (const auto& layer : plan.layers) {
    std::vector<std::vector<std::string>> experts;
    for (const auto& nodes : layer.replicas) {
      std::vector<std::string> ids;
      for (int n : nodes) ids.push_back(std::to_string(n));
      experts.push_back(std::move(ids));
    }
    out.push_back(std::move(experts));
  }
  return out;
}

// Replicas of `next` that `previous` does not have on the same node.
int Moved(const PlacementPlan& previous, const PlacementPlan& next) {
  int moved = 0;
  for (size_t l = 0; l < next.layers.size(); ++l) {
    for (size_t e = 0; e < next.layers[l].replicas.size(); ++e) {
      const std::vector<int>& old = previous.layers[l].replicas[e];
      for (int n : next.layers[l].replicas[e]) {
        if (std::find(old.begin(), old.end(), n) == old.end()) ++moved;
      }
    }
  }
  return moved;
}

// CPU time of this thread: on a shared machine wall time includes waiting for a core.
double ThreadCpuMs() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

struct Setting {
  const char* name;
  double s_min, s_max;
  int nodes, redundant;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  int layers = 58, experts = 256, repeats = 3;
  bool very_skewed = false;
  std::string write_load;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::strtol(argv[i + 1], nullptr, 10);
    if (flag == "--write-load") {
      write_load = argv[i + 1];
    } else if (flag == "--very-skewed") {
      very_skewed = value != 0;
    } else if (flag == "--seed") {
      seed = static_cast<uint64_t>(value);
    } else if (flag == "--layers") {
      layers = static_cast<int>(value);
    } else if (flag == "--experts") {
      experts = static_cast<int>(value);
    } else if (flag == "--repeats") {
      repeats = static_cast<int>(value);
    } else {
      std::fprintf(stderr, "usage: bench_placement [--seed S] [--layers L] [--experts E] "
                           "[--repeats N] [--write-load FILE [--very-skewed 1]]\n");
      return 2;
    }
  }
  if (!write_load.empty()) {
    const Loads loads = very_skewed ? ZipfLoads(layers, experts, 1.6, 2.2, seed)
                                    : ZipfLoads(layers, experts, 0.6, 1.4, seed);
    nlohmann::json body;
    body["layers"] = nlohmann::json::array();
    for (int l = 0; l < layers; ++l) {
      body["layers"].push_back({{"layer", 3 + l}, {"total", loads[l]}, {"recent", loads[l]}});
    }
    std::ofstream out(write_load);
    out << body.dump() << "\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", write_load.c_str());
      return 1;
    }
    return 0;
  }
  std::vector<Setting> settings;
  for (int nodes : {8, 16, 32, 64}) {
    for (int redundant : {0, nodes, 2 * nodes}) {
      if ((experts + redundant) % nodes != 0) continue;  // EPLB needs equal packs
      settings.push_back({"zipf 0.6-1.4", 0.6, 1.4, nodes, redundant});
    }
  }
  for (int nodes : {8, 16, 32, 64}) {
    if ((experts + nodes) % nodes != 0) continue;
    settings.push_back({"very skewed 1.6-2.2", 1.6, 2.2, nodes, nodes});
  }
  std::printf("| load | nodes | R | EPLB imbalance | ours imbalance | ours worst layer | "
              "plan CPU ms (wall), %d layers | replicas | "
              "re-plan moved (imbalance): from scratch | "
              "previous, tolerance 0 | previous, tolerance 0.01 |\n",
              layers);
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  int worse = 0;
  for (const Setting& setting : settings) {
    const Loads loads = ZipfLoads(layers, experts, setting.s_min, setting.s_max, seed);
    double eplb = 0;
    for (const auto& layer : loads) {
      eplb += moemesh::bench::Imbalance(
          moemesh::bench::EplbGlobal(layer, experts + setting.redundant, setting.nodes)
              .pack_load);
    }
    eplb /= layers;
    const PlannerInput input = Input(loads, experts, setting.nodes, setting.redundant);
    double best_ms = 1e300;
    absl::StatusOr<PlacementPlan> plan;
    double best_cpu_ms = 1e300;
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      const double cpu_start = ThreadCpuMs();
      plan = moemesh::placement::PlanPlacement(input);
      best_cpu_ms = std::min(best_cpu_ms, ThreadCpuMs() - cpu_start);
      best_ms = std::min(best_ms, std::chrono::duration<double, std::milli>(
                                      std::chrono::steady_clock::now() - start)
                                      .count());
      if (!plan.ok()) {
        std::fprintf(stderr, "planner: %s\n", plan.status().ToString().c_str());
        return 1;
      }
    }
    // Drift: 90% of the old load + 10% of an independent Zipf load (other hot experts).
    const Loads other = ZipfLoads(layers, experts, setting.s_min, setting.s_max, seed + 1000);
    Loads drifted = loads;
    for (int l = 0; l < layers; ++l) {
      for (int e = 0; e < experts; ++e) drifted[l][e] = 0.9 * loads[l][e] + 0.1 * other[l][e];
    }
    PlannerInput next = Input(drifted, experts, setting.nodes, setting.redundant);
    absl::StatusOr<PlacementPlan> scratch = moemesh::placement::PlanPlacement(next);
    next.previous = ById(*plan);
    absl::StatusOr<PlacementPlan> sticky = moemesh::placement::PlanPlacement(next);
    next.keep_tolerance = 0.01;
    absl::StatusOr<PlacementPlan> tolerant = moemesh::placement::PlanPlacement(next);
    if (!scratch.ok() || !sticky.ok() || !tolerant.ok()) {
      std::fprintf(stderr, "planner failed on the drifted load\n");
      return 1;
    }
    const double ours = plan->mean_imbalance;
    if (ours > eplb + 1e-9) ++worse;
    std::printf("| %s | %d | %d | %.4f | %.4f%s | %.4f | %.0f (%.0f) | %d | %d (%.4f) | "
                "%d (%.4f) | %d (%.4f) |\n",
                setting.name, setting.nodes, plan->redundant_experts, eplb, ours,
                ours > eplb + 1e-9 ? " (worse)" : "", 1.0 / plan->min_balancedness, best_cpu_ms,
                best_ms,
                plan->physical_experts * layers, Moved(*plan, *scratch),
                scratch->mean_imbalance, sticky->moved_replicas, sticky->mean_imbalance,
                tolerant->moved_replicas, tolerant->mean_imbalance);
  }
  std::printf("\nrows where ours is worse than EPLB: %d of %zu\n", worse, settings.size());
  return worse == 0 ? 0 : 1;
}
