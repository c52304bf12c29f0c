/*
 * test_svc_metrics.c - a real service binary (llmserve-cache) reporting to a collector
 * (support/metrics_sink.h) through the runtime's --metrics: its source, llmserve_up
 * while it serves and after it stopped, and its calls by method and code.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "support/channel.h"
#include "support/metrics_sink.h"
#include "support/net.h"
#include "support/proc.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>

#define HANDLED "llmserve_grpc_server_handled_total"

static int health_check(rpc_channel_t *ch)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 20000000, .wait_for_ready = true};
    cr_assert_eq(rpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                   &grpc__health__v1__health_check_response__descriptor, &opts,
                                   &resp, &st),
                 LS_OK);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return st.code;
}

Test(svc_metrics_e2e, a_service_reports_its_source_up_and_calls, .timeout = 120)
{
    metrics_sink_t *sink = metrics_sink_create(0);
    cr_assert_not_null(sink);
    char collector[TEST_ADDR_LEN];
    test_addr(collector, metrics_sink_port(sink));
    char *argv[] = {(char *)test_env_path("LLMSERVE_CACHE_SERVER"),
                    "--listen",
                    "127.0.0.1:0",
                    "--rpc-threads",
                    "2",
                    "--memcached",
                    "--SERVER=127.0.0.1:1", /* none: the cache serves degraded */
                    "--metrics",
                    collector,
                    "--metrics-interval-ms",
                    "100",
                    "--log-level",
                    "warn",
                    NULL};
    test_proc_t p;
    cr_assert_eq(test_proc_start(&p, argv, 30000), 0, "llmserve-cache did not start");
    cr_expect(metrics_sink_wait_gauge(sink, "llmserve_up", "", 1, 20000), "up while serving");

    rpc_client_t *client = rpc_client_create(1);
    rpc_channel_t *ch = test_channel_to(client, p.port, NULL);
    cr_expect_eq(health_check(ch), GRPC_STATUS_OK);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_us = 20000000};
    rpc_channel_unary(ch, "/llmserve.v1.Nobody/Home", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &opts, &resp, &st);
    cr_expect_eq(st.code, GRPC_STATUS_UNIMPLEMENTED);
    cr_expect(metrics_sink_wait_counter(sink, HANDLED,
                                        "method=/grpc.health.v1.Health/Check,code=OK", 1, 20000),
              "a call reported while the service runs");
    rpc_channel_destroy(ch);
    rpc_client_destroy(client);

    int status = test_proc_stop(&p, SIGTERM, 30000);
    cr_expect_eq(status, 0, "llmserve-cache exit status %d", status);

    metrics_sink_report_t first;
    cr_assert(metrics_sink_report(sink, 0, &first));
    char instance[64];
    snprintf(instance, sizeof(instance), "127.0.0.1:%d", p.port);
    cr_expect(first.has_source);
    cr_expect_str_eq(first.service, "cache");
    cr_expect_str_eq(first.instance, instance);
    cr_expect_eq(metrics_sink_counter(sink, HANDLED, "method=/grpc.health.v1.Health/Check,code=OK"),
                 1);
    cr_expect_eq(metrics_sink_counter(sink, HANDLED, "method=(unknown),code=UNIMPLEMENTED"), 1);
    double up = -1;
    cr_expect(metrics_sink_gauge(sink, "llmserve_up", "", &up, NULL));
    cr_expect_eq(up, 0, "the last report, sent after the server stopped, says it is down");
    cr_expect_eq(metrics_sink_counter(sink, "llmserve_metrics_dropped_total", ""), 0);
    metrics_sink_destroy(sink);
}
