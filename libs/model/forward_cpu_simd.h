/*
 * forward_cpu_simd.h - what the CPU kernels share (internal to libs/model): the target
 * attributes of each instruction set and the horizontal sums.  The kernels are
 * compiled with function target attributes and chosen at run time, so the build needs
 * no -m flags.
 */
#ifndef MODEL_FORWARD_CPU_SIMD_H
#define MODEL_FORWARD_CPU_SIMD_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MM_HAVE_X86 1

#define MM_AVX2 __attribute__((target("avx2,fma")))
#define MM_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline
#define MM_512 __attribute__((target("avx512f")))
#define MM_512_INLINE __attribute__((target("avx512f"), always_inline)) inline

static MM_AVX2_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* [sum(a), sum(b), sum(c), sum(d)]. */
static MM_512_INLINE __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d)
{
    /* Per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3), the same for c and d, then
     * (a, b, c, d) partial sums; the four lanes are added last. */
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#else
#define MM_HAVE_X86 0
#endif

#endif
