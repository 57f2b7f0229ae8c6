// HistSvc: a well-behaved I/O component. Each worker fills its own histogram
// and writes it to its own directory (worker_<k>/hist.txt), a file it
// declares as an output, to mpaudit when libmpaudit.so is loaded.

#include "minifw.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

// mpaudit's runtime API, looked up at run time so the component works with
// or without the library (interpose/include/mpaudit.h declares it).
void declareOutput(const std::string& path) {
  using Fn = int (*)(const char*);
  if (auto f = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "mpaudit_declare_output"))) f(path.c_str());
}

void makeDirs(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) return;
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      std::string part = dir.substr(0, i);
      if (stat(part.c_str(), &st) != 0) {
        declareOutput(part);
        mkdir(part.c_str(), 0777);
      }
    }
  }
}

}  // namespace

class HistSvc : public minifw::Component {
 public:
  const char* name() const override { return "HistSvc"; }
  void startWorker(const minifw::Context& ctx) override {
    worker_ = ctx.worker;
    makeDirs(ctx.worker_dir);
    path_ = ctx.worker_dir + "/hist.txt";
    declareOutput(path_);
    counts_.assign(kBins, 0);
  }
  void execute(const minifw::Event& ev) override {
    int bin = static_cast<int>(ev.energy / (kMax / kBins));
    if (bin < 0) bin = 0;
    if (bin >= kBins) bin = kBins - 1;
    ++counts_[bin];
    ++entries_;
  }
  void finalize() override {
    FILE* f = std::fopen(path_.c_str(), "w");
    if (!f) {
      std::perror(path_.c_str());
      return;
    }
    std::fprintf(f, "# minifw histogram: energy [GeV], worker %d\n", worker_);
    for (int b = 0; b < kBins; ++b)
      std::fprintf(f, "%g %g %ld\n", b * kMax / kBins, (b + 1) * kMax / kBins, counts_[b]);
    std::fprintf(f, "entries %ld\n", entries_);
    std::fclose(f);
  }

 private:
  static constexpr int kBins = 10;
  static constexpr double kMax = 100.0;
  int worker_ = -1;
  std::string path_;
  std::vector<long> counts_;
  long entries_ = 0;
};

extern "C" minifw::Component* minifw_create() { return new HistSvc; }
