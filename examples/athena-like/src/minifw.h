// minifw: a miniature fork-after-initialise framework in the spirit of
// ATLAS Athena/AthenaMP. Components are shared libraries loaded with dlopen;
// each exports `extern "C" minifw::Component* minifw_create()`.
#pragma once

#include <string>
#include <vector>

namespace minifw {

// What the framework tells a component. `table` is the large read-only
// lookup table built before the fork: every worker shares its pages.
struct Context {
  int worker = -1;       // -1 in the parent (initialise), 0..N-1 in a worker
  int nworkers = 1;
  std::string job_dir;   // where the job runs (the shared directory)
  std::string worker_dir;  // this worker's own directory ("" in the parent)
  const std::vector<double>* table = nullptr;
};

struct Event {
  long number = 0;
  double energy = 0;  // GeV, from the lookup table
};

class Component {
 public:
  virtual ~Component() = default;
  virtual const char* name() const = 0;
  // In the parent, before the fork.
  virtual void initialize(const Context&) {}
  // In each worker, after the fork.
  virtual void startWorker(const Context&) {}
  virtual void execute(const Event&) = 0;
  // In each worker, after its last event.
  virtual void finalize() {}
};

}  // namespace minifw

extern "C" minifw::Component* minifw_create();
