/* torch.cuda memory statistics answered from the device really used.
 *
 * Python equivalent:
 *
 *     def sample():                       # (allocated, reserved) bytes now
 *         if device_memory:               # MPS, a generic accelerator
 *             return device_allocated(), device_reserved()
 *         rss = process_rss(); return rss, rss        # CPU: the process
 *     def memory_allocated(device=None):
 *         a, r = sample(); peaks.update(a, r); return a
 *     def max_memory_allocated(device=None):
 *         if device_max_allocated: return device_max_allocated()
 *         return max(peak_allocated, os_peak_rss_since_reset)
 *     def memory_stats(device=None): CUDA's key names, from the same numbers
 *
 * The CPU has no tensor allocator that counts bytes, so the honest number is
 * the process's resident memory (what a tensor adds once its pages are
 * written).  Reading it costs a system call, so a reading is reused for at
 * most TD_RSS_MAX_AGE_NS (50 us); peaks are also taken from the kernel's own
 * high-water mark (getrusage; reset through /proc/self/clear_refs on Linux),
 * so a peak between two samples is not lost.
 */
#include "masquerade.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(_WIN32)
#include <process.h>
#define td_getpid _getpid
#else
#include <unistd.h>
#define td_getpid getpid
#endif
#if defined(__linux__)
#include <fcntl.h>
#endif
#if !defined(_WIN32)
#include <sys/resource.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* A reading of the resident set (a /proc read: about 3-6 us) is reused for
 * at most this long, which keeps a call near 60 ns.  Page faults add at most
 * a few hundred kB to the resident set in that time, so that is the most a
 * reading can lag; a reset or empty_cache() always reads afresh. */
#define TD_RSS_MAX_AGE_NS 50000LL

/* 0 where there is no monotonic clock: then nothing is reused. */
static long long
now_ns(void)
{
#if defined(_WIN32)
    return 0;
#else
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return 0;
    }
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

#if defined(__linux__)
/* Reads a small /proc file into buf (NUL-terminated); -1 on failure. */
static int
read_proc(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    return 0;
}

static long long
linux_rss(void)
{
    char buf[128];
    if (read_proc("/proc/self/statm", buf, sizeof(buf)) < 0) {
        return -1;
    }
    /* statm: "size resident shared ..." in pages. */
    char *end;
    errno = 0;
    (void)strtoll(buf, &end, 10);
    if (errno != 0 || end == buf) {
        return -1;
    }
    char *rss_text = end;
    long long pages_rss = strtoll(rss_text, &end, 10);
    if (errno != 0 || end == rss_text || pages_rss < 0) {
        return -1;
    }
    return pages_rss * (long long)sysconf(_SC_PAGESIZE);
}

/* Writing 5 to clear_refs resets the kernel's peak resident set, which
 * getrusage() reports. */
static int
linux_reset_hwm(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = write(fd, "5", 1);
    close(fd);
    return n == 1 ? 0 : -1;
}
#endif

static int
call_int(PyObject *fn, long long *out)
{
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r == NULL) {
        return -1;
    }
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* 1 when *out is a reused reading (already counted in the peaks), 0 when
 * fresh, -1 with an exception. */
static int
process_rss(td_masq *m, long long *out)
{
    long long t = now_ns();
    long long cached_at = atomic_load_explicit(&TD_MC(m)->rss_cache_ns,
                                               memory_order_acquire);
    if (cached_at != 0 && t - cached_at < TD_RSS_MAX_AGE_NS) {
        *out = atomic_load_explicit(&TD_MC(m)->rss_cache, memory_order_relaxed);
        return 1;
    }
    long long rss = -1;
#if defined(__linux__)
    rss = linux_rss();
#endif
    if (rss < 0) {
        if (m->rss == NULL) {
            PyErr_SetString(PyExc_RuntimeError,
                            "TorchDevice: no way to read this process's "
                            "memory (masquerade not installed)");
            return -1;
        }
        if (call_int(m->rss, &rss) < 0) {
            return -1;
        }
    }
    atomic_store_explicit(&TD_MC(m)->rss_cache, rss, memory_order_relaxed);
    atomic_store_explicit(&TD_MC(m)->rss_cache_ns, t, memory_order_release);
    *out = rss;
    return 0;
}

static void
atomic_max(atomic_llong *slot, long long v)
{
    long long cur = atomic_load_explicit(slot, memory_order_relaxed);
    while (v > cur
           && !atomic_compare_exchange_weak_explicit(
               slot, &cur, v, memory_order_relaxed, memory_order_relaxed))
    {
    }
}

/* Current (allocated, reserved) bytes; updates peaks and the running
 * totals.  0, or -1 with an exception. */
static int
sample(td_masq *m, long long *allocated, long long *reserved)
{
    if (m->device_memory) {
        if (m->device_allocated == NULL || m->device_reserved == NULL) {
            PyErr_SetString(PyExc_RuntimeError,
                            "TorchDevice: MPS memory counters missing");
            return -1;
        }
        if (call_int(m->device_allocated, allocated) < 0
            || call_int(m->device_reserved, reserved) < 0)
        {
            return -1;
        }
    }
    else {
        int reused = process_rss(m, allocated);
        if (reused < 0) {
            return -1;
        }
        *reserved = *allocated;
        if (reused) {
            return 0;
        }
    }
    atomic_max(&TD_MC(m)->peak_allocated, *allocated);
    atomic_max(&TD_MC(m)->peak_reserved, *reserved);
    long long last = atomic_exchange_explicit(&TD_MC(m)->last_sample, *allocated,
                                              memory_order_relaxed);
    if (last >= 0 && *allocated > last) {
        atomic_fetch_add_explicit(&TD_MC(m)->total_allocated, *allocated - last,
                                  memory_order_relaxed);
    }
    else if (last >= 0 && *allocated < last) {
        atomic_fetch_add_explicit(&TD_MC(m)->total_freed, last - *allocated,
                                  memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&TD_MC(m)->num_samples, 1, memory_order_relaxed);
    atomic_store_explicit(&TD_MC(m)->initialized, 1, memory_order_relaxed);
    return 0;
}

/* The kernel's peak resident set, while it counts from our last reset
 * (always on Linux; elsewhere only until the first reset). */
static long long
os_peak(td_masq *m)
{
#if !defined(_WIN32)
    struct rusage ru;
    if (!m->device_memory && atomic_load(&TD_MC(m)->hwm_trusted)
        && getrusage(RUSAGE_SELF, &ru) == 0)
    {
#if defined(__APPLE__)
        return (long long)ru.ru_maxrss;          /* bytes */
#else
        return (long long)ru.ru_maxrss * 1024;   /* kilobytes */
#endif
    }
#else
    (void)m;
#endif
    return -1;
}

/* Validates the optional device argument of a (device=None) function;
 * torch.accelerator spells it device_index. */
static int
device_arg(td_masq *m, const char *fname, PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"device", "device_index"};
    td_args_spec spec = {fname, names, 2, 0, 1};
    PyObject *a[2];
    long index;
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return -1;
    }
    if (a[0] != NULL && a[1] != NULL) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument",
                     fname);
        return -1;
    }
    return td_masq_device_index(m, a[0] != NULL ? a[0] : a[1], 1, &index);
}

/* A (device=None) function whose body sees the held snapshot `m`. */
#define DEVICE_FN(cname, pyname)                                            \
    static PyObject *cname##_body(td_masq *m);                              \
    TD_MASQ_FASTKW(cname)                                                   \
    {                                                                       \
        if (device_arg(m, pyname, args, nargs, kwnames) < 0                 \
            || td_masq_record(st, m, "torch.cuda." pyname) < 0)             \
        {                                                                   \
            return NULL;                                                    \
        }                                                                   \
        return cname##_body(m);                                             \
    }                                                                       \
    static PyObject *cname##_body(td_masq *m)

DEVICE_FN(mem_allocated, "memory_allocated")
{
    long long a, r;
    if (sample(m, &a, &r) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(a);
}

DEVICE_FN(mem_reserved, "memory_reserved")
{
    long long a, r;
    if (sample(m, &a, &r) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(r);
}

/* Samples, then the peaks: the device's own where it keeps them (a peak
 * between two samples is not lost), else the samples' and the OS
 * high-water mark. */
static int
peaks(td_masq *m, long long *a, long long *r, long long *peak_a,
      long long *peak_r)
{
    if (sample(m, a, r) < 0) {
        return -1;
    }
    if (m->device_memory && m->device_max_allocated != NULL
        && m->device_max_reserved != NULL)
    {
        if (call_int(m->device_max_allocated, peak_a) < 0
            || call_int(m->device_max_reserved, peak_r) < 0)
        {
            return -1;
        }
        return 0;
    }
    long long hwm = os_peak(m);
    *peak_a = atomic_load(&TD_MC(m)->peak_allocated);
    *peak_r = atomic_load(&TD_MC(m)->peak_reserved);
    if (hwm > *peak_a) {
        *peak_a = hwm;
    }
    if (hwm > *peak_r) {
        *peak_r = hwm;
    }
    return 0;
}

DEVICE_FN(mem_max_allocated, "max_memory_allocated")
{
    long long a, r, pa, pr;
    if (peaks(m, &a, &r, &pa, &pr) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(pa);
}

DEVICE_FN(mem_max_reserved, "max_memory_reserved")
{
    long long a, r, pa, pr;
    if (peaks(m, &a, &r, &pa, &pr) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(pr);
}

DEVICE_FN(mem_reset_peak, "reset_peak_memory_stats")
{
    long long a, r;
    if (m->device_memory && m->device_reset_peak != NULL) {
        PyObject *done = PyObject_CallNoArgs(m->device_reset_peak);
        if (done == NULL) {
            return NULL;
        }
        Py_DECREF(done);
    }
    /* The reading is fresh: a reset must not keep a stale value. */
    atomic_store(&TD_MC(m)->rss_cache_ns, 0);
    if (sample(m, &a, &r) < 0) {
        return NULL;
    }
    atomic_store(&TD_MC(m)->peak_allocated, a);
    atomic_store(&TD_MC(m)->peak_reserved, r);
    if (!m->device_memory) {
#if defined(__linux__)
        atomic_store(&TD_MC(m)->hwm_trusted, linux_reset_hwm() == 0);
#else
        atomic_store(&TD_MC(m)->hwm_trusted, 0);
#endif
    }
    Py_RETURN_NONE;
}

DEVICE_FN(mem_reset_accumulated, "reset_accumulated_memory_stats")
{
    atomic_store(&TD_MC(m)->total_allocated, 0);
    atomic_store(&TD_MC(m)->total_freed, 0);
    atomic_store(&TD_MC(m)->num_samples, 0);
    Py_RETURN_NONE;
}

static int
put(PyObject *items, const char *key, long long value)
{
    PyObject *item = Py_BuildValue("(sL)", key, value);
    if (item == NULL) {
        return -1;
    }
    int rc = PyList_Append(items, item);
    Py_DECREF(item);
    return rc;
}

/* Every key CUDA's memory_stats() has, so that code reading them (and
 * torch's own memory_summary) finds them.  Byte metrics come from the
 * samples; counts the device does not keep are 0 (docs/masquerade.md). */
static PyObject *
build_stats(td_masq *m)
{
    static const char *const byte_metrics[] = {
        "allocated_bytes", "active_bytes", "requested_bytes",
        "reserved_bytes", "inactive_split_bytes"};
    static const char *const count_metrics[] = {
        "allocation", "active", "segment", "inactive_split"};
    static const char *const pools[] = {"all", "large_pool", "small_pool"};
    long long a, r, pa, pr;
    PyObject *items = NULL, *result = NULL;
    char key[96];
    if (peaks(m, &a, &r, &pa, &pr) < 0) {
        return NULL;
    }
    long long tot_a = atomic_load(&TD_MC(m)->total_allocated);
    long long tot_f = atomic_load(&TD_MC(m)->total_freed);
    items = PyList_New(0);
    if (items == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(byte_metrics) / sizeof(*byte_metrics); i++) {
        int reserved = strcmp(byte_metrics[i], "reserved_bytes") == 0;
        int inactive = strcmp(byte_metrics[i], "inactive_split_bytes") == 0;
        for (size_t p = 0; p < 3; p++) {
            /* One pool holds everything: CUDA's "large" pool. */
            int zero = inactive || p == 2;
            long long cur = zero ? 0 : reserved ? r : a;
            long long peak = zero ? 0 : reserved ? pr : pa;
            long long al = zero ? 0 : tot_a;
            long long fr = zero ? 0 : tot_f;
            const char *stat[4] = {"allocated", "current", "freed", "peak"};
            long long val[4] = {al, cur, fr, peak};
            for (int s = 0; s < 4; s++) {
                PyOS_snprintf(key, sizeof(key), "%s.%s.%s", byte_metrics[i],
                              pools[p], stat[s]);
                if (put(items, key, val[s]) < 0) {
                    goto done;
                }
            }
        }
    }
    for (size_t i = 0; i < sizeof(count_metrics) / sizeof(*count_metrics);
         i++)
    {
        for (size_t p = 0; p < 3; p++) {
            const char *stat[4] = {"allocated", "current", "freed", "peak"};
            for (int s = 0; s < 4; s++) {
                PyOS_snprintf(key, sizeof(key), "%s.%s.%s", count_metrics[i],
                              pools[p], stat[s]);
                if (put(items, key, 0) < 0) {
                    goto done;
                }
            }
        }
    }
    static const char *const oversize[] = {"oversize_allocations",
                                           "oversize_segments"};
    for (int i = 0; i < 2; i++) {
        const char *stat[4] = {"allocated", "current", "freed", "peak"};
        for (int s = 0; s < 4; s++) {
            PyOS_snprintf(key, sizeof(key), "%s.%s", oversize[i], stat[s]);
            if (put(items, key, 0) < 0) {
                goto done;
            }
        }
    }
    static const char *const counters[] = {
        "num_alloc_retries", "num_ooms", "num_sync_all_streams",
        "num_device_alloc", "num_device_free"};
    for (size_t i = 0; i < sizeof(counters) / sizeof(*counters); i++) {
        if (put(items, counters[i], 0) < 0) {
            goto done;
        }
    }
    if (put(items, "max_split_size", -1) < 0 || PyList_Sort(items) < 0) {
        goto done;
    }
    PyObject *ordered = m->originals
        ? PyDict_GetItemString(m->originals, "OrderedDict") : NULL;
    result = ordered ? PyObject_CallOneArg(ordered, items)
                     : PyDict_New();
    if (result != NULL && ordered == NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *it = PyList_GET_ITEM(items, i);
            if (PyDict_SetItem(result, PyTuple_GET_ITEM(it, 0),
                               PyTuple_GET_ITEM(it, 1)) < 0)
            {
                Py_CLEAR(result);
                break;
            }
        }
    }
done:
    Py_DECREF(items);
    return result;
}

DEVICE_FN(mem_stats, "memory_stats")
{
    return build_stats(m);
}

/* torch.cuda.memory_summary(device=None, abbreviated=False): torch's own
 * formatter, fed by memory_stats() above through its module global. */
TD_MASQ_FASTKW(mem_summary)
{
    static const char *const names[] = {"device", "abbreviated"};
    static const td_args_spec spec = {"memory_summary", names, 2, 0, 2};
    PyObject *a[2];
    long index;
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    PyObject *device = a[0];
    PyObject *abbreviated = a[1] != NULL ? a[1] : Py_False;
    if (td_masq_device_index(m, device, 1, &index) < 0
        || td_masq_record(st, m, "torch.cuda.memory_summary") < 0)
    {
        return NULL;
    }
    if (m->orig_summary == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
        return NULL;
    }
    /* The one device is index 0, whatever index named it. */
    return PyObject_CallFunction(m->orig_summary, "iO", 0, abbreviated);
}

DEVICE_FN(mem_get_info, "mem_get_info")
{
    if (m->mem_info == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
        return NULL;
    }
    return PyObject_CallNoArgs(m->mem_info);
}

/* empty_cache(): MPS (an accelerator) frees its cached blocks; on the CPU
 * the C allocator hands unused heap back to the system, the nearest
 * equivalent. */
TD_MASQ_NOARGS(mem_empty_cache)
{
    if (td_masq_record(st, m, "torch.cuda.empty_cache") < 0) {
        return NULL;
    }
    if (m->device_memory && m->device_empty_cache != NULL) {
        return PyObject_CallNoArgs(m->device_empty_cache);
    }
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    atomic_store(&TD_MC(m)->rss_cache_ns, 0);
    Py_RETURN_NONE;
}

TD_MASQ_FASTKW(mem_set_fraction)
{
    static const char *const names[] = {"fraction", "device"};
    static const td_args_spec spec = {"set_per_process_memory_fraction",
                                      names, 2, 1, 2};
    PyObject *a[2];
    long index;
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    PyObject *fraction = a[0], *device = a[1];
    if (!PyFloat_Check(fraction)) {
        PyErr_SetString(PyExc_TypeError, "Invalid type for fraction argument, "
                        "must be `float`");
        return NULL;
    }
    double f = PyFloat_AS_DOUBLE(fraction);
    if (f < 0.0 || f > 1.0) {
        PyErr_Format(PyExc_ValueError,
                     "Invalid fraction value: %R. Allowed range: 0~1",
                     fraction);
        return NULL;
    }
    if (td_masq_device_index(m, device, 1, &index) < 0
        || td_masq_record(st, m,
                          "torch.cuda.set_per_process_memory_fraction") < 0)
    {
        return NULL;
    }
    if (m->device_memory && m->device_set_fraction != NULL) {
        PyObject *r = PyObject_CallOneArg(m->device_set_fraction, fraction);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    else if (td_masq_debug(m, "torch.cuda.set_per_process_memory_fraction"
                           "(%R): recorded, not enforced on the CPU",
                           fraction) < 0)
    {
        return NULL;
    }
    atomic_store(&TD_MC(m)->fraction_ppm, (long long)(f * 1e6 + 0.5));
    Py_RETURN_NONE;
}

DEVICE_FN(mem_get_fraction, "get_per_process_memory_fraction")
{
    return PyFloat_FromDouble((double)atomic_load(&TD_MC(m)->fraction_ppm) / 1e6);
}

/* memory_snapshot(): the caching allocator's segments.  Neither the CPU
 * nor MPS exposes segments, so there are none to list. */
TD_MASQ_FASTKW(mem_snapshot)
{
    static const char *const names[] = {"mempool_id", "include_traces"};
    static const td_args_spec spec = {"memory_snapshot", names, 2, 0, 2};
    PyObject *a[2];
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0
        || td_masq_record(st, m, "torch.cuda.memory_snapshot") < 0)
    {
        return NULL;
    }
    return PyList_New(0);
}

/* list_gpu_processes(): CUDA's format, listing this process and what it
 * holds on the device really used. */
DEVICE_FN(mem_list_processes, "list_gpu_processes")
{
    long long a, r;
    if (sample(m, &a, &r) < 0) {
        return NULL;
    }
    long long milli_mb = a * 1000 / (1024LL * 1024);
    PyObject *props = td_masq_props(m);   /* borrowed */
    if (props == NULL) {
        return NULL;
    }
    PyObject *name = PyObject_GetAttr(props, m->str_pname);
    if (name == NULL) {
        return NULL;
    }
    PyObject *s = PyUnicode_FromFormat(
        "GPU:0 (%U, %U)\nprocess %10ld uses %8lld.%03lld MB GPU memory",
        m->target_type ? m->target_type : name, name, (long)td_getpid(),
        milli_mb / 1000, milli_mb % 1000);
    Py_DECREF(name);
    return s;
}

DEVICE_FN(mem_utilization, "utilization")
{
    PyObject *fn = m->originals
        ? PyDict_GetItemString(m->originals, "utilization") : NULL;
    if (fn == NULL) {
        return PyLong_FromLong(0);
    }
    return PyObject_CallNoArgs(fn);
}

PyMethodDef td_cuda_memory_methods[] = {
    {"memory_allocated", TD_FASTKW(mem_allocated),
     "memory_allocated(device=None) -> int\n\nBytes in use on the device "
     "really used (MPS, an accelerator: tensors; CPU: the process's "
     "resident memory)."},
    {"max_memory_allocated", TD_FASTKW(mem_max_allocated),
     "max_memory_allocated(device=None) -> int"},
    {"memory_reserved", TD_FASTKW(mem_reserved),
     "memory_reserved(device=None) -> int"},
    {"max_memory_reserved", TD_FASTKW(mem_max_reserved),
     "max_memory_reserved(device=None) -> int"},
    {"memory_cached", TD_FASTKW(mem_reserved),
     "memory_cached(device=None) -> int (deprecated alias)"},
    {"max_memory_cached", TD_FASTKW(mem_max_reserved),
     "max_memory_cached(device=None) -> int (deprecated alias)"},
    {"reset_peak_memory_stats", TD_FASTKW(mem_reset_peak),
     "reset_peak_memory_stats(device=None)"},
    {"reset_max_memory_allocated", TD_FASTKW(mem_reset_peak),
     "reset_max_memory_allocated(device=None)"},
    {"reset_max_memory_cached", TD_FASTKW(mem_reset_peak),
     "reset_max_memory_cached(device=None)"},
    {"reset_accumulated_memory_stats", TD_FASTKW(mem_reset_accumulated),
     "reset_accumulated_memory_stats(device=None)"},
    {"memory_stats", TD_FASTKW(mem_stats),
     "memory_stats(device=None) -> OrderedDict\n\nCUDA's keys."},
    {"memory_summary", TD_FASTKW(mem_summary),
     "memory_summary(device=None, abbreviated=False) -> str"},
    {"mem_get_info", TD_FASTKW(mem_get_info),
     "mem_get_info(device=None) -> (free, total)"},
    {"get_memory_info", TD_FASTKW(mem_get_info),
     "get_memory_info(device_index=None) -> (free, total)"},
    {"empty_cache", mem_empty_cache, METH_NOARGS, "empty_cache()"},
    {"set_per_process_memory_fraction", TD_FASTKW(mem_set_fraction),
     "set_per_process_memory_fraction(fraction, device=None)"},
    {"get_per_process_memory_fraction", TD_FASTKW(mem_get_fraction),
     "get_per_process_memory_fraction(device=None) -> float"},
    {"memory_snapshot", TD_FASTKW(mem_snapshot),
     "memory_snapshot(mempool_id=None, include_traces=True) -> []"},
    {"list_gpu_processes", TD_FASTKW(mem_list_processes),
     "list_gpu_processes(device=None) -> str"},
    {"utilization", TD_FASTKW(mem_utilization),
     "utilization(device=None) -> int (percent)"},
    {NULL, NULL, 0, NULL},
};
