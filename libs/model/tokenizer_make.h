/*
 * tokenizer_make.h - writes a tokenizer.bin for models made by checkpoint_write.
 *
 * The vocabulary has llama2.c's fixed head (<unk>, <s>, </s>, then the 256 byte
 * tokens <0x00>..<0xFF>), then pieces learned by byte-pair merging over a small
 * built-in English text: words carry their leading space as a plain ' ' byte (as in
 * llama2.c's tokenizer.bin), a piece's score is minus its merge rank so earlier
 * merges win, and single characters (the space first) come last.  When the text runs
 * out of merges the rest is filled with "<extra_N>" pieces that no merge can reach.
 * Thread-safe (no shared state).
 */
#ifndef MODEL_TOKENIZER_MAKE_H
#define MODEL_TOKENIZER_MAKE_H

#include <stddef.h>

#define TOK_MAKE_MIN_VOCAB 259 /* the fixed head alone */

/* Writes a vocabulary of exactly vocab_size tokens to path (via path.tmp and a
 * rename).  Returns LS_OK, LS_ERR_INVALID when vocab_size < TOK_MAKE_MIN_VOCAB, or
 * LS_ERR_IO / LS_ERR_NOMEM, each with a reason naming the file in err. */
int tok_make(const char *path, int vocab_size, char *err, size_t err_len);

#endif
