/*
 * config.h - settings from defaults, then the environment, then command-line flags.
 *
 * A program describes its settings once, in a table of ls_opt_t that point at the
 * fields of its own config struct (whose defaults its x_config_init has set).
 * ls_config_load applies environment variables, then flags (--name=value,
 * --name value, --flag / --no-flag for booleans), checks ranges, and answers
 * --help with every flag, its environment variable and its default.
 * Not thread-safe: call from main before starting threads.
 */
#ifndef LS_CONFIG_H
#define LS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    LS_OPT_STRING, /* target is const char **: points into argv or environ, never freed */
    LS_OPT_INT,    /* target is int64_t *, checked against [min, max] */
    LS_OPT_DOUBLE, /* target is double *, checked against [min, max] */
    LS_OPT_BOOL,   /* target is bool * */
} ls_opt_type_t;

typedef struct {
    const char *name; /* flag without the dashes, e.g. "listen" for --listen */
    const char *env;  /* environment variable, or NULL for none */
    ls_opt_type_t type;
    void *target;
    const char *help; /* one line; state the unit */
    double min, max;  /* inclusive range for INT and DOUBLE; min == max means unchecked */
} ls_opt_t;

typedef struct {
    const char *program; /* name shown in usage */
    const char *summary; /* one line shown under usage */
    const ls_opt_t *opts;
    size_t n_opts;
} ls_config_t;

/* Returned by ls_config_load when --help was printed; the caller exits with status 0. */
#define LS_CONFIG_HELP 1

/* Applies environment then argv to the targets.  Returns LS_OK, LS_CONFIG_HELP after
 * printing usage to stdout, or LS_ERR_INVALID after writing a one-line reason into
 * err (err_len bytes; may be 0).  On error the targets may be partly updated. */
int ls_config_load(const ls_config_t *cfg, int argc, char **argv, char *err, size_t err_len);

/* Writes usage (every flag, its environment variable, its current value as default)
 * to fd. */
void ls_config_usage(const ls_config_t *cfg, int fd);

/* Logs the effective settings as one info line of key=value fields under module mod. */
void ls_config_log(const ls_config_t *cfg, const char *mod);

#endif
