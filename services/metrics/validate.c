#include "validate.h"

#include "base/utf8.h"

#include <string.h>

static const char *const REASONS[REJECT_N_REASONS] = {
    [REJECT_NAME] = "name",
    [REJECT_LABEL] = "label",
    [REJECT_VALUE] = "value",
    [REJECT_KIND] = "kind",
    [REJECT_SERIES_LIMIT] = "series_limit",
    [REJECT_SOURCE] = "source",
    [REJECT_REPORT_SIZE] = "report_size",
};

const char *validate_reason_name(reject_reason_t r)
{
    return (unsigned)r < REJECT_N_REASONS ? REASONS[r] : "unknown";
}

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool validate_metric_name(const char *name)
{
    if (!name || !*name)
        return false;
    size_t i = 0;
    for (; name[i]; i++) {
        char c = name[i];
        bool ok = is_alpha_(c) || c == ':' || (i > 0 && is_digit(c));
        if (!ok || i >= VALIDATE_MAX_NAME)
            return false;
    }
    return true;
}

bool validate_label_name(const char *name)
{
    if (!name || !*name || strncmp(name, "__", 2) == 0)
        return false;
    for (size_t i = 0; name[i]; i++) {
        char c = name[i];
        if (!(is_alpha_(c) || (i > 0 && is_digit(c))) || i >= VALIDATE_MAX_NAME)
            return false;
    }
    return true;
}

bool validate_label_value(const char *value)
{
    if (!value)
        return false;
    size_t n = strlen(value);
    return n <= VALIDATE_MAX_VALUE && ls_utf8_valid(value, n);
}

bool validate_reserved_name(const char *name)
{
    return strcmp(name, "llmserve_instance_up") == 0 ||
           strncmp(name, "llmserve_collector_", strlen("llmserve_collector_")) == 0;
}
