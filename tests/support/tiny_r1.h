// The shared tiny-r1 fixture and its goldens (../shared), for any test binary: the goldens are
// parsed once; LoadModelOrDie loads the model with all its routed experts in process.
#pragma once

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "core/checkpoint/checkpoint.h"
#include "core/model/deepseek_model.h"
#include "core/model/expert_shard.h"
#include "nlohmann/json.hpp"

namespace moemesh::testing {

inline std::string FixtureDir() { return std::string(MOEMESH_SHARED_DIR) + "/fixtures/tiny-r1"; }

inline const nlohmann::json& TinyR1Goldens() {
  static const nlohmann::json goldens = [] {
    std::ifstream stream(std::string(MOEMESH_SHARED_DIR) + "/goldens/tiny-r1.json");
    std::stringstream buffer;
    buffer << stream.rdbuf();
    return nlohmann::json::parse(buffer.str());
  }();
  return goldens;
}

// A loaded model plus all its routed experts in process.
struct LoadedModel {
  std::unique_ptr<checkpoint::Checkpoint> checkpoint;
  std::unique_ptr<model::DeepseekModel> model;
  std::unique_ptr<model::ExpertShard> experts;
};

inline LoadedModel LoadModelOrDie(const std::string& directory) {
  LoadedModel loaded;
  auto checkpoint = checkpoint::Checkpoint::Open(directory);
  if (!checkpoint.ok()) throw std::runtime_error(std::string(checkpoint.status().message()));
  loaded.checkpoint = *std::move(checkpoint);
  auto model = model::DeepseekModel::Load(*loaded.checkpoint);
  if (!model.ok()) throw std::runtime_error(std::string(model.status().message()));
  loaded.model = *std::move(model);
  auto experts = model::ExpertShard::LoadAll(*loaded.checkpoint);
  if (!experts.ok()) throw std::runtime_error(std::string(experts.status().message()));
  loaded.experts = *std::move(experts);
  return loaded;
}

}  // namespace moemesh::testing
