/*
 * metric_names.h - the one list of what llmserve measures: names, kinds, labels and
 * units, shared by the services that report (through reporter.h) and the collector
 * (services/metrics) that keeps them, serves /metrics and evaluates alerts.
 *
 * Prometheus conventions: one llmserve_ prefix; base units (seconds, bytes, ratios
 * 0..1); counters end in _total; histograms are reported by name without suffix and
 * exposed as _bucket{le}/_sum/_count.  The collector adds the labels `service` and
 * `instance` (from the reporting stream's MetricsSource); services send only the
 * labels listed here, with small value sets (never request ids or prompts).
 *
 * Label values: pool, model, version as the inference instance reports them (Info);
 * code is the gRPC status code name ("OK", "UNAVAILABLE", ...); cache is "miss",
 * "exact" or "semantic" (or "bypass" when the request asked for no cache); tier is
 * "l1", "memcached" or "semantic"; finish_reason is "stop", "length", "cancelled" or
 * "error".
 *
 * How the router fills them (services/router/report.c): pool is where the request was
 * routed (the fallback once it fell back), "" for a request refused before routing;
 * model and version are those of the instance that started it, "" if none did; a
 * cache hit takes the instance it was picked for (picks come before the lookup) and the
 * cache entry's version.  cache is "bypass" whenever no lookup was planned (the request
 * asked for none, its sampling is not cacheable, or the router has no cache).  EOS
 * counts as "stop"; a Done with DEADLINE (cut after its first token; code "OK") is
 * finish_reason "deadline"; every error event is "error" with its code.
 */
#ifndef SVC_METRIC_NAMES_H
#define SVC_METRIC_NAMES_H

/* ---- every server (reported by libs/svc's runtime) ---------------------------------- */

/* gauge {}: 1 while the process serves, 0 while it drains */
#define M_UP "llmserve_up"
/* counter {method, code}: gRPC calls that ended, by full method name and status */
#define M_GRPC_HANDLED "llmserve_grpc_server_handled_total"
/* counter {}: samples the reporter dropped (buffer full, collector away) */
#define M_REPORT_DROPPED "llmserve_metrics_dropped_total"
/* counter {}: spans the OTLP exporter delivered (tracer_otlp.h) */
#define M_TRACE_EXPORTED "llmserve_trace_spans_exported_total"
/* counter {reason}: spans the OTLP exporter dropped; reason queue_full (the exporter
 * fell behind), export_failed (the receiver refused the batch or never answered within
 * the export timeout) or shutdown (still queued when the flush at exit ran out of time) */
#define M_TRACE_DROPPED "llmserve_trace_spans_dropped_total"

/* ---- router: what users feel ----------------------------------------------------- */

/* histogram {pool, model, version, cache}: request start to first token out */
#define M_TTFT "llmserve_ttft_seconds"
/* histogram {pool, model, version}: between consecutive tokens of a request, as the
 * router relays them from an instance (a cache hit's replay is not timed) */
#define M_ITL "llmserve_inter_token_latency_seconds"
/* histogram {pool, model, version, cache}: request start to its terminal event */
#define M_E2E "llmserve_request_duration_seconds"
/* histogram {pool}: time a request waited in the router before it was sent on (routing,
 * and its wait in the router's queue while every instance of the pool was at capacity) */
#define M_ROUTER_QUEUE "llmserve_router_queue_seconds"
/* gauge {pool}: requests waiting in the router's queue for room in the pool */
#define M_ROUTER_QUEUE_DEPTH "llmserve_router_queue_depth"
/* counter {pool, priority}: requests routed, by their resolved class (priority
 * interactive|normal|batch), counted once each when routed (pool is the first routed to) */
#define M_ROUTER_BY_PRIORITY "llmserve_router_requests_by_priority_total"
/* counter {pool, outcome}: picks where a request's prefix key had a say (outcome kept: the
 * instance holding the prefix took it; spilled: that instance was beyond the load slack
 * or full, and the least loaded one took it) */
#define M_ROUTER_PREFIX "llmserve_router_prefix_affinity_total"
/* histogram {result}: the router's cache lookup (result hit|miss|error|skipped; error
 * includes an answer later than --cache-timeout-ms; skipped: a lookup was planned but
 * no cache stream was up, observed as 0 s or the failed send) */
#define M_CACHE_LOOKUP "llmserve_cache_lookup_seconds"
/* counter {pool, model, version, code, finish_reason, cache}: requests that ended */
#define M_REQUESTS "llmserve_requests_total"
/* counter {pool, model, version}: tokens streamed to clients from instances, added at
 * each request's end (the tokens of cache hits are not: see requests_total{cache}) */
#define M_TOKENS "llmserve_tokens_total"
/* counter {pool}: requests sent to another pool after a failure (no healthy instance,
 * TTFT budget spent); pool is the pool left.  Tries on another instance are retries. */
#define M_FALLBACKS "llmserve_router_fallbacks_total"
/* counter {pool}: retries before the first token (another try after a failed one) */
#define M_RETRIES "llmserve_router_retries_total"
/* counter {pool}: answers continued on another instance of the same model after the one
 * serving them failed mid-stream (after the first token) */
#define M_FAILOVERS "llmserve_router_failovers_total"
/* gauge {pool}: requests in flight in the router, from routing to the terminal event
 * (pools past the first 64 named are counted as pool "other") */
#define M_IN_FLIGHT "llmserve_requests_in_flight"

/* ---- inference ---------------------------------------------------------------------- */

/* histogram {pool, model}: arrival to admission into the batch */
#define M_INF_QUEUE "llmserve_inference_queue_seconds"
/* histogram {pool, model}: admission to the first token (the prompt's prefill) */
#define M_INF_PREFILL "llmserve_inference_prefill_seconds"
/* histogram {pool, model}: first token to the last */
#define M_INF_DECODE "llmserve_inference_decode_seconds"
/* histogram {pool, model}: one forward step */
#define M_INF_STEP "llmserve_inference_step_seconds"
/* histogram {pool, model}: sequences in one forward step (unit: requests) */
#define M_INF_BATCH "llmserve_inference_batch_size"
/* counter {pool, model}: prompt tokens prefilled */
#define M_INF_PROMPT_TOKENS "llmserve_inference_prompt_tokens_total"
/* counter {pool, model}: tokens generated */
#define M_INF_GEN_TOKENS "llmserve_inference_generated_tokens_total"
/* gauge {pool, model}: requests in the running batch */
#define M_INF_RUNNING "llmserve_inference_requests_running"
/* gauge {pool, model}: requests queued for admission */
#define M_INF_WAITING "llmserve_inference_requests_waiting"
/* gauge {pool, model}: KV blocks in use and in all */
#define M_INF_KV_USED "llmserve_inference_kv_blocks_used"
#define M_INF_KV_CAPACITY "llmserve_inference_kv_blocks_capacity"
/* gauge {pool, model}: the queue's bound (--max-queue), for saturation */
#define M_INF_QUEUE_LIMIT "llmserve_inference_queue_limit"
/* counter {pool, model, reason}: requests refused at admission (reason queue_full,
 * too_long, draining, device_lost); too_long is a prompt the model's context cannot
 * hold (answered INVALID_ARGUMENT) or a KV reservation the budget never could */
#define M_INF_REFUSED "llmserve_inference_admissions_refused_total"
/* counter {pool, model}: prompt tokens whose KV the prefix cache held at admission
 * (not computed; M_INF_PROMPT_TOKENS counts the ones that were) */
#define M_INF_PREFIX_HIT_TOKENS "llmserve_inference_prefix_cache_hit_tokens_total"
/* counter {pool, model, priority}: running requests preempted for a better class
 * (priority interactive|normal|batch: the preempted one's) */
#define M_INF_PREEMPTIONS "llmserve_inference_preemptions_total"

/* ---- cache -------------------------------------------------------------------------- */

/* counter {tier}: lookups that reached the tier, and those it answered; one per
 * request and tier (semantic hits count under semantic whichever tier held the answer;
 * details in services/cache/engine.h) */
#define M_CACHE_LOOKUPS "llmserve_cache_lookups_total"
#define M_CACHE_HITS "llmserve_cache_hits_total"
/* counter {reason}: semantic hits the guards turned down (reason number|unit|negation|
 * entity|order, libs/cache/cache_guard.h): the most similar entry differed in that */
#define M_CACHE_VETOES "llmserve_cache_semantic_vetoes_total"
/* counter {}: answers stored; entries the L1 evicted */
#define M_CACHE_STORES "llmserve_cache_stores_total"
#define M_CACHE_EVICTIONS "llmserve_cache_evictions_total"
/* histogram {op}: one memcached call (op get|set) */
#define M_CACHE_MEMCACHED "llmserve_cache_memcached_seconds"
/* gauge {}: 1 while the memcached circuit breaker is open (any server's) */
#define M_CACHE_BREAKER_OPEN "llmserve_cache_breaker_open"
/* gauge {}: 1 while the cache serves without memcached (degraded: for now the same
 * thing as a breaker open, cache_breaker.h) */
#define M_CACHE_DEGRADED "llmserve_cache_degraded"

#endif
