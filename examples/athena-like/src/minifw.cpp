// minifw: read a job-options file naming component libraries, load them with
// dlopen, initialise (build a large read-only lookup table), fork N workers,
// deal the events round-robin (worker k takes k, k+N, ...), wait for every
// worker, exit non-zero if one failed.
//
//   minifw [--nprocs N] JOBOPTIONS
//
// N: --nprocs, else $ATHENA_PROC_NUMBER, else $MPAUDIT_WORKERS, else the
// `nprocs` option, else 1.

#include "minifw.h"

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Options {
  std::vector<std::string> components;
  long events = 100;
  int nprocs = 0;
  long table_mib = 64;
  long event_ms = 0;
  std::string worker_dir = "mpaudit-workers";
};

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

int positive(const char* v) {
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (*end == '\0' && n > 0 && n <= 4096) ? static_cast<int>(n) : 0;
}

// `key = value` lines; `#` starts a comment.
bool readOptions(const char* path, Options& o) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "minifw: cannot read %s: %s\n", path, std::strerror(errno));
    return false;
  }
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "minifw: %s:%d: expected key = value\n", path, n);
      return false;
    }
    std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (key == "components") {
      std::istringstream words(value);
      for (std::string w; words >> w;) o.components.push_back(w);
    } else if (key == "events") {
      o.events = std::atol(value.c_str());
    } else if (key == "nprocs") {
      o.nprocs = positive(value.c_str());
    } else if (key == "table_mib") {
      o.table_mib = std::atol(value.c_str());
    } else if (key == "event_ms") {
      o.event_ms = std::atol(value.c_str());
    } else if (key == "worker_dir") {
      o.worker_dir = value;
    } else {
      std::fprintf(stderr, "minifw: %s:%d: unknown option `%s`\n", path, n, key.c_str());
      return false;
    }
  }
  return true;
}

// A large read-only table, written once before the fork: copy-on-write keeps
// one physical copy for every worker (the memory report shows it as shared).
std::vector<double> buildTable(long mib) {
  std::vector<double> t(static_cast<size_t>(mib) * 1024 * 1024 / sizeof(double));
  for (size_t i = 0; i < t.size(); ++i) t[i] = std::exp(-static_cast<double>(i % 4096) / 512.0);
  return t;
}

int runWorker(int k, int n, long events, const Options& o,
              std::vector<std::unique_ptr<minifw::Component>>& comps,
              const std::vector<double>& table, const std::string& cwd) {
  minifw::Context ctx;
  ctx.worker = k;
  ctx.nworkers = n;
  ctx.job_dir = cwd;
  ctx.worker_dir = o.worker_dir + "/worker_" + std::to_string(k);
  ctx.table = &table;
  for (auto& c : comps) c->startWorker(ctx);
  long done = 0;
  for (long e = k; e < events; e += n) {
    minifw::Event ev;
    ev.number = e;
    // Touch the table at a few places per event (reads only: pages stay shared).
    double sum = 0;
    for (long j = 0; j < 64; ++j)
      sum += table[static_cast<size_t>((e * 7919 + j * 104729) % table.size())];
    ev.energy = 10.0 + 90.0 * std::fmod(sum * 37.0 + e * 0.618, 1.0);
    for (auto& c : comps) c->execute(ev);
    if (o.event_ms > 0) usleep(static_cast<useconds_t>(o.event_ms) * 1000);  // "reconstruction"
    ++done;
  }
  for (auto& c : comps) c->finalize();
  std::printf("minifw: worker %d processed %ld event(s)\n", k, done);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int nprocs = 0;
  const char* options = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--nprocs") == 0 && i + 1 < argc) {
      nprocs = positive(argv[++i]);
      if (!nprocs) {
        std::fprintf(stderr, "minifw: --nprocs needs a positive integer\n");
        return 2;
      }
    } else if (!options) {
      options = argv[i];
    } else {
      std::fprintf(stderr, "usage: minifw [--nprocs N] JOBOPTIONS\n");
      return 2;
    }
  }
  if (!options) {
    std::fprintf(stderr, "usage: minifw [--nprocs N] JOBOPTIONS\n");
    return 2;
  }
  Options o;
  if (!readOptions(options, o)) return 2;
  if (const char* wd = std::getenv("MPAUDIT_WORKERS_DIR"); wd && *wd) o.worker_dir = wd;
  if (!nprocs) nprocs = positive(std::getenv("ATHENA_PROC_NUMBER"));
  if (!nprocs) nprocs = positive(std::getenv("MPAUDIT_WORKERS"));
  if (!nprocs) nprocs = o.nprocs ? o.nprocs : 1;

  char cwdbuf[4096];
  std::string cwd = getcwd(cwdbuf, sizeof cwdbuf) ? cwdbuf : ".";

  // Initialise: load the components, build the table, let them set up.
  std::vector<std::unique_ptr<minifw::Component>> comps;
  for (const auto& lib : o.components) {
    void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      std::fprintf(stderr, "minifw: dlopen %s: %s\n", lib.c_str(), dlerror());
      return 2;
    }
    auto create = reinterpret_cast<minifw::Component* (*)()>(dlsym(h, "minifw_create"));
    if (!create) {
      std::fprintf(stderr, "minifw: %s has no minifw_create\n", lib.c_str());
      return 2;
    }
    comps.emplace_back(create());
  }
  std::vector<double> table = buildTable(o.table_mib);
  minifw::Context ctx;
  ctx.nworkers = nprocs;
  ctx.job_dir = cwd;
  ctx.table = &table;
  for (auto& c : comps) c->initialize(ctx);
  std::printf("minifw: initialised %zu component(s), %ld MiB lookup table; forking %d worker(s) for %ld event(s)\n",
              comps.size(), o.table_mib, nprocs, o.events);
  std::fflush(stdout);

  // Fork the workers, in order: the k-th child forked is worker k.
  std::map<pid_t, int> children;
  for (int k = 0; k < nprocs; ++k) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("minifw: fork");
      return 3;
    }
    if (pid == 0) {
      int rc = runWorker(k, nprocs, o.events, o, comps, table, cwd);
      std::fflush(nullptr);
      _exit(rc);
    }
    children[pid] = k;
  }

  int failed = 0;
  while (!children.empty()) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = children.find(pid);
    if (it == children.end()) continue;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      std::fprintf(stderr, "minifw: worker %d failed (status %d)\n", it->second, status);
      ++failed;
    }
    children.erase(it);
  }
  std::printf("minifw: all workers done, %d failed\n", failed);
  return failed ? 1 : 0;
}
