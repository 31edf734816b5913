// A hostile config.json (found by fuzz_checkpoint): numbers out of the range of the field's C++
// type are refused with a message naming the field, never converted (undefined behaviour).
#include <fstream>
#include <sstream>
#include <string>

#include "core/checkpoint/model_config.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {
namespace {

nlohmann::json FixtureConfig() {
  std::ifstream in(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/config.json");
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

TEST(HostileConfigTest, OutOfRangeNumbersAreRefused) {
  ASSERT_TRUE(ParseModelConfig(FixtureConfig().dump(), "fixture").ok());
  for (const char* value : {"6.66667e+29", "1e300", "-3e10", "2147483648", "1.5",
                            "18446744073709551615"}) {
    nlohmann::json config = FixtureConfig();
    config["hidden_size"] = nlohmann::json::parse(value);
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(config.dump(), "hostile");
    ASSERT_FALSE(parsed.ok()) << value;
    EXPECT_NE(parsed.status().message().find("hidden_size"), std::string::npos)
        << parsed.status();
  }
  for (const char* key : {"model_type", "scoring_func", "norm_topk_prob"}) {
    nlohmann::json typed = FixtureConfig();
    typed[key] = 7;  // a number where a string / bool belongs: no exception escapes
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(typed.dump(), "hostile");
    if (std::string(key) == "model_type") {
      EXPECT_FALSE(parsed.ok());
    }
  }
  nlohmann::json config = FixtureConfig();
  config["hidden_size"] = 64.0;  // an integral float is still an integer
  absl::StatusOr<ModelConfig> integral = ParseModelConfig(config.dump(), "integral");
  ASSERT_TRUE(integral.ok()) << integral.status();
  EXPECT_EQ(integral->hidden_size, 64);
}

// Found by fuzz_checkpoint: the consistency checks were built as one list, so a zero n_group
// reached a division before its own check refused it.
TEST(HostileConfigTest, ZeroOrHugeGroupCountsAreRefusedBeforeAnyDivision) {
  for (const auto& [key, value] : {std::pair{"n_group", 0}, std::pair{"n_group", -4},
                                   std::pair{"topk_group", 2147483647}}) {
    nlohmann::json config = FixtureConfig();
    config[key] = value;
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(config.dump(), "hostile");
    ASSERT_FALSE(parsed.ok()) << key << "=" << value;
    EXPECT_NE(parsed.status().message().find(key == std::string("n_group") ? "n_group" : "topk_group"),
              std::string::npos)
        << parsed.status();
  }
}

// Found by fuzz_checkpoint: a rope_scaling "type" that is not a string escaped as an exception
// from nlohmann's value() (std::terminate in the router).
TEST(HostileConfigTest, FieldsOfTheWrongJsonTypeAreRefusedWithoutAnException) {
  for (const char* rope_scaling :
       {R"({"type": 7, "factor": 40})", R"({"rope_type": [1], "factor": 40})", R"({"type": {}})"}) {
    nlohmann::json config = FixtureConfig();
    config["rope_scaling"] = nlohmann::json::parse(rope_scaling);
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(config.dump(), "hostile");
    ASSERT_FALSE(parsed.ok()) << rope_scaling;
    EXPECT_NE(parsed.status().message().find("rope_scaling"), std::string::npos)
        << parsed.status();
  }
}

}  // namespace
}  // namespace moemesh::checkpoint
