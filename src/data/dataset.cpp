#include "l4q/data/dataset.h"

#include <algorithm>
#include <cmath>

#include "l4q/data/alpaca.h"
#include "l4q/data/prompt_template.h"
#include "l4q/data/split.h"
#include "l4q/data/text_corpus.h"
#include "l4q/error.h"

namespace l4q {

DataFormat parse_data_format(const std::string& s, const std::string& where) {
  if (s == "alpaca") return DataFormat::alpaca;
  if (s == "text") return DataFormat::text;
  fail(where, ": format: expected 'alpaca' or 'text', got '", s, "'");
}

const char* to_string(DataFormat f) { return f == DataFormat::alpaca ? "alpaca" : "text"; }

void DataOptions::validate(const std::string& where) const {
  if (train_path.empty()) fail(where, ": train_path: a training file is required");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    fail(where, ": val_fraction: expected a value in [0, 1), got ", val_fraction);
  if (!val_path.empty() && val_fraction > 0.0)
    fail(where, ": val_path and val_fraction: give one or the other, not both");
  if (max_length < 2) fail(where, ": max_length: expected >= 2, got ", max_length);
  if (max_records < 0) fail(where, ": max_records: expected >= 0 (0 = all), got ", max_records);
  if (format == DataFormat::text && max_records > 0)
    fail(where, ": max_records: applies to alpaca data only, got ", max_records,
         " with format 'text'");
  if (stride < 0) fail(where, ": stride: expected >= 0 (0 = no overlap), got ", stride);
  if (format == DataFormat::alpaca && stride != 0)
    fail(where, ": stride: applies to text data only, got ", stride, " with format 'alpaca'");
}

namespace {

TokenizeStats block_stats(const std::vector<Example>& blocks) {
  TokenizeStats st;
  st.records = st.examples = static_cast<int64_t>(blocks.size());
  for (const auto& e : blocks) {
    st.tokens += static_cast<int64_t>(e.ids.size());
    st.loss_tokens += count_loss_tokens(e);
    st.longest = std::max(st.longest, static_cast<int64_t>(e.ids.size()));
  }
  return st;
}

Dataset load_alpaca(const DataOptions& opts, const Tokenizer& tok) {
  const auto tmpl = make_prompt_template(opts.prompt_template);
  const InstructOptions io{opts.max_length, opts.loss_on};
  auto records = read_alpaca(opts.train_path);
  if (opts.max_records > 0 && static_cast<int64_t>(records.size()) > opts.max_records)
    records.resize(static_cast<size_t>(opts.max_records));

  Dataset d;
  std::vector<InstructRecord> val_records;
  if (!opts.val_path.empty()) {
    val_records = read_alpaca(opts.val_path);
  } else if (opts.val_fraction > 0.0) {
    const auto split = split_validation(static_cast<int64_t>(records.size()), opts.val_fraction,
                                        opts.seed, opts.train_path);
    val_records = select(records, split.val);
    records = select(records, split.train);
  }
  auto train = tokenize_instruct(records, tok, *tmpl, io, opts.train_path);
  d.train = std::move(train.examples);
  d.train_stats = train.stats;
  if (!val_records.empty()) {
    const auto where = opts.val_path.empty() ? opts.train_path + " (validation split)" : opts.val_path;
    auto val = tokenize_instruct(val_records, tok, *tmpl, io, where);
    d.val = std::move(val.examples);
    d.val_stats = val.stats;
  }
  return d;
}

Dataset load_text(const DataOptions& opts, const Tokenizer& tok) {
  const TextCorpusOptions to{opts.max_length, opts.stride, tok.bos_id() >= 0};
  auto tokens = tokenize_text_file(opts.train_path, tok);
  std::vector<int32_t> val_tokens;
  std::string val_where = opts.val_path;
  if (!opts.val_path.empty()) {
    val_tokens = tokenize_text_file(opts.val_path, tok);
  } else if (opts.val_fraction > 0.0) {
    const auto n = static_cast<int64_t>(tokens.size());
    const auto n_val = std::max<int64_t>(1, std::llround(opts.val_fraction * static_cast<double>(n)));
    if (n_val >= n)
      fail(opts.train_path, ": val_fraction ", opts.val_fraction, " of ", n,
           " tokens leaves no training text");
    val_tokens.assign(tokens.end() - n_val, tokens.end());
    tokens.resize(static_cast<size_t>(n - n_val));
    val_where = opts.train_path + " (validation tail)";
  }
  Dataset d;
  d.train = make_text_blocks(tokens, tok.bos_id(), to, opts.train_path);
  d.train_stats = block_stats(d.train);
  if (!val_tokens.empty()) {
    d.val = make_text_blocks(val_tokens, tok.bos_id(), to, val_where);
    d.val_stats = block_stats(d.val);
  }
  return d;
}

}  // namespace

Dataset load_dataset(const DataOptions& opts, const Tokenizer& tokenizer) {
  opts.validate("data options");
  return opts.format == DataFormat::alpaca ? load_alpaca(opts, tokenizer) : load_text(opts, tokenizer);
}

}  // namespace l4q
