/*
 * Small kernels of fastsam.ops, called through ctypes (see ops/_native.py):
 *
 * 1. Mask regions: bilinear upsampling of mask logits inside each mask's box, thresholded at 0, with
 *    the stability counts at +1 and -1. The hot loop of ops/masks.py, for many masks per call.
 * 2. Greedy NMS with early exit (ops/boxes.py), so that fastsam does not import torchvision just for
 *    NMS: that import costs seconds on a cold start (it pulls in torch._dynamo).
 * 3. COCO compressed RLE of a cropped mask (formats.py), without building the full mask: the JSON
 *    output of `fastsam segment` writes one per mask.
 * 4. Mask IoU of compact masks (ops/crop_iou.py): exact intersections of crop pairs and crops read
 *    at grid points, the per-mask Python loops of the tracker's association.
 *
 * About (1):
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
 * The module init at the end only makes the shared object an importable extension module, so that
 * Python's import system can locate it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
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

/*
 * Greedy NMS over n boxes already sorted by descending score. boxes: n x 4 float32 xyxy.
 * A box is dropped when its IoU with a kept box is > iou; stops once k boxes are kept.
 * keep: room for min(n, k) indices into the sorted order. Returns the number kept, or -1 when the
 * scratch buffer cannot be allocated.
 *
 * IoU = inter / (area_a + area_b - inter) in float32, compared with the threshold in double:
 * torchvision.ops.nms's arithmetic, so the kept set is the same.
 */
int64_t fastsam_nms_sorted(int64_t n, const float *boxes, double iou, int64_t k, int64_t *keep)
{
    uint8_t *dropped = calloc((size_t)(n > 0 ? n : 1), 1);
    float *areas = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (dropped == NULL || areas == NULL) {
        free(dropped);
        free(areas);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        areas[i] = (b[2] - b[0]) * (b[3] - b[1]);
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < n && kept < k; i++) {
        if (dropped[i])
            continue;
        keep[kept++] = i;
        const float *a = boxes + 4 * i;
        for (int64_t j = i + 1; j < n; j++) {
            if (dropped[j])
                continue;
            const float *b = boxes + 4 * j;
            const float w = fmaxf(0.0f, fminf(a[2], b[2]) - fmaxf(a[0], b[0]));
            const float h = fmaxf(0.0f, fminf(a[3], b[3]) - fmaxf(a[1], b[1]));
            const float inter = w * h;
            const float overlap = inter / (areas[i] + areas[j] - inter);
            if ((double)overlap > iou)
                dropped[j] = 1;
        }
    }
    free(dropped);
    free(areas);
    return kept;
}

/*
 * Writer for (3). Runs alternate between 0 and 1 and start with 0; each finished run's count is
 * encoded at once (the format needs only the count two places back), so no count buffer is needed.
 * Characters beyond `capacity` are counted but not written, like snprintf.
 */
typedef struct {
    char *out;
    int64_t capacity, length;    /* characters: room, and written or needed */
    int64_t index, prev1, prev2; /* counts emitted so far, and the last two */
    int64_t run;                 /* length of the open run */
    uint8_t value;               /* its value */
} rle_writer;

static void emit(rle_writer *wr, int64_t count)
{
    int64_t x = count - (wr->index > 2 ? wr->prev2 : 0);
    wr->prev2 = wr->prev1;
    wr->prev1 = count;
    wr->index++;
    int more = 1;
    while (more) {
        const int64_t group = x & 0x1f;
        x >>= 5; /* arithmetic shift: a negative difference ends at -1 */
        more = (group & 0x10) ? x != -1 : x != 0;
        if (wr->length < wr->capacity)
            wr->out[wr->length] = (char)(group + (more ? 0x20 : 0) + 48);
        wr->length++;
    }
}

static inline void push(rle_writer *wr, uint8_t value, int64_t length)
{
    if (value == wr->value) {
        wr->run += length;
    } else if (length > 0) {
        emit(wr, wr->run);
        wr->value = value;
        wr->run = length;
    }
}

/*
 * COCO compressed RLE string of an h x w mask that is 0 outside rows [r0, r1) x cols [c0, c1) and
 * equals crop there ((r1 - r0) x (c1 - c0) bytes, row-major, 0 or 1). Writes at most `capacity`
 * characters to out (no terminator) and returns the string's full length: when that is larger than
 * capacity, call again with a buffer that big.
 *
 * The format (pycocotools' rleToString): counts of column-major runs starting with background; each
 * count after the second stored as the difference to the count two places before; each value in
 * 5-bit groups, low group first, 0x20 flagging that more groups follow, plus 48.
 */
int64_t fastsam_rle_string(const uint8_t *crop, int64_t h, int64_t w, int64_t r0, int64_t r1, int64_t c0,
                           int64_t c1, char *out, int64_t capacity)
{
    const int64_t width = c1 - c0;
    rle_writer wr = {out, capacity, 0, 0, 0, 0, c0 * h, 0};
    for (int64_t c = 0; c < width; c++) {
        push(&wr, 0, r0);
        for (int64_t y = 0; y < r1 - r0; y++)
            push(&wr, crop[y * width + c] != 0, 1);
        push(&wr, 0, h - r1);
    }
    push(&wr, 0, (w - c1) * h);
    emit(&wr, wr.run);
    return wr.length;
}

/*
 * 4. Mask IoU of compact masks (ops/crop_iou.py). Crops are (r1 - r0) x (c1 - c0) bytes, row-major,
 * 0 or 1, placed at regions (r0, r1, c0, c1) of one pixel frame (regions may reach outside it).
 *
 * Intersection counts of the (i, j) pairs: a's crop i and b's crop j, read only inside the overlap
 * of their regions. out[p] = count for pairs[2p], pairs[2p + 1].
 */
AVX2_CLONE
void fastsam_pair_intersections(int64_t npairs, const int64_t *pairs, const uint8_t *const *crops_a,
                                const int64_t *regions_a, const uint8_t *const *crops_b, const int64_t *regions_b,
                                int64_t *out)
{
    for (int64_t p = 0; p < npairs; p++) {
        const int64_t *ra = regions_a + 4 * pairs[2 * p], *rb = regions_b + 4 * pairs[2 * p + 1];
        const uint8_t *a = crops_a[pairs[2 * p]], *b = crops_b[pairs[2 * p + 1]];
        const int64_t r0 = ra[0] > rb[0] ? ra[0] : rb[0], r1 = ra[1] < rb[1] ? ra[1] : rb[1];
        const int64_t c0 = ra[2] > rb[2] ? ra[2] : rb[2], c1 = ra[3] < rb[3] ? ra[3] : rb[3];
        const int64_t wa = ra[3] - ra[2], wb = rb[3] - rb[2];
        int64_t count = 0;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *pa = a + (r - ra[0]) * wa + (c0 - ra[2]), *pb = b + (r - rb[0]) * wb + (c0 - rb[2]);
            uint32_t row = 0; /* a row holds fewer than 2**32 pixels */
            for (int64_t c = 0; c < c1 - c0; c++)
                row += pa[c] & pb[c];
            count += row;
        }
        out[p] = count;
    }
}

/*
 * Crop k read at the points of a sampling grid: for the cells i in [cells[4k], cells[4k + 1]) and
 * j in [cells[4k + 2], cells[4k + 3]) of a grid `width` cells wide, whose cell (i, j) samples pixel
 * (rows[i * width + j], cols[i * width + j]), out[k * ncells + i * width + j] = the crop's value
 * there (1.0 or 0.0) when that pixel lies inside the crop's region; other entries are left as they are.
 */
void fastsam_grid_samples(int64_t n, const uint8_t *const *crops, const int64_t *regions, const int64_t *cells,
                          int64_t width, int64_t ncells, const int64_t *rows, const int64_t *cols, float *out)
{
    for (int64_t k = 0; k < n; k++) {
        const int64_t *g = regions + 4 * k, *q = cells + 4 * k;
        const int64_t w = g[3] - g[2];
        for (int64_t i = q[0]; i < q[1]; i++)
            for (int64_t j = q[2]; j < q[3]; j++) {
                const int64_t at = i * width + j, r = rows[at], c = cols[at];
                if (r >= g[0] && r < g[1] && c >= g[2] && c < g[3])
                    out[k * ncells + at] = (float)crops[k][(r - g[0]) * w + (c - g[2])];
            }
    }
}

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels", "Mask-region, NMS, RLE and mask-IoU kernels; call them through fastsam.ops._native.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
