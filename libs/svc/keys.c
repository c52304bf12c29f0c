/*
 * keys.c - the API key file and constant-time checks.
 *
 * Lock rules: k->mu (a read-write lock) guards the entries; checks take it shared, a
 * reload takes it exclusive only to swap in a set already parsed.
 */
#define _GNU_SOURCE
#include "svc/keys.h"

#include "base/err.h"
#include "base/file.h"
#include "base/log.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define KEY_MAX 4096
#define KEY_WEAK 16 /* shorter keys are accepted with a warning */
#define FILE_MAX (16u << 20)

typedef struct {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char tenant[SVC_TENANT_MAX + 1];
    svc_priority_t priority;
} entry_t;

#define PRIORITY_FIELD "priority="
#define PRINCIPAL_PRIORITY ";priority="

static const char *const priority_names[] = {"unspecified", "interactive", "normal", "batch"};

const char *svc_priority_name(int priority)
{
    return priority >= SVC_PRIORITY_INTERACTIVE && priority <= SVC_PRIORITY_BATCH
               ? priority_names[priority]
               : priority_names[0];
}

svc_priority_t svc_priority_parse(const char *name, size_t len)
{
    for (int c = SVC_PRIORITY_INTERACTIVE; c <= SVC_PRIORITY_BATCH; c++)
        if (strlen(priority_names[c]) == len && strncmp(name, priority_names[c], len) == 0)
            return (svc_priority_t)c;
    return SVC_PRIORITY_NONE;
}

struct svc_keys {
    char *path;
    pthread_rwlock_t mu;
    entry_t *entries;
    size_t n;
};

static bool token_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
           c == '/';
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool token_ok(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && token_char(s[i]))
        i++;
    if (i == 0)
        return false;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

static bool tenant_ok(const char *s, size_t n)
{
    if (n == 0 || n > SVC_TENANT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

/* Reads the whole file; NULL with the reason in err. */
static char *read_all(const char *path, char *err, size_t err_len)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        LS_LOG_WARN("auth", "API key file is readable by others file=%s mode=%04o", path,
                    (unsigned)(st.st_mode & 07777));
    size_t len = 0;
    char *buf = ls_file_read(path, FILE_MAX, &len);
    if (!buf) {
        ls_set_err(err, err_len, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    if (strlen(buf) != len) {
        ls_set_err(err, err_len, "%s holds a NUL byte", path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Parses the text into a new array; NULL with the reason (never a key) in err. */
static entry_t *parse(const char *path, char *text, size_t *n_out, char *err, size_t err_len)
{
    entry_t *out = NULL;
    size_t n = 0, cap = 0, weak = 0;
    int line_no = 0;
    char *save = NULL;
    bool ok = true;
    /* strtok_r would skip empty lines and so miscount: split by hand. */
    for (char *line = text; line && ok; line = save) {
        char *nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        line_no++;
        char *fields[4];
        size_t lens[4], nf = 0;
        char *p = line;
        while (*p && nf < 4) {
            while (*p == ' ' || *p == '\t' || *p == '\r')
                p++;
            if (!*p)
                break;
            if (nf == 0 && *p == '#')
                break;
            fields[nf] = p;
            while (*p && *p != ' ' && *p != '\t' && *p != '\r')
                p++;
            lens[nf] = (size_t)(p - fields[nf]);
            nf++;
        }
        if (nf == 0)
            continue;
        /* The last field may name the key's class: KEY [TENANT] [priority=CLASS]. */
        svc_priority_t priority = SVC_PRIORITY_NONE;
        size_t plen = strlen(PRIORITY_FIELD);
        if (nf >= 2 && lens[nf - 1] >= plen && strncmp(fields[nf - 1], PRIORITY_FIELD, plen) == 0) {
            priority = svc_priority_parse(fields[nf - 1] + plen, lens[nf - 1] - plen);
            if (priority == SVC_PRIORITY_NONE) {
                ls_set_err(err, err_len,
                           "%s line %d: unknown class after priority= (interactive, normal or "
                           "batch)",
                           path, line_no);
                ok = false;
                break;
            }
            nf--;
        }
        if (nf > 2) {
            ls_set_err(err, err_len,
                       "%s line %d: expected KEY [TENANT] [priority=CLASS], found more fields",
                       path, line_no);
            ok = false;
            break;
        }
        if (lens[0] > KEY_MAX || !token_ok(fields[0], lens[0])) {
            ls_set_err(err, err_len,
                       "%s line %d: the key is not 1 to %d characters of A-Z a-z 0-9 - . _ ~ "
                       "+ / (then '=' padding)",
                       path, line_no, KEY_MAX);
            ok = false;
            break;
        }
        if (nf == 2 && !tenant_ok(fields[1], lens[1])) {
            ls_set_err(err, err_len,
                       "%s line %d: the tenant is not 1 to %d characters of A-Z a-z 0-9 - _ .",
                       path, line_no, SVC_TENANT_MAX);
            ok = false;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            entry_t *grown = realloc(out, cap * sizeof(*grown));
            if (!grown) {
                ls_set_err(err, err_len, "out of memory reading %s", path);
                ok = false;
                break;
            }
            out = grown;
        }
        entry_t *e = &out[n];
        memset(e, 0, sizeof(*e));
        SHA256((const unsigned char *)fields[0], lens[0], e->digest);
        if (nf == 2)
            memcpy(e->tenant, fields[1], lens[1]);
        e->priority = priority;
        for (size_t i = 0; i < n; i++) {
            if (CRYPTO_memcmp(out[i].digest, e->digest, sizeof(e->digest)) == 0) {
                ls_set_err(err, err_len, "%s line %d: a key given twice", path, line_no);
                ok = false;
                break;
            }
        }
        weak += lens[0] < KEY_WEAK;
        explicit_bzero(fields[0], lens[0]);
        n++;
    }
    if (ok && n == 0) {
        ls_set_err(err, err_len, "%s holds no key (every call would be refused)", path);
        ok = false;
    }
    if (!ok) {
        free(out);
        return NULL;
    }
    if (weak)
        LS_LOG_WARN("auth", "short API keys (under %d characters) file=%s count=%zu", KEY_WEAK,
                    path, weak);
    *n_out = n;
    return out;
}

static entry_t *load(const char *path, size_t *n, char *err, size_t err_len)
{
    char *text = read_all(path, err, err_len);
    if (!text)
        return NULL;
    size_t len = strlen(text);
    entry_t *e = parse(path, text, n, err, err_len);
    explicit_bzero(text, len);
    free(text);
    return e;
}

svc_keys_t *svc_keys_load(const char *path, char *err, size_t err_len)
{
    size_t n = 0;
    entry_t *e = load(path, &n, err, err_len);
    if (!e)
        return NULL;
    svc_keys_t *k = ls_xcalloc(1, sizeof(*k));
    k->path = ls_xstrdup(path);
    pthread_rwlock_init(&k->mu, NULL);
    k->entries = e;
    k->n = n;
    LS_LOG_INFO("auth", "API keys loaded file=%s keys=%zu", path, n);
    return k;
}

int svc_keys_reload(svc_keys_t *k, char *err, size_t err_len)
{
    size_t n = 0;
    entry_t *e = load(k->path, &n, err, err_len);
    if (!e)
        return LS_ERR_INVALID;
    pthread_rwlock_wrlock(&k->mu);
    entry_t *old = k->entries;
    size_t old_n = k->n;
    k->entries = e;
    k->n = n;
    pthread_rwlock_unlock(&k->mu);
    explicit_bzero(old, old_n * sizeof(*old));
    free(old);
    LS_LOG_INFO("auth", "API keys reloaded file=%s keys=%zu", k->path, n);
    return LS_OK;
}

bool svc_keys_check(svc_keys_t *k, const char *authorization, char *tenant, size_t tenant_len)
{
    return svc_keys_check_class(k, authorization, tenant, tenant_len, NULL);
}

bool svc_keys_check_class(svc_keys_t *k, const char *authorization, char *tenant, size_t tenant_len,
                          svc_priority_t *priority)
{
    if (tenant_len)
        tenant[0] = '\0';
    if (priority)
        *priority = SVC_PRIORITY_NONE;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    size_t len = strlen(t);
    while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
        len--;
    if (len == 0 || len > KEY_MAX)
        return false;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)t, len, d);
    pthread_rwlock_rdlock(&k->mu);
    /* Every key is compared, whatever matched before: the time does not depend on which
     * key (if any) the caller holds. */
    size_t match = k->n;
    for (size_t i = 0; i < k->n; i++) {
        bool eq = CRYPTO_memcmp(d, k->entries[i].digest, sizeof(d)) == 0;
        match = eq ? i : match;
    }
    bool ok = match < k->n;
    if (ok && tenant_len)
        snprintf(tenant, tenant_len, "%s", k->entries[match].tenant);
    if (ok && priority)
        *priority = k->entries[match].priority;
    pthread_rwlock_unlock(&k->mu);
    return ok;
}

size_t svc_keys_count(svc_keys_t *k)
{
    pthread_rwlock_rdlock(&k->mu);
    size_t n = k->n;
    pthread_rwlock_unlock(&k->mu);
    return n;
}

grpc_status_code svc_keys_authorize(void *ud, const rpc_call_t *call, char *principal,
                                    size_t principal_len, char *why, size_t why_len)
{
    svc_keys_t *k = ud;
    const char *auth = rpc_md_get(rpc_call_metadata(call), "authorization", NULL);
    char tenant[SVC_TENANT_MAX + 1];
    svc_priority_t priority;
    if (svc_keys_check_class(k, auth, tenant, sizeof(tenant), &priority)) {
        svc_keys_principal_format(tenant, priority, principal, principal_len);
        return GRPC_STATUS_OK;
    }
    snprintf(why, why_len, "missing or invalid API key (send \"authorization: Bearer <key>\")");
    LS_LOG_DEBUG("auth", "call refused method=%s peer=%s reason=%s", rpc_call_method(call),
                 rpc_call_peer(call), auth ? "unknown-key" : "no-key");
    return GRPC_STATUS_UNAUTHENTICATED;
}

void svc_keys_principal_format(const char *tenant, svc_priority_t priority, char *buf, size_t len)
{
    if (len == 0)
        return;
    if (priority == SVC_PRIORITY_NONE)
        snprintf(buf, len, "%s", tenant);
    else
        snprintf(buf, len, "%s" PRINCIPAL_PRIORITY "%s", tenant, svc_priority_name(priority));
}

void svc_keys_principal_parse(const char *principal, char *tenant, size_t tenant_len,
                              svc_priority_t *priority)
{
    *priority = SVC_PRIORITY_NONE;
    if (tenant_len)
        tenant[0] = '\0';
    if (!principal)
        return;
    const char *cls = strstr(principal, PRINCIPAL_PRIORITY);
    size_t tlen = cls ? (size_t)(cls - principal) : strlen(principal);
    if (tenant_len)
        snprintf(tenant, tenant_len, "%.*s", (int)(tlen < tenant_len ? tlen : tenant_len - 1),
                 principal);
    if (cls) {
        cls += strlen(PRINCIPAL_PRIORITY);
        *priority = svc_priority_parse(cls, strlen(cls));
    }
}

void svc_keys_destroy(svc_keys_t *k)
{
    if (!k)
        return;
    explicit_bzero(k->entries, k->n * sizeof(*k->entries));
    free(k->entries);
    free(k->path);
    pthread_rwlock_destroy(&k->mu);
    free(k);
}
