// How an instruction record becomes the text a model is conditioned on (the prompt) and the
// text it is trained to produce (the response). The tokeniser adds BOS before the prompt and
// EOS after the response, as token ids, so templates hold no special-token strings.
#pragma once
#include <memory>
#include <string>

#include "l4q/data/alpaca.h"

namespace l4q {

class PromptTemplate {
 public:
  virtual ~PromptTemplate() = default;
  virtual std::string name() const = 0;
  // Everything before the answer; also what inference feeds the model (with output unused).
  virtual std::string prompt(const InstructRecord& r) const = 0;
  // The answer, without EOS.
  virtual std::string response(const InstructRecord& r) const = 0;
};

// Stanford Alpaca's two prompts (tatsu-lab/stanford_alpaca, README and train.py PROMPT_DICT),
// chosen by whether `input` is empty, ending in "### Response:\n" as in the README's layout and
// tloen/alpaca-lora's templates/alpaca.json (train.py's strings stop at "### Response:").
class AlpacaTemplate final : public PromptTemplate {
 public:
  static constexpr const char* kPromptInput =
      "Below is an instruction that describes a task, paired with an input that provides "
      "further context. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
  static constexpr const char* kPromptNoInput =
      "Below is an instruction that describes a task. Write a response that appropriately "
      "completes the request.\n\n"
      "### Instruction:\n{instruction}\n\n### Response:\n";

  std::string name() const override { return "alpaca"; }
  std::string prompt(const InstructRecord& r) const override;
  std::string response(const InstructRecord& r) const override { return r.output; }
};

// "alpaca" (more to come, e.g. "chatml"); throws l4q::Error listing the known names otherwise.
std::unique_ptr<PromptTemplate> make_prompt_template(const std::string& name);

}  // namespace l4q
