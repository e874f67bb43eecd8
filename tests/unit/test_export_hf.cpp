// HF export: the dequantized model, exactly the trained W_q, readable by our loader.
#include <gtest/gtest.h>

#include "l4q/export/hf_export.h"
#include "l4q/nn/methods.h"
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

// lora-rtn and qat-lora become low-bit only here: every exporter says so (their
// max |exported - trained| compares against the rounded merge, so it cannot show it), and the
// methods that train the exported weights carry no such note.
TEST(HfExport, NotesThatLoraRtnAndQatLoraAreRoundedAtExport) {
  test::TempDir tmp;
  for (auto m : {LinearMethod::LoraRtn, LinearMethod::QatLora, LinearMethod::L4Q}) {
    test::RunOptions o;
    o.method = m;
    const auto run = test::synthetic_run(o);
    const auto rep = export_hf(run, tmp.file("hf-" + to_string(m)), {});
    bool noted = false;
    for (const auto& n : rep.notes) noted |= n.find("post-training quantization") != std::string::npos;
    EXPECT_EQ(noted, m != LinearMethod::L4Q) << to_string(m);
  }
}

}  // namespace
}  // namespace l4q
