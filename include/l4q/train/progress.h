// Progress reporting for long work: a one-line bar with rate and ETA on a TTY (stderr), and
// JSON lines for logs (a file, and stdout when stderr is not a TTY).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace l4q {

class ProgressBar {
 public:
  // total: units of work; label: e.g. "train". Draws only when `tty`.
  ProgressBar(int64_t total, std::string label, bool tty);
  // done: units finished; extra: text after the bar (e.g. "loss 2.31 lr 1.0e-04 812 tok/s").
  void update(int64_t done, const std::string& extra);
  void finish();
  static bool stderr_is_tty();

 private:
  int64_t total_;
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  int64_t start_done_ = -1;
  bool drawn_ = false;
};

// "1h02m", "3m07s", "12s".
std::string format_duration(double seconds);

// Appends one JSON object per line to a file (flushed per line, so a killed run keeps every
// record it wrote).
class JsonLines {
 public:
  explicit JsonLines(const std::string& path, bool append);
  ~JsonLines();
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;
  void write(const std::string& json_object);  // one line, without the newline

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace l4q
