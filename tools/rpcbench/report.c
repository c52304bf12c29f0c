#include "report.h"

#include "stats.h"

#include <string.h>

double bench_metric_median(const bench_metric_t *m, int impl)
{
    return bench_median(m->runs[impl], m->n);
}

double bench_metric_ratio(const bench_metric_t *m)
{
    double base = bench_metric_median(m, BENCH_BASELINE);
    return base > 0 ? bench_metric_median(m, BENCH_LIBRARY) / base : 0;
}

bool bench_metric_pass(const bench_metric_t *m)
{
    double ratio = bench_metric_ratio(m);
    return m->kind == BENCH_LATENCY ? ratio <= 1 + BENCH_TARGET_COST
                                    : ratio >= 1 - BENCH_TARGET_COST;
}

/* What the library costs against the baseline, as a fraction: positive is worse. */
static double cost(const bench_metric_t *m)
{
    double ratio = bench_metric_ratio(m);
    return m->kind == BENCH_LATENCY ? ratio - 1 : 1 - ratio;
}

static void verdict(const bench_metric_t *m, char *buf, size_t len)
{
    double c = cost(m) * 100;
    const char *what = m->kind == BENCH_LATENCY ? "latency" : "throughput";
    if (c >= 0)
        snprintf(buf, len, "%s  library costs %.1f %% %s (limit %.0f %%)",
                 bench_metric_pass(m) ? "PASS" : "MISS", c, what, BENCH_TARGET_COST * 100);
    else
        snprintf(buf, len, "PASS  library %.1f %% better %s", -c, what);
}

/* Large figures (calls/s, msg/s) read better without decimals. */
static int decimals(double v)
{
    return v >= 1000 ? 0 : 1;
}

void bench_report_table(FILE *f, const bench_report_t *r)
{
    const bench_params_t *p = r->p;
    fprintf(f, "llmserve-rpcbench: loopback 127.0.0.1; %s\n", r->where);
    fprintf(f, "  baseline  %s\n", r->describe[BENCH_BASELINE]);
    fprintf(f, "  library   %s\n", r->describe[BENCH_LIBRARY]);
    fprintf(f,
            "  calls=%lld (+%lld warm-up) messages=%lld payload=%lld B; each figure is the "
            "median of %zu runs, baseline and library alternating\n\n",
            (long long)p->calls, (long long)p->warmup_calls, (long long)p->messages,
            (long long)p->payload_bytes, r->repeats);
    fprintf(f, "%-30s %12s %12s %9s  %s\n", "metric", "baseline", "library", "lib/base",
            "verdict (target: wrapper costs under 10 %)");
    size_t passed = 0;
    for (size_t i = 0; i < r->n_metrics; i++) {
        const bench_metric_t *m = &r->metrics[i];
        double b = bench_metric_median(m, BENCH_BASELINE);
        double l = bench_metric_median(m, BENCH_LIBRARY);
        char v[128];
        verdict(m, v, sizeof(v));
        passed += bench_metric_pass(m);
        fprintf(f, "%-30s %12.*f %12.*f %9.3f  %s\n", m->label, decimals(b), b, decimals(l), l,
                bench_metric_ratio(m), v);
    }
    fprintf(f, "\nruns, in order (baseline | library):\n");
    for (size_t i = 0; i < r->n_metrics; i++) {
        const bench_metric_t *m = &r->metrics[i];
        fprintf(f, "  %-28s", m->label);
        for (int impl = 0; impl < 2; impl++) {
            fprintf(f, "%s", impl ? " |" : "");
            for (size_t k = 0; k < m->n; k++)
                fprintf(f, " %.*f", decimals(m->runs[impl][k]), m->runs[impl][k]);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\nverdict: %zu of %zu figures within the 10 %% target\n", passed, r->n_metrics);
}

/* Writes s as a JSON string (the texts here are ours: no control characters). */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void bench_report_json(FILE *f, const bench_report_t *r)
{
    const bench_params_t *p = r->p;
    size_t passed = 0;
    fprintf(f, "{\"tool\":\"llmserve-rpcbench\",\"where\":");
    json_str(f, r->where);
    fprintf(f, ",\"baseline\":");
    json_str(f, r->describe[BENCH_BASELINE]);
    fprintf(f, ",\"library\":");
    json_str(f, r->describe[BENCH_LIBRARY]);
    fprintf(f,
            ",\"config\":{\"calls\":%lld,\"warmup_calls\":%lld,\"messages\":%lld,"
            "\"payload_bytes\":%lld,\"server_threads\":%lld,\"window\":%lld,"
            "\"backoff_us\":%lld,\"repeats\":%zu}",
            (long long)p->calls, (long long)p->warmup_calls, (long long)p->messages,
            (long long)p->payload_bytes, (long long)p->server_threads, (long long)p->window,
            (long long)p->backoff_us, r->repeats);
    fprintf(f, ",\"target_cost\":%.2f,\"metrics\":[", BENCH_TARGET_COST);
    for (size_t i = 0; i < r->n_metrics; i++) {
        const bench_metric_t *m = &r->metrics[i];
        bool pass = bench_metric_pass(m);
        passed += pass;
        fprintf(f,
                "%s{\"name\":\"%s\",\"kind\":\"%s\",\"baseline\":%.3f,\"library\":%.3f,"
                "\"ratio\":%.4f,\"pass\":%s",
                i ? "," : "", m->key, m->kind == BENCH_LATENCY ? "latency" : "throughput",
                bench_metric_median(m, BENCH_BASELINE), bench_metric_median(m, BENCH_LIBRARY),
                bench_metric_ratio(m), pass ? "true" : "false");
        for (int impl = 0; impl < 2; impl++) {
            fprintf(f, ",\"%s_runs\":[", impl ? "library" : "baseline");
            for (size_t k = 0; k < m->n; k++)
                fprintf(f, "%s%.3f", k ? "," : "", m->runs[impl][k]);
            fprintf(f, "]");
        }
        fprintf(f, "}");
    }
    fprintf(f, "],\"passed\":%zu,\"all_pass\":%s}\n", passed,
            passed == r->n_metrics ? "true" : "false");
}
