/* The one parser of the arguments of our METH_FASTCALL functions and
 * vectorcall methods (torch.cuda's stand-ins, streams, events).
 *
 * Python equivalent:
 *
 *     def parse(spec, args, kwargs):
 *         out = dict(zip(spec.names[:spec.positional], args))
 *         for name, value in kwargs.items():
 *             if name not in spec.names: raise TypeError(unexpected)
 *             if name in out: raise TypeError(multiple values)
 *             out[name] = value
 *         for name in spec.names[:spec.required]:
 *             if name not in out: raise TypeError(missing)
 *         return [out.get(name) for name in spec.names]
 *
 * The messages are CPython's own wording for Python functions.
 */
#include "tdcore.h"

#include <string.h>

static int
find_name(const td_args_spec *spec, PyObject *name)
{
    for (int i = 0; i < spec->count; i++) {
        if (PyUnicode_CompareWithASCIIString(name, spec->names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int
td_args_parse(const td_args_spec *spec, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    for (int i = 0; i < spec->count; i++) {
        out[i] = NULL;
    }
    if (nargs > spec->positional) {
        if (spec->positional == 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes no positional arguments", spec->fname);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes at most %d positional argument%s "
                         "(%zd given)", spec->fname, spec->positional,
                         spec->positional == 1 ? "" : "s", nargs);
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int found = find_name(spec, name);
        if (found < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         spec->fname, name);
            return -1;
        }
        if (out[found] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'",
                         spec->fname, spec->names[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < spec->required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %d)",
                         spec->fname, spec->names[i], i + 1);
            return -1;
        }
    }
    return 0;
}
