// Batches of examples as padded tensors, in a seeded order per epoch, with a position that can
// be saved and restored exactly: the order of epoch e is a pure function of (seed, e), so
// (epoch, index) is the whole state and resuming from it continues bit-identically.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "l4q/data/example.h"

namespace l4q {

struct LoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = true;    // false: dataset order every epoch
  uint64_t seed = 0;      // epoch e is shuffled with derive_seed(seed, e)
  bool drop_last = false; // skip an epoch's final short batch
  int32_t pad_id = 0;     // input id at padding (any valid id: padding is never attended to
                          // by real tokens under a causal mask and carries kIgnoreIndex labels)
  void validate(const std::string& where) const;
};

// Where the next batch starts: `index` counts examples already taken from epoch `epoch`'s
// order (0..size; size means the epoch is finished and the next batch opens epoch + 1).
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && index == o.index; }
  bool operator!=(const LoaderPosition& o) const { return !(*this == o); }
};

struct Batch {
  at::Tensor input_ids;          // [B, T] int64, right-padded with pad_id; T = longest row
  at::Tensor labels;             // [B, T] int64, kIgnoreIndex at padding and masked positions
  at::Tensor lengths;            // [B] int64, real tokens of each row (positions 0..len-1)
  std::vector<int64_t> indices;  // dataset index of each row
  LoaderPosition position;       // where this batch started (epoch, index in that epoch)
  int64_t n_tokens = 0;          // sum of lengths (for tokens/s)
  int64_t n_loss_tokens = 0;     // positions the shifted loss scores (see example.h)
};

// Pads examples[indices] into a Batch (position left at {0, 0}).
Batch collate(const std::vector<Example>& examples, const std::vector<int64_t>& indices,
              int32_t pad_id);

class DataLoader {
 public:
  // Throws l4q::Error naming `where` for an empty set, an empty or inconsistent example
  // (ids/labels sizes differ), bad options, or drop_last with fewer examples than a batch.
  DataLoader(std::shared_ptr<const std::vector<Example>> examples, LoaderOptions opts,
             std::string where = "DataLoader");
  DataLoader(std::vector<Example> examples, LoaderOptions opts, std::string where = "DataLoader");

  // The next batch, crossing into the next epoch when this one is exhausted.
  Batch next();

  LoaderPosition position() const { return pos_; }
  // Continues from a saved position; throws l4q::Error when it cannot belong to this data.
  void seek(LoaderPosition pos);

  int64_t size() const { return static_cast<int64_t>(examples_->size()); }
  int64_t batches_per_epoch() const;
  // The example order of an epoch (identity when shuffle is off).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  const LoaderOptions& options() const { return opts_; }
  const std::vector<Example>& examples() const { return *examples_; }

 private:
  const std::vector<int64_t>& order_for(int64_t epoch);

  std::shared_ptr<const std::vector<Example>> examples_;
  LoaderOptions opts_;
  std::string where_;
  LoaderPosition pos_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_order_;
};

}  // namespace l4q
