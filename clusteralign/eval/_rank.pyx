# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Per-query ranking statistics for the Market protocol, without sorting the gallery.

mAP, CMC and mINP depend only on the ranks of the true matches. For each query we sort
its m true matches by (distance, gallery index) and count, for every other valid gallery
entry, how many matches precede it. The count is found through a bucket table over the
matches' distance range (4 m buckets), so each entry costs O(1) on typical data and at
most a binary search within one bucket: O(G + m log m) per query instead of O(G log G).
Ties are broken by gallery index, exactly as a stable sort of the distances would.
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc, qsort

import numpy as np


cdef struct Key:
    double d
    Py_ssize_t j


cdef int _cmp_key(const void* a, const void* b) noexcept nogil:
    cdef const Key* ka = <const Key*> a
    cdef const Key* kb = <const Key*> b
    if ka.d < kb.d:
        return -1
    if ka.d > kb.d:
        return 1
    if ka.j < kb.j:
        return -1
    if ka.j > kb.j:
        return 1
    return 0


cdef inline bint _less(double d1, Py_ssize_t j1, double d2, Py_ssize_t j2) noexcept nogil:
    return d1 < d2 or (d1 == d2 and j1 < j2)


cdef enum:
    # Buckets per true match in the lookup table; a few per match keeps most buckets near-empty.
    BUCKETS_PER_MATCH = 4
    # Up to this many matches in one bucket are scanned linearly; more fall back to bisection.
    LINEAR_SCAN = 8


cdef inline Py_ssize_t _bucket(double d, double d0, double inv_width, Py_ssize_t nb) noexcept nogil:
    """Bucket of distance d; never decreases as d grows, whatever the rounding."""
    cdef double x = (d - d0) * inv_width
    if not (x >= 0):  # also catches the NaN of 0 * inf
        return 0
    if x >= nb - 1:
        return nb - 1
    return <Py_ssize_t> x


ctypedef fused real:
    float
    double


cdef int _one_query(
    const real[::1] dist,
    long long q_pid,
    long long q_cam,
    const long long[::1] g_pids,
    const long long[::1] g_camids,
    long long* first_rank,
    double* ap,
    double* inp,
) noexcept nogil:
    """Fill the outputs of one query; returns -1 when out of memory."""
    cdef Py_ssize_t n_g = dist.shape[0]
    cdef Py_ssize_t j, i, m = 0, lo, hi, mid
    cdef Key* keys
    cdef Py_ssize_t* hist
    cdef Py_ssize_t* start
    cdef Py_ssize_t nb, b
    cdef double d, d0, last_d, ap_sum, span, inv_width
    cdef Py_ssize_t last_j, cum, rank

    for j in range(n_g):
        if g_pids[j] == q_pid and g_camids[j] != q_cam:
            m += 1
    first_rank[0] = -1
    ap[0] = 0.0
    inp[0] = 0.0
    if m == 0:
        return 0

    nb = BUCKETS_PER_MATCH * m
    keys = <Key*> malloc(m * sizeof(Key))
    hist = <Py_ssize_t*> malloc((m + 1) * sizeof(Py_ssize_t))
    start = <Py_ssize_t*> malloc((nb + 1) * sizeof(Py_ssize_t))
    if keys == NULL or hist == NULL or start == NULL:
        free(keys)
        free(hist)
        free(start)
        return -1
    i = 0
    for j in range(n_g):
        if g_pids[j] == q_pid and g_camids[j] != q_cam:
            keys[i].d = dist[j]
            keys[i].j = j
            i += 1
    qsort(keys, m, sizeof(Key), _cmp_key)
    for i in range(m + 1):
        hist[i] = 0

    d0 = keys[0].d
    last_d = keys[m - 1].d
    last_j = keys[m - 1].j
    # start[b] = number of matches in buckets below b. As the bucket never decreases with the
    # distance, those matches are all strictly nearer than any entry of bucket b, and matches in
    # buckets above b are all farther: an entry's count lies in [start[b], start[b + 1]].
    span = last_d - d0
    # A subnormal span makes inv_width infinite; _bucket still maps d0 to 0 and larger d to the
    # last bucket, which keeps the table correct.
    inv_width = nb / span if span > 0 else 0.0
    for i in range(nb + 1):
        start[i] = 0
    for i in range(m):
        start[_bucket(keys[i].d, d0, inv_width, nb) + 1] += 1
    for i in range(nb):
        start[i + 1] += start[i]

    for j in range(n_g):
        if g_pids[j] == q_pid or g_pids[j] == -1:
            # a true match, or excluded (same identity and camera), or junk
            continue
        d = dist[j]
        if not _less(d, j, last_d, last_j):
            continue
        # lo = number of matches ordered before entry j
        b = _bucket(d, d0, inv_width, nb)
        lo = start[b]
        hi = start[b + 1]
        if hi - lo <= LINEAR_SCAN:
            while lo < hi and _less(keys[lo].d, keys[lo].j, d, j):
                lo += 1
        else:
            while lo < hi:
                mid = (lo + hi) >> 1
                if _less(keys[mid].d, keys[mid].j, d, j):
                    lo = mid + 1
                else:
                    hi = mid
        hist[lo] += 1

    cum = 0
    ap_sum = 0.0
    rank = 0
    for i in range(m):
        cum += hist[i]
        rank = i + cum
        if i == 0:
            first_rank[0] = rank
        ap_sum += (i + 1.0) / (rank + 1.0)
    ap[0] = ap_sum / m
    inp[0] = m / (rank + 1.0)
    free(keys)
    free(hist)
    free(start)
    return 0


def rank_stats(
    const real[:, ::1] distmat,
    const long long[::1] q_pids,
    const long long[::1] g_pids,
    const long long[::1] q_camids,
    const long long[::1] g_camids,
    int num_threads=0,
):
    """Return (first_rank, ap, inp) per query; first_rank is -1 for a query with no valid match.

    first_rank is the 0-based position of the first true match after removing the
    query's same-identity same-camera gallery entries and junk (pid -1).
    """
    cdef Py_ssize_t n_q = distmat.shape[0]
    cdef Py_ssize_t q
    # An in-place add makes `failed` an OpenMP reduction; a plain assignment would make it
    # lastprivate, keeping only the last iteration's value and losing earlier failures.
    cdef int failed = 0
    first = np.empty(n_q, dtype=np.int64)
    ap = np.empty(n_q, dtype=np.float64)
    inp = np.empty(n_q, dtype=np.float64)
    cdef long long[::1] first_v = first
    cdef double[::1] ap_v = ap
    cdef double[::1] inp_v = inp
    if n_q == 0:
        return first, ap, inp
    if num_threads <= 0:
        for q in prange(n_q, nogil=True, schedule="dynamic"):
            if _one_query(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids,
                          &first_v[q], &ap_v[q], &inp_v[q]) != 0:
                failed += 1
    else:
        for q in prange(n_q, nogil=True, schedule="dynamic", num_threads=num_threads):
            if _one_query(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids,
                          &first_v[q], &ap_v[q], &inp_v[q]) != 0:
                failed += 1
    if failed:
        raise MemoryError("rank_stats: could not allocate per-query buffers")
    return first, ap, inp
