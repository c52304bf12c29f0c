/*
 * signals.h - orderly stop on SIGINT/SIGTERM for service mains.
 *
 * main calls ls_signals_block() before it starts any thread, so every thread
 * inherits the mask and no handler runs inside library code; it then parks in
 * ls_signals_wait() until a stop signal arrives and shuts down from main.
 */
#ifndef LS_SIGNALS_H
#define LS_SIGNALS_H

/* Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and ignores SIGPIPE.
 * Returns LS_OK or LS_ERR_INTERNAL. */
int ls_signals_block(void);

/* Waits for one of the blocked signals and returns its number. */
int ls_signals_wait(void);

#endif
