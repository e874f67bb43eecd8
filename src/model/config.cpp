#include "l4q/model/config.h"

#include "l4q/error.h"

namespace l4q {

void LlamaConfig::validate(const std::string& where) const {
  const std::pair<const char*, int64_t> positive[] = {
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"max_position_embeddings", max_position_embeddings}};
  for (const auto& [name, v] : positive)
    if (v < 1) fail(where, ": config field '", name, "': expected >= 1, got ", v);
  if (num_attention_heads % num_key_value_heads != 0)
    fail(where, ": config field 'num_key_value_heads': ", num_key_value_heads,
         " does not divide num_attention_heads ", num_attention_heads);
  if (head_dim % 2 != 0)
    fail(where, ": config field 'head_dim': expected an even number (RoPE rotates pairs), got ",
         head_dim);
  if (!(rms_norm_eps > 0)) fail(where, ": config field 'rms_norm_eps': expected > 0, got ", rms_norm_eps);
  if (!(rope_theta > 0)) fail(where, ": config field 'rope_theta': expected > 0, got ", rope_theta);
  if (rope_scaling.type != "none" && rope_scaling.type != "linear" && rope_scaling.type != "llama3")
    fail(where, ": config field 'rope_scaling.type': expected none, linear or llama3, got '",
         rope_scaling.type, "'");
  if (rope_scaling.type != "none" && !(rope_scaling.factor > 0))
    fail(where, ": config field 'rope_scaling.factor': expected > 0, got ", rope_scaling.factor);
}

}  // namespace l4q
