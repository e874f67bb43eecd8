// Multiple-choice evaluation in the MMLU layout (Hendrycks et al., "Measuring Massive
// Multitask Language Understanding", evaluate.py).
//
// Data: CSV files without a header, one question per row: question, the choices (A, B, C, D),
// the answer letter. Files `<subject>_<split>.csv` inside a folder named `<split>` (dev, val,
// test), found anywhere below a directory (e.g. the extracted mmlu.zip: data/dev/...) or inside
// a .zip archive read directly.
//
// Prompt (evaluate.py, reproduced byte for byte, including its two spaces after "about"):
//   "The following are multiple choice questions (with answers) about" + " " + " abstract algebra"
//   + ".\n\n" + k dev examples + the question, where an example is
//   question + "\nA. " + choice A + ... + "\nAnswer:" (+ " " + letter + "\n\n" for dev examples).
// The first k rows of the dev split are the shots. A prompt longer than the context loses
// shots from the end first (as evaluate.py's crop loop); with no shots left it keeps its last
// tokens.
//
// Answer: the choice whose continuation " A", " B", ... has the highest log-likelihood after
// the prompt. The continuation's tokens are those that tokenizing prompt + " A" adds after
// the common prefix with the prompt's own tokens (BOS first), summed in log-probability. With
// LLaMA's tokenizer " A" is one token (the piece "▁A") and this is exactly evaluate.py's
// argmax over the next-token logits of the four letters; with a vocabulary that lacks "▁A"
// (stories260K's tok512 has "▁B" but spells " A" as "▁", "A") it is the probability of the
// canonical tokenization of " A".
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace l4q {

class LlamaModel;
class Tokenizer;

struct McQuestion {
  std::string question;
  std::vector<std::string> choices;
  int answer = 0;  // index into choices
};

struct McSubject {
  std::string name;                   // e.g. "abstract_algebra"
  std::vector<McQuestion> dev, eval;  // shots, and the questions scored (test or val split)
};

// Rows -> questions: each row question, >= 2 choices, answer letter (A, B, ...). Throws
// l4q::Error naming `where`, the row and the problem (wrong field count, unknown letter).
std::vector<McQuestion> parse_mc_rows(const std::vector<std::vector<std::string>>& rows,
                                      const std::string& where);

// Reads the dev split and `split` ("test" or "val") of every subject, or of `subjects` only
// (each must exist), sorted by name. `path`: a directory or a .zip. Throws l4q::Error naming the
// path when nothing matches, a subject lacks its dev or eval file, or a file is malformed.
std::vector<McSubject> load_mmlu(const std::string& path, const std::vector<std::string>& subjects = {},
                                 const std::string& split = "test");

// evaluate.py's pieces.
std::string mmlu_header(const std::string& subject);
std::string mmlu_format_example(const McQuestion& q, bool include_answer);
std::string mmlu_prompt(const std::string& subject, const std::vector<McQuestion>& dev, int shots,
                        const McQuestion& q);
std::string choice_letter(int index);  // 0 -> "A"

// Log-likelihood of each continuation: sequences[i] = context + continuation i; the
// continuation is sequences[i][starts[i]..]. Implementations may keep state between calls
// (a KV cache of the previous sequence).
using ContinuationScorer = std::function<std::vector<double>(
    const std::vector<std::vector<int32_t>>& sequences, const std::vector<size_t>& starts)>;

// Scores with `model` (not copied: it must outlive the scorer), no autograd. Reuses the KV
// cache of the longest prefix a sequence shares with the one before it, so the few-shot
// prefix of a subject and the prompt shared by its four choices run once.
ContinuationScorer model_continuation_scorer(const LlamaModel& model);

struct McOptions {
  int shots = 5;
  int64_t limit = 0;          // questions per subject, 0: all
  int64_t max_context = 0;    // tokens a sequence may have (prompt + answer), 0: no limit
};

struct McSubjectResult {
  std::string subject;
  int64_t correct = 0, total = 0;
  int64_t fewer_shots = 0;    // questions whose prompt lost shots to fit
  int64_t cut = 0;            // questions cut from the left even with 0 shots
  std::vector<int64_t> predicted;  // how often each letter was chosen (a letter bias shows here)
  double accuracy() const { return total > 0 ? double(correct) / total : 0.0; }
};

struct McResult {
  std::vector<McSubjectResult> subjects;
  double macro_accuracy() const;  // mean over subjects
  double micro_accuracy() const;  // over all questions
  int64_t questions() const;
  std::string to_json() const;
};

struct McProgress {
  int64_t done, total;
  const McSubjectResult* current;
};

// Prompts (mmlu_prompt, shots cut to fit max_context), continuations " A"... tokenized by
// `tok` with BOS first, the argmax picked by `scorer` (ties: the first choice).
McResult evaluate_multiple_choice(const std::vector<McSubject>& subjects, const Tokenizer& tok,
                                  const ContinuationScorer& scorer, const McOptions& options,
                                  const std::function<void(const McProgress&)>& progress = {});

}  // namespace l4q
