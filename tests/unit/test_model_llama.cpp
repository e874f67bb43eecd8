// LlamaModel against an independent per-token reference written the way llama2.c's run.c
// computes (interleaved RoPE on un-permuted q/k rows, explicit loops over heads and past
// positions, fp64), plus the KV cache, the causal mask, GQA and the input checks.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "l4q/model/attention.h"
#include "l4q/model/llama.h"
#include "l4q/model/rope.h"
#include "test_model_support.h"
#include "test_support.h"

namespace l4q {
namespace {

using test::random_llama_weights;
using test::rel_err;
using test::tensor_named;
using test::tiny_llama_config;

// HF rotate-half row order -> Meta/llama2.c interleaved: interleaved row 2i+c of a head is HF
// row c*(hd/2)+i.
at::Tensor to_interleaved(const at::Tensor& w, int64_t heads, int64_t hd) {
  const auto rest = w.size(1);
  return w.view({heads, 2, hd / 2, rest}).transpose(1, 2).reshape({heads * hd, rest});
}

// llama2.c run.c forward, one token at a time, fp64 throughout.
at::Tensor reference_logits(const LlamaConfig& c, const NamedTensors& w,
                            const std::vector<int64_t>& tokens) {
  auto get = [&](const std::string& n) { return tensor_named(w, n).to(at::kDouble); };
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, nkv = c.num_key_value_heads,
                hd = c.head_dim, L = c.num_hidden_layers;
  auto rmsnorm = [&](const at::Tensor& x, const at::Tensor& g) {
    double ss = 0;
    auto xa = x.accessor<double, 1>();
    for (int64_t i = 0; i < H; ++i) ss += xa[i] * xa[i];
    return x * (1.0 / std::sqrt(ss / H + c.rms_norm_eps)) * g;
  };
  auto rope = [&](at::Tensor v, int64_t pos) {  // interleaved pairs (2i, 2i+1)
    auto a = v.accessor<double, 1>();
    for (int64_t j = 0; j < v.size(0); j += 2) {
      const int64_t i = (j % hd) / 2;
      const double freq = 1.0 / std::pow(c.rope_theta, 2.0 * i / hd);
      const double ang = pos * freq, co = std::cos(ang), si = std::sin(ang);
      const double v0 = a[j], v1 = a[j + 1];
      a[j] = v0 * co - v1 * si;
      a[j + 1] = v0 * si + v1 * co;
    }
    return v;
  };
  std::vector<std::vector<at::Tensor>> kcache(L), vcache(L);
  const auto embed = get("model.embed_tokens.weight");
  const auto head = c.tie_word_embeddings ? embed : get("lm_head.weight");
  std::vector<at::Tensor> out;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    auto x = embed[tokens[pos]].clone();
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const auto xb = rmsnorm(x, get(p + "input_layernorm.weight"));
      auto q = rope(at::mv(to_interleaved(get(p + "self_attn.q_proj.weight"), nh, hd), xb), pos);
      auto k = rope(at::mv(to_interleaved(get(p + "self_attn.k_proj.weight"), nkv, hd), xb), pos);
      auto v = at::mv(get(p + "self_attn.v_proj.weight"), xb);
      kcache[l].push_back(k);
      vcache[l].push_back(v);
      auto att_out = at::zeros({nh * hd}, at::kDouble);
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t kvh = h / (nh / nkv);
        const auto qh = q.narrow(0, h * hd, hd);
        std::vector<double> score(pos + 1);
        double mx = -1e300;
        for (size_t t = 0; t <= pos; ++t) {
          score[t] = at::dot(qh, kcache[l][t].narrow(0, kvh * hd, hd)).item<double>() / std::sqrt(double(hd));
          mx = std::max(mx, score[t]);
        }
        double sum = 0;
        for (auto& s : score) sum += (s = std::exp(s - mx));
        auto oh = att_out.narrow(0, h * hd, hd);
        for (size_t t = 0; t <= pos; ++t) oh.add_(vcache[l][t].narrow(0, kvh * hd, hd), score[t] / sum);
      }
      x = x + at::mv(get(p + "self_attn.o_proj.weight"), att_out);
      const auto hb = rmsnorm(x, get(p + "post_attention_layernorm.weight"));
      const auto g = at::mv(get(p + "mlp.gate_proj.weight"), hb);
      const auto u = at::mv(get(p + "mlp.up_proj.weight"), hb);
      x = x + at::mv(get(p + "mlp.down_proj.weight"), g / (1 + at::exp(-g)) * u);
    }
    out.push_back(at::mv(head, rmsnorm(x, get("model.norm.weight"))));
  }
  return at::stack(out);
}

at::Tensor ids(std::vector<int64_t> v) { return at::tensor(v, at::kLong).view({1, -1}); }

class LlamaGqaTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(LlamaGqaTest, MatchesPerTokenReference) {
  const auto [heads, kv, tied] = GetParam();
  const auto c = tiny_llama_config(heads, kv, tied);
  const auto w = random_llama_weights(c, at::kDouble, 7 + heads * 10 + kv + tied);
  LlamaModel model(c, w);
  const std::vector<int64_t> toks = {1, 17, 5, 60, 33, 2, 9, 41, 0, 12, 12, 12};
  const auto got = model.forward(ids(toks)).squeeze(0);
  const auto ref = reference_logits(c, w, toks);
  ASSERT_EQ(got.sizes(), ref.sizes());
  // The model's angles are fp32 (as transformers'), the reference's fp64.
  EXPECT_LT(rel_err(got, ref), 1e-5) << "heads " << heads << " kv " << kv;
}

INSTANTIATE_TEST_SUITE_P(Heads, LlamaGqaTest,
                         ::testing::Values(std::make_tuple(4, 4, false),   // MHA
                                           std::make_tuple(4, 2, false),   // GQA
                                           std::make_tuple(4, 1, true),    // MQA, tied
                                           std::make_tuple(2, 2, true)));

TEST(LlamaModel, KvCacheEqualsFullForward) {
  const auto c = tiny_llama_config(4, 2);
  LlamaModel model(c, random_llama_weights(c, at::kDouble, 11));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto tokens = at::randint(0, c.vocab_size, {2, 13}, gen, at::kLong);
  const auto full = model.forward(tokens);
  KvCache cache(4);  // small reserve: forces the buffers to grow on the way
  std::vector<at::Tensor> parts;
  int64_t pos = 0;
  for (int64_t step : {5, 1, 1, 3, 1, 2}) {
    EXPECT_EQ(cache.length(), pos);
    parts.push_back(model.forward(tokens.narrow(1, pos, step), &cache));
    pos += step;
  }
  EXPECT_EQ(cache.length(), 13);
  EXPECT_LT(rel_err(at::cat(parts, 1), full), 1e-12);

  // truncate() rewinds: the last 4 positions again give the same logits.
  cache.truncate(9);
  EXPECT_LT(rel_err(model.forward(tokens.narrow(1, 9, 4), &cache), full.narrow(1, 9, 4)), 1e-12);
  EXPECT_THROW(cache.truncate(14), Error);
  // A cache holds one batch: feeding another batch size without clear() is refused.
  EXPECT_THROW(model.forward(tokens.narrow(0, 0, 1).narrow(1, 0, 1), &cache), Error);
  cache.clear();
  EXPECT_LT(rel_err(model.forward(tokens.narrow(0, 1, 1), &cache), full.narrow(0, 1, 1)), 1e-12);
}

TEST(LlamaModel, CausalMaskHidesTheFuture) {
  const auto c = tiny_llama_config(4, 2);
  LlamaModel model(c, random_llama_weights(c, at::kDouble, 5));
  const auto a = ids({1, 4, 9, 16, 25, 36, 49});
  auto b = a.clone();
  b[0][4] = 3;  // change position 4 only
  const auto la = model.forward(a), lb = model.forward(b);
  EXPECT_LT(rel_err(lb.narrow(1, 0, 4), la.narrow(1, 0, 4)), 1e-13);
  for (int64_t t = 4; t < 7; ++t)
    EXPECT_GT(rel_err(lb.select(1, t), la.select(1, t)), 1e-3) << "position " << t;
}

TEST(LlamaModel, BatchRowsAreIndependent) {
  const auto c = tiny_llama_config(4, 2);
  LlamaModel model(c, random_llama_weights(c, at::kDouble, 6));
  const auto a = ids({1, 4, 9, 16, 25}), b = ids({1, 7, 7, 3, 2});
  const auto both = model.forward(at::cat({a, b}, 0));
  EXPECT_LT(rel_err(both.select(0, 0), model.forward(a).squeeze(0)), 1e-13);
  EXPECT_LT(rel_err(both.select(0, 1), model.forward(b).squeeze(0)), 1e-13);
}

TEST(CausalAttention, GroupedHeadsEqualRepeatedKeyValues) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  const auto q = at::randn({2, 6, 3, 4}, gen, o);
  const auto k = at::randn({2, 2, 5, 4}, gen, o), v = at::randn({2, 2, 5, 4}, gen, o);
  // Reference: repeat each KV head 3 times (transformers' repeat_kv), masked softmax.
  const auto kr = k.repeat_interleave(3, 1), vr = v.repeat_interleave(3, 1);
  auto s = at::matmul(q, kr.transpose(-2, -1)) / 2.0;
  const auto mask = at::ones({3, 5}, at::kBool).triu(5 - 3 + 1);
  s = s.masked_fill(mask, -INFINITY);
  const auto ref = at::matmul(at::softmax(s, -1), vr);
  EXPECT_LT(rel_err(causal_attention(q, k, v), ref), 1e-14);
  EXPECT_THROW(causal_attention(q, k.narrow(1, 0, 1).repeat({1, 4, 1, 1}), v), Error);
}

// The CPU attention is a custom autograd Function (batch-parallel GEMMs, in-place softmax):
// its gradients against autograd of the composite, with GQA, a KV cache offset (S > T),
// non-contiguous inputs as the model passes them, and one decode position (no mask).
TEST(CausalAttention, GradientsEqualAutogradOfTheComposite) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  for (const int64_t T : {4, 1}) {
    const auto q0 = at::randn({2, T, 6, 8}, gen, o).transpose(1, 2);  // [B, H, T, d] view
    const auto k0 = at::randn({2, 2, 7, 8}, gen, o), v0 = at::randn({2, 2, 7, 8}, gen, o);
    const auto R = at::randn({2, 6, T, 8}, gen, o);
    auto run = [&](bool composite) {
      auto q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
           v = v0.clone().set_requires_grad(true);
      at::Tensor out;
      if (composite) {
        const auto kr = k.repeat_interleave(3, 1), vr = v.repeat_interleave(3, 1);
        auto s = at::matmul(q, kr.transpose(-2, -1)) / std::sqrt(8.0);
        s = s.masked_fill(at::ones({T, 7}, at::kBool).triu(7 - T + 1), -INFINITY);
        out = at::matmul(at::softmax(s, -1), vr);
      } else {
        out = causal_attention(q, k, v);
      }
      (out * R).sum().backward();
      return std::vector<at::Tensor>{out.detach(), q.grad(), k.grad(), v.grad()};
    };
    const auto ours = run(false), ref = run(true);
    for (size_t i = 0; i < ours.size(); ++i)
      EXPECT_LT(rel_err(ours[i], ref[i]), 1e-13) << "T " << T << " tensor " << i;
    EXPECT_GT(ours[2].abs().max().item<double>(), 1e-3);  // the keys really get a gradient
  }
}

TEST(RotaryEmbedding, LinearScalingDividesPositions) {
  auto c = tiny_llama_config();
  const RotaryEmbedding plain(c);
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 4.0;
  const RotaryEmbedding scaled(c);
  const auto [cp, sp] = plain.cos_sin(0, 3, at::kDouble, at::kCPU);
  const auto [cs, ss] = scaled.cos_sin(0, 9, at::kDouble, at::kCPU);
  for (int64_t p = 0; p < 3; ++p) {
    EXPECT_LT((cs[4 * p] - cp[p]).abs().max().item<double>(), 1e-6);
    EXPECT_LT((ss[4 * p] - sp[p]).abs().max().item<double>(), 1e-6);
  }
}

TEST(RotaryEmbedding, Llama3KeepsHighAndScalesLowFrequencies) {
  auto c = tiny_llama_config();
  c.head_dim = 16;
  c.rope_theta = 500000.0;
  const auto base = RotaryEmbedding(c).inv_freq();
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
  const auto f = RotaryEmbedding(c).inv_freq();
  const double low_wavelen = 64 / 1.0, high_wavelen = 64 / 4.0;
  int n_high = 0, n_low = 0, n_mid = 0;
  for (int64_t i = 0; i < base.size(0); ++i) {
    const double b = base[i].item<double>(), got = f[i].item<double>();
    const double wl = 2 * M_PI / b;
    if (wl < high_wavelen) {
      ++n_high;
      EXPECT_EQ(got, b);
    } else if (wl > low_wavelen) {
      ++n_low;
      EXPECT_NEAR(got, b / 8, 1e-6 * b);
    } else {
      ++n_mid;
      const double smooth = (64 / wl - 1.0) / (4.0 - 1.0);
      EXPECT_NEAR(got, (1 - smooth) * b / 8 + smooth * b, 1e-6 * b);
    }
  }
  EXPECT_GT(n_high, 0);
  EXPECT_GT(n_low, 0);
  EXPECT_GT(n_mid, 0);
}

// ---- input checks --------------------------------------------------------------------

std::map<std::string, at::Tensor> as_map(const NamedTensors& w) { return {w.begin(), w.end()}; }

TEST(LlamaModel, RejectsMissingUnexpectedAndMisshapenTensors) {
  const auto c = tiny_llama_config(4, 2);
  const auto w = as_map(random_llama_weights(c, at::kFloat, 1));
  {
    auto m = w;
    m.erase("model.layers.1.mlp.up_proj.weight");
    test::expect_error([&] { LlamaModel(c, m); },
                       {"missing tensor 'model.layers.1.mlp.up_proj.weight'", "[48, 32]"});
  }
  {
    auto m = w;
    m["model.layers.2.self_attn.q_proj.weight"] = at::zeros({32, 32});
    test::expect_error([&] { LlamaModel(c, m); },
                       {"unexpected tensor 'model.layers.2.self_attn.q_proj.weight'", "2 layers"});
  }
  {
    auto m = w;
    m["model.layers.0.self_attn.k_proj.weight"] = at::zeros({32, 32});
    test::expect_error([&] { LlamaModel(c, m); },
                       {"'model.layers.0.self_attn.k_proj.weight'", "expected shape [16, 32]",
                        "got [32, 32]"});
  }
  {
    auto m = w;
    m["model.norm.weight"] = at::ones({32}, at::kDouble);
    test::expect_error([&] { LlamaModel(c, m); }, {"'model.norm.weight'", "Double"});
  }
  {
    auto m = w;
    m["model.embed_tokens.weight"] = at::zeros({61, 32}, at::kInt);
    test::expect_error([&] { LlamaModel(c, m); }, {"'model.embed_tokens.weight'", "floating"});
  }
  {
    auto tied = c;
    tied.tie_word_embeddings = true;
    test::expect_error([&] { LlamaModel(tied, w); }, {"'lm_head.weight' differs"});
    auto m = w;
    m["lm_head.weight"] = m["model.embed_tokens.weight"];
    EXPECT_NO_THROW(LlamaModel(tied, m));
    m.erase("lm_head.weight");
    EXPECT_NO_THROW(LlamaModel(tied, m));
  }
  {
    auto m = w;  // old HF checkpoints carry RoPE buffers; they are not weights
    m["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::ones({4});
    EXPECT_NO_THROW(LlamaModel(c, m));
  }
  {
    NamedTensors dup = random_llama_weights(c, at::kFloat, 1);
    dup.push_back(dup.front());
    test::expect_error([&] { LlamaModel(c, dup); }, {"'model.embed_tokens.weight' given twice"});
  }
  {
    auto bad = c;
    bad.num_key_value_heads = 3;
    test::expect_error([&] { LlamaModel(bad, w); }, {"num_key_value_heads"});
  }
}

TEST(LlamaModel, RejectsBadTokens) {
  const auto c = tiny_llama_config(4, 2);
  LlamaModel model(c, random_llama_weights(c, at::kFloat, 1));
  test::expect_error([&] { model.forward(ids({1, 61})); }, {"[0, 61)", "61"});
  test::expect_error([&] { model.forward(ids({-1, 3})); }, {"-1"});
  test::expect_error([&] { model.forward(at::tensor({1, 2}, at::kLong)); }, {"[batch, seq]"});
  test::expect_error([&] { model.forward(at::ones({1, 2}, at::kFloat)); }, {"integer"});
}

TEST(LlamaModel, FactorySeesEveryProjectionByHfName) {
  const auto c = tiny_llama_config(4, 2);
  std::vector<std::string> seen;
  const auto base = float_linear_factory();
  LinearFactory spy = [&](const std::string& name, const at::Tensor& w, const at::Tensor& b) {
    seen.push_back(name);
    return base(name, w, b);
  };
  LlamaModel model(c, random_llama_weights(c, at::kFloat, 1), spy);
  ASSERT_EQ(seen.size(), 14u);
  EXPECT_EQ(seen[0], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(seen[13], "model.layers.1.mlp.down_proj");
  const auto lin = model.named_linears();
  ASSERT_EQ(lin.size(), 14u);
  for (size_t i = 0; i < lin.size(); ++i) EXPECT_EQ(lin[i].first, seen[i]);
  EXPECT_EQ(&model.linear("model.layers.1.mlp.up_proj"), lin[12].second);
  EXPECT_THROW(model.linear("model.layers.9.mlp.up_proj"), Error);

  // A factory that builds the wrong size is caught.
  LinearFactory wrong = [&](const std::string& name, const at::Tensor& w, const at::Tensor& b) {
    return base(name, name.find("v_proj") != std::string::npos ? w.narrow(0, 0, 8) : w, b);
  };
  test::expect_error([&] { LlamaModel(c, random_llama_weights(c, at::kFloat, 1), wrong); },
                     {"'model.layers.0.self_attn.v_proj'", "32 -> 8", "expected 32 -> 16"});
}

TEST(LlamaModel, StateDictRoundTrips) {
  const auto c = tiny_llama_config(4, 2);
  const auto w = random_llama_weights(c, at::kFloat, 2);
  LlamaModel model(c, w);
  const auto sd = model.effective_state_dict();
  EXPECT_EQ(sd.size(), w.size());
  for (const auto& [name, t] : w) EXPECT_TRUE(tensor_named(sd, name).equal(t)) << name;
  EXPECT_EQ(model.named_float_parameters().size(), 1u + 2 * 2 + 1 + 1);
}

}  // namespace
}  // namespace l4q
