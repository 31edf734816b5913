// AttentionNode lifetime: its metrics registry outlives the node (the process's /metrics
// endpoint owns it), and a scrape may come at any moment, including while the node is being
// destroyed. The registry's refresh callback must never read the scheduler or transport after
// they are gone (the bug this guards against is a use-after-free that the ASan build reports).
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "attention_node/attention_service.h"
#include "core/obs/metrics.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"
#include "tests/support/wait.h"

namespace moemesh::attention_node {
namespace {

TEST(AttentionNodeLifetime, ScrapesDuringAndAfterDestructionAreSafe) {
  auto registry = std::make_shared<obs::MetricsRegistry>();
  AttentionNodeOptions options;
  options.model_dir = testing::FixtureDir();
  options.router_address = "127.0.0.1:1";  // no router: the node keeps trying to register
  options.cache_tokens = 1024;
  options.metrics = registry;
  auto node = AttentionNode::Start(options);
  ASSERT_TRUE(node.ok()) << node.status();

  std::atomic<bool> stop{false};
  std::atomic<int64_t> scrapes{0};
  std::thread scraper([&] {
    while (!stop.load()) {
      registry->SerializeText();
      scrapes.fetch_add(1);
    }
  });
  EXPECT_TRUE(testing::WaitUntil([&] { return scrapes.load() >= 5; }));
  node->reset();  // destroyed while the scraper runs
  const int64_t at_destruction = scrapes.load();
  EXPECT_TRUE(testing::WaitUntil([&] { return scrapes.load() >= at_destruction + 5; }));
  stop.store(true);
  scraper.join();
  // The node's series are still exposed (with their last values), and reading them is safe.
  const std::string text = registry->SerializeText();
  EXPECT_NE(text.find("moemesh_step_seconds"), std::string::npos);
}

}  // namespace
}  // namespace moemesh::attention_node
