#include "l4q/text/bpe_json.h"

#include <nlohmann/json.hpp>

#include "l4q/error.h"

namespace l4q {

namespace {

using json = nlohmann::json;

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

bool flag(const json& j, const char* key, bool dflt) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : dflt;
}

void check_byte_level(const json& b, bool want_regex, const std::string& where) {
  if (flag(b, "add_prefix_space", false))
    fail(where, ": pre_tokenizer ByteLevel: add_prefix_space=true is not supported");
  if (flag(b, "use_regex", true) != want_regex)
    fail(where, ": pre_tokenizer ByteLevel: expected use_regex=", want_regex ? "true" : "false",
         " in this position");
}

BpePreTokenizer parse_pre_tokenizer(const json& p, const std::string& where) {
  const std::string t = type_of(p);
  if (t == "ByteLevel") {
    check_byte_level(p, true, where);
    return BpePreTokenizer::gpt2;
  }
  if (t == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array() &&
      p["pretokenizers"].size() == 2) {
    const json& a = p["pretokenizers"][0];
    const json& b = p["pretokenizers"][1];
    if (type_of(a) == "Digits" && flag(a, "individual_digits", false) && type_of(b) == "ByteLevel") {
      check_byte_level(b, true, where);
      return BpePreTokenizer::smollm;
    }
    if (type_of(a) == "Split" && type_of(b) == "ByteLevel") {
      check_byte_level(b, false, where);
      const json& pat = a.value("pattern", json::object());
      const std::string regex = pat.is_object() && pat.contains("Regex") ? pat["Regex"].get<std::string>() : "";
      if (regex != bpe_pre_tokenizer_regex(BpePreTokenizer::llama3))
        fail(where, ": pre_tokenizer Split: regex '", regex, "' is not supported (only LLaMA-3's: '",
             bpe_pre_tokenizer_regex(BpePreTokenizer::llama3), "')");
      if (a.value("behavior", std::string()) != "Isolated" || flag(a, "invert", false))
        fail(where, ": pre_tokenizer Split: expected behavior Isolated, invert false");
      return BpePreTokenizer::llama3;
    }
  }
  fail(where, ": pre_tokenizer ", p.dump().substr(0, 200),
       ": not supported (expected ByteLevel, Digits+ByteLevel or LLaMA-3's Split+ByteLevel)");
}

// The special token a TemplateProcessing puts before sequence A, or "".
std::string leading_special(const json& post) {
  const std::string t = type_of(post);
  if (t == "Sequence" && post.contains("processors") && post["processors"].is_array()) {
    for (const auto& p : post["processors"]) {
      const std::string s = leading_special(p);
      if (!s.empty()) return s;
    }
    return "";
  }
  if (t != "TemplateProcessing" || !post.contains("single") || !post["single"].is_array() ||
      post["single"].empty())
    return "";
  const json& first = post["single"][0];
  if (first.is_object() && first.contains("SpecialToken")) return first["SpecialToken"].value("id", "");
  return "";
}

std::string token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

}  // namespace

BpeVocab parse_bpe_tokenizer_json(const std::string& json_text, const std::string& where,
                                  const std::string& tokenizer_config_json) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
  try {
    if (!j.is_object() || !j.contains("model")) fail(where, ": JSON without a 'model' object (not a tokenizer.json?)");
    const json& m = j["model"];
    if (type_of(m) != "BPE") fail(where, ": JSON tokenizer with model.type \"", type_of(m),
                                       "\": only byte-level \"BPE\" models are supported");
    if (flag(m, "byte_fallback", false)) fail(where, ": model.byte_fallback=true: not a byte-level BPE");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
      if (m.contains(k) && !m[k].is_null() && !(m[k].is_string() && m[k].get<std::string>().empty()))
        fail(where, ": model.", k, " = ", m[k].dump(), ": not supported");
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      fail(where, ": normalizer ", j["normalizer"].dump().substr(0, 200), ": not supported (expected null)");

    BpeVocab v;
    // Ids: model.vocab and added_tokens together must number 0..n-1.
    std::vector<std::string> tokens;
    std::vector<bool> set;
    auto put = [&](int64_t id, const std::string& text, const char* from) {
      if (id < 0 || id > (1 << 24)) fail(where, ": ", from, ": token '", text, "' has id ", id);
      if (static_cast<size_t>(id) >= tokens.size()) {
        tokens.resize(static_cast<size_t>(id) + 1);
        set.resize(static_cast<size_t>(id) + 1, false);
      }
      if (set[static_cast<size_t>(id)] && tokens[static_cast<size_t>(id)] != text)
        fail(where, ": ", from, ": id ", id, " is both '", tokens[static_cast<size_t>(id)], "' and '", text, "'");
      tokens[static_cast<size_t>(id)] = text;
      set[static_cast<size_t>(id)] = true;
    };
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail(where, ": model.vocab: expected an object");
    for (const auto& [text, id] : m["vocab"].items()) put(id.get<int64_t>(), text, "model.vocab");
    std::vector<std::pair<int64_t, BpeTokenType>> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        const std::string content = a.value("content", "");
        const int64_t id = a.value("id", int64_t{-1});
        if (flag(a, "lstrip", false) || flag(a, "rstrip", false) || flag(a, "single_word", false))
          fail(where, ": added token '", content, "': lstrip/rstrip/single_word are not supported");
        put(id, content, "added_tokens");
        added.emplace_back(id, flag(a, "special", false) ? BpeTokenType::control : BpeTokenType::user_defined);
      }
    }
    for (size_t i = 0; i < set.size(); ++i)
      if (!set[i]) fail(where, ": no token has id ", i, " (ids must be 0..", set.size() - 1, ")");
    v.tokens = std::move(tokens);
    v.types.assign(v.tokens.size(), BpeTokenType::normal);
    for (const auto& [id, t] : added) v.types[static_cast<size_t>(id)] = t;

    if (!m.contains("merges") || !m["merges"].is_array()) fail(where, ": model.merges: expected an array");
    v.merges.reserve(m["merges"].size());
    for (const auto& mg : m["merges"]) {
      if (mg.is_string()) {
        const std::string s = mg.get<std::string>();
        const auto sp = s.find(' ', 1);
        if (sp == std::string::npos) fail(where, ": model.merges: '", s, "': expected 'left right'");
        v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        v.merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
      } else {
        fail(where, ": model.merges: ", mg.dump(), ": expected \"a b\" or [\"a\", \"b\"]");
      }
    }
    v.ignore_merges = flag(m, "ignore_merges", false);
    if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null())
      fail(where, ": pre_tokenizer: missing (a byte-level BPE needs ByteLevel)");
    v.pre = parse_pre_tokenizer(j["pre_tokenizer"], where);

    auto find = [&](const std::string& text) -> int32_t {
      for (size_t i = 0; i < v.tokens.size(); ++i)
        if (v.tokens[i] == text) return static_cast<int32_t>(i);
      return -1;
    };
    if (j.contains("post_processor") && !j["post_processor"].is_null()) {
      const std::string bos = leading_special(j["post_processor"]);
      if (!bos.empty()) {
        v.bos_id = find(bos);
        if (v.bos_id < 0) fail(where, ": post_processor: BOS '", bos, "' is not a token");
        v.add_bos = true;
      }
    }
    if (m.contains("unk_token") && m["unk_token"].is_string()) {
      v.unk_id = find(m["unk_token"].get<std::string>());
      if (v.unk_id < 0) fail(where, ": model.unk_token '", m["unk_token"].get<std::string>(), "' is not a token");
      v.unk_for_missing_bytes = true;
    }
    std::string eos;
    if (!tokenizer_config_json.empty()) {
      const json c = json::parse(tokenizer_config_json);
      if (c.contains("eos_token")) eos = token_text(c["eos_token"]);
      if (v.bos_id < 0 && c.contains("bos_token")) v.bos_id = find(token_text(c["bos_token"]));
      if (c.contains("pad_token")) v.pad_id = find(token_text(c["pad_token"]));
    }
    if (!eos.empty()) {
      v.eos_id = find(eos);
      if (v.eos_id < 0) fail(where, ": tokenizer_config.json: eos_token '", eos, "' is not a token");
    } else {
      for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>"})
        if ((v.eos_id = find(name)) >= 0) break;
    }
    return v;
  } catch (const json::exception& e) {
    fail(where, ": ", e.what());
  }
}

}  // namespace l4q

namespace l4q {

namespace {

nlohmann::json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
          {"use_regex", use_regex}};
}

nlohmann::json pre_tokenizer_json(BpePreTokenizer p) {
  using json = nlohmann::json;
  switch (p) {
    case BpePreTokenizer::gpt2: return byte_level(true);
    case BpePreTokenizer::smollm:
      return {{"type", "Sequence"},
              {"pretokenizers",
               json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}};
    case BpePreTokenizer::llama3:
      return {{"type", "Sequence"},
              {"pretokenizers",
               json::array({{{"type", "Split"},
                             {"pattern", {{"Regex", bpe_pre_tokenizer_regex(p)}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            byte_level(false)})}};
  }
  fail("bpe_tokenizer_json: unknown pre-tokenizer");
}

BpeTokenType type_at(const BpeVocab& v, size_t i) {
  return i < v.types.size() ? v.types[i] : BpeTokenType::normal;
}

}  // namespace

std::string bpe_tokenizer_json(const BpeVocab& v) {
  using json = nlohmann::json;
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  json added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const auto t = type_at(v, i);
    if (t != BpeTokenType::control && t != BpeTokenType::user_defined) continue;
    added.push_back({{"id", i}, {"content", v.tokens[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", t == BpeTokenType::control}});
  }
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre_tokenizer_json(v.pre);
  if (v.add_bos && v.bos_id >= 0) {
    const auto& bos = v.tokens.at(static_cast<size_t>(v.bos_id));
    auto special = [&](int type_id) { return json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
    auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", json::array({special(0), seq("A", 0)})},
                           {"pair", json::array({special(0), seq("A", 0), special(1), seq("B", 1)})},
                           {"special_tokens", {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
  } else {
    j["post_processor"] = nullptr;
  }
  j["decoder"] = byte_level(true);
  json vocab = json::object();
  for (size_t i = 0; i < v.tokens.size(); ++i) vocab[v.tokens[i]] = i;
  json merges = json::array();
  for (const auto& [a, b] : v.merges) merges.push_back(json::array({a, b}));
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr},
                {"unk_token", v.unk_for_missing_bytes && v.unk_id >= 0
                                  ? json(v.tokens.at(static_cast<size_t>(v.unk_id)))
                                  : json(nullptr)},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", v.ignore_merges},
                {"vocab", vocab}, {"merges", merges}};
  return j.dump(1);
}

std::string bpe_tokenizer_config_json(const BpeVocab& v) {
  using json = nlohmann::json;
  json c = json::object();
  auto name = [&](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < v.tokens.size() ? json(v.tokens[static_cast<size_t>(id)])
                                                                 : json(nullptr);
  };
  c["tokenizer_class"] = "PreTrainedTokenizerFast";
  c["bos_token"] = name(v.bos_id);
  c["eos_token"] = name(v.eos_id);
  c["pad_token"] = name(v.pad_id);
  c["unk_token"] = name(v.unk_id);
  c["add_bos_token"] = v.add_bos;
  c["clean_up_tokenization_spaces"] = false;
  return c.dump(1);
}

}  // namespace l4q
