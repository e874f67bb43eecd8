#include "l4q/export/hf_export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "export/export_support.h"
#include "l4q/error.h"
#include "l4q/io/checkpoint.h"

namespace l4q {

ExportReport export_hf(const TrainedRun& run, const std::string& out_dir, const ExportOptions& opt) {
  export_detail::check_output_path(out_dir, opt, "hf");
  if (!run.model) fail("[hf export] ", run.checkpoint_dir, ": the run has no model");
  at::NoGradGuard no_grad;
  const LlamaModel& model = *run.model;
  ExportReport rep = export_detail::start_report(run, "hf", out_dir);

  Checkpoint ck;
  ck.config = model.config();
  for (auto& [name, t] : model.effective_state_dict())
    ck.tensors.emplace_back(name, t.to(at::kFloat).contiguous());
  int64_t quantized = 0;
  for (const auto& [lname, lin] : model.named_linears())
    if (lin->quantized_weight()) ++quantized;
  rep.float_layers = static_cast<int64_t>(model.named_linears().size());
  if (quantized > 0)
    rep.notes.push_back(std::to_string(quantized) +
                        " quantized layers written as their dequantized W_q in F32 (exact; the codes are not kept)");

  export_detail::StagedDirectory stage(out_dir);
  export_detail::write_run_tokenizer(run, stage.dir());
  save_hf_directory(ck, stage.dir());
  stage.commit();
  rep.bytes = export_detail::bytes_on_disk(out_dir);
  return rep;
}

}  // namespace l4q
