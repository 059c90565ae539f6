/*
 * Mask regions: bilinear upsampling of mask logits inside each mask's box, thresholded at 0, with the
 * stability counts at +1 and -1. This is the hot loop of ops/masks.py, for many masks per call.
 *
 * Why C: per output pixel the work is two multiplies, one add and three compares. numpy needs about
 * ten passes over temporaries for that and takes the GIL between them; here it is one pass, and
 * ctypes releases the GIL, so Python threads can run shards of masks in parallel.
 *
 * The arithmetic is the numpy path's, operation for operation, in float32: along x,
 * w0 * src[i0] + w1 * src[i1] on each source row, then the same along y. Build with
 * -ffp-contract=off so that the compiler does not fuse a multiply and an add into one rounding (FMA).
 * If this file is not compiled, ops/masks.py uses numpy and gets identical results.
 *
 * Called through ctypes (see ops/_native.py); the module init below only makes the shared object
 * an importable extension module, so that Python's import system can locate it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>

/* x86-64 with GCC or Clang on ELF: also build an AVX2 version of the loop, picked at load time on
 * CPUs that have it (twice the lanes of the SSE2 baseline). Elsewhere: the portable build only. */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
#define AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define AVX2_CLONE
#endif

/* Interpolation table of one output axis: source indices i0 <= i1 and their weights. */
typedef struct {
    const int64_t *i0, *i1;
    const float *w0, *w1;
} axis_table;

/*
 * One mask. src: (rows, cols) float32 logits, row-major, whose [0][0] is source pixel (row0, col0).
 * Output pixels: rows [r0, r1) and cols [c0, c1) of the tables. across: scratch of rows x (c1 - c0).
 * mask: (r1 - r0, c1 - c0) bytes, set to 1 where the value is > 0, else 0.
 */
AVX2_CLONE
static void one_region(const float *src, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                       axis_table rt, int64_t r0, int64_t r1, axis_table ct, int64_t c0, int64_t c1,
                       uint8_t *mask, int64_t *n_hi, int64_t *n_lo, float *across)
{
    const int64_t width = c1 - c0;
    /* x step, on the source rows the output rows need */
    for (int64_t s = 0; s < rows; s++) {
        const float *in = src + s * cols;
        float *out = across + s * width;
        for (int64_t c = 0; c < width; c++) {
            const int64_t k = c0 + c;
            out[c] = in[ct.i0[k] - col0] * ct.w0[k] + in[ct.i1[k] - col0] * ct.w1[k];
        }
    }
    /* y step, thresholds and counts in one pass over the output */
    int64_t hi = 0, lo = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *a = across + (rt.i0[r] - row0) * width;
        const float *b = across + (rt.i1[r] - row0) * width;
        const float w0 = rt.w0[r], w1 = rt.w1[r];
        uint8_t *m = mask + (r - r0) * width;
        int32_t h = 0, l = 0;
        for (int64_t c = 0; c < width; c++) {
            const float v = a[c] * w0 + b[c] * w1;
            m[c] = v > 0.0f;
            h += v > 1.0f;
            l += v > -1.0f;
        }
        hi += h;
        lo += l;
    }
    *n_hi = hi;
    *n_lo = lo;
}

/*
 * n masks. windows[k]: logits of mask k; geometry[8k..8k+7]: rows, cols, row0, col0, r0, r1, c0, c1
 * (window shape and origin in source pixels, output region end-exclusive, all non-empty).
 * masks[k]: output of (r1 - r0) x (c1 - c0) bytes. counts[2k], counts[2k+1]: #(value > 1), #(value > -1).
 * Returns 0, or -1 when the scratch buffer cannot be allocated.
 */
int fastsam_threshold_regions(int64_t n, const float *const *windows, const int64_t *geometry,
                              const int64_t *ri0, const int64_t *ri1, const float *rw0, const float *rw1,
                              const int64_t *ci0, const int64_t *ci1, const float *cw0, const float *cw1,
                              uint8_t *const *masks, int64_t *counts)
{
    int64_t scratch = 1;
    for (int64_t k = 0; k < n; k++) {
        const int64_t *g = geometry + 8 * k;
        const int64_t size = g[0] * (g[7] - g[6]);
        if (size > scratch)
            scratch = size;
    }
    float *across = malloc((size_t)scratch * sizeof(float));
    if (across == NULL)
        return -1;
    const axis_table rt = {ri0, ri1, rw0, rw1}, ct = {ci0, ci1, cw0, cw1};
    for (int64_t k = 0; k < n; k++) {
        const int64_t *g = geometry + 8 * k;
        one_region(windows[k], g[0], g[1], g[2], g[3], rt, g[4], g[5], ct, g[6], g[7], masks[k],
                   counts + 2 * k, counts + 2 * k + 1, across);
    }
    free(across);
    return 0;
}

static struct PyModuleDef regions_module = {
    PyModuleDef_HEAD_INIT, "_regions", "Mask-region kernel; call it through fastsam.ops._native.", -1, NULL,
};

PyMODINIT_FUNC PyInit__regions(void) { return PyModule_Create(&regions_module); }
