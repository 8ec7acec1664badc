/* Call-site records: which line of the user's code asked for what.
 *
 * Only reached when recording is on (td_get_report()), so people who did not
 * ask for the report pay one relaxed atomic load per intercepted call.
 *
 * Those who did ask pay for a frame walk and one probe of an open-addressing
 * table keyed by (code object, instruction offset, api, what, request,
 * target).  Every part of the key is a pointer or a small integer, so a
 * repeated hit builds no string and no tuple: a loop that calls
 * torch.zeros(device="cuda") a million times costs a million probes and one
 * log line.  Line numbers, function names and texts are computed once, when
 * a key is first seen, and the table is turned into Python objects only when
 * records() is asked for.
 *
 * The frame is read in C: no inspect, no traceback objects.  Which frame is
 * the user's follows the site rule of docs/report.md: each code object's
 * file is classified once per file name (user code, an installed library,
 * the standard library, torch/TorchDevice) by prefixes that the Python layer
 * computes (set_site_rules), and the walk takes the first user frame, else
 * the first library frame, else the first standard-library frame.
 */
#include "tdcore.h"

#include <frameobject.h>
#include <stdint.h>

/* A key that carries its request and target as text (records made from
 * Python, and requests that only str() can describe) has no spec. */
#define TD_NO_SPEC (-1)

typedef struct {
    PyObject *code;         /* strong; NULL marks a free slot */
    PyObject *api;          /* strong */
    PyObject *what;         /* strong */
    PyObject *from;         /* strong: text of the request */
    PyObject *to;           /* strong: text of the target */
    Py_hash_t hash;
    Py_ssize_t count;
    long from_index;        /* spec part of the key */
    int from_kind;          /* td_req_kind, or TD_NO_SPEC */
    int to_target;          /* td_target, or TD_NO_SPEC */
    int offset;             /* instruction offset (line before 3.11) */
    int line;
} td_site;

/* What a code object's file is, for the site rule (docs/report.md). */
typedef enum {
    TD_FILE_USER = 0,       /* the program: reported */
    TD_FILE_LIBRARY = 1,    /* an installed package (site-packages) */
    TD_FILE_STDLIB = 2,     /* the standard library, frozen modules */
    TD_FILE_INTERNAL = 3,   /* torch and TorchDevice: never reported */
    TD_FILE_CLASSES = 4,
} td_file_class;

typedef struct {
    PyObject_HEAD
    td_site *slots;
    Py_ssize_t capacity;    /* a power of two, or 0 */
    Py_ssize_t used;
    PyObject *lines;        /* set (dict) of report lines already logged */
    PyObject *what_redirected;
    PyObject *what_toggled;
    PyObject *what_emulated;
    PyObject *from_cuda;    /* "cuda": what a masquerade query stands for */
    PyObject *query_api[TD_QUERY_COUNT];
    /* The site rule: a tuple of (prefix, class) pairs, longest prefix
     * first, and the class of each file name seen so far.  Both NULL until
     * set_site_rules(); then skip_prefixes alone decides. */
    PyObject *rules;
    PyObject *file_class;
} td_sites;

#if PY_VERSION_HEX >= 0x030D0000
#define TD_LOCK(obj) Py_BEGIN_CRITICAL_SECTION(obj)
#define TD_UNLOCK() Py_END_CRITICAL_SECTION()
#else
/* The GIL serialises every caller. */
#define TD_LOCK(obj) {
#define TD_UNLOCK() }
#endif

/* ---- the site of a call -------------------------------------------------- */

static int
skipped(td_install *st, PyObject *filename)
{
    if (st == NULL || st->skip_prefixes == NULL
        || !PyTuple_Check(st->skip_prefixes))
    {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(st->skip_prefixes);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r = PyUnicode_Tailmatch(
            filename, PyTuple_GET_ITEM(st->skip_prefixes, i), 0,
            PY_SSIZE_T_MAX, -1);
        if (r < 0) {
            PyErr_Clear();
            return 0;
        }
        if (r) {
            return 1;
        }
    }
    return 0;
}

static td_file_class
class_by_rules(PyObject *rules, PyObject *filename)
{
    Py_ssize_t n = PyTuple_GET_SIZE(rules);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rule = PyTuple_GET_ITEM(rules, i);
        Py_ssize_t r = PyUnicode_Tailmatch(
            filename, PyTuple_GET_ITEM(rule, 0), 0, PY_SSIZE_T_MAX, -1);
        if (r < 0) {
            PyErr_Clear();
            return TD_FILE_USER;
        }
        if (r) {
            return (td_file_class)PyLong_AsLong(PyTuple_GET_ITEM(rule, 1));
        }
    }
    return TD_FILE_USER;
}

/* The class of a file name: one dict probe once the name has been seen.
 * The report is best effort: a failure here (memory) reads as user code and
 * never reaches the user's call. */
static td_file_class
file_class(td_install *st, PyObject *rules, PyObject *cache,
           PyObject *filename)
{
    if (rules == NULL || cache == NULL) {
        return skipped(st, filename) ? TD_FILE_INTERNAL : TD_FILE_USER;
    }
    if (!PyUnicode_Check(filename)) {
        return TD_FILE_USER;
    }
    PyObject *known;
    if (td_dict_get_ref(cache, filename, &known) < 0) {
        PyErr_Clear();
        return TD_FILE_USER;
    }
    if (known != NULL) {
        long c = PyLong_AsLong(known);
        Py_DECREF(known);
        return c >= 0 && c < TD_FILE_CLASSES ? (td_file_class)c
                                             : TD_FILE_USER;
    }
    td_file_class c = class_by_rules(rules, filename);
    PyObject *v = PyLong_FromLong((long)c);
    if (v == NULL || PyDict_SetItem(cache, filename, v) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(v);
    return c;
}

/* The rules and their cache, with new references (NULL, NULL before
 * set_site_rules()). */
static void
rules_snapshot(td_sites *t, PyObject **rules, PyObject **cache)
{
    TD_LOCK(t);
    *rules = Py_XNewRef(t->rules);
    *cache = Py_XNewRef(t->file_class);
    TD_UNLOCK();
}

static int
frame_offset(PyFrameObject *frame)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#else
    return PyFrame_GetLineNumber(frame);
#endif
}

/* Code compiled from a string: "python -c", exec(), and the code the
 * standard library writes at run time. */
static int
compiled_from_string(PyCodeObject *c)
{
    return PyUnicode_Check(c->co_filename)
           && PyUnicode_CompareWithASCIIString(c->co_filename, "<string>") == 0;
}

/* dataclasses compiles the methods it writes for a class (the __init__
 * that calls __post_init__) from "<string>", as nested functions of
 * "__create_fn__": machinery, like contextlib, whatever the class's
 * module, never the line a user can act on (docs/report.md). */
static int
written_by_dataclasses(PyCodeObject *c)
{
    if (!compiled_from_string(c)) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000
    const char *qualname = PyUnicode_AsUTF8(c->co_qualname);
    if (qualname == NULL) {
        PyErr_Clear();
        return 0;
    }
    return strncmp(qualname, "__create_fn__.", 14) == 0;
#else
    /* 3.10's code objects carry no qualified name: the __init__ that
     * __create_fn__'s second line defines is the one that calls user code
     * (__post_init__, default factories). */
    return c->co_firstlineno == 2 && PyUnicode_Check(c->co_name)
           && PyUnicode_CompareWithASCIIString(c->co_name, "__init__") == 0;
#endif
}

/* multiprocessing starts its spawn and forkserver children with "python -c
 * 'from multiprocessing.spawn import spawn_main; spawn_main(...)'": that
 * "<string>" module, whose first name is a multiprocessing module, is the
 * bottom of every such child's stack.  Machinery, not the user's line: a
 * program that lives in site-packages would otherwise be reported there,
 * at "<string>:1", in every child (docs/report.md). */
static int
multiprocessing_bootstrap(PyCodeObject *c)
{
    if (!compiled_from_string(c)) {
        return 0;
    }
    PyObject *names = PyObject_GetAttrString((PyObject *)c, "co_names");
    if (names == NULL) {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    if (PyTuple_Check(names) && PyTuple_GET_SIZE(names) > 0) {
        PyObject *first = PyTuple_GET_ITEM(names, 0);   /* borrowed */
        const char *name = PyUnicode_Check(first) ? PyUnicode_AsUTF8(first)
                                                  : NULL;
        if (name == NULL) {
            PyErr_Clear();
        }
        else {
            found = strncmp(name, "multiprocessing.", 16) == 0;
        }
    }
    Py_DECREF(names);
    return found;
}

/* The site of a call (docs/report.md): the first frame of user code, else
 * the first frame of an installed library (a program that lives in
 * site-packages), else the first standard-library frame; torch and
 * TorchDevice never.  *code gets a new reference to its code object (None
 * when there is no such frame) and *offset its instruction offset. */
static void
user_frame(td_install *st, td_sites *t, PyObject **code, int *offset)
{
    PyObject *rules, *cache;
    PyObject *found[TD_FILE_CLASSES] = {NULL, NULL, NULL, NULL};
    int offsets[TD_FILE_CLASSES] = {0, 0, 0, 0};
    rules_snapshot(t, &rules, &cache);
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed */
    Py_XINCREF(frame);
    while (frame != NULL) {
        PyCodeObject *c = PyFrame_GetCode(frame);
        td_file_class k = file_class(st, rules, cache, c->co_filename);
        if (k == TD_FILE_USER
            && (written_by_dataclasses(c) || multiprocessing_bootstrap(c)))
        {
            k = TD_FILE_STDLIB;
        }
        if (k != TD_FILE_INTERNAL && found[k] == NULL) {
            found[k] = (PyObject *)c;
            offsets[k] = frame_offset(frame);
            c = NULL;
        }
        Py_XDECREF(c);
        if (k == TD_FILE_USER) {
            break;
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    Py_XDECREF(rules);
    Py_XDECREF(cache);
    *code = NULL;
    *offset = 0;
    for (int k = TD_FILE_USER; k < TD_FILE_INTERNAL; k++) {
        if (found[k] != NULL && *code == NULL) {
            *code = found[k];
            *offset = offsets[k];
        }
        else {
            Py_XDECREF(found[k]);
        }
    }
    if (*code == NULL) {
        *code = Py_NewRef(Py_None);
    }
}

static int
line_of(PyObject *code, int offset)
{
    if (code == Py_None) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000
    return PyCode_Addr2Line((PyCodeObject *)code, offset);
#else
    (void)code;
    return offset;
#endif
}

static PyObject *
function_of(PyObject *code)
{
    if (code == Py_None) {
        return PyUnicode_FromString("");
    }
#if PY_VERSION_HEX >= 0x030B0000
    return Py_NewRef(((PyCodeObject *)code)->co_qualname);
#else
    return Py_NewRef(((PyCodeObject *)code)->co_name);
#endif
}

static PyObject *
filename_of(PyObject *code)
{
    if (code == Py_None) {
        return PyUnicode_FromString("<unknown>");
    }
    return Py_NewRef(((PyCodeObject *)code)->co_filename);
}

/* ---- texts of requests and targets ------------------------------------- */

static PyObject *
request_text(td_request req, PyObject *orig)
{
    static const char *const names[] = {"default", "cpu", "cuda", "mps",
                                        "meta", "cpu:-1", "other",
                                        "accelerator", "cpu"};
    if ((req.kind == TD_REQ_OTHER || req.kind == TD_REQ_ACCEL)
        && orig != NULL)
    {
        return PyObject_Str(orig);
    }
    if (req.index >= 0 && req.kind != TD_REQ_CPU_TOGGLE) {
        return PyUnicode_FromFormat("%s:%ld", names[req.kind], req.index);
    }
    if (req.kind == TD_REQ_CUDA && req.index == TD_INDEX_HOST) {
        return PyUnicode_FromString("-1 (get_device() of a CPU tensor)");
    }
    return PyUnicode_FromString(names[req.kind]);
}

static PyObject *
target_text(td_install *st, td_target target)
{
    PyObject *dev = td_target_device(st, target);
    if (dev == NULL) {
        return PyUnicode_FromString("unchanged");
    }
    return PyObject_Str(dev);
}

/* ---- the table ----------------------------------------------------------- */

static Py_hash_t
mix(Py_hash_t h, uint64_t v)
{
    uint64_t x = (uint64_t)h ^ (v + 0x9e3779b97f4a7c15ULL + ((uint64_t)h << 6)
                                + ((uint64_t)h >> 2));
    return (Py_hash_t)x;
}

static int
same_text(PyObject *a, PyObject *b)
{
    return a == b || (a != NULL && b != NULL && PyUnicode_Check(a)
                      && PyUnicode_Check(b) && PyUnicode_Compare(a, b) == 0);
}

/* What a probe looks for; texts are borrowed and only set for TD_NO_SPEC. */
typedef struct {
    PyObject *code;
    PyObject *api;
    PyObject *what;
    PyObject *from;
    PyObject *to;
    long from_index;
    int from_kind;
    int to_target;
    int offset;
    Py_hash_t hash;
} td_key;

static int
key_hash(td_key *k)
{
    Py_hash_t h = (Py_hash_t)(uintptr_t)k->code;
    Py_hash_t a = PyObject_Hash(k->api);
    Py_hash_t w = PyObject_Hash(k->what);
    if (a == -1 || w == -1) {
        return -1;
    }
    h = mix(h, (uint64_t)k->offset);
    h = mix(h, (uint64_t)a);
    h = mix(h, (uint64_t)w);
    h = mix(h, (uint64_t)k->from_kind);
    h = mix(h, (uint64_t)k->from_index);
    h = mix(h, (uint64_t)k->to_target);
    if (k->from_kind == TD_NO_SPEC) {
        Py_hash_t f = PyObject_Hash(k->from);
        Py_hash_t t = PyObject_Hash(k->to);
        if (f == -1 || t == -1) {
            return -1;
        }
        h = mix(h, (uint64_t)f);
        h = mix(h, (uint64_t)t);
    }
    k->hash = h;
    return 0;
}

static int
key_matches(const td_site *s, const td_key *k)
{
    if (s->hash != k->hash || s->code != k->code || s->offset != k->offset
        || s->from_kind != k->from_kind || s->from_index != k->from_index
        || s->to_target != k->to_target || !same_text(s->api, k->api)
        || !same_text(s->what, k->what))
    {
        return 0;
    }
    return k->from_kind != TD_NO_SPEC
           || (same_text(s->from, k->from) && same_text(s->to, k->to));
}

static td_site *
probe(td_sites *t, const td_key *k)
{
    size_t mask = (size_t)t->capacity - 1;
    size_t i = (size_t)k->hash & mask;
    for (;;) {
        td_site *s = &t->slots[i];
        if (s->code == NULL || key_matches(s, k)) {
            return s;
        }
        i = (i + 1) & mask;
    }
}

static int
grow(td_sites *t)
{
    Py_ssize_t cap = t->capacity ? t->capacity * 2 : 64;
    td_site *fresh = PyMem_Calloc((size_t)cap, sizeof(td_site));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)cap - 1;
    for (Py_ssize_t j = 0; j < t->capacity; j++) {
        td_site *s = &t->slots[j];
        if (s->code == NULL) {
            continue;
        }
        size_t i = (size_t)s->hash & mask;
        while (fresh[i].code != NULL) {
            i = (i + 1) & mask;
        }
        fresh[i] = *s;
    }
    PyMem_Free(t->slots);
    t->slots = fresh;
    t->capacity = cap;
    return 0;
}

static void
site_clear(td_site *s)
{
    Py_CLEAR(s->code);
    Py_CLEAR(s->api);
    Py_CLEAR(s->what);
    Py_CLEAR(s->from);
    Py_CLEAR(s->to);
}

/* Whether this (file, line, api, what, from, to) is new: the log shows each
 * line of the report once, however many code objects or offsets feed it.
 * 1 new, 0 seen, -1 error.  Runs on a key's first hit only. */
static int
line_is_new(td_sites *t, PyObject *code, int line, PyObject *api,
            PyObject *what, PyObject *from, PyObject *to)
{
    PyObject *file = code == Py_None ? Py_None
                                     : ((PyCodeObject *)code)->co_filename;
    PyObject *key = Py_BuildValue("(OiOOOO)", file, line, api, what, from,
                                  to);
    if (key == NULL) {
        return -1;
    }
    int seen = PyDict_Contains(t->lines, key);
    if (seen == 0 && PyDict_SetItem(t->lines, key, Py_None) < 0) {
        seen = -1;
    }
    Py_DECREF(key);
    return seen < 0 ? -1 : !seen;
}

/* ---- recording ----------------------------------------------------------- */

typedef struct {
    PyObject *filename;
    PyObject *function;
    PyObject *api;
    PyObject *what;
    PyObject *from;
    PyObject *to;
    int line;
} td_first_hit;

static void
first_hit_clear(td_first_hit *h)
{
    Py_CLEAR(h->filename);
    Py_CLEAR(h->function);
    Py_CLEAR(h->api);
    Py_CLEAR(h->what);
    Py_CLEAR(h->from);
    Py_CLEAR(h->to);
}

/* Adds one hit for the key.  make_texts fills from/to when the key is new
 * and carries a spec.  On a first hit, *hit owns what the sink needs. */
typedef PyObject *(*td_text_fn)(td_install *st, const td_key *k, int which);

static int
add_hit(td_install *st, td_sites *t, td_key *k, td_text_fn make_text,
        td_first_hit *hit)
{
    int rc = -1;
    PyObject *from = NULL, *to = NULL;
    if (key_hash(k) < 0) {
        return -1;
    }
    TD_LOCK(t);
    if (t->capacity == 0 || (t->used + 1) * 2 > t->capacity) {
        if (grow(t) < 0) {
            goto done;
        }
    }
    td_site *s = probe(t, k);
    if (s->code != NULL) {
        s->count++;
        rc = 0;
        goto done;
    }
    if (k->from_kind == TD_NO_SPEC) {
        /* td_report keys on texts only once it has both; the check states
         * that for readers (and the static analyser) who cannot see it. */
        if (k->from == NULL || k->to == NULL) {
            PyErr_SetString(PyExc_SystemError,
                            "TorchDevice: a report key without its texts");
            goto done;
        }
        from = Py_NewRef(k->from);
        to = Py_NewRef(k->to);
    }
    else {
        from = make_text(st, k, 0);
        to = from ? make_text(st, k, 1) : NULL;
        if (to == NULL) {
            goto done;
        }
    }
    int line = line_of(k->code, k->offset);
    int first = line_is_new(t, k->code, line, k->api, k->what, from, to);
    if (first < 0) {
        goto done;
    }
    /* Nothing below fails: the slot is filled in one go. */
    s->code = Py_NewRef(k->code);
    s->api = Py_NewRef(k->api);
    s->what = Py_NewRef(k->what);
    s->from = from;
    s->to = to;
    from = to = NULL;
    s->hash = k->hash;
    s->count = 1;
    s->from_index = k->from_index;
    s->from_kind = k->from_kind;
    s->to_target = k->to_target;
    s->offset = k->offset;
    s->line = line;
    t->used++;
    if (first) {
        hit->filename = filename_of(k->code);
        hit->function = function_of(k->code);
        hit->api = Py_NewRef(s->api);
        hit->what = Py_NewRef(s->what);
        hit->from = Py_NewRef(s->from);
        hit->to = Py_NewRef(s->to);
        hit->line = line;
    }
    rc = 0;
done:;   /* a label needs a statement: TD_UNLOCK() may be a bare brace */
    TD_UNLOCK();
    Py_XDECREF(from);
    Py_XDECREF(to);
    return rc;
}

/* Hands a first hit to the Python sink (which logs it), outside the lock. */
static void
call_sink(td_install *st, td_first_hit *hit)
{
    if (hit->api == NULL || st == NULL || st->report_sink == NULL
        || st->report_sink == Py_None || hit->filename == NULL
        || hit->function == NULL)
    {
        first_hit_clear(hit);
        return;
    }
    PyObject *sink = Py_NewRef(st->report_sink);
    PyObject *r = PyObject_CallFunction(
        sink, "OiOOOOO", hit->filename, hit->line, hit->function, hit->api,
        hit->what, hit->from, hit->to);
    if (r == NULL) {
        /* A broken log handler must not break the user's computation. */
        PyErr_WriteUnraisable(sink);
    }
    Py_XDECREF(r);
    Py_DECREF(sink);
    first_hit_clear(hit);
}

static TD_THREAD_LOCAL int report_muted = 0;

void
td_report_mute(void)
{
    report_muted++;
}

void
td_report_unmute(void)
{
    report_muted--;
}

/* `st` (may be NULL: nothing skipped, no sink) is held by the caller for
 * the whole call, sink included. */
static int
record(td_sites *t, td_install *st, td_key *k, td_text_fn make_text)
{
    td_first_hit hit = {NULL, NULL, NULL, NULL, NULL, NULL, 0};
    if (t == NULL || report_muted > 0) {
        return 0;
    }
    user_frame(st, t, &k->code, &k->offset);
    int rc = add_hit(st, t, k, make_text, &hit);
    Py_CLEAR(k->code);
    if (rc < 0) {
        first_hit_clear(&hit);
        return -1;
    }
    call_sink(st, &hit);
    return 0;
}

static PyObject *
spec_text(td_install *st, const td_key *k, int which)
{
    if (which == 0) {
        td_request req = {(td_req_kind)k->from_kind, k->from_index};
        return request_text(req, NULL);
    }
    return target_text(st, (td_target)k->to_target);
}

int
td_report(td_install *st, PyObject *api, td_request req, td_resolution res,
          PyObject *orig)
{
    td_sites *t = (td_sites *)st->records;
    if (t == NULL) {
        return 0;
    }
    td_key k = {NULL, api,
                res.toggle_override ? t->what_toggled : t->what_redirected,
                NULL, NULL, req.index, (int)req.kind, (int)res.target, 0, 0};
    if (req.kind != TD_REQ_OTHER && req.kind != TD_REQ_ACCEL) {
        return record(t, st, &k, spec_text);
    }
    /* Only str() describes it: key on the texts. */
    int rc = -1;
    k.from = request_text(req, orig);
    k.to = k.from ? target_text(st, res.target) : NULL;
    if (k.to != NULL) {
        k.from_kind = k.to_target = TD_NO_SPEC;
        k.from_index = 0;
        rc = record(t, st, &k, spec_text);
    }
    Py_XDECREF(k.from);
    Py_XDECREF(k.to);
    return rc;
}

int
td_record(PyObject *table, td_install *st, PyObject *api, PyObject *what,
          PyObject *from, PyObject *to)
{
    td_sites *t = (td_sites *)table;
    if (t == NULL) {
        return 0;
    }
    if (!PyUnicode_Check(api) || !PyUnicode_Check(what)) {
        PyErr_SetString(PyExc_TypeError,
                        "record(api, what, from, to): api and what are str");
        return -1;
    }
    /* from/to may be devices or None: the report keeps their text. */
    PyObject *from_text = PyObject_Str(from);
    PyObject *to_text = from_text ? PyObject_Str(to) : NULL;
    int rc = -1;
    if (to_text != NULL) {
        td_key k = {NULL, api, what, from_text, to_text, 0, TD_NO_SPEC,
                    TD_NO_SPEC, 0, 0};
        rc = record(t, st, &k, spec_text);
    }
    Py_XDECREF(from_text);
    Py_XDECREF(to_text);
    return rc;
}

int
td_record_query(PyObject *table, td_install *st, td_query q, PyObject *to)
{
    td_sites *t = (td_sites *)table;
    if (t == NULL || (int)q < 0 || q >= TD_QUERY_COUNT
        || to == NULL || !PyUnicode_Check(to))
    {
        return 0;
    }
    /* Interned texts throughout: the key hashes cached hashes only. */
    td_key k = {NULL, t->query_api[q], t->what_emulated, t->from_cuda, to,
                0, TD_NO_SPEC, TD_NO_SPEC, 0, 0};
    return record(t, st, &k, spec_text);
}

/* ---- the table type ------------------------------------------------------ */

static void
sites_clear_all(td_sites *t)
{
    td_site *slots;
    Py_ssize_t cap;
    TD_LOCK(t);
    slots = t->slots;
    cap = t->capacity;
    t->slots = NULL;
    t->capacity = 0;
    t->used = 0;
    if (t->lines != NULL) {
        PyDict_Clear(t->lines);   /* tuples of str and int: no user code */
    }
    TD_UNLOCK();
    /* Decrefs may run arbitrary code: only after the table is consistent. */
    for (Py_ssize_t j = 0; j < cap; j++) {
        site_clear(&slots[j]);
    }
    PyMem_Free(slots);
}

static void
sites_dealloc(PyObject *self)
{
    td_sites *t = (td_sites *)self;
    PyTypeObject *tp = Py_TYPE(self);
    sites_clear_all(t);
    Py_CLEAR(t->lines);
    Py_CLEAR(t->what_redirected);
    Py_CLEAR(t->what_toggled);
    Py_CLEAR(t->what_emulated);
    Py_CLEAR(t->from_cuda);
    for (int q = 0; q < TD_QUERY_COUNT; q++) {
        Py_CLEAR(t->query_api[q]);
    }
    Py_CLEAR(t->rules);
    Py_CLEAR(t->file_class);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot sites_slots[] = {
    {Py_tp_dealloc, sites_dealloc},
    {Py_tp_doc, "TorchDevice's call-site table (internal)."},
    {0, NULL},
};

static PyType_Spec sites_spec = {
    .name = "TorchDevice._tdcore._Sites",
    .basicsize = sizeof(td_sites),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sites_slots,
};

/* The API names of td_query, in its order. */
static const char *const query_names[TD_QUERY_COUNT] = {
    "torch.cuda.is_available",
    "torch.cuda.device_count",
    "torch.accelerator.is_available",
    "torch.accelerator.device_count",
    "torch.accelerator.current_accelerator",
};

PyObject *
td_sites_new(PyObject *module)
{
    /* Not bound to the module: an instance of a type without GC support
     * hides its reference to the type from the collector, and a type bound
     * to the module would then keep the module from ever being torn
     * down (and torch's slots from being given back). */
    (void)module;
    PyTypeObject *tp = (PyTypeObject *)PyType_FromSpec(&sites_spec);
    if (tp == NULL) {
        return NULL;
    }
    td_sites *t = PyObject_New(td_sites, tp);
    Py_DECREF(tp);   /* the instance holds its type */
    if (t == NULL) {
        return NULL;
    }
    t->what_emulated = t->from_cuda = NULL;
    for (int q = 0; q < TD_QUERY_COUNT; q++) {
        t->query_api[q] = NULL;
    }
    t->slots = NULL;
    t->capacity = 0;
    t->used = 0;
    t->rules = NULL;
    t->file_class = NULL;
    t->lines = PyDict_New();
    t->what_redirected = PyUnicode_InternFromString("redirected");
    t->what_toggled = PyUnicode_InternFromString("toggled");
    t->what_emulated = PyUnicode_InternFromString("emulated");
    t->from_cuda = PyUnicode_InternFromString("cuda");
    int ok = t->lines != NULL && t->what_redirected != NULL
             && t->what_toggled != NULL && t->what_emulated != NULL
             && t->from_cuda != NULL;
    for (int q = 0; q < TD_QUERY_COUNT; q++) {
        t->query_api[q] = ok ? PyUnicode_InternFromString(query_names[q])
                             : NULL;
        ok = ok && t->query_api[q] != NULL;
    }
    if (!ok) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* ---- Python API ---------------------------------------------------------- */

static PyObject *
report_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "record(api, what, from, to)");
        return NULL;
    }
    if (!td_get_report()) {
        Py_RETURN_NONE;
    }
    td_install *st = td_install_acquire();   /* may be NULL: no sink */
    int rc = td_record(td_module_state(module)->records, st, args[0],
                       args[1], args[2], args[3]);
    Py_XDECREF(st);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Adds count to result[key], merging entries that differ only in code
 * object or offset (two statements on one line, the same source exec'd
 * twice). */
static int
merge_into(PyObject *result, PyObject *key, Py_ssize_t count)
{
    PyObject *old = PyDict_GetItemWithError(result, key);   /* borrowed */
    if (old == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (old != NULL) {
        Py_ssize_t prev = PyLong_AsSsize_t(old);
        if (prev == -1 && PyErr_Occurred()) {
            return -1;
        }
        count += prev;
    }
    PyObject *n = PyLong_FromSsize_t(count);
    if (n == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(result, key, n);
    Py_DECREF(n);
    return rc;
}

static PyObject *
report_records(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_sites *t = (td_sites *)td_module_state(module)->records;
    PyObject *result = PyDict_New();
    if (result == NULL || t == NULL) {
        return result;
    }
    /* Building str/int/tuple objects and inserting them into a fresh dict
     * runs no Python code, so the table cannot change underneath. */
    int ok = 1;
    TD_LOCK(t);
    for (Py_ssize_t j = 0; ok && j < t->capacity; j++) {
        const td_site *s = &t->slots[j];
        if (s->code == NULL) {
            continue;
        }
        PyObject *file = filename_of(s->code);
        PyObject *func = function_of(s->code);
        PyObject *key = NULL;
        if (file != NULL && func != NULL) {
            key = Py_BuildValue("(OiOOOOO)", file, s->line, func, s->api,
                                s->what, s->from, s->to);
        }
        ok = key != NULL && merge_into(result, key, s->count) == 0;
        Py_XDECREF(file);
        Py_XDECREF(func);
        Py_XDECREF(key);
    }
    TD_UNLOCK();
    if (!ok) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

static PyObject *
report_clear(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_sites *t = (td_sites *)td_module_state(module)->records;
    if (t != NULL) {
        sites_clear_all(t);
    }
    Py_RETURN_NONE;
}

/* set_site_rules(rules): a sequence of (prefix, class) pairs, class 0 user,
 * 1 library, 2 standard library, 3 torch/TorchDevice; None goes back to
 * skip_prefixes alone.  Checked here, so that the walk needs no checks. */
static PyObject *
report_set_site_rules(PyObject *module, PyObject *arg)
{
    td_sites *t = (td_sites *)td_module_state(module)->records;
    PyObject *rules = NULL, *cache = NULL;
    if (t == NULL) {
        Py_RETURN_NONE;
    }
    if (arg != Py_None) {
        rules = PySequence_Tuple(arg);
        if (rules == NULL) {
            return NULL;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(rules);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *r = PyTuple_GET_ITEM(rules, i);
            long c = -1;
            if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2
                && PyUnicode_Check(PyTuple_GET_ITEM(r, 0))
                && PyLong_Check(PyTuple_GET_ITEM(r, 1)))
            {
                c = PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
            }
            if (c < 0 || c >= TD_FILE_CLASSES) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError,
                                "set_site_rules: (prefix: str, class: 0..3) "
                                "pairs");
                Py_DECREF(rules);
                return NULL;
            }
        }
        cache = PyDict_New();
        if (cache == NULL) {
            Py_DECREF(rules);
            return NULL;
        }
    }
    PyObject *old_rules, *old_cache;
    TD_LOCK(t);
    old_rules = t->rules;
    old_cache = t->file_class;
    t->rules = rules;
    t->file_class = cache;
    TD_UNLOCK();
    Py_XDECREF(old_rules);
    Py_XDECREF(old_cache);
    Py_RETURN_NONE;
}

/* site_class(filename) -> int: what the rules make of a file name. */
static PyObject *
report_site_class(PyObject *module, PyObject *arg)
{
    td_sites *t = (td_sites *)td_module_state(module)->records;
    PyObject *rules = NULL, *cache = NULL;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "site_class(filename: str)");
        return NULL;
    }
    if (t != NULL) {
        rules_snapshot(t, &rules, &cache);
    }
    td_install *st = td_install_acquire();   /* may be NULL */
    td_file_class c = file_class(st, rules, cache, arg);
    Py_XDECREF(st);
    Py_XDECREF(rules);
    Py_XDECREF(cache);
    return PyLong_FromLong((long)c);
}

PyMethodDef td_report_methods[] = {
    {"record", (PyCFunction)(void (*)(void))report_record, METH_FASTCALL,
     "record(api, what, from, to)\n\nAdds a hit at the caller's site (the "
     "first frame outside torch and TorchDevice) when recording is on.  "
     "what is 'redirected', 'emulated', 'unsupported' or another short "
     "word; from and to are texts."},
    {"records", report_records, METH_NOARGS,
     "records() -> dict\n\n{(file, line, function, api, what, from, to): "
     "count}"},
    {"clear_records", report_clear, METH_NOARGS, "Forgets all records."},
    {"set_site_rules", report_set_site_rules, METH_O,
     "set_site_rules(rules)\n\nWhich frame is the user's (docs/report.md): "
     "(prefix, class) pairs, longest prefix first; class 0 user code, 1 an "
     "installed library, 2 the standard library, 3 torch and TorchDevice.  "
     "None: only skip_prefixes."},
    {"site_class", report_site_class, METH_O,
     "site_class(filename) -> int\n\nThe class the site rules give a "
     "file name (0 user, 1 library, 2 standard library, 3 internal)."},
    {NULL, NULL, 0, NULL},
};
