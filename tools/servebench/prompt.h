/*
 * prompt.h - prompts as token ids from a seeded generator, so two instances (or two
 * runs) get exactly the same requests.  Ids are drawn uniformly from [3, vocab): 0 to 2
 * are the llama2.c vocabulary's <unk>, BOS and EOS.  Thread-safe (no state).
 */
#ifndef SERVEBENCH_PROMPT_H
#define SERVEBENCH_PROMPT_H

#include <stddef.h>
#include <stdint.h>

/* The first token id a prompt may hold. */
#define SB_PROMPT_FIRST_ID 3

/* Fills ids[0..n) with the ids of stream `stream` of seed `seed`: the same arguments give
 * the same ids, different streams unrelated ones.  vocab must exceed SB_PROMPT_FIRST_ID. */
void sb_prompt_fill(int32_t *ids, size_t n, uint64_t seed, uint64_t stream, uint32_t vocab);

#endif
