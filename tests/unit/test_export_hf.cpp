// HF export: the dequantized model, exactly the trained W_q, readable by our loader.
#include <gtest/gtest.h>

#include "l4q/export/hf_export.h"
#include "l4q/text/sentencepiece_model.h"
#include "test_export_support.h"
#include "test_io_support.h"
#include "test_support.h"

namespace l4q {
namespace {

TEST(HfExport, WritesExactlyTheTrainedWeights) {
  test::RunOptions o;
  o.bits = 3;
  const auto run = test::synthetic_run(o);
  test::TempDir tmp;
  const auto dir = tmp.file("hf");
  const auto rep = export_hf(run, dir, {});
  EXPECT_EQ(rep.format, "hf");
  EXPECT_EQ(rep.max_weight_error, 0.0);
  EXPECT_EQ(rep.float_layers, 7 * run.model->config().num_hidden_layers);
  const auto ck = load_checkpoint(dir);
  for (const auto& [name, t] : run.model->effective_state_dict())
    EXPECT_TRUE(at::equal(ck.get(name), t)) << name;
  EXPECT_EQ(read_sentencepiece_model(dir + "/tokenizer.model").pieces.size(), 512u);
  test::expect_error([&] { export_hf(run, dir, {}); }, {"[hf export]", "exists"});
  EXPECT_NO_THROW(export_hf(run, dir, {true}));
}

}  // namespace
}  // namespace l4q
