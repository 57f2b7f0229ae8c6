// LegacyAlg: a legacy algorithm written before the framework forked. It
// writes straight into the shared job directory: every worker appends to the
// same summary.log and truncates the same debug-dump.txt. This is the rogue
// writer mpaudit has to name.

#include "minifw.h"

#include <cstdio>
#include <fstream>

class LegacyAlg : public minifw::Component {
 public:
  const char* name() const override { return "LegacyAlg"; }
  void startWorker(const minifw::Context& ctx) override { worker_ = ctx.worker; }
  void execute(const minifw::Event& ev) override;
  void finalize() override;

 private:
  int worker_ = -1;
  long seen_ = 0;
  double sum_ = 0;
};

// One line per event, appended to a fixed name in the job directory.
void LegacyAlg::execute(const minifw::Event& ev) {
  ++seen_;
  sum_ += ev.energy;
  FILE* f = std::fopen("summary.log", "a");
  if (!f) return;
  std::fprintf(f, "worker %d event %ld energy %.3f\n", worker_, ev.number, ev.energy);
  std::fclose(f);
}

// A state dump at the end, to a fixed name: the last worker to finish wins.
void LegacyAlg::finalize() {
  std::ofstream dump("debug-dump.txt");
  dump << "LegacyAlg debug dump\n"
       << "worker " << worker_ << "\n"
       << "events " << seen_ << "\n"
       << "mean energy " << (seen_ ? sum_ / seen_ : 0.0) << "\n";
}

extern "C" minifw::Component* minifw_create() { return new LegacyAlg; }
