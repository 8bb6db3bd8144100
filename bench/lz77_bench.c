/* LZ77 (MS-XCA Plain LZ77) codec benchmark over the external test vectors (tests/data).
 *
 *   make bench-lz77            (builds with -O2, no sanitizers, and runs)
 *   build/bench/lz77_bench [testdata-dir] [seconds-per-measurement]
 *
 * testdata-dir defaults to tests/data (the repository's root as cwd).  Prints, measured in one run
 * on one core:
 *   - compressed size summed over the 49 inputs with a Windows twin, and the
 *     ratio against the sum of the Windows sizes;
 *   - compression MB/s over all inputs (MB = 10^6 bytes of input);
 *   - decompression MB/s (of output) for Windows' streams and for ours. */
#include "xca/lz77.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vec {
    char name[256];
    uint8_t *raw;
    size_t raw_len;
    uint8_t *win; /* Windows .lzplain, or NULL */
    size_t win_len;
    uint8_t *ours;
    size_t ours_len;
};

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct vec *)a)->name, ((const struct vec *)b)->name);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/data";
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    char path[4096];
    snprintf(path, sizeof path, "%s/xca-plain/decompressed", dir);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "cannot open %s (give the test data directory as the first argument)\n",
                path);
        return 2;
    }
    struct vec *v = calloc(128, sizeof *v);
    size_t nv = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nv < 128) {
        size_t l = strlen(de->d_name);
        if (l < 8 || strcmp(de->d_name + l - 7, ".decomp"))
            continue;
        snprintf(v[nv].name, sizeof v[nv].name, "%.*s", (int)(l - 7), de->d_name);
        nv++;
    }
    closedir(d);
    qsort(v, nv, sizeof *v, cmp_name);

    size_t total_raw = 0, twin_raw = 0, twin_win = 0, twin_ours = 0, max_raw = 0;
    for (size_t i = 0; i < nv; i++) {
        snprintf(path, sizeof path, "%s/xca-plain/decompressed/%s.decomp", dir, v[i].name);
        v[i].raw = slurp(path, &v[i].raw_len);
        snprintf(path, sizeof path, "%s/xca-plain/compressed-plain/%s.lzplain", dir, v[i].name);
        v[i].win = slurp(path, &v[i].win_len);
        if (!v[i].raw) {
            fprintf(stderr, "cannot read %s\n", v[i].name);
            return 2;
        }
        total_raw += v[i].raw_len;
        if (v[i].raw_len > max_raw)
            max_raw = v[i].raw_len;
        size_t cap = mp_lz77_compress_bound(v[i].raw_len);
        v[i].ours = malloc(cap);
        ssize_t r = mp_lz77_compress(v[i].raw, v[i].raw_len, v[i].ours, cap);
        if (r < 0) {
            fprintf(stderr, "compress failed: %s\n", v[i].name);
            return 1;
        }
        v[i].ours_len = (size_t)r;
        if (v[i].win) {
            twin_raw += v[i].raw_len;
            twin_win += v[i].win_len;
            twin_ours += v[i].ours_len;
        }
    }
    uint8_t *scratch = malloc(mp_lz77_compress_bound(max_raw) + 64);
    int verbose = getenv("LZ77_BENCH_VERBOSE") != NULL;
    if (verbose)
        for (size_t i = 0; i < nv; i++)
            printf("%-34s %8zu -> ours %8zu  windows %8zu  %s\n", v[i].name, v[i].raw_len,
                   v[i].ours_len, v[i].win_len,
                   v[i].win ? (v[i].ours_len > v[i].win_len ? "WORSE" : "") : "(no twin)");

    /* compression */
    double best_c = 1e30, best_dw = 1e30, best_do = 1e30;
    size_t win_out = 0;
    for (size_t i = 0; i < nv; i++)
        if (v[i].win)
            win_out += v[i].raw_len;
    for (int round = 0; round < 10; round++) {
        double t0 = now();
        int reps = 0;
        do {
            for (size_t i = 0; i < nv; i++)
                if (mp_lz77_compress(v[i].raw, v[i].raw_len, scratch,
                                     mp_lz77_compress_bound(max_raw)) < 0)
                    return 1;
            reps++;
        } while (now() - t0 < secs / 10);
        double t = (now() - t0) / reps;
        if (t < best_c)
            best_c = t;

        t0 = now();
        reps = 0;
        do {
            for (size_t i = 0; i < nv; i++)
                if (v[i].win && mp_lz77_decompress(v[i].win, v[i].win_len, scratch, max_raw + 64) !=
                                    (ssize_t)v[i].raw_len)
                    return 1;
            reps++;
        } while (now() - t0 < secs / 10);
        t = (now() - t0) / reps;
        if (t < best_dw)
            best_dw = t;

        t0 = now();
        reps = 0;
        do {
            for (size_t i = 0; i < nv; i++)
                if (mp_lz77_decompress(v[i].ours, v[i].ours_len, scratch, max_raw + 64) !=
                    (ssize_t)v[i].raw_len)
                    return 1;
            reps++;
        } while (now() - t0 < secs / 10);
        t = (now() - t0) / reps;
        if (t < best_do)
            best_do = t;
    }
    size_t ntwin = 0;
    for (size_t i = 0; i < nv; i++)
        ntwin += v[i].win != NULL;
    printf("vectors: %zu inputs, %zu bytes; %zu with a Windows twin (%zu bytes)\n", nv, total_raw,
           ntwin, twin_raw);
    printf("size: ours %zu, windows %zu, ratio ours/windows %.4f (ours/raw %.4f)\n", twin_ours,
           twin_win, (double)twin_ours / (double)twin_win, (double)twin_ours / (double)twin_raw);
    printf("compress:   %8.1f MB/s (all %zu inputs)\n", (double)total_raw / best_c / 1e6, nv);
    printf("decompress: %8.1f MB/s (Windows streams), %8.1f MB/s (our streams)\n",
           (double)win_out / best_dw / 1e6, (double)total_raw / best_do / 1e6);
    for (size_t i = 0; i < nv; i++) {
        free(v[i].raw);
        free(v[i].win);
        free(v[i].ours);
    }
    free(v);
    free(scratch);
    return 0;
}
