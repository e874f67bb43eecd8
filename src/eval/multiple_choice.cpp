#include "l4q/eval/multiple_choice.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "eval/zip_reader.h"
#include "l4q/error.h"
#include "l4q/eval/csv.h"
#include "l4q/model/kv_cache.h"
#include "l4q/model/llama.h"
#include "l4q/text/tokenizer.h"

namespace l4q {

namespace fs = std::filesystem;

std::string choice_letter(int index) { return std::string(1, static_cast<char>('A' + index)); }

std::vector<McQuestion> parse_mc_rows(const std::vector<std::vector<std::string>>& rows, const std::string& where) {
  std::vector<McQuestion> out;
  out.reserve(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    if (row.size() < 4)
      fail(where, ": row ", r + 1, ": expected question, >= 2 choices and the answer letter, got ", row.size(),
           " fields");
    if (!out.empty() && row.size() != out.front().choices.size() + 2)
      fail(where, ": row ", r + 1, ": ", row.size(), " fields, the rows before have ", out.front().choices.size() + 2);
    McQuestion q;
    q.question = row[0];
    q.choices.assign(row.begin() + 1, row.end() - 1);
    std::string letter = row.back();
    while (!letter.empty() && (letter.back() == ' ' || letter.back() == '\t')) letter.pop_back();
    while (!letter.empty() && (letter.front() == ' ' || letter.front() == '\t')) letter.erase(0, 1);
    const int n = static_cast<int>(q.choices.size());
    if (letter.size() != 1 || letter[0] < 'A' || letter[0] >= 'A' + n)
      fail(where, ": row ", r + 1, ": answer '", row.back(), "' is not a letter A..", choice_letter(n - 1));
    q.answer = letter[0] - 'A';
    out.push_back(std::move(q));
  }
  return out;
}

namespace {

// "<subject>_<split>.csv" inside a folder "<split>": the subject, or "" when the name does not
// follow that pattern.
std::string subject_of(const std::string& rel_path, const std::string& split) {
  const fs::path p(rel_path);
  const std::string base = p.filename().string(), suffix = "_" + split + ".csv";
  if (p.parent_path().filename().string() != split) return "";
  if (base.size() <= suffix.size() || base.compare(base.size() - suffix.size(), suffix.size(), suffix) != 0) return "";
  return base.substr(0, base.size() - suffix.size());
}

}  // namespace

std::vector<McSubject> load_mmlu(const std::string& path, const std::vector<std::string>& subjects,
                                 const std::string& split) {
  if (split != "test" && split != "val")
    fail("load_mmlu: split: expected test or val (dev holds the shots), got '", split, "'");
  // subject -> file contents for dev and the eval split, from a directory or a zip.
  std::map<std::string, std::pair<std::string, std::string>> found;  // name -> (dev where, eval where)
  std::map<std::string, std::string> contents;                      // where -> text
  std::set<std::string> available;                                  // every subject seen
  auto consider = [&](const std::string& rel, const std::string& where, const std::function<std::string()>& read) {
    for (const std::string& s : {std::string("dev"), split}) {
      const auto subj = subject_of(rel, s);
      if (subj.empty()) continue;
      available.insert(subj);
      if (!subjects.empty() && std::find(subjects.begin(), subjects.end(), subj) == subjects.end()) continue;
      auto& slot = s == "dev" ? found[subj].first : found[subj].second;
      if (!slot.empty()) fail(path, ": subject '", subj, "' has two ", s, " files: ", slot, " and ", where);
      slot = where;
      contents[where] = read();
    }
  };
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (!it->is_regular_file()) continue;
      const auto file = it->path().string();
      consider(fs::relative(it->path(), path).generic_string(), file, [&] {
        std::ifstream in(file, std::ios::binary);
        if (!in) fail(file, ": cannot open");
        std::ostringstream ss;
        ss << in.rdbuf();
        return ss.str();
      });
    }
    if (ec) fail(path, ": cannot list directory: ", ec.message());
  } else if (fs::is_regular_file(path, ec)) {
    const ZipReader zip(path);
    for (const auto& e : zip.entries())
      if (e.name.empty() || e.name.back() != '/')
        consider(e.name, path + ":" + e.name, [&] { return zip.read(e); });
  } else {
    fail(path, ": no such directory or .zip file (expected MMLU's data folder or mmlu.zip)");
  }
  if (available.empty())
    fail(path, ": no MMLU files (expected <subject>_dev.csv in a folder dev/ and <subject>_", split,
         ".csv in a folder ", split, "/)");
  for (const auto& s : subjects)
    if (!found.count(s))
      fail(path, ": subject '", s, "' not found (", available.size(), " subjects, e.g. '", *available.begin(), "')");
  std::vector<McSubject> out;
  for (const auto& [name, files] : found) {
    if (files.first.empty()) fail(path, ": subject '", name, "' has no dev file (", name, "_dev.csv)");
    if (files.second.empty()) fail(path, ": subject '", name, "' has no ", split, " file (", name, "_", split, ".csv)");
    McSubject s;
    s.name = name;
    s.dev = parse_mc_rows(parse_csv(contents[files.first], files.first), files.first);
    s.eval = parse_mc_rows(parse_csv(contents[files.second], files.second), files.second);
    out.push_back(std::move(s));
  }
  return out;
}

std::string mmlu_header(const std::string& subject) {
  // evaluate.py: format_subject joins " " + word for every word, and the template already has
  // a space after "about".
  std::string words;
  std::stringstream ss(subject);
  std::string w;
  while (std::getline(ss, w, '_')) words += " " + w;
  return "The following are multiple choice questions (with answers) about " + words + ".\n\n";
}

std::string mmlu_format_example(const McQuestion& q, bool include_answer) {
  std::string s = q.question;
  for (size_t j = 0; j < q.choices.size(); ++j) s += "\n" + choice_letter(static_cast<int>(j)) + ". " + q.choices[j];
  s += "\nAnswer:";
  if (include_answer) s += " " + choice_letter(q.answer) + "\n\n";
  return s;
}

std::string mmlu_prompt(const std::string& subject, const std::vector<McQuestion>& dev, int shots,
                        const McQuestion& q) {
  if (shots < 0 || shots > static_cast<int>(dev.size()))
    fail("mmlu_prompt: shots: expected 0..", dev.size(), " (dev questions of ", subject, "), got ", shots);
  std::string p = mmlu_header(subject);
  for (int i = 0; i < shots; ++i) p += mmlu_format_example(dev[i], true);
  return p + mmlu_format_example(q, false);
}

namespace {

class ModelScorer {
 public:
  explicit ModelScorer(const LlamaModel& m) : model_(m) {}

  std::vector<double> operator()(const std::vector<std::vector<int32_t>>& seqs, const std::vector<size_t>& starts) {
    if (seqs.size() != starts.size()) fail("[continuation scorer] ", seqs.size(), " sequences but ", starts.size(), " starts");
    at::NoGradGuard no_grad;
    std::vector<double> out;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const auto& s = seqs[i];
      const size_t st = starts[i];
      if (st < 1 || st >= s.size())
        fail("[continuation scorer] sequence ", i, ": continuation start ", st, " outside [1, ", s.size(), ")");
      for (const int32_t id : s)
        if (id < 0 || id >= model_.config().vocab_size)
          fail("[continuation scorer] token id ", id, " outside the vocabulary [0, ", model_.config().vocab_size, ")");
      // Reuse the cached prefix, but recompute from st - 1 on: its output predicts token st.
      size_t keep = 0;
      while (keep < cached_.size() && keep < s.size() && cached_[keep] == s[keep]) ++keep;
      keep = std::min(keep, st - 1);
      cache_.truncate(static_cast<int64_t>(keep));
      cached_.resize(keep);
      std::vector<int64_t> input(s.begin() + keep, s.end());
      const auto tokens = at::tensor(input, at::kLong).unsqueeze(0);
      const auto hidden = model_.forward_hidden(tokens, &cache_)[0];  // [len - keep, H]
      cached_ = s;
      const auto rows = hidden.slice(0, st - 1 - keep, s.size() - 1 - keep);
      const auto logp = at::log_softmax(model_.logits(rows), -1);
      std::vector<int64_t> tgt(s.begin() + st, s.end());
      const auto t = at::tensor(tgt, at::kLong).unsqueeze(1);
      out.push_back(logp.gather(1, t).to(at::kDouble).sum().item<double>());
    }
    return out;
  }

 private:
  const LlamaModel& model_;
  KvCache cache_;
  std::vector<int32_t> cached_;
};

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

}  // namespace

ContinuationScorer model_continuation_scorer(const LlamaModel& model) {
  auto s = std::make_shared<ModelScorer>(model);
  return [s](const std::vector<std::vector<int32_t>>& seqs, const std::vector<size_t>& starts) {
    return (*s)(seqs, starts);
  };
}

double McResult::macro_accuracy() const {
  if (subjects.empty()) return 0.0;
  double sum = 0;
  for (const auto& s : subjects) sum += s.accuracy();
  return sum / subjects.size();
}

int64_t McResult::questions() const {
  int64_t n = 0;
  for (const auto& s : subjects) n += s.total;
  return n;
}

double McResult::micro_accuracy() const {
  int64_t c = 0;
  for (const auto& s : subjects) c += s.correct;
  const int64_t n = questions();
  return n > 0 ? double(c) / n : 0.0;
}

std::string McResult::to_json() const {
  nlohmann::ordered_json j;
  j["macro_accuracy"] = macro_accuracy();
  j["micro_accuracy"] = micro_accuracy();
  j["questions"] = questions();
  j["subjects"] = nlohmann::ordered_json::array();
  for (const auto& s : subjects)
    j["subjects"].push_back({{"subject", s.subject},
                             {"accuracy", s.accuracy()},
                             {"correct", s.correct},
                             {"total", s.total},
                             {"predicted", s.predicted},
                             {"fewer_shots", s.fewer_shots},
                             {"cut", s.cut}});
  return j.dump(2);
}

McResult evaluate_multiple_choice(const std::vector<McSubject>& subjects, const Tokenizer& tok,
                                  const ContinuationScorer& scorer, const McOptions& opt,
                                  const std::function<void(const McProgress&)>& progress) {
  if (opt.shots < 0) fail("[mmlu] shots: expected >= 0, got ", opt.shots);
  if (opt.limit < 0) fail("[mmlu] limit: expected >= 0, got ", opt.limit);
  if (opt.max_context < 0) fail("[mmlu] max_context: expected >= 0, got ", opt.max_context);
  int64_t total = 0, done = 0;
  for (const auto& s : subjects)
    total += opt.limit > 0 ? std::min<int64_t>(opt.limit, s.eval.size()) : static_cast<int64_t>(s.eval.size());
  McResult result;
  for (const auto& subj : subjects) {
    McSubjectResult r;
    r.subject = subj.name;
    const int64_t n = opt.limit > 0 ? std::min<int64_t>(opt.limit, subj.eval.size()) : subj.eval.size();
    for (int64_t qi = 0; qi < n; ++qi) {
      const auto& q = subj.eval[qi];
      int k = std::min<int>(opt.shots, static_cast<int>(subj.dev.size()));
      std::vector<std::vector<int32_t>> seqs;
      std::vector<size_t> starts;
      for (;;) {
        const std::string prompt = mmlu_prompt(subj.name, subj.dev, k, q);
        const auto ptoks = tok.encode(prompt, /*add_bos=*/true);
        seqs.clear();
        starts.clear();
        size_t longest = 0;
        for (size_t c = 0; c < q.choices.size(); ++c) {
          auto full = tok.encode(prompt + " " + choice_letter(static_cast<int>(c)), true);
          const size_t st = common_prefix(ptoks, full);
          if (st == 0 || st >= full.size())
            fail("[mmlu] ", subj.name, " question ", qi + 1, ": the answer ' ", choice_letter(static_cast<int>(c)),
                 "' adds no tokens after the prompt (or the prompt has no first token)");
          longest = std::max(longest, full.size());
          seqs.push_back(std::move(full));
          starts.push_back(st);
        }
        if (opt.max_context <= 0 || static_cast<int64_t>(longest) <= opt.max_context) break;
        if (k > 0) {
          --k;
          continue;
        }
        // Even without shots: keep the last max_context tokens of each sequence.
        const size_t cut = longest - static_cast<size_t>(opt.max_context);
        for (size_t c = 0; c < seqs.size(); ++c) {
          if (starts[c] <= cut)
            fail("[mmlu] ", subj.name, " question ", qi + 1, ": the answer alone is longer than the context of ",
                 opt.max_context, " tokens");
          seqs[c].erase(seqs[c].begin(), seqs[c].begin() + static_cast<std::ptrdiff_t>(cut));
          starts[c] -= cut;
        }
        ++r.cut;
        break;
      }
      if (k < std::min<int>(opt.shots, static_cast<int>(subj.dev.size()))) ++r.fewer_shots;
      const auto ll = scorer(seqs, starts);
      if (ll.size() != q.choices.size())
        fail("[mmlu] scorer returned ", ll.size(), " scores for ", q.choices.size(), " choices");
      const int pred = static_cast<int>(std::max_element(ll.begin(), ll.end()) - ll.begin());
      r.correct += pred == q.answer;
      if (r.predicted.size() < ll.size()) r.predicted.resize(ll.size());
      ++r.predicted[pred];
      ++r.total;
      ++done;
      if (progress) progress({done, total, &r});
    }
    result.subjects.push_back(std::move(r));
  }
  return result;
}

}  // namespace l4q
