#define _GNU_SOURCE
#include "rpc/init.h"

#include "base/log.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_once_t g_openssl_once = PTHREAD_ONCE_INIT;

static void openssl_once(void)
{
    /* The first OpenSSL initialisation decides whether it registers its exit handler. */
    if (OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL) != 1)
        LS_LOG_WARN("rpc", "OpenSSL did not initialise; TLS will fail");
}

void rpc__openssl_init(void)
{
    pthread_once(&g_openssl_once, openssl_once);
}

/* gRPC's message as one quoted value: a line that reads as text and key=value fields
 * whatever the message holds. */
static void route(gpr_log_func_args *a)
{
    ls_log_level_t level = a->severity == GPR_LOG_SEVERITY_ERROR  ? LS_LOG_ERROR
                           : a->severity == GPR_LOG_SEVERITY_INFO ? LS_LOG_INFO
                                                                  : LS_LOG_DEBUG;
    char text[1024];
    size_t w = 0;
    for (const char *p = a->message ? a->message : ""; *p && w < sizeof(text) - 2; p++) {
        if (*p == '"' || *p == '\\')
            text[w++] = '\\';
        text[w++] = *p;
    }
    text[w] = '\0';
    const char *file = a->file ? a->file : "";
    const char *slash = file;
    for (const char *p = file; *p; p++)
        if (*p == '/')
            slash = p + 1;
    ls_log(level, "grpc", "grpc core text=\"%s\" at=%s:%d", text, slash, a->line);
}

static void once(void)
{
    gpr_set_log_function(route);
}

void rpc__grpc_init(void)
{
    rpc__openssl_init(); /* before gRPC's own OpenSSL start */
    pthread_once(&g_once, once);
    grpc_init();
}
