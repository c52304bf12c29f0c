#include "tally.h"

#include "base/log.h"
#include "rpc/status.h"
#include "rpcbench/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void push(sb_tally_t *t, int64_t v)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 256;
        int64_t *grown = realloc(t->ttft_ns, t->cap * sizeof(*grown));
        if (!grown) {
            LS_LOG_ERROR("servebench", "out of memory for %zu samples", t->cap);
            abort();
        }
        t->ttft_ns = grown;
    }
    t->ttft_ns[t->n++] = v;
}

void sb_tally_add_error(sb_tally_t *t, int code, const char *message)
{
    t->errors++;
    /* a code outside the 17 gRPC defines counts as UNKNOWN, as rpc_status_name names it */
    t->by_code[code >= 0 && code <= 16 ? code : GRPC_STATUS_UNKNOWN]++;
    if (!t->first_error[0])
        snprintf(t->first_error, sizeof(t->first_error), "%s: %s",
                 rpc_status_name((grpc_status_code)code), message);
}

void sb_tally_add(sb_tally_t *t, const sb_req_t *r)
{
    t->tokens += r->n_tokens;
    if (r->code != 0) {
        sb_tally_add_error(t, r->code, r->message);
        return;
    }
    t->ok++;
    t->cached_tokens += r->cached_tokens;
    t->usage_cached += r->usage_cached;
    if (r->first_ns)
        push(t, r->first_ns - r->sent_ns);
}

void sb_tally_merge(sb_tally_t *dst, const sb_tally_t *src)
{
    for (size_t i = 0; i < src->n; i++)
        push(dst, src->ttft_ns[i]);
    dst->ok += src->ok;
    dst->cached_tokens += src->cached_tokens;
    dst->usage_cached += src->usage_cached;
    dst->tokens += src->tokens;
    dst->errors += src->errors;
    for (int i = 0; i < 17; i++)
        dst->by_code[i] += src->by_code[i];
    if (!dst->first_error[0])
        memcpy(dst->first_error, src->first_error, sizeof(dst->first_error));
}

double sb_tally_ttft_ms(sb_tally_t *t, double q)
{
    if (t->n == 0)
        return 0;
    bench_sort_i64(t->ttft_ns, t->n);
    return (double)bench_quantile_i64(t->ttft_ns, t->n, q) / 1e6;
}

double sb_tally_ttft_mean_ms(const sb_tally_t *t)
{
    if (t->n == 0)
        return 0;
    double sum = 0;
    for (size_t i = 0; i < t->n; i++)
        sum += (double)t->ttft_ns[i];
    return sum / (double)t->n / 1e6;
}

void sb_tally_print_errors(const sb_tally_t *t, const char *prefix)
{
    printf("%s", prefix);
    if (t->errors == 0) {
        printf("none\n");
        return;
    }
    for (int i = 0; i < 17; i++)
        if (t->by_code[i])
            printf("%s %llu  ", rpc_status_name((grpc_status_code)i),
                   (unsigned long long)t->by_code[i]);
    printf("(first: %s)\n", t->first_error);
}

void sb_tally_free(sb_tally_t *t)
{
    free(t->ttft_ns);
    memset(t, 0, sizeof(*t));
}
