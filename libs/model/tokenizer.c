/*
 * tokenizer.c - llama2.c's BPE tokenizer: load, encode, decode pieces, UTF-8 streaming.
 *
 * Encoding gives exactly the tokens of llama2.c run.c's encode(), whose merge loop
 * rescans every adjacent pair after each merge (O(n^2) lookups; a 4000-token prompt
 * costs seconds).  Here the tokens form a linked list and candidate merges sit in a
 * binary heap ordered by (score desc, position asc): run.c takes the leftmost of the
 * best-scoring pairs, and positions keep their left-to-right order as symbols merge,
 * so popping the heap picks the same pair.  Entries go stale when a neighbour merges;
 * each records the two token ids it was made from and is dropped on pop if they no
 * longer stand side by side.  Lookups are binary searches over the pieces sorted by
 * bytes (ties by id, so duplicate pieces resolve to the lowest id).
 */
#define _GNU_SOURCE
#include "model/tokenizer.h"

#include "base/err.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOK_N_BYTES 256
#define TOK_FIRST_BYTE 3         /* id of <0x00> */
#define TOK_MERGE_FLOOR (-1e10f) /* run.c never merges a pair scoring at or below this */
#define TOK_MAX_PIECE (1 << 20)  /* max_token_length above this is not a tokenizer */

struct tok {
    int vocab_size;
    int max_token_length;
    char *arena;                      /* every piece's bytes, back to back */
    size_t *off;                      /* [vocab_size] offset of each piece in arena */
    int *len;                         /* [vocab_size] */
    float *score;                     /* [vocab_size] */
    int *sorted;                      /* [vocab_size] ids ordered by (bytes, id) */
    int16_t *byte_of;                 /* [vocab_size] the byte a "<0xXX>" piece stands for, or -1 */
    int space_id;                     /* the piece " " (the dummy prefix), or -1 */
    unsigned char bytes[TOK_N_BYTES]; /* bytes[b] == b, for byte pieces */
};

/* ---- loading ------------------------------------------------------------------ */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xXX>" piece, or -1. */
static int parse_byte_piece(const char *p, int len)
{
    if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

static int cmp_bytes(const char *a, int la, const char *b, int lb)
{
    int n = la < lb ? la : lb;
    int c = n ? memcmp(a, b, (size_t)n) : 0;
    if (c != 0)
        return c;
    return (la > lb) - (la < lb);
}

/* qsort has no context argument in C11; the table being sorted is passed through a
 * thread-local so concurrent tok_load calls stay independent. */
static _Thread_local const struct tok *sort_ctx;

static int cmp_ids(const void *pa, const void *pb)
{
    const struct tok *t = sort_ctx;
    int a = *(const int *)pa, b = *(const int *)pb;
    int c = cmp_bytes(t->arena + t->off[a], t->len[a], t->arena + t->off[b], t->len[b]);
    if (c != 0)
        return c;
    return (a > b) - (a < b);
}

/* The lowest id whose piece is exactly key[0..n), or -1. */
static int lookup(const tok_t *t, const char *key, int n)
{
    int lo = 0, hi = t->vocab_size; /* first position whose piece >= key */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int id = t->sorted[mid];
        if (cmp_bytes(t->arena + t->off[id], t->len[id], key, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == t->vocab_size)
        return -1;
    int id = t->sorted[lo];
    return cmp_bytes(t->arena + t->off[id], t->len[id], key, n) == 0 ? id : -1;
}

/* Reads the whole file; tokenizers are well under a few megabytes. */
static unsigned char *read_file(const char *path, size_t *n_out, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ls_set_err(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        ls_set_err(err, err_len, "%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        ls_set_err(err, err_len, "%s: out of memory for %zu bytes", path, n);
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, n, f) != n) {
        ls_set_err(err, err_len, "%s: read failed", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n_out = n;
    return buf;
}

tok_t *tok_load(const char *path, int vocab_size, char *err, size_t err_len)
{
    if (vocab_size < TOK_FIRST_BYTE + TOK_N_BYTES) {
        ls_set_err(err, err_len,
                "%s: vocab_size %d is below %d (<unk>, <s>, </s> and 256 byte "
                "tokens)",
                path, vocab_size, TOK_FIRST_BYTE + TOK_N_BYTES);
        return NULL;
    }
    size_t n;
    unsigned char *buf = read_file(path, &n, err, err_len);
    if (!buf)
        return NULL;
    tok_t *t = calloc(1, sizeof(*t));
    if (!t) {
        ls_set_err(err, err_len, "%s: out of memory", path);
        goto out_free_buf;
    }
    size_t vs = (size_t)vocab_size;
    t->vocab_size = vocab_size;
    t->space_id = -1;
    /* the pieces' bytes are at most the file size */
    t->arena = malloc(n ? n : 1);
    t->off = malloc(vs * sizeof(*t->off));
    t->len = malloc(vs * sizeof(*t->len));
    t->score = malloc(vs * sizeof(*t->score));
    t->sorted = malloc(vs * sizeof(*t->sorted));
    t->byte_of = malloc(vs * sizeof(*t->byte_of));
    if (!t->arena || !t->off || !t->len || !t->score || !t->sorted || !t->byte_of) {
        ls_set_err(err, err_len, "%s: out of memory for %d tokens", path, vocab_size);
        goto out_free_tok;
    }
    for (int b = 0; b < TOK_N_BYTES; b++)
        t->bytes[b] = (unsigned char)b;

    int32_t max_len;
    if (n < sizeof(max_len)) {
        ls_set_err(err, err_len, "%s: file is %zu bytes, too short for a tokenizer", path, n);
        goto out_free_tok;
    }
    memcpy(&max_len, buf, sizeof(max_len));
    if (max_len <= 0 || max_len > TOK_MAX_PIECE) {
        ls_set_err(err, err_len, "%s: max_token_length %d out of range [1, %d]", path, max_len,
                TOK_MAX_PIECE);
        goto out_free_tok;
    }
    t->max_token_length = max_len;
    size_t pos = sizeof(max_len), arena_used = 0;
    for (int i = 0; i < vocab_size; i++) {
        float score;
        int32_t len;
        if (n - pos < sizeof(score) + sizeof(len)) {
            ls_set_err(err, err_len, "%s: truncated at token %d of %d (offset %zu)", path, i,
                    vocab_size, pos);
            goto out_free_tok;
        }
        memcpy(&score, buf + pos, sizeof(score));
        memcpy(&len, buf + pos + sizeof(score), sizeof(len));
        pos += sizeof(score) + sizeof(len);
        if (!isfinite(score)) {
            ls_set_err(err, err_len, "%s: token %d has a non-finite score", path, i);
            goto out_free_tok;
        }
        if (len < 0 || len > max_len) {
            ls_set_err(err, err_len, "%s: token %d has length %d, outside [0, max_token_length %d]",
                    path, i, len, max_len);
            goto out_free_tok;
        }
        if (n - pos < (size_t)len) {
            ls_set_err(err, err_len, "%s: truncated in token %d of %d (offset %zu)", path, i,
                    vocab_size, pos);
            goto out_free_tok;
        }
        memcpy(t->arena + arena_used, buf + pos, (size_t)len);
        t->off[i] = arena_used;
        t->len[i] = len;
        t->score[i] = score;
        t->byte_of[i] = (int16_t)parse_byte_piece(t->arena + arena_used, len);
        t->sorted[i] = i;
        arena_used += (size_t)len;
        pos += (size_t)len;
    }
    if (pos != n) {
        ls_set_err(err, err_len,
                "%s: %zu bytes after token %d; the file holds more than "
                "vocab_size %d tokens",
                path, n - pos, vocab_size - 1, vocab_size);
        goto out_free_tok;
    }
    for (int b = 0; b < TOK_N_BYTES; b++) {
        if (t->byte_of[TOK_FIRST_BYTE + b] != b) {
            ls_set_err(err, err_len, "%s: token %d is not the byte token <0x%02X>", path,
                    TOK_FIRST_BYTE + b, b);
            goto out_free_tok;
        }
    }
    sort_ctx = t;
    qsort(t->sorted, vs, sizeof(*t->sorted), cmp_ids);
    sort_ctx = NULL;
    t->space_id = lookup(t, " ", 1);
    free(buf);
    return t;

out_free_tok:
    tok_destroy(t);
out_free_buf:
    free(buf);
    return NULL;
}

void tok_destroy(tok_t *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->sorted);
    free(t->byte_of);
    free(t);
}

int tok_vocab_size(const tok_t *t)
{
    return t->vocab_size;
}

/* ---- encoding ----------------------------------------------------------------- */

typedef struct {
    float score;
    int left, right;       /* symbol positions */
    int left_id, right_id; /* their tokens when the entry was made */
    int merged;            /* the token of the pair */
} merge_t;

/* true when a should be merged before b */
static bool merge_before(const merge_t *a, const merge_t *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(merge_t *h, int *n, merge_t m)
{
    int i = (*n)++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!merge_before(&m, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = m;
}

static merge_t heap_pop(merge_t *h, int *n)
{
    merge_t top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && merge_before(&h[c + 1], &h[c]))
            c++;
        if (!merge_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

typedef struct {
    const tok_t *t;
    int *id, *prev, *next; /* symbols: token, neighbours (-1 at the ends) */
    merge_t *heap;
    int n_heap;
    char *concat; /* 2 * max_token_length bytes */
} encoder_t;

/* Queues the merge of symbols l and r when their concatenation is a piece. */
static void consider(encoder_t *e, int l, int r)
{
    if (l < 0 || r < 0)
        return;
    const tok_t *t = e->t;
    int a = e->id[l], b = e->id[r];
    int la = t->len[a], lb = t->len[b];
    memcpy(e->concat, t->arena + t->off[a], (size_t)la);
    memcpy(e->concat + la, t->arena + t->off[b], (size_t)lb);
    int m = lookup(t, e->concat, la + lb);
    if (m < 0 || !(t->score[m] > TOK_MERGE_FLOOR))
        return;
    merge_t entry = {t->score[m], l, r, a, b, m};
    heap_push(e->heap, &e->n_heap, entry);
}

int tok_encode(const tok_t *t, const char *text, size_t len, bool bos, bool eos, int *out, int cap)
{
    /* every byte yields at most one token, plus BOS and the dummy prefix */
    if (len > (size_t)INT32_MAX / 4)
        return LS_ERR_FULL;
    size_t n_max = len + 2;
    size_t bytes =
        n_max * 3 * sizeof(int) + 3 * n_max * sizeof(merge_t) + 2 * (size_t)t->max_token_length;
    char *mem = malloc(bytes);
    if (!mem)
        return LS_ERR_NOMEM;
    encoder_t e = {.t = t};
    e.heap = (merge_t *)mem;
    e.id = (int *)(mem + 3 * n_max * sizeof(merge_t));
    e.prev = e.id + n_max;
    e.next = e.prev + n_max;
    e.concat = (char *)(e.next + n_max);

    int n = 0;
    if (bos)
        e.id[n++] = TOK_BOS;
    if (len > 0)
        e.id[n++] = t->space_id >= 0 ? t->space_id : TOK_FIRST_BYTE + ' ';
    /* one codepoint at a time: a leading byte and up to three continuation bytes, looked
     * up whole, else spelled out as byte tokens (run.c's loop, with explicit length) */
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && (s[j] & 0xC0) == 0x80 && j - i < 4)
            j++;
        int id = lookup(t, text + i, (int)(j - i));
        if (id >= 0) {
            e.id[n++] = id;
        } else {
            for (size_t k = i; k < j; k++)
                e.id[n++] = TOK_FIRST_BYTE + s[k];
        }
        i = j;
    }
    for (int i = 0; i < n; i++) {
        e.prev[i] = i - 1;
        e.next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++)
        consider(&e, i, i + 1);
    while (e.n_heap > 0) {
        merge_t m = heap_pop(e.heap, &e.n_heap);
        if (e.id[m.left] != m.left_id || e.next[m.left] != m.right || e.id[m.right] != m.right_id)
            continue; /* a neighbour merged since this entry was made */
        e.id[m.left] = m.merged;
        e.id[m.right] = -1;
        int after = e.next[m.right];
        e.next[m.left] = after;
        if (after >= 0)
            e.prev[after] = m.left;
        consider(&e, e.prev[m.left], m.left);
        consider(&e, m.left, after);
    }
    int count = 0;
    for (int i = n > 0 ? 0 : -1; i >= 0; i = e.next[i])
        count++;
    int total = count + (eos ? 1 : 0);
    int rc = total;
    if (total > cap) {
        rc = LS_ERR_FULL;
        goto out_free;
    }
    int k = 0;
    for (int i = n > 0 ? 0 : -1; i >= 0; i = e.next[i])
        out[k++] = e.id[i];
    if (eos)
        out[k++] = TOK_EOS;
out_free:
    free(mem);
    return rc;
}

/* ---- decoding ----------------------------------------------------------------- */

const char *tok_piece(const tok_t *t, int prev, int token, size_t *len)
{
    if (token < 0 || token >= t->vocab_size || token == TOK_UNK || token == TOK_BOS ||
        token == TOK_EOS) {
        *len = 0;
        return "";
    }
    if (t->byte_of[token] >= 0) {
        *len = 1;
        return (const char *)&t->bytes[t->byte_of[token]];
    }
    const char *p = t->arena + t->off[token];
    size_t n = (size_t)t->len[token];
    /* SentencePiece drops the dummy prefix's space after BOS */
    if (prev == TOK_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    *len = n;
    return p;
}

/* ---- UTF-8 streaming ---------------------------------------------------------- */

static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* Bytes a sequence starting with lead needs, or 0 when lead can never start one. */
static int seq_len(unsigned char lead)
{
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead >= 0xE0 && lead <= 0xEF)
        return 3;
    if (lead >= 0xF0 && lead <= 0xF4)
        return 4;
    return 0;
}

/* Whether c may follow the bytes already in pending[0..n) (n >= 1): excludes overlong
 * forms, surrogates and code points above U+10FFFF, as the Unicode table of well-formed
 * sequences does. */
static bool continues(const unsigned char *pending, int n, unsigned char c)
{
    if ((c & 0xC0) != 0x80)
        return false;
    if (n == 1) {
        switch (pending[0]) {
        case 0xE0:
            return c >= 0xA0;
        case 0xED:
            return c <= 0x9F;
        case 0xF0:
            return c >= 0x90;
        case 0xF4:
            return c <= 0x8F;
        default:
            return true;
        }
    }
    return true;
}

typedef struct {
    char *out;
    size_t cap, n;
    bool in_bad; /* the last thing written was a U+FFFD for bytes of this call */
} sink_t;

static void emit(sink_t *k, const void *p, size_t n)
{
    if (k->cap - k->n < n)
        return; /* the caller's buffer is below the documented bound: drop, never overrun */
    memcpy(k->out + k->n, p, n);
    k->n += n;
    k->in_bad = false;
}

/* One U+FFFD for a run of bytes that cannot form UTF-8, however long the run. */
static void emit_bad(sink_t *k)
{
    if (k->in_bad)
        return;
    emit(k, replacement, sizeof(replacement));
    k->in_bad = true;
}

void tok_stream_init(tok_stream_t *s)
{
    memset(s, 0, sizeof(*s));
}

size_t tok_stream_push(tok_stream_t *s, const char *piece, size_t len, char *out, size_t cap)
{
    sink_t k = {out, cap, 0, false};
    const unsigned char *p = (const unsigned char *)piece;
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (s->n_pending > 0) {
            if (!continues(s->pending, s->n_pending, c)) {
                s->n_pending = 0; /* the held bytes end here, incomplete */
                emit_bad(&k);
                continue; /* c may still start something */
            }
            s->pending[s->n_pending++] = c;
            i++;
            if (s->n_pending == seq_len(s->pending[0])) {
                emit(&k, s->pending, (size_t)s->n_pending);
                s->n_pending = 0;
            }
            continue;
        }
        int need = seq_len(c);
        i++;
        if (need == 0) {
            emit_bad(&k);
        } else if (need == 1) {
            emit(&k, &c, 1);
        } else {
            s->pending[0] = c;
            s->n_pending = 1;
        }
    }
    return k.n;
}

size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap)
{
    sink_t k = {out, cap, 0, false};
    if (s->n_pending > 0)
        emit_bad(&k);
    s->n_pending = 0;
    return k.n;
}
