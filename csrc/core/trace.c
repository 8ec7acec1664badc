/* The policy as torch.compile sees it.
 *
 * Dynamo cannot look inside the C wrappers, so TorchDevice/_compile.py gives
 * it Python polyfills that ask this function where a request goes and then
 * call torch's original with the answer.  Dynamo calls it once per call site
 * at trace time, with constant arguments, and bakes the answer into the
 * graph.  It is the wrappers' decision without their side effects: no report
 * record, no CPU-override toggle, and no "called from torch" exemption
 * (at trace time the caller is always dynamo, never the user's code).
 */
#include "tdcore.h"

static PyObject *
plan_result(PyObject *device, PyObject *dtype)
{
    return PyTuple_Pack(2, device, dtype);
}

/* `here`: the request is a tensor's own device, where a call without a
 * device makes its result (a *_like call): it stays there, and only the
 * dtype is planned. */
static PyObject *
plan(td_install *st, PyObject *request, PyObject *dtype, int none_policy,
     PyObject *api, int here)
{
    td_request req = td_request_of_arg(st, request);
    if (req.kind == TD_REQ_NONE && !none_policy) {
        return plan_result(Py_None, dtype);
    }
    td_profile profile = td_get_profile();
    td_resolution res = here ? TD_STAYS
        : td_resolve(req, profile, td_get_mode(), td_get_cpu_override(), 0);
    PyObject *new_dtype = dtype;
    PyObject *narrow = td_narrow_dtype(st, dtype);
    if (narrow != NULL) {
        switch (td_float64_action(profile, td_get_accel_float64(), req, res,
                                  td_get_float64()))
        {
        case TD_DTYPE_KEEP:
            break;
        case TD_DTYPE_ERROR:
            td_float64_error(st, PyUnicode_Check(api) ? api : st->api_device,
                             dtype);
            return NULL;
        case TD_DTYPE_TO_FLOAT32:
            new_dtype = narrow;
            break;
        }
    }
    PyObject *target = td_target_device(st, res.target);   /* borrowed */
    return plan_result(target != NULL ? target : Py_None, new_dtype);
}

static PyObject *
trace_plan(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request", "dtype", "none_policy", "api",
                             "here", NULL};
    PyObject *request, *dtype = Py_None, *api = Py_None;
    int none_policy = 0, here = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OpOp:trace_plan",
                                     kwlist, &request, &dtype, &none_policy,
                                     &api, &here))
    {
        return NULL;
    }
    td_install *st = td_install_acquire();
    if (st == NULL) {
        return plan_result(Py_None, dtype);
    }
    PyObject *result = plan(st, request, dtype, none_policy, api, here);
    Py_DECREF(st);
    return result;
}

PyMethodDef td_trace_methods[] = {
    {"trace_plan", (PyCFunction)(void (*)(void))trace_plan,
     METH_VARARGS | METH_KEYWORDS,
     "trace_plan(request, dtype=None, none_policy=False, api=None, "
     "here=False)\n--\n\n"
     "(device or None, dtype): where a call with this device request goes\n"
     "under the settings in force, None meaning 'leave the request as it\n"
     "is'; with here=True the request is a tensor's device, which stays,\n"
     "and only the dtype is planned.  Pure: used by the torch.compile\n"
     "polyfills at trace time."},
    {NULL, NULL, 0, NULL},
};
