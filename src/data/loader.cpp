#include "l4q/data/loader.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "l4q/data/shuffle.h"
#include "l4q/error.h"

namespace l4q {

void LoaderOptions::validate(const std::string& where) const {
  if (batch_size < 1) fail(where, ": batch_size: expected >= 1, got ", batch_size);
  if (pad_id < 0) fail(where, ": pad_id: expected a valid token id (>= 0), got ", pad_id);
}

Batch collate(const std::vector<Example>& examples, const std::vector<int64_t>& indices,
              int32_t pad_id) {
  const auto B = static_cast<int64_t>(indices.size());
  int64_t T = 0;
  for (const auto i : indices) T = std::max(T, static_cast<int64_t>(examples[static_cast<size_t>(i)].ids.size()));
  Batch b;
  b.input_ids = at::full({B, T}, static_cast<int64_t>(pad_id), at::kLong);
  b.labels = at::full({B, T}, static_cast<int64_t>(kIgnoreIndex), at::kLong);
  b.lengths = at::empty({B}, at::kLong);
  auto* ids = b.input_ids.data_ptr<int64_t>();
  auto* labels = b.labels.data_ptr<int64_t>();
  auto* lengths = b.lengths.data_ptr<int64_t>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& e = examples[static_cast<size_t>(indices[static_cast<size_t>(r)])];
    const auto L = static_cast<int64_t>(e.ids.size());
    std::copy(e.ids.begin(), e.ids.end(), ids + r * T);
    std::copy(e.labels.begin(), e.labels.end(), labels + r * T);
    lengths[r] = L;
    b.n_tokens += L;
    b.n_loss_tokens += count_loss_tokens(e);
  }
  b.indices = indices;
  return b;
}

DataLoader::DataLoader(std::vector<Example> examples, LoaderOptions opts, std::string where)
    : DataLoader(std::make_shared<const std::vector<Example>>(std::move(examples)), opts,
                 std::move(where)) {}

DataLoader::DataLoader(std::shared_ptr<const std::vector<Example>> examples, LoaderOptions opts,
                       std::string where)
    : examples_(std::move(examples)), opts_(opts), where_(std::move(where)) {
  opts_.validate(where_);
  if (!examples_ || examples_->empty()) fail(where_, ": no examples");
  for (size_t i = 0; i < examples_->size(); ++i) {
    const auto& e = (*examples_)[i];
    if (e.ids.empty()) fail(where_, ": example ", i, " has no tokens");
    if (e.ids.size() != e.labels.size())
      fail(where_, ": example ", i, ": ", e.ids.size(), " ids but ", e.labels.size(), " labels");
  }
  if (opts_.drop_last && size() < opts_.batch_size)
    fail(where_, ": drop_last with ", size(), " examples and batch_size ", opts_.batch_size,
         " leaves no batch");
}

int64_t DataLoader::batches_per_epoch() const {
  const auto n = size(), bs = opts_.batch_size;
  return opts_.drop_last ? n / bs : (n + bs - 1) / bs;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  if (opts_.shuffle) return random_permutation(size(), derive_seed(opts_.seed, static_cast<uint64_t>(epoch)));
  std::vector<int64_t> order(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) order[static_cast<size_t>(i)] = i;
  return order;
}

const std::vector<int64_t>& DataLoader::order_for(int64_t epoch) {
  if (cached_epoch_ != epoch) {
    cached_order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

void DataLoader::seek(LoaderPosition pos) {
  if (pos.epoch < 0 || pos.index < 0 || pos.index > size())
    fail(where_, ": loader position (epoch ", pos.epoch, ", index ", pos.index,
         ") is outside a dataset of ", size(), " examples; was it saved for different data?");
  pos_ = pos;
}

Batch DataLoader::next() {
  const auto n = size(), bs = opts_.batch_size;
  const auto left = n - pos_.index;
  if (left == 0 || (opts_.drop_last && left < bs)) pos_ = {pos_.epoch + 1, 0};
  const auto& order = order_for(pos_.epoch);
  const auto take = std::min(bs, n - pos_.index);
  const auto first = order.begin() + pos_.index;
  Batch b = collate(*examples_, std::vector<int64_t>(first, first + take), opts_.pad_id);
  b.position = pos_;
  pos_.index += take;
  return b;
}

}  // namespace l4q
