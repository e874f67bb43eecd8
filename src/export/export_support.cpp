#include "export/export_support.h"

#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <system_error>

#include "l4q/error.h"
#include "l4q/io/atomic_file.h"
#include "l4q/io/gguf.h"
#include "l4q/io/model_tokenizer.h"
#include "l4q/model/llama.h"
#include "l4q/nn/methods.h"
#include "l4q/text/bpe_json.h"

namespace l4q::export_detail {

namespace fs = std::filesystem;

void check_output_path(const std::string& path, const ExportOptions& opt, const std::string& format) {
  const std::string where = "[" + format + " export]";
  if (path.empty()) fail(where, " output path: expected a path, got \"\"");
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();  // "out/"
  const auto leaf = p.filename().string();
  if (leaf.empty() || leaf == "." || leaf == "..")
    fail(where, " output '", path, "': expected a file or directory name");
  std::error_code ec;
  if (fs::exists(p, ec) && !opt.force)
    fail(where, " output '", path, "' exists (pass --force to replace it)");
  const auto parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec))
    fail(where, " output '", path, "': parent directory '", parent.string(), "' does not exist");
}

StagedDirectory::StagedDirectory(std::string path) : path_(std::move(path)) {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  const fs::path p(path_);
  const auto parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  tmp_ = (parent / ("." + p.filename().string() + ".tmp-" + std::to_string(::getpid()))).string();
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  if (!fs::create_directories(tmp_, ec) || ec)
    fail(path_, ": cannot create the staging directory '", tmp_, "': ", ec.message());
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagedDirectory::commit() {
  std::error_code ec;
  const fs::path p(path_);
  fs::path old;
  if (fs::exists(p, ec)) {
    old = p.parent_path() / ("." + p.filename().string() + ".old-" + std::to_string(::getpid()));
    fs::remove_all(old, ec);
    fs::rename(p, old, ec);
    if (ec) fail(path_, ": cannot move the existing output aside: ", ec.message());
  }
  fs::rename(tmp_, p, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, p);
    fail(path_, ": cannot move '", tmp_, "' into place: ", ec.message());
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

namespace {

RunVocabulary from_model_file(const std::string& path) {
  RunVocabulary r;
  r.source = r.model_file = path;
  const auto m = read_sentencepiece_model(path);
  for (const auto& e : m.pieces) {
    r.vocab.pieces.push_back(e.piece);
    r.vocab.scores.push_back(e.score);
    r.vocab.types.push_back(static_cast<int32_t>(e.type));
  }
  const auto& t = m.trainer_spec;
  r.vocab.bos_id = t.bos_id;
  r.vocab.eos_id = t.eos_id;
  r.vocab.unk_id = t.unk_id;
  r.vocab.pad_id = t.pad_id;
  r.vocab.add_dummy_prefix = m.normalizer_spec.add_dummy_prefix;
  return r;
}

RunVocabulary from_gguf(const std::string& path) {
  const auto f = GgufFile::open(path);
  RunVocabulary r;
  r.source = path + " (tokenizer.ggml.*)";
  r.vocab = sentencepiece_vocab_from_gguf(f);
  return r;
}

}  // namespace

RunVocabulary find_run_vocabulary(const TrainedRun& run) {
  const auto& c = run.config;
  if (!c.tokenizer.empty()) return from_model_file(c.tokenizer);
  const fs::path p(c.model);
  std::string looked;
  auto beside = [&](const fs::path& f) {
    looked += (looked.empty() ? "" : ", ") + f.string();
    return fs::is_regular_file(f);
  };
  if (fs::is_directory(p)) {
    if (beside(p / "tokenizer.model")) return from_model_file((p / "tokenizer.model").string());
  } else {
    if (p.extension() == ".gguf") {
      looked = p.string() + " (tokenizer.ggml.*)";
      const auto f = GgufFile::open(p.string());
      if (f.get_or<std::string>("tokenizer.ggml.model", "") == "llama" &&
          f.contains("tokenizer.ggml.tokens"))
        return from_gguf(p.string());
    }
    for (const char* name : {"tokenizer.model", "tok512.model"})
      if (beside(p.parent_path() / name)) return from_model_file((p.parent_path() / name).string());
  }
  fail(c.model, ": no SentencePiece vocabulary found for the export (looked at ", looked,
       "); set the run's tokenizer to a .model file");
}

const BpeVocab* run_bpe_vocab(const TrainedRun& run) {
  const auto* bpe = dynamic_cast<const BpeTokenizer*>(run.tokenizer.get());
  return bpe ? &bpe->vocab() : nullptr;
}

void write_run_tokenizer(const TrainedRun& run, const std::string& dir) {
  if (const auto* v = run_bpe_vocab(run)) {
    write_file_atomic(dir + "/tokenizer.json", bpe_tokenizer_json(*v) + "\n");
    write_file_atomic(dir + "/tokenizer_config.json", bpe_tokenizer_config_json(*v) + "\n");
    return;
  }
  write_tokenizer_model(find_run_vocabulary(run), dir + "/tokenizer.model");
}

void write_tokenizer_model(const RunVocabulary& v, const std::string& path) {
  if (!v.model_file.empty()) copy_file_atomic(v.model_file, path);
  else write_sentencepiece_model(sentencepiece_model_from_vocab(v.vocab, v.source), path);
}

ExportReport start_report(const TrainedRun& run, const std::string& format, const std::string& path) {
  ExportReport rep;
  rep.format = format;
  rep.source = run.checkpoint_dir;
  rep.path = path;
  if (run.model && run.model->rounds_at_export())
    rep.notes.push_back("method " + to_string(run.config.method.method) +
                        " rounds the merged weight (base + (alpha/r)BA) to the grid here (post-training quantization): the "
                        "exported model is not the one trained; summary.json's val_loss_deployed and "
                        "l4q-eval of the run score this exported model");
  return rep;
}

std::string fmt_g(double x) {
  std::ostringstream os;
  os.precision(3);
  os << x;
  return os.str();
}

uint64_t bytes_on_disk(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  uint64_t n = 0;
  if (fs::is_directory(path, ec))
    for (const auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_regular_file(ec)) n += e.file_size(ec);
  return n;
}

}  // namespace l4q::export_detail
