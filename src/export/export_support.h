// What every exporter needs besides its format (private to src/export/): refusing an existing
// output, staging a directory so it appears complete or not at all, finding the run's
// SentencePiece vocabulary, and the byte count of what was written.
#pragma once
#include <cstdint>
#include <string>

#include "l4q/export/report.h"
#include "l4q/text/bpe.h"
#include "l4q/text/sentencepiece_model.h"
#include "l4q/train/run.h"

namespace l4q::export_detail {

// Throws l4q::Error "[<format> export] output '<path>' exists (pass --force to replace it)"
// unless opt.force; also when the parent directory does not exist.
void check_output_path(const std::string& path, const ExportOptions& opt, const std::string& format);

// A directory built under a temporary sibling name and renamed onto `path` by commit(); an
// existing `path` (allowed by --force) is replaced only then. Removed if never committed.
class StagedDirectory {
 public:
  explicit StagedDirectory(std::string path);
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;
  const std::string& dir() const { return tmp_; }  // write here
  void commit();

 private:
  std::string path_, tmp_;
  bool committed_ = false;
};

// The run's vocabulary, found as l4q-train found its tokenizer: config.tokenizer, else the
// model directory's tokenizer.model, else a GGUF model's own tokenizer.ggml.* vocabulary, else
// a tokenizer.model / tok512.model beside the model file.
struct RunVocabulary {
  std::string source;          // the file it came from
  std::string model_file;      // the SentencePiece .model when there is one ("" for GGUF vocab)
  SentencePieceVocab vocab;    // pieces, scores, types, special ids
};
RunVocabulary find_run_vocabulary(const TrainedRun& run);

// The run's byte-level BPE vocabulary (a GPT-2-family tokenizer such as SmolLM2's), or
// nullptr when the run uses SentencePiece.
const BpeVocab* run_bpe_vocab(const TrainedRun& run);

// Writes the run's tokenizer into `dir` as HF directories keep it: tokenizer.json and
// tokenizer_config.json for a byte-level BPE, tokenizer.model for SentencePiece (throws, as
// find_run_vocabulary, when the run has none).
void write_run_tokenizer(const TrainedRun& run, const std::string& dir);

// Writes the vocabulary as `path` (a SentencePiece .model): a copy of the run's file when it
// has one, else a model built from the GGUF vocabulary.
void write_tokenizer_model(const RunVocabulary& v, const std::string& path);

// The report every exporter fills: format, source, path, and the note that a lora-rtn or
// qat-lora run is rounded here (its exported model is not its training-time one).
ExportReport start_report(const TrainedRun& run, const std::string& format, const std::string& path);

// A number for a note: 3 significant digits ("1.2e-05").
std::string fmt_g(double x);

// Size of a file, or the sum of the regular files under a directory.
uint64_t bytes_on_disk(const std::string& path);

}  // namespace l4q::export_detail
