#include "report.h"

#include "base/log.h"

#include <stdlib.h>
#include <string.h>

void inf_report_init(inf_report_t *rep, svc_reporter_t *r, const char *pool, const char *model)
{
    memset(rep, 0, sizeof(*rep));
    rep->reporter = r;
    rep->labels[0].key = "pool";
    rep->labels[0].value = ls_xstrdup(pool ? pool : "");
    rep->labels[1].key = "model";
    rep->labels[1].value = ls_xstrdup(model ? model : "");
    rep->sent_waiting = rep->sent_running = rep->sent_kv_used = -1;
}

void inf_report_free(inf_report_t *rep)
{
    free((char *)rep->labels[0].value);
    free((char *)rep->labels[1].value);
    rep->labels[0].value = rep->labels[1].value = NULL;
}

void inf_report_refused(const inf_report_t *rep, const char *reason)
{
    if (!rep->reporter)
        return;
    svc_label_t l[3] = {rep->labels[0], rep->labels[1], {"reason", reason}};
    svc_metric_add(rep->reporter, M_INF_REFUSED, l, 3, 1);
}

void inf_report_prefix_hit(const inf_report_t *rep, int n)
{
    if (rep->reporter && n > 0)
        svc_metric_add(rep->reporter, M_INF_PREFIX_HIT_TOKENS, rep->labels, 2, n);
}

void inf_report_preempted(const inf_report_t *rep, const char *prio)
{
    if (!rep->reporter)
        return;
    svc_label_t l[3] = {rep->labels[0], rep->labels[1], {"priority", prio}};
    svc_metric_add(rep->reporter, M_INF_PREEMPTIONS, l, 3, 1);
}

void inf_report_seconds(const inf_report_t *rep, const char *name, int64_t span_us)
{
    if (!rep->reporter || span_us < 0)
        return;
    svc_metric_observe(rep->reporter, name, rep->labels, 2, (double)span_us / 1e6);
}

void inf_report_step(const inf_report_t *rep, int64_t step_us, int batch, int prompt_tokens,
                     int generated)
{
    if (!rep->reporter)
        return;
    svc_metric_observe(rep->reporter, M_INF_STEP, rep->labels, 2, (double)step_us / 1e6);
    svc_metric_observe(rep->reporter, M_INF_BATCH, rep->labels, 2, batch);
    if (prompt_tokens > 0)
        svc_metric_add(rep->reporter, M_INF_PROMPT_TOKENS, rep->labels, 2, prompt_tokens);
    if (generated > 0)
        svc_metric_add(rep->reporter, M_INF_GEN_TOKENS, rep->labels, 2, generated);
}

void inf_report_limits(inf_report_t *rep, int64_t queue_limit, int64_t kv_blocks_total)
{
    rep->queue_limit = queue_limit;
    rep->kv_blocks_total = kv_blocks_total;
    if (!rep->reporter)
        return;
    svc_metric_set(rep->reporter, M_INF_QUEUE_LIMIT, rep->labels, 2, (double)queue_limit);
    svc_metric_set(rep->reporter, M_INF_KV_CAPACITY, rep->labels, 2, (double)kv_blocks_total);
}

/* Sets gauge name to v when it differs from *sent (or always when force). */
static void send_if(const inf_report_t *rep, const char *name, int64_t v, int64_t *sent, bool force)
{
    if (v == *sent && !force)
        return;
    svc_metric_set(rep->reporter, name, rep->labels, 2, (double)v);
    *sent = v;
}

void inf_report_load(inf_report_t *rep, int waiting, int running, const forward_t *f,
                     int64_t now_us)
{
    if (!rep->reporter)
        return;
    bool all = now_us >= rep->refresh_at_us;
    if (all) {
        rep->refresh_at_us = now_us + INF_REPORT_REFRESH_US;
        inf_report_limits(rep, rep->queue_limit, rep->kv_blocks_total);
    }
    int64_t used = rep->kv_blocks_total - forward_kv_free_tokens(f) / FORWARD_KV_BLOCK;
    send_if(rep, M_INF_WAITING, waiting, &rep->sent_waiting, all);
    send_if(rep, M_INF_RUNNING, running, &rep->sent_running, all);
    send_if(rep, M_INF_KV_USED, used, &rep->sent_kv_used, all);
}
