// Training and validation examples from files, as a trainer's data options describe them:
// read (Alpaca JSON/JSONL or plain text), split, tokenise.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "l4q/data/example.h"
#include "l4q/data/instruct.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

enum class DataFormat {
  alpaca,  // instruction records (JSON array or JSONL), prompt template, masked prompt
  text,    // plain text, one token stream cut into blocks of max_length
};
// "alpaca" | "text"; throws l4q::Error naming `where` otherwise.
DataFormat parse_data_format(const std::string& s, const std::string& where);
const char* to_string(DataFormat f);

struct DataOptions {
  DataFormat format = DataFormat::alpaca;
  std::string train_path;
  std::string val_path;           // a separate validation file; excludes val_fraction
  double val_fraction = 0.0;      // held out of train_path when val_path is empty
  uint64_t seed = 0;              // the validation split (alpaca)
  int64_t max_length = 512;       // alpaca: tokens per example; text: block size
  int64_t max_records = 0;        // > 0: only the first N records of train_path (instruction data only)
  LossOn loss_on = LossOn::response;         // instruction data only
  std::string prompt_template = "alpaca";    // instruction data only: "alpaca" or "chatml"
  int64_t stride = 0;             // text only, see TextCorpusOptions

  // Ranges and combinations; errors name `where` and the field.
  void validate(const std::string& where) const;
};

struct Dataset {
  std::vector<Example> train;
  std::vector<Example> val;  // empty when no validation was asked for
  TokenizeStats train_stats;
  TokenizeStats val_stats;
};

// Alpaca: records are split (val_fraction, seed) before tokenisation, so the split does not
// depend on max_length. Text: the validation part is the last val_fraction of the token stream
// (a contiguous tail, so overlapping blocks cannot leak text across the split); the seed is
// unused. Throws l4q::Error naming the file for every bad input (see alpaca.h, instruct.h).
Dataset load_dataset(const DataOptions& opts, const Tokenizer& tokenizer);

}  // namespace l4q
