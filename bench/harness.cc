// harness.cc - runs the C benchmark suites of bench/bench.h under Google Benchmark.
// The only C++ file of the project: it registers each case, times it, reports
// GFLOP/s and the percentage of the measured FMA peak, and after the run prints
// per suite a table of every implementation's ratio to the suite's peer.
//
// Own flag, besides Google Benchmark's --benchmark_* ones:
//   --cases=t1|mt|all   only single-thread cases (run those under `taskset -c 0`),
//                       only multi-thread ones, or all (default).
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "bench/bench.h"

namespace {

const bench_suite *const kSuites[] = {
#define BENCH_SUITE_ADDRESS(name) &bench_suite_##name,
    BENCH_SUITES(BENCH_SUITE_ADDRESS)
#undef BENCH_SUITE_ADDRESS
};

double g_peak = 0.0;                     // best fp32 FMA GFLOP/s of one core

const char *const kGflops = "GFLOP/s";

double flops_per_run(const bench_case *c) { return c->flops > 0 ? c->flops : c->flops_of(c); }

std::string case_name(const bench_suite *s, const bench_case *c)
{
    return std::string(s->name) + "/" + c->group + "/" + c->impl;
}

double seconds_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_case(benchmark::State &st, const bench_suite *suite, const bench_case *c)
{
    bench_state s;
    std::memset(&s, 0, sizeof s);
    s.c = c;
    if (c->setup(&s) != 0) {
        std::string msg = std::string("setup failed: ") + s.msg;
        c->teardown(&s);
        st.SkipWithError(msg.c_str());
        return;
    }
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    for (auto _ : st) c->run(&s);
    double secs = seconds_since(t0);
    double flops = flops_per_run(c) * (double)st.iterations();
    st.counters[kGflops] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
    double gflops = secs > 0 ? flops / secs / 1e9 : 0.0;
    // Google Benchmark's first, short runs only estimate the iteration count.
    if (suite->is_peak && secs >= 0.05 && gflops > g_peak) g_peak = gflops;
    if (g_peak > 0) st.counters["peak_pct"] = 100.0 * gflops / (g_peak * c->threads);
    if (c->teardown(&s) != 0) st.SkipWithError(s.msg);
}

// A quarter-second estimate of the peak before anything runs, so that peak_pct
// is there even when a filter or random interleaving leaves the peak suite out
// of the front; the peak cases refine it when they run.
void estimate_peak()
{
    for (const bench_suite *suite : kSuites) {
        if (!suite->is_peak) continue;
        for (int i = 0; i < suite->n; i++) {
            const bench_case *c = &suite->cases[i];
            if (c->unavailable && c->unavailable(c)) continue;
            bench_state s;
            std::memset(&s, 0, sizeof s);
            s.c = c;
            if (c->setup(&s) != 0) continue;
            long runs = 0;
            std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
            double secs;
            do {
                c->run(&s);
                runs++;
            } while ((secs = seconds_since(t0)) < 0.12);
            c->teardown(&s);
            g_peak = std::max(g_peak, flops_per_run(c) * (double)runs / secs / 1e9);
        }
    }
}

bool wanted(const bench_case *c, const std::string &which)
{
    if (which == "t1") return c->threads == 1;
    if (which == "mt") return c->threads > 1;
    return true;
}

void register_cases(const std::string &which)
{
    for (const bench_suite *suite : kSuites) {
        for (int i = 0; i < suite->n; i++) {
            const bench_case *c = &suite->cases[i];
            if (!wanted(c, which)) continue;
            std::string name = case_name(suite, c);
            const char *why = c->unavailable ? c->unavailable(c) : 0;
            if (why) {
                std::fprintf(stderr, "skipping %s: %s\n", name.c_str(), why);
                continue;
            }
            benchmark::RegisterBenchmark(name.c_str(), [suite, c](benchmark::State &st) {
                run_case(st, suite, c);
            })->UseRealTime()->Unit(benchmark::kMicrosecond);
        }
    }
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The console output plus, at the end, the ratio tables. A case's figure is the
// "median" aggregate when repetitions ran, else the median of its runs.
class RatioReporter : public benchmark::ConsoleReporter {
public:
    explicit RatioReporter(OutputOptions o) : benchmark::ConsoleReporter(o) {}

    void ReportRuns(const std::vector<Run> &runs) BENCHMARK_OVERRIDE
    {
        benchmark::ConsoleReporter::ReportRuns(runs);
        for (const Run &r : runs) collect(r);
    }

    void Finalize() BENCHMARK_OVERRIDE
    {
        benchmark::ConsoleReporter::Finalize();
        print_peak();
        for (const bench_suite *suite : kSuites)
            if (suite->peer) print_ratios(suite);
    }

private:
    struct Figures {
        std::vector<double> runs;
        double median_aggregate = -1;
    };
    std::map<std::string, Figures> fig_;

    void collect(const Run &r)
    {
        if (r.error_occurred) return;
        auto it = r.counters.find(kGflops);
        if (it == r.counters.end()) return;
        Figures &f = fig_[r.run_name.function_name];
        if (r.run_type == Run::RT_Aggregate) {
            if (r.aggregate_name == "median") f.median_aggregate = it->second.value;
        } else {
            f.runs.push_back(it->second.value);
        }
    }

    // GFLOP/s of a case, or a negative number when it did not run.
    double gflops(const bench_suite *s, const bench_case *c) const
    {
        auto it = fig_.find(case_name(s, c));
        if (it == fig_.end()) return -1;
        if (it->second.median_aggregate >= 0) return it->second.median_aggregate;
        return it->second.runs.empty() ? -1 : median(it->second.runs);
    }

    void line(const char *fmt, ...) __attribute__((format(printf, 2, 3)))
    {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        GetOutputStream() << buf;
    }

    void print_peak()
    {
        line("\nfp32 FMA peak of one core (best measured): %.1f GFLOP/s\n", g_peak);
    }

    void print_ratios(const bench_suite *suite)
    {
        std::vector<std::string> groups, impls;
        for (int i = 0; i < suite->n; i++) {
            const bench_case *c = &suite->cases[i];
            if (gflops(suite, c) < 0) continue;
            if (std::find(groups.begin(), groups.end(), c->group) == groups.end())
                groups.push_back(c->group);
            if (std::strcmp(c->impl, suite->peer) != 0 &&
                std::find(impls.begin(), impls.end(), c->impl) == impls.end())
                impls.push_back(c->impl);
        }
        if (groups.empty()) return;
        line("\n%s: GFLOP/s and ratio to %s (same run)\n", suite->name, suite->peer);
        if (suite->peer_info) line("%s\n", suite->peer_info());
        line("%-30s %9s", "shape", suite->peer);
        for (const std::string &im : impls) line(" %20s", im.c_str());
        line("\n");
        // Per (set, impl): sum of log ratios and count, for the geometric means.
        std::map<std::string, std::map<std::string, std::pair<double, int> > > logs;
        std::vector<std::string> sets;
        for (const std::string &g : groups) {
            const bench_case *peer = find(suite, g, suite->peer);
            double pg = peer ? gflops(suite, peer) : -1;
            line("%-30s %9s", g.c_str(), pg > 0 ? fmt(pg).c_str() : "-");
            for (const std::string &im : impls) {
                const bench_case *c = find(suite, g, im);
                double v = c ? gflops(suite, c) : -1;
                if (v < 0) {
                    line(" %20s", "-");
                } else if (pg <= 0) {
                    line(" %20s", fmt(v).c_str());
                } else {
                    line(" %12s %6.2fx", fmt(v).c_str(), v / pg);
                    std::pair<double, int> &acc = logs[c->set][im];
                    acc.first += std::log(v / pg);
                    acc.second++;
                    if (std::find(sets.begin(), sets.end(), c->set) == sets.end())
                        sets.push_back(c->set);
                }
            }
            line("\n");
        }
        for (const std::string &set : sets) {
            line("%-30s %9s", ("geomean " + set).c_str(), "");
            for (const std::string &im : impls) {
                auto it = logs[set].find(im);
                if (it == logs[set].end()) line(" %20s", "-");
                else line(" %12s %6.2fx", "", std::exp(it->second.first / it->second.second));
            }
            line("\n");
        }
    }

    static std::string fmt(double v)
    {
        char b[32];
        std::snprintf(b, sizeof b, "%.1f", v);
        return b;
    }

    static const bench_case *find(const bench_suite *s, const std::string &group,
                                  const std::string &impl)
    {
        for (int i = 0; i < s->n; i++)
            if (group == s->cases[i].group && impl == s->cases[i].impl) return &s->cases[i];
        return 0;
    }
};

// Removes --cases=... from argv (Google Benchmark rejects flags it does not know).
std::string take_cases_flag(int *argc, char **argv)
{
    std::string which = "all";
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (std::strncmp(argv[i], "--cases=", 8) == 0) which = argv[i] + 8;
        else argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = 0;
    return which;
}

}  // namespace

int main(int argc, char **argv)
{
    if (bench_peer_env()) {
        execv("/proc/self/exe", argv);
        std::perror("harness: re-executing itself with the peer's environment");
        return 2;
    }
    std::string which = take_cases_flag(&argc, argv);
    if (which != "t1" && which != "mt" && which != "all") {
        std::fprintf(stderr, "harness: --cases=%s: expected t1, mt or all\n", which.c_str());
        return 2;
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    register_cases(which);
    estimate_peak();
    RatioReporter reporter(isatty(1) ? benchmark::ConsoleReporter::OO_ColorTabular
                                     : benchmark::ConsoleReporter::OO_Tabular);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    return 0;
}
