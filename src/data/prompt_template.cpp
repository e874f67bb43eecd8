#include "l4q/data/prompt_template.h"

#include "l4q/error.h"

namespace l4q {
namespace {

// Replaces each "{key}" of `tmpl` by its value, in one left-to-right pass, so braces inside
// the substituted text are never expanded again.
std::string substitute(const std::string& tmpl, const std::string& key1, const std::string& val1,
                 const std::string& key2 = "", const std::string& val2 = "") {
  std::string out;
  out.reserve(tmpl.size() + val1.size() + val2.size());
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == '{') {
      if (tmpl.compare(i, key1.size(), key1) == 0) {
        out += val1;
        i += key1.size();
        continue;
      }
      if (!key2.empty() && tmpl.compare(i, key2.size(), key2) == 0) {
        out += val2;
        i += key2.size();
        continue;
      }
    }
    out += tmpl[i++];
  }
  return out;
}

}  // namespace

std::string AlpacaTemplate::prompt(const InstructRecord& r) const {
  // As train.py: the no-input prompt exactly when input is empty.
  if (r.input.empty()) return substitute(kPromptNoInput, "{instruction}", r.instruction);
  return substitute(kPromptInput, "{instruction}", r.instruction, "{input}", r.input);
}

std::string ChatmlTemplate::prompt(const InstructRecord& r) const {
  std::string out;
  if (!system_.empty()) out += "<|im_start|>system\n" + system_ + "<|im_end|>\n";
  out += "<|im_start|>user\n" + r.instruction;
  if (!r.input.empty()) out += "\n\n" + r.input;
  out += "<|im_end|>\n<|im_start|>assistant\n";
  return out;
}

std::unique_ptr<PromptTemplate> make_prompt_template(const std::string& name) {
  if (name == "alpaca") return std::make_unique<AlpacaTemplate>();
  if (name == "chatml") return std::make_unique<ChatmlTemplate>();
  fail("prompt template '", name, "': unknown; expected one of: alpaca, chatml");
}

}  // namespace l4q
