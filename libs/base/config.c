#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "base/err.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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

/* Stores text into o's target; from names where the value came from, for errors. */
static int apply(const ls_opt_t *o, const char *text, const char *from, char *err, size_t err_len)
{
    char *end = NULL;
    switch (o->type) {
    case LS_OPT_STRING:
        *(const char **)o->target = text;
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

static void format_value(const ls_opt_t *o, char *buf, size_t len)
{
    switch (o->type) {
    case LS_OPT_STRING: {
        const char *s = *(const char **)o->target;
        snprintf(buf, len, "%s", s ? s : "");
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
    fprintf(f, "usage: %s [flags]\n%s\n\nflags (environment variable, default):\n", cfg->program,
            cfg->summary ? cfg->summary : "");
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const ls_opt_t *o = &cfg->opts[i];
        char def[256];
        format_value(o, def, sizeof(def));
        const char *arg = o->type == LS_OPT_BOOL     ? ""
                          : o->type == LS_OPT_STRING ? " STR"
                          : o->type == LS_OPT_INT    ? " INT"
                                                     : " NUM";
        fprintf(f, "  --%s%s\n      %s\n      env %s, default \"%s\"\n", o->name, arg, o->help,
                o->env ? o->env : "(none)", def);
    }
    fprintf(f, "  --help\n      print this text and exit\n");
    fclose(f);
}

int ls_config_load(const ls_config_t *cfg, int argc, char **argv, char *err, size_t err_len)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ls_config_usage(cfg, 1);
            return LS_CONFIG_HELP;
        }
    }
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const ls_opt_t *o = &cfg->opts[i];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && *v) {
            int rc = apply(o, v, o->env, err, err_len);
            if (rc != LS_OK)
                return rc;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            ls_set_err(err, err_len, "unexpected argument '%s' (see --help)", a);
            return LS_ERR_INVALID;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const ls_opt_t *o = find(cfg, name, name_len);
        bool negated = false;
        if (!o && !eq && name_len > 3 && strncmp(name, "no-", 3) == 0) {
            o = find(cfg, name + 3, name_len - 3);
            negated = o && o->type == LS_OPT_BOOL;
            if (!negated)
                o = NULL;
        }
        if (!o) {
            ls_set_err(err, err_len, "unknown flag '--%.*s' (see --help)", (int)name_len, name);
            return LS_ERR_INVALID;
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
            return LS_ERR_INVALID;
        }
        char from[96];
        snprintf(from, sizeof(from), "--%s", o->name);
        int rc = apply(o, value, from, err, err_len);
        if (rc != LS_OK)
            return rc;
    }
    return LS_OK;
}

void ls_config_log(const ls_config_t *cfg, const char *mod)
{
    char line[1800];
    size_t used = 0;
    line[0] = '\0';
    for (size_t i = 0; i < cfg->n_opts && used < sizeof(line) - 1; i++) {
        char v[256];
        format_value(&cfg->opts[i], v, sizeof(v));
        int n = snprintf(line + used, sizeof(line) - used, "%s%s=%s", i ? " " : "",
                         cfg->opts[i].name, v);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    ls_log(LS_LOG_INFO, mod, "effective config %s", line);
}
