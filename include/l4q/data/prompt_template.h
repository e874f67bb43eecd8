// How an instruction record becomes the text a model is conditioned on (the prompt) and the
// text it is trained to produce (the response). The tokeniser adds BOS before the prompt (when
// the model wants one) and EOS after the response, as token ids. Alpaca holds no special-token
// strings; ChatML's turn markers are special tokens that a byte-level BPE tokenizer splits out
// of the text (text/bpe.h), and its EOS is the turn end <|im_end|>.
#pragma once
#include <memory>
#include <string>
#include <utility>

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

// ChatML, as SmolLM2-Instruct's chat template (its GGUF tokenizer.chat_template) renders one
// system turn, one user turn and the assistant's answer:
//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{instruction}[\n\n{input}]<|im_end|>\n
//   <|im_start|>assistant\n            <- prompt ends here; response: {output}, then EOS
// With EOS = <|im_end|> (SmolLM2's eos_token_id) the trained tokens are exactly the assistant's
// content and its <|im_end|>. An empty system text leaves the system turn out.
class ChatmlTemplate final : public PromptTemplate {
 public:
  static constexpr const char* kSmolLM2System =
      "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

  explicit ChatmlTemplate(std::string system = kSmolLM2System) : system_(std::move(system)) {}
  std::string name() const override { return "chatml"; }
  std::string prompt(const InstructRecord& r) const override;
  std::string response(const InstructRecord& r) const override { return r.output; }

 private:
  std::string system_;
};

// "alpaca" or "chatml"; throws l4q::Error listing the known names otherwise.
std::unique_ptr<PromptTemplate> make_prompt_template(const std::string& name);

}  // namespace l4q
