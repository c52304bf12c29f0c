/*
 * config.h - settings from defaults, then the environment, then command-line flags.
 *
 * A program describes its settings once, in a table of ls_opt_t that point at the
 * fields of its own config struct (whose defaults its x_config_init has set).
 * ls_config_load applies environment variables, then flags (--name=value,
 * --name value, --flag / --no-flag for booleans), checks ranges, and answers
 * --help with every flag, its environment variables and its default.
 *
 * Environment variables of an option, later ones winning over earlier ones, flags over
 * all of them:
 *   - a deprecated alias (ls_alias_t with an old variable name), with a warning;
 *   - the ecosystem's own name when one exists (opt->env, e.g. CONSUL_HTTP_ADDR);
 *   - the program's scheme when it has one: env_prefix + the flag name in upper case
 *     with '-' as '_' (prefix "LLMSERVE_ROUTER_", flag --grace-ms: LLMSERVE_ROUTER_GRACE_MS).
 * An empty variable counts as unset.  Deprecated flag names (ls_alias_t with an old
 * "--flag") still work, with a warning.
 *
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
    LS_OPT_LIST,   /* target is ls_strlist_t *: the flag may be repeated, each value kept */
    LS_OPT_SECRET, /* as LS_OPT_STRING, but the value is never printed: "<redacted>" in
                      --help, logs and error messages */
} ls_opt_type_t;

typedef struct {
    const char *name; /* flag without the dashes, e.g. "listen" for --listen */
    const char *env;  /* the ecosystem's own variable (e.g. "CONSUL_HTTP_ADDR"), or the one
                         variable of a program without a prefix; NULL for none */
    ls_opt_type_t type;
    void *target;
    const char *help; /* one line; state the unit */
    double min, max;  /* inclusive range for INT and DOUBLE; min == max means unchecked */
} ls_opt_t;

/* Values of an LS_OPT_LIST option, copies owned by the list (free with ls_strlist_free).
 * Flags replace what the environment gave: --pool a --pool b is {a, b} whatever
 * the variable said; a variable alone is one item. */
typedef struct {
    char **items;
    size_t n;
} ls_strlist_t;

/* Frees the copies and empties the list.  NULL is a no-op. */
void ls_strlist_free(ls_strlist_t *l);

/* The items joined with sep into a new string the caller frees; "" for an empty list.
 * Returns NULL only when memory is exhausted. */
char *ls_strlist_join(const ls_strlist_t *l, const char *sep);

/* An old name kept working: old is "--flag" (a deprecated flag) or a variable name
 * ("ROUTER_LISTEN"); name is the option it now stands for.  Using it logs a warning. */
typedef struct {
    const char *old;
    const char *name;
} ls_alias_t;

typedef struct {
    const char *program;    /* name shown in usage */
    const char *summary;    /* one line shown under usage */
    const char *env_prefix; /* e.g. "LLMSERVE_ROUTER_"; NULL: opt->env only */
    const ls_opt_t *opts;
    size_t n_opts;
    const ls_alias_t *aliases; /* may be NULL */
    size_t n_aliases;
} ls_config_t;

/* Returned by ls_config_load when --help was printed; the caller exits with status 0. */
#define LS_CONFIG_HELP 1

/* Applies environment then argv to the targets.  Returns LS_OK, LS_CONFIG_HELP after
 * printing usage to stdout, or LS_ERR_INVALID after writing a one-line reason into
 * err (err_len bytes; may be 0) that names the flag or variable at fault (and for an
 * unknown flag, the closest known one).  On error the targets may be partly updated. */
int ls_config_load(const ls_config_t *cfg, int argc, char **argv, char *err, size_t err_len);

/* Writes usage (every flag, its environment variables, its current value as default;
 * secrets shown as "<redacted>") to fd. */
void ls_config_usage(const ls_config_t *cfg, int fd);

/* Writes opt's environment variable of the program's scheme into buf (len bytes):
 * env_prefix + NAME, or opt->env when there is no prefix, or "" when it has none. */
void ls_config_env_name(const ls_config_t *cfg, const ls_opt_t *opt, char *buf, size_t len);

/* Logs the effective settings as one info line of key=value fields under module mod;
 * values with spaces are quoted; secrets that are set show as "<redacted>". */
void ls_config_log(const ls_config_t *cfg, const char *mod);

#endif
