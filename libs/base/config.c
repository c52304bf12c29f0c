#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "err.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define REDACTED "<redacted>"

/* ---- lists ------------------------------------------------------------------------ */

void ls_strlist_free(ls_strlist_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

char *ls_strlist_join(const ls_strlist_t *l, const char *sep)
{
    size_t len = 1, sl = strlen(sep);
    for (size_t i = 0; i < l->n; i++)
        len += strlen(l->items[i]) + (i ? sl : 0);
    char *out = malloc(len);
    if (!out)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (i) {
            memcpy(out + at, sep, sl);
            at += sl;
        }
        size_t n = strlen(l->items[i]);
        memcpy(out + at, l->items[i], n);
        at += n;
    }
    out[at] = '\0';
    return out;
}

static void list_add(ls_strlist_t *l, const char *v)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (!items) {
        LS_LOG_ERROR("config", "out of memory");
        abort();
    }
    l->items = items;
    l->items[l->n++] = ls_xstrdup(v);
}

/* ---- values ----------------------------------------------------------------------- */

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool in_range(const ls_opt_t *o, double v)
{
    return o->min == o->max || (v >= o->min && v <= o->max);
}

/* Stores text into o's target; from names where the value came from, for errors (a
 * secret is never parsed, so its text never reaches a message). */
static int apply(const ls_opt_t *o, const char *text, const char *from, char *err, size_t err_len)
{
    char *end = NULL;
    switch (o->type) {
    case LS_OPT_STRING:
    case LS_OPT_SECRET:
        *(const char **)o->target = text;
        return LS_OK;
    case LS_OPT_LIST:
        list_add((ls_strlist_t *)o->target, text);
        return LS_OK;
    case LS_OPT_BOOL:
        if (!parse_bool(text, (bool *)o->target)) {
            ls_set_err(err, err_len, "%s: '%s' is not a boolean (true/false)", from, text);
            return LS_ERR_INVALID;
        }
        return LS_OK;
    case LS_OPT_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || !in_range(o, (double)v)) {
            if (o->min == o->max)
                ls_set_err(err, err_len, "%s: '%s' is not an integer", from, text);
            else
                ls_set_err(err, err_len, "%s: '%s' is not an integer in [%.0f, %.0f]", from, text,
                           o->min, o->max);
            return LS_ERR_INVALID;
        }
        *(int64_t *)o->target = v;
        return LS_OK;
    }
    case LS_OPT_DOUBLE: {
        errno = 0;
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v) || !in_range(o, v)) {
            if (o->min == o->max)
                ls_set_err(err, err_len, "%s: '%s' is not a finite number", from, text);
            else
                ls_set_err(err, err_len, "%s: '%s' is not a number in [%g, %g]", from, text, o->min,
                           o->max);
            return LS_ERR_INVALID;
        }
        *(double *)o->target = v;
        return LS_OK;
    }
    }
    return LS_ERR_INVALID;
}

static const ls_opt_t *find(const ls_config_t *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const char *n = cfg->opts[i].name;
        if (strlen(n) == len && strncmp(n, name, len) == 0)
            return &cfg->opts[i];
    }
    return NULL;
}

/* A deprecated flag spelled "--old" (name without dashes, len bytes): the option it
 * stands for, or NULL. */
static const ls_opt_t *find_alias_flag(const ls_config_t *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->n_aliases; i++) {
        const char *old = cfg->aliases[i].old;
        if (strncmp(old, "--", 2) == 0 && strlen(old + 2) == len &&
            strncmp(old + 2, name, len) == 0) {
            const char *to = cfg->aliases[i].name;
            return find(cfg, to, strlen(to));
        }
    }
    return NULL;
}

/* Edit distance between a (al bytes) and b, capped: enough to suggest a near flag. */
static size_t distance(const char *a, size_t al, const char *b)
{
    size_t bl = strlen(b);
    if (al > 64 || bl > 64)
        return 99;
    size_t prev[65], cur[65];
    for (size_t j = 0; j <= bl; j++)
        prev[j] = j;
    for (size_t i = 1; i <= al; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= bl; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (bl + 1) * sizeof(size_t));
    }
    return prev[bl];
}

static const char *closest(const ls_config_t *cfg, const char *name, size_t len)
{
    const char *best = NULL;
    size_t best_d = 3; /* at most two edits away, or a prefix */
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const char *n = cfg->opts[i].name;
        size_t d = distance(name, len, n);
        if (len >= 3 && strncmp(n, name, len) == 0 && d > 1)
            d = 1; /* --max-bat for --max-batch */
        if (d < best_d) {
            best_d = d;
            best = n;
        }
    }
    return best;
}

void ls_config_env_name(const ls_config_t *cfg, const ls_opt_t *o, char *buf, size_t len)
{
    if (len == 0)
        return;
    if (!cfg->env_prefix) {
        snprintf(buf, len, "%s", o->env ? o->env : "");
        return;
    }
    int n = snprintf(buf, len, "%s", cfg->env_prefix);
    for (const char *p = o->name; *p && n >= 0 && (size_t)n + 1 < len; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    if (n >= 0 && (size_t)n < len)
        buf[n] = '\0';
}

/* The value as shown in usage and logs (secrets redacted when set). */
static void format_value(const ls_opt_t *o, char *buf, size_t len)
{
    switch (o->type) {
    case LS_OPT_STRING:
    case LS_OPT_SECRET: {
        const char *s = *(const char **)o->target;
        snprintf(buf, len, "%s", !s || !*s ? "" : o->type == LS_OPT_SECRET ? REDACTED : s);
        break;
    }
    case LS_OPT_LIST: {
        const ls_strlist_t *l = o->target;
        char *j = ls_strlist_join(l, ";");
        snprintf(buf, len, "%s", j ? j : "");
        free(j);
        break;
    }
    case LS_OPT_BOOL:
        snprintf(buf, len, "%s", *(bool *)o->target ? "true" : "false");
        break;
    case LS_OPT_INT:
        snprintf(buf, len, "%lld", (long long)*(int64_t *)o->target);
        break;
    case LS_OPT_DOUBLE:
        snprintf(buf, len, "%g", *(double *)o->target);
        break;
    }
}

void ls_config_usage(const ls_config_t *cfg, int fd)
{
    FILE *f = fdopen(dup(fd), "w");
    if (!f)
        return;
    fprintf(f, "usage: %s [flags]\n%s\n\nflags (environment variables, default):\n", cfg->program,
            cfg->summary ? cfg->summary : "");
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const ls_opt_t *o = &cfg->opts[i];
        char def[512], env[128];
        format_value(o, def, sizeof(def));
        ls_config_env_name(cfg, o, env, sizeof(env));
        const char *arg = o->type == LS_OPT_BOOL     ? ""
                          : o->type == LS_OPT_STRING ? " STR"
                          : o->type == LS_OPT_SECRET ? " SECRET"
                          : o->type == LS_OPT_LIST   ? " STR (repeatable)"
                          : o->type == LS_OPT_INT    ? " INT"
                                                     : " NUM";
        char envs[256];
        if (cfg->env_prefix && o->env)
            snprintf(envs, sizeof(envs), "%s or %s", env, o->env);
        else
            snprintf(envs, sizeof(envs), "%s", env[0] ? env : "(none)");
        fprintf(f, "  --%s%s\n      %s\n      env %s, default \"%s\"\n", o->name, arg, o->help,
                envs, def);
    }
    fprintf(f, "  --help\n      print this text and exit\n");
    if (cfg->n_aliases) {
        fprintf(f, "\ndeprecated names (still read, with a warning):\n");
        for (size_t i = 0; i < cfg->n_aliases; i++)
            fprintf(f, "  %s -> --%s\n", cfg->aliases[i].old, cfg->aliases[i].name);
    }
    fclose(f);
}

/* Applies one variable if set.  Returns LS_OK (set or not) or the apply error. */
static int apply_env(const ls_opt_t *o, const char *var, bool deprecated, char *err, size_t err_len)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return LS_OK;
    if (deprecated)
        LS_LOG_WARN("config", "deprecated environment variable var=%s use=--%s", var, o->name);
    char from[192];
    snprintf(from, sizeof(from), "%s (--%s)", var, o->name);
    if (o->type == LS_OPT_LIST)
        ls_strlist_free((ls_strlist_t *)o->target); /* a later variable replaces */
    return apply(o, v, from, err, err_len);
}

static int load_env(const ls_config_t *cfg, char *err, size_t err_len)
{
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const ls_opt_t *o = &cfg->opts[i];
        for (size_t a = 0; a < cfg->n_aliases; a++) {
            const ls_alias_t *al = &cfg->aliases[a];
            if (strncmp(al->old, "--", 2) != 0 && strcmp(al->name, o->name) == 0) {
                int rc = apply_env(o, al->old, true, err, err_len);
                if (rc != LS_OK)
                    return rc;
            }
        }
        if (o->env && cfg->env_prefix) {
            int rc = apply_env(o, o->env, false, err, err_len);
            if (rc != LS_OK)
                return rc;
        }
        char env[128];
        ls_config_env_name(cfg, o, env, sizeof(env));
        if (env[0]) {
            int rc = apply_env(o, env, false, err, err_len);
            if (rc != LS_OK)
                return rc;
        }
    }
    return LS_OK;
}

int ls_config_load(const ls_config_t *cfg, int argc, char **argv, char *err, size_t err_len)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ls_config_usage(cfg, 1);
            return LS_CONFIG_HELP;
        }
    }
    int rc = load_env(cfg, err, err_len);
    if (rc != LS_OK)
        return rc;
    /* Lists given on the command line replace what the environment gave. */
    bool *list_from_flag = ls_xcalloc(cfg->n_opts ? cfg->n_opts : 1, sizeof(bool));
    for (int i = 1; i < argc && rc == LS_OK; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            ls_set_err(err, err_len, "unexpected argument '%s' (see --help)", a);
            rc = LS_ERR_INVALID;
            break;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const ls_opt_t *o = find(cfg, name, name_len);
        bool negated = false;
        if (!o && !eq && name_len > 3 && strncmp(name, "no-", 3) == 0) {
            o = find(cfg, name + 3, name_len - 3);
            if (!o)
                o = find_alias_flag(cfg, name + 3, name_len - 3);
            negated = o && o->type == LS_OPT_BOOL;
            if (!negated)
                o = NULL;
        }
        if (!o) {
            o = find_alias_flag(cfg, name, name_len);
            if (o)
                LS_LOG_WARN("config", "deprecated flag flag=--%.*s use=--%s", (int)name_len, name,
                            o->name);
        }
        if (!o) {
            const char *near = closest(cfg, name, name_len);
            if (near)
                ls_set_err(err, err_len, "unknown flag '--%.*s' (did you mean --%s? see --help)",
                           (int)name_len, name, near);
            else
                ls_set_err(err, err_len, "unknown flag '--%.*s' (see --help)", (int)name_len, name);
            rc = LS_ERR_INVALID;
            break;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (o->type == LS_OPT_BOOL) {
            value = negated ? "false" : "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            ls_set_err(err, err_len, "flag '--%s' needs a value", o->name);
            rc = LS_ERR_INVALID;
            break;
        }
        size_t idx = (size_t)(o - cfg->opts);
        if (o->type == LS_OPT_LIST && !list_from_flag[idx]) {
            ls_strlist_free((ls_strlist_t *)o->target);
            list_from_flag[idx] = true;
        }
        char from[96];
        snprintf(from, sizeof(from), "--%s", o->name);
        rc = apply(o, value, from, err, err_len);
    }
    free(list_from_flag);
    return rc;
}

void ls_config_log(const ls_config_t *cfg, const char *mod)
{
    char line[1800];
    size_t used = 0;
    line[0] = '\0';
    for (size_t i = 0; i < cfg->n_opts && used < sizeof(line) - 1; i++) {
        char v[512];
        format_value(&cfg->opts[i], v, sizeof(v));
        /* Quoted when it would not read as one key=value field. */
        bool quote = v[0] == '\0' || strpbrk(v, " \t\"") != NULL;
        char q[1100];
        if (quote) {
            size_t w = 0;
            q[w++] = '"';
            for (const char *p = v; *p && w < sizeof(q) - 3; p++) {
                if (*p == '"' || *p == '\\')
                    q[w++] = '\\';
                q[w++] = *p;
            }
            q[w++] = '"';
            q[w] = '\0';
        }
        int n = snprintf(line + used, sizeof(line) - used, "%s%s=%s", i ? " " : "",
                         cfg->opts[i].name, quote ? q : v);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    ls_log(LS_LOG_INFO, mod, "effective config %s", line);
}
