#include "prompt.h"

#include "base/log.h"

/* splitmix64: one multiply-xorshift step per id, good enough to make prompts that share
 * nothing, and the same on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sb_prompt_fill(int32_t *ids, size_t n, uint64_t seed, uint64_t stream, uint32_t vocab)
{
    LS_ASSERT(vocab > SB_PROMPT_FIRST_ID);
    uint64_t state = seed;
    state ^= splitmix64(&state) + stream * 0xd1342543de82ef95ULL;
    uint64_t span = vocab - SB_PROMPT_FIRST_ID;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)(SB_PROMPT_FIRST_ID + splitmix64(&state) % span);
}
