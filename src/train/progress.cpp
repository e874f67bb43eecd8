#include "l4q/train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "l4q/error.h"

namespace l4q {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

bool ProgressBar::stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(int64_t total, std::string label, bool tty)
    : total_(std::max<int64_t>(total, 1)), label_(std::move(label)), tty_(tty),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (start_done_ < 0) {
    start_done_ = done;
    start_ = now;
  }
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? (done - start_done_) / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : -1;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(kWidth * std::min<double>(1.0, double(done) / total_));
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %s | %.2f it/s ETA %s", label_.c_str(),
               bar.c_str(), (long long)done, (long long)total_, extra.c_str(), rate,
               format_duration(eta).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (tty_ && drawn_) {
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }
  drawn_ = false;
}

JsonLines::JsonLines(const std::string& path, bool append) : path_(path) {
  f_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!f_) fail(path, ": cannot open for writing: ", std::strerror(errno));
}

JsonLines::~JsonLines() {
  if (f_) std::fclose(f_);
}

void JsonLines::write(const std::string& obj) {
  std::fputs(obj.c_str(), f_);
  std::fputc('\n', f_);
  std::fflush(f_);
}

}  // namespace l4q
