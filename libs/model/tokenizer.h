/*
 * tokenizer.h - llama2.c's tokenizer.bin: a BPE vocabulary with scores.
 *
 * File: int32 max_token_length, then for each of vocab_size tokens a float score,
 * an int32 length and that many bytes (no terminator).  Ids 0, 1 and 2 are <unk>,
 * <s> (BOS) and </s> (EOS); ids 3..258 are the byte tokens <0x00>..<0xFF> used as
 * fallback for text no piece covers.  Encoding prepends a space as SentencePiece
 * does ("add dummy prefix") and merges the pair with the best score first.
 *
 * A tok_t is immutable after tok_load and may be used from any thread; a
 * tok_stream_t belongs to one sequence.
 */
#ifndef MODEL_TOKENIZER_H
#define MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#define TOK_UNK 0
#define TOK_BOS 1
#define TOK_EOS 2

typedef struct tok tok_t;

/* Loads path, which must hold exactly vocab_size tokens.  Returns a new tok_t (free
 * with tok_destroy) or NULL with a reason naming the file in err. */
tok_t *tok_load(const char *path, int vocab_size, char *err, size_t err_len);

/* Frees; NULL is a no-op. */
void tok_destroy(tok_t *t);

int tok_vocab_size(const tok_t *t);

/* Encodes len bytes of text (need not be NUL-terminated; invalid UTF-8 falls back to
 * byte tokens) into out (cap entries), with BOS first when bos and EOS last when eos.
 * Returns the number of tokens, LS_ERR_FULL when more than cap would be needed, or
 * LS_ERR_NOMEM. */
int tok_encode(const tok_t *t, const char *text, size_t len, bool bos, bool eos, int *out,
               int cap);

/* The bytes token stands for when it follows prev: a byte token gives its byte, and
 * the leading space of the first piece after BOS is dropped.  Sets *len; the result
 * is borrowed from t (or a static table) and is not NUL-terminated.  Out-of-range
 * tokens and the control tokens <unk>, <s> and </s> give an empty piece. */
const char *tok_piece(const tok_t *t, int prev, int token, size_t *len);

/* Holds back the tail of an incomplete UTF-8 character so that a stream of pieces is
 * cut only between characters. */
typedef struct {
    unsigned char pending[4];
    int n_pending;
} tok_stream_t;

void tok_stream_init(tok_stream_t *s);

/* Appends piece to the stream and writes the bytes now complete into out (cap bytes).
 * Returns the number of bytes written.  Bytes that can never start or continue valid
 * UTF-8, and a held character cut short, are written as U+FFFD, one for each run of
 * such bytes within a call.  cap >= len + 4 suffices for the pieces tok_piece gives
 * (a single byte, or a piece that is valid UTF-8, as every piece of llama2.c's
 * vocabulary is); cap >= 3 * len + 4 suffices for any bytes.  Output that does not fit
 * in cap is dropped, never written past it. */
size_t tok_stream_push(tok_stream_t *s, const char *piece, size_t len, char *out, size_t cap);

/* At the end of a sequence: writes what is still held (as U+FFFD when incomplete) and
 * resets the stream.  Returns bytes written (cap >= 4 suffices). */
size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap);

#endif
