#include "metadata.h"

#include "base/err.h"
#include "base/log.h"

#include <grpc/support/alloc.h>
#include <stdlib.h>
#include <string.h>

static bool key_ok(const char *key)
{
    if (!key || !*key || key[0] == ':' || strncmp(key, "grpc-", 5) == 0)
        return false;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    }
    return true;
}

static void push(rpc_md_t *md, const char *key, size_t key_len, const void *value, size_t len)
{
    if (md->count == md->cap) {
        md->cap = md->cap ? md->cap * 2 : 4;
        rpc_md_entry_t *items = realloc(md->items, md->cap * sizeof(*items));
        if (!items) {
            LS_LOG_ERROR("rpc", "out of memory growing metadata");
            abort();
        }
        md->items = items;
    }
    rpc_md_entry_t *e = &md->items[md->count++];
    e->key = ls_xmalloc(key_len + 1);
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    e->value = ls_xmalloc(len + 1);
    if (len)
        memcpy(e->value, value, len);
    e->value[len] = '\0';
    e->value_len = len;
}

int rpc_md_add_bytes(rpc_md_t *md, const char *key, const void *value, size_t len)
{
    if (!key_ok(key))
        return LS_ERR_INVALID;
    push(md, key, strlen(key), value, len);
    return LS_OK;
}

void rpc__md_add_reserved(rpc_md_t *md, const char *key, const char *value)
{
    push(md, key, strlen(key), value, strlen(value));
}

int rpc_md_add(rpc_md_t *md, const char *key, const char *value)
{
    return rpc_md_add_bytes(md, key, value, value ? strlen(value) : 0);
}

const char *rpc_md_get(const rpc_md_t *md, const char *key, size_t *len)
{
    for (size_t i = 0; md && i < md->count; i++) {
        if (strcmp(md->items[i].key, key) == 0) {
            if (len)
                *len = md->items[i].value_len;
            return md->items[i].value;
        }
    }
    return NULL;
}

void rpc_md_clear(rpc_md_t *md)
{
    for (size_t i = 0; i < md->count; i++) {
        free(md->items[i].key);
        free(md->items[i].value);
    }
    free(md->items);
    md->items = NULL;
    md->count = md->cap = 0;
}

void rpc__md_from_grpc(rpc_md_t *md, const grpc_metadata_array *arr)
{
    for (size_t i = 0; i < arr->count; i++) {
        const grpc_metadata *m = &arr->metadata[i];
        push(md, (const char *)GRPC_SLICE_START_PTR(m->key), GRPC_SLICE_LENGTH(m->key),
             GRPC_SLICE_START_PTR(m->value), GRPC_SLICE_LENGTH(m->value));
    }
}

grpc_metadata *rpc__md_to_grpc(const rpc_md_t *md, size_t *count)
{
    *count = 0;
    if (!md || md->count == 0)
        return NULL;
    grpc_metadata *arr = gpr_zalloc(md->count * sizeof(*arr));
    for (size_t i = 0; i < md->count; i++) {
        arr[i].key = grpc_slice_from_static_string(md->items[i].key);
        arr[i].value = grpc_slice_from_static_buffer(md->items[i].value, md->items[i].value_len);
    }
    *count = md->count;
    return arr;
}
