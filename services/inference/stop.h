/*
 * stop.h - stop strings matched on the generated text across token boundaries.
 *
 * The text of a request goes through inf_stop_feed piece by piece.  What is certainly
 * part of the answer comes out at once; a tail that could still turn into a stop
 * string is held back until the next piece decides it.  When a stop string completes,
 * the text before it comes out and the stop string and everything after it do not.
 * So streamed text never contains any part of a stop string.  Generation stops after
 * the first piece whose text completes a stop string; the answer then ends before the
 * earliest stop string in the text so far.
 *
 * Held text is always a proper prefix of some stop string, so it fits in a fixed
 * buffer and nothing allocates after inf_stop_init.  One inf_stop_t per request, used
 * by one thread at a time.
 */
#ifndef INF_STOP_H
#define INF_STOP_H

#include <stdbool.h>
#include <stddef.h>

#define INF_STOP_MAX_STRINGS 8 /* stop strings per request */
#define INF_STOP_MAX_BYTES 256 /* bytes per stop string */

typedef struct {
    char strs[INF_STOP_MAX_STRINGS][INF_STOP_MAX_BYTES];
    size_t lens[INF_STOP_MAX_STRINGS];
    int n;
    size_t max_len;                /* longest stop string, bytes */
    char held[INF_STOP_MAX_BYTES]; /* held-back tail of the text */
    size_t n_held;
    bool matched; /* a stop string completed; feed no more */
} inf_stop_t;

/* Copies n stop strings (strs[i] of lens[i] bytes).  Returns LS_OK, or LS_ERR_INVALID
 * with a reason in err when there are more than INF_STOP_MAX_STRINGS or one is empty
 * or longer than INF_STOP_MAX_BYTES (s is then left with no stop strings).  Does not
 * check UTF-8: the caller does. */
int inf_stop_init(inf_stop_t *s, const char *const *strs, const size_t *lens, size_t n, char *err,
                  size_t err_len);

/* Bytes of output buffer inf_stop_feed needs for len bytes of new text. */
size_t inf_stop_out_need(const inf_stop_t *s, size_t len);

/* Appends len bytes of text.  Writes to out (cap >= inf_stop_out_need(s, len); a
 * smaller buffer is a bug and aborts) the text now known to belong to the answer and
 * returns its length.  Sets *matched when a stop string completed: the bytes written
 * are then the answer's last, and the held text is dropped.  After a match, further
 * text is ignored (returns 0 with *matched true). */
size_t inf_stop_feed(inf_stop_t *s, const char *text, size_t len, char *out, size_t cap,
                     bool *matched);

/* At the end of generation (for a reason other than a stop string): writes the held
 * text (n_held <= cap bytes; INF_STOP_MAX_BYTES always suffices) and returns its
 * length. */
size_t inf_stop_flush(inf_stop_t *s, char *out, size_t cap);

#endif
