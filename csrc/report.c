/* Call-site records: which line of the user's code asked for what.
 *
 * Only reached when recording is on (td_get_report()), so the cost of frame
 * walking and the dict update is paid by people who asked for the report.
 * The frame is read in C: no inspect, no traceback objects.
 */
#include "tdcore.h"

#include <frameobject.h>

static int
skipped(td_state *st, PyObject *filename)
{
    if (st->skip_prefixes == NULL || !PyTuple_Check(st->skip_prefixes)) {
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

/* New reference to (filename, lineno, function) of the first frame outside
 * torch and TorchDevice, or ("<unknown>", 0, "") when there is none. */
static PyObject *
user_site(td_state *st)
{
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed */
    Py_XINCREF(frame);
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *filename = code->co_filename;
        if (!skipped(st, filename)) {
            PyObject *site = Py_BuildValue("(OiO)", filename,
                                           PyFrame_GetLineNumber(frame),
                                           code->co_name);
            Py_DECREF(code);
            Py_DECREF(frame);
            return site;
        }
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    return Py_BuildValue("(sis)", "<unknown>", 0, "");
}

static PyObject *
request_text(td_request req, PyObject *orig)
{
    static const char *names[] = {"default", "cpu", "cuda", "mps", "meta",
                                  "cpu:-1", "other"};
    if (req.kind == TD_REQ_OTHER && orig != NULL) {
        return PyObject_Str(orig);
    }
    if (req.index >= 0 && req.kind != TD_REQ_CPU_TOGGLE) {
        return PyUnicode_FromFormat("%s:%ld", names[req.kind], req.index);
    }
    return PyUnicode_FromString(names[req.kind]);
}

static PyObject *
target_text(td_state *st, td_resolution res)
{
    PyObject *dev = td_target_device(st, res.target);
    if (dev == NULL) {
        return PyUnicode_FromString("unchanged");
    }
    return PyObject_Str(dev);
}

/* Adds one hit for (site, api, what, from, to); hands the first hit of each
 * key to the Python sink, which logs it. */
static int
record(td_state *st, PyObject *api, const char *what, PyObject *from,
       PyObject *to)
{
    int rc = -1;
    PyObject *site = NULL, *key = NULL, *count = NULL;
    if (st->records == NULL) {
        return 0;
    }
    site = user_site(st);
    if (site == NULL) {
        goto done;
    }
    key = Py_BuildValue("(OOOsOO)", PyTuple_GET_ITEM(site, 0),
                        PyTuple_GET_ITEM(site, 1), api, what, from, to);
    if (key == NULL) {
        goto done;
    }
    PyObject *old = PyDict_GetItemWithError(st->records, key);  /* borrowed */
    if (old == NULL && PyErr_Occurred()) {
        goto done;
    }
    Py_ssize_t n = old == NULL ? 1 : PyLong_AsSsize_t(old) + 1;
    count = PyLong_FromSsize_t(n);
    if (count == NULL || PyDict_SetItem(st->records, key, count) < 0) {
        goto done;
    }
    if (old == NULL && st->report_sink != NULL
        && st->report_sink != Py_None)
    {
        PyObject *r = PyObject_CallFunction(
            st->report_sink, "OOOsOO", PyTuple_GET_ITEM(site, 0),
            PyTuple_GET_ITEM(site, 1), api, what, from, to);
        if (r == NULL) {
            /* A broken log handler must not break the user's computation. */
            PyErr_WriteUnraisable(st->report_sink);
        }
        Py_XDECREF(r);
    }
    rc = 0;
done:
    Py_XDECREF(site);
    Py_XDECREF(key);
    Py_XDECREF(count);
    return rc;
}

int
td_report(td_state *st, PyObject *api, td_request req, td_resolution res,
          PyObject *orig)
{
    PyObject *from = request_text(req, orig);
    PyObject *to = from ? target_text(st, res) : NULL;
    int rc = -1;
    if (to != NULL) {
        rc = record(st, api, res.toggle_override ? "toggled" : "redirected",
                    from, to);
    }
    Py_XDECREF(from);
    Py_XDECREF(to);
    return rc;
}

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
    const char *what = PyUnicode_AsUTF8(args[1]);
    if (what == NULL) {
        return NULL;
    }
    td_state *st = (td_state *)PyModule_GetState(module);
    if (record(st, args[0], what, args[2], args[3]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
report_records(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = (td_state *)PyModule_GetState(module);
    if (st->records == NULL) {
        return PyDict_New();
    }
    return PyDict_Copy(st->records);
}

static PyObject *
report_clear(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = (td_state *)PyModule_GetState(module);
    if (st->records != NULL) {
        PyDict_Clear(st->records);
    }
    Py_RETURN_NONE;
}

PyMethodDef td_report_methods[] = {
    {"record", (PyCFunction)(void (*)(void))report_record, METH_FASTCALL,
     "record(api, what, from, to)\n\nAdds a hit at the caller's site when "
     "recording is on."},
    {"records", report_records, METH_NOARGS,
     "records() -> dict\n\n{(file, line, api, what, from, to): count}"},
    {"clear_records", report_clear, METH_NOARGS, "Forgets all records."},
    {NULL, NULL, 0, NULL},
};
