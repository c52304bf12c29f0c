#include "cache/cache_sparse.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

int cache_sparse_reserve(cache_sparse_t *v, size_t n)
{
    if (n <= v->cap)
        return LS_OK;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < n)
        cap *= 2;
    /* Both arrays are grown before either is stored, so a failure changes nothing. */
    uint32_t *index = malloc(cap * sizeof(*index));
    float *value = malloc(cap * sizeof(*value));
    if (!index || !value) {
        free(index);
        free(value);
        return LS_ERR_NOMEM;
    }
    if (v->n) {
        memcpy(index, v->index, v->n * sizeof(*index));
        memcpy(value, v->value, v->n * sizeof(*value));
    }
    free(v->index);
    free(v->value);
    v->index = index;
    v->value = value;
    v->cap = cap;
    return LS_OK;
}

int cache_sparse_copy(cache_sparse_t *dst, const cache_sparse_t *src)
{
    size_t keep = dst->n;
    dst->n = 0; /* nothing of the old pairs needs to survive a regrowth */
    if (cache_sparse_reserve(dst, src->n) != LS_OK) {
        dst->n = keep;
        return LS_ERR_NOMEM;
    }
    if (src->n) {
        memcpy(dst->index, src->index, src->n * sizeof(*dst->index));
        memcpy(dst->value, src->value, src->n * sizeof(*dst->value));
    }
    dst->n = src->n;
    return LS_OK;
}

void cache_sparse_free(cache_sparse_t *v)
{
    if (!v)
        return;
    free(v->index);
    free(v->value);
    v->index = NULL;
    v->value = NULL;
    v->n = v->cap = 0;
}

float cache_sparse_dot(const cache_sparse_t *a, const cache_sparse_t *b)
{
    float s = 0;
    size_t i = 0, j = 0;
    while (i < a->n && j < b->n) {
        uint32_t x = a->index[i], y = b->index[j];
        if (x == y)
            s += a->value[i++] * b->value[j++];
        else if (x < y)
            i++;
        else
            j++;
    }
    return s;
}
