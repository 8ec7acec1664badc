/* torch.cuda device queries answered for the device that is really present.
 *
 * Python equivalent (profiles mps and cpu; one device, index 0):
 *
 *     def is_available():
 *         if truthful or caller_module() in ("torch", "torch.*", "triton",
 *                                            "triton.*", "bitsandbytes",
 *                                            "bitsandbytes.*", "deepspeed",
 *                                            "deepspeed.*", *truth_for):
 *             return original_is_available()
 *         return True
 *     def device_count(): return 1
 *     def current_device(): return 0
 *     def set_device(device): _get_device_index(device)   # validates
 *     def get_device_properties(device=None): return PROPS
 *     ...
 *
 * "cuda:N" collapses to the one device, as the redirection policy does, so
 * code written for N GPUs keeps running; the target's own device type
 * ("cpu" or "mps", which is what torch.device("cuda") became) names it too.
 */
#include "masquerade.h"

#include <stdarg.h>
#include <string.h>

/* ---- helpers shared by the masquerade files ----------------------------- */

/* Whether torch itself asked, not the user's code: torch.manual_seed
 * seeding every device, or inductor reading the machine's properties for
 * its cache key while it compiles.  Dynamo's calls count as the user's
 * (it runs the user's own torch.cuda calls while tracing), inductor's do
 * not: it compiles graphs, which hold no torch.cuda calls. */
static int
asked_by_torch(td_state *st)
{
    if (td_called_from_torch(st->str_name)) {
        return 1;
    }
    Py_ssize_t n;
    const char *s = td_caller_module(st->str_name, &n);
    static const char inductor[] = "torch._inductor";
    const Py_ssize_t k = (Py_ssize_t)(sizeof(inductor) - 1);
    return s != NULL && n >= k && memcmp(s, inductor, (size_t)k) == 0
           && (n == k || s[k] == '.');
}

int
td_masq_record(td_state *st, td_masq *m, const char *api)
{
    return td_masq_record_from(st, m, api, "cuda");
}

int
td_masq_record_from(td_state *st, td_masq *m, const char *api,
                    const char *from)
{
    if (!td_get_report() || m->record == NULL) {
        return 0;
    }
    /* Not something the user's code needs to port. */
    if (asked_by_torch(st)) {
        return 0;
    }
    PyObject *to = m->target_type ? m->target_type : Py_None;
    PyObject *r = PyObject_CallFunction(m->record, "sssO", api, "emulated",
                                        from, to);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

int
td_masq_debug(td_masq *m, const char *fmt, ...)
{
    if (m->log_debug == NULL) {
        return 0;
    }
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(m->log_debug, msg);
    Py_DECREF(msg);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
is_target_kind(td_req_kind kind)
{
    switch (td_get_profile()) {
    case TD_PROFILE_CPU:
        return kind == TD_REQ_CPU;
    case TD_PROFILE_MPS:
        return kind == TD_REQ_MPS;
    case TD_PROFILE_ACCEL:
        return kind == TD_REQ_ACCEL;
    case TD_PROFILE_CUDA:
        break;
    }
    return 0;
}

/* A device argument as the policy reads it, the generic accelerator's
 * type included (the installation's, when there is one). */
static td_request
masq_request(td_masq *m, PyObject *arg)
{
    td_install *inst = td_install_acquire();
    td_accel_type accel = td_accel_of(inst);
    td_request req;
    long index;
    if (inst != NULL && td_pose_cuda_index(inst, arg, &index)) {
        /* torch.device("cuda", 1) names CUDA device 1 to the program. */
        req.kind = TD_REQ_CUDA;
        req.index = index;
    }
    else {
        req = td_request_from_value((PyTypeObject *)m->device_type, &accel,
                                    arg);
    }
    Py_XDECREF(inst);
    return req;
}

/* An index the program names, as shown: past the devices shown it
 * collapses to 0, as the policy collapses "cuda:N" to the one device. */
static long
shown_index(td_masq *m, long v)
{
    return v < m->device_count ? v : 0;
}

static long
current_index(td_masq *m)
{
    return atomic_load_explicit(&TD_MC(m)->current_index,
                                memory_order_relaxed);
}

/* Selects `index` (>= 0) and returns the previous one. */
static long
exchange_index(td_masq *m, long index)
{
    if (index < 0) {
        return current_index(m);
    }
    return atomic_exchange_explicit(&TD_MC(m)->current_index, (int)index,
                                    memory_order_relaxed);
}

int
td_masq_device_index(td_masq *m, PyObject *arg, int optional, long *index)
{
    if (arg == NULL || arg == Py_None) {
        if (optional) {
            *index = current_index(m);
            return 0;
        }
        PyErr_SetString(PyExc_ValueError,
                        "Expected a torch.device with a specified index or an "
                        "integer, but got:None");
        return -1;
    }
    if (PyLong_Check(arg)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(arg, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        *index = (overflow < 0 || v < 0) ? -1
                 : overflow > 0 ? 0 : shown_index(m, v);
        return 0;
    }
    PyTypeObject *device_type = (PyTypeObject *)m->device_type;
    if (PyUnicode_Check(arg)
        || (device_type != NULL && Py_TYPE(arg) == device_type))
    {
        td_request req = masq_request(m, arg);
        if (req.kind == TD_REQ_CUDA || is_target_kind(req.kind)) {
            *index = req.kind == TD_REQ_CUDA && req.index >= 0
                     ? shown_index(m, req.index) : current_index(m);
            return 0;
        }
        PyErr_Format(PyExc_ValueError, "Expected a cuda device, but got: %S",
                     arg);
        return -1;
    }
    PyErr_Format(PyExc_ValueError,
                 "Expected a torch.device with a specified index or an "
                 "integer, but got:%S", arg);
    return -1;
}

static const char *const device_names[] = {"device"};

/* Parses (device=None) from a FASTCALL|KEYWORDS call. */
static int
one_device_arg(const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, PyObject **device)
{
    td_args_spec spec = {fname, device_names, 1, 0, 1};
    return td_args_parse(&spec, args, nargs, kwnames, device);
}

static void
mark_initialized(td_masq *m)
{
    atomic_store_explicit(&TD_MC(m)->initialized, 1, memory_order_relaxed);
}

/* ---- is_available and its truth ----------------------------------------- */

static int
name_in_package(const char *s, Py_ssize_t n, const char *pkg, Py_ssize_t k)
{
    return n >= k && memcmp(s, pkg, (size_t)k) == 0
           && (n == k || s[k] == '.');
}

/* Whether code of module `s` (n bytes; NULL: no module) belongs to a
 * package other than torch that must be told the truth: packages that pick
 * the hardware they run on by asking, and need the real answer.  Triton,
 * the kernel compiler torch.compile drives (it picks its NVIDIA driver by
 * asking torch.cuda.is_available(), and that driver needs a real GPU);
 * bitsandbytes (told True at its import it loads its CUDA backend, which
 * fails without a CUDA build; told the truth it loads its CPU or MPS backend
 * and picks each kernel by the tensor's real device); DeepSpeed (told True
 * it takes its CUDA accelerator and JIT-builds CUDA kernels, FusedAdam for
 * an "Adam" optimizer; told the truth it takes its own CPU or MPS
 * accelerator); and the configured packages.  Returns 0/1; never fails. */
static int
package_sees_truth(td_masq *m, const char *s, Py_ssize_t n)
{
    if (s == NULL) {
        return 0;
    }
    if (name_in_package(s, n, "triton", 6)
        || name_in_package(s, n, "bitsandbytes", 12)
        || name_in_package(s, n, "deepspeed", 9))
    {
        return 1;
    }
    PyObject *pkgs = m->truth_for;
    Py_ssize_t npkg = pkgs ? PyTuple_GET_SIZE(pkgs) : 0;
    for (Py_ssize_t i = 0; i < npkg; i++) {
        Py_ssize_t k;
        const char *p = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pkgs, i), &k);
        if (p == NULL) {
            PyErr_Clear();
            continue;
        }
        if (name_in_package(s, n, p, k)) {
            return 1;
        }
    }
    return 0;
}

/* The same, torch's own modules included (they route work by the answer,
 * e.g. DataLoader pinning and autocast). */
static int
module_sees_truth(td_masq *m, const char *s, Py_ssize_t n)
{
    return (s != NULL && name_in_package(s, n, "torch", 5))
           || package_sees_truth(m, s, n);
}

/* The same for the calling Python code. */
static int
caller_sees_truth(td_masq *m, td_state *st)
{
    Py_ssize_t n;
    const char *s = td_caller_module(st->str_name, &n);
    return module_sees_truth(m, s, n);
}

int
td_masq_caller_package_sees_truth(td_masq *m, td_state *st)
{
    Py_ssize_t n;
    const char *s = td_caller_module(st->str_name, &n);
    return package_sees_truth(m, s, n);
}

int
td_masq_shows_pose(td_state *st)
{
    if (st == NULL || st->masq == NULL) {
        return 0;
    }
    td_masq *m = (td_masq *)Py_NewRef(st->masq);
    Py_ssize_t n;
    const char *s = td_caller_module(st->str_name, &n);
    int shown = !m->truthful
                && !(s != NULL && name_in_package(s, n, "TorchDevice", 11))
                && !module_sees_truth(m, s, n);
    Py_DECREF(m);
    return shown;
}

static PyObject *
call_truth(PyObject *truth)
{
    if (truth == NULL) {
        Py_RETURN_FALSE;
    }
    return PyObject_CallNoArgs(truth);
}

/* A made-up answer given to the user's code, for the report: one relaxed
 * load when the report is off. */
static int
record_query(td_state *st, td_masq *m, td_query q)
{
    if (!td_get_report() || m->target_type == NULL) {
        return 0;
    }
    td_install *inst = td_install_acquire();   /* may be NULL: no sink */
    int rc = td_record_query(st->records, inst, q, m->target_type);
    Py_XDECREF(inst);
    return rc;
}

/* Shared by the reverse direction (mps_reverse.c): the same policy with
 * another truth; a made-up answer is recorded under `api` (NULL: not). */
PyObject *
td_masq_is_available_with(td_state *st, td_masq *m, PyObject *truth,
                          const char *api)
{
    if (m->truthful || caller_sees_truth(m, st)) {
        return call_truth(truth);
    }
    if (api != NULL && td_masq_record_from(st, m, api, "mps") < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

/* `truth_name`: the original that answers where the truth is given (NULL:
 * CUDA's is_available), looked up only then, not on the masquerade's path. */
static PyObject *
is_available_as(td_state *st, td_masq *m, td_query q, const char *truth_name)
{
    if (m->truthful || caller_sees_truth(m, st)) {
        PyObject *truth = truth_name != NULL
                          ? td_masq_original(m, truth_name) : NULL;
        return call_truth(truth != NULL ? truth : m->orig_is_available);
    }
    if (record_query(st, m, q) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

TD_MASQ_NOARGS(q_is_available)
{
    return is_available_as(st, m, TD_QUERY_CUDA_IS_AVAILABLE, NULL);
}

/* torch's own code asks torch.accelerator whether any accelerator is there
 * (the DataLoader, to pin): its truth is torch.accelerator's, which names
 * MPS or another device where CUDA's would say no. */
TD_MASQ_NOARGS(q_accel_is_available)
{
    return is_available_as(st, m, TD_QUERY_ACCEL_IS_AVAILABLE,
                           "accelerator.is_available");
}

/* ---- device selection ------------------------------------------------- */

/* 1, or what the launch asks for (LOCAL_WORLD_SIZE under torchrun, or
 * the configured count): every one is the device really present. */
static PyObject *
device_count_of(td_masq *m)
{
    return PyLong_FromLong(m->device_count);
}

/* The count, recorded when the user's code (not torch's) asked for it. */
static PyObject *
device_count_as(td_state *st, td_masq *m, td_query q)
{
    PyObject *n = device_count_of(m);
    if (n != NULL && td_get_report() && !asked_by_torch(st)
        && record_query(st, m, q) < 0)
    {
        Py_CLEAR(n);
    }
    return n;
}

TD_MASQ_NOARGS(q_cuda_device_count)
{
    return device_count_as(st, m, TD_QUERY_CUDA_DEVICE_COUNT);
}

TD_MASQ_NOARGS(q_accel_device_count)
{
    return device_count_as(st, m, TD_QUERY_ACCEL_DEVICE_COUNT);
}

TD_MASQ_NOARGS(q_is_initialized)
{
    return PyBool_FromLong(atomic_load_explicit(&TD_MC(m)->initialized,
                                                memory_order_relaxed));
}

TD_MASQ_NOARGS(q_init)
{
    mark_initialized(m);
    if (td_masq_record(st, m, "torch.cuda.init") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The CUDA device the program selected (torch.cuda.current_device()). */
static PyObject *
selected_device(td_masq *m)
{
    mark_initialized(m);
    return PyLong_FromLong(current_index(m));
}

TD_MASQ_NOARGS(q_current_device)
{
    return selected_device(m);
}

/* torch's own code reads torch.accelerator's current index to address the
 * accelerator really there (dynamo takes that device's current stream when
 * it starts tracing).  Where the truth it is told (is_available above)
 * names a device, it gets that device's index: the CUDA device the program
 * selected (set_device(1) under torchrun) does not exist beside one MPS
 * device.  Where no accelerator is there, torch's own would raise, and the
 * selected index is answered as to the program. */
TD_MASQ_NOARGS(q_accel_current_device)
{
    if (m->truthful || caller_sees_truth(m, st)) {
        PyObject *avail = td_masq_original(m, "accelerator.is_available");
        PyObject *index = td_masq_original(m,
                                           "accelerator.current_device_index");
        if (avail != NULL && index != NULL && avail != Py_None
            && index != Py_None)
        {
            Py_INCREF(index);
            PyObject *there = PyObject_CallNoArgs(avail);
            int yes = there == NULL ? -1 : PyObject_IsTrue(there);
            Py_XDECREF(there);
            PyObject *result = NULL;
            if (yes > 0) {
                result = PyObject_CallNoArgs(index);
            }
            Py_DECREF(index);
            if (yes != 0) {
                return result;      /* the device's index, or NULL: error */
            }
        }
    }
    return selected_device(m);
}

TD_MASQ_FASTKW(q_set_device)
{
    PyObject *device;
    long index;
    if (one_device_arg("set_device", args, nargs, kwnames, &device) < 0) {
        return NULL;
    }
    if (device == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "set_device() missing 1 required positional argument: "
                        "'device'");
        return NULL;
    }
    /* CUDA code passes a tensor's device.index (set_device(x.device.index));
     * where "cuda" lands on the CPU every tensor's index is None, the one
     * device: the current one, as set_device(0) would leave it.  Elsewhere
     * the tensors have an index and None is refused, as torch refuses it. */
    int optional = td_get_profile() == TD_PROFILE_CPU;
    if (td_masq_device_index(m, device, optional, &index) < 0) {
        return NULL;
    }
    if (index >= 0) {
        mark_initialized(m);
        (void)exchange_index(m, index);
    }
    if (td_masq_record(st, m, "torch.cuda.set_device") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* torch.cuda._get_device_index(device, optional=False, allow_cpu=False):
 * what torch.cuda.device / device_of and torch's helpers resolve through. */
TD_MASQ_FASTKW(q_get_device_index)
{
    static const char *const names[] = {"device", "optional", "allow_cpu"};
    static const td_args_spec spec = {"_get_device_index", names, 3, 0, 3};
    PyObject *a[3];
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    PyObject *device = a[0], *optional = a[1];
    int opt = optional ? PyObject_IsTrue(optional) : 0;
    long index;
    if (opt < 0 || td_masq_device_index(m, device, opt, &index) < 0) {
        return NULL;
    }
    return PyLong_FromLong(index);
}

/* torch.cuda._exchange_device(idx) -> previous index: with one device the
 * previous one is always 0 (or -1 when nothing is selected). */
/* torch.cuda._exchange_device(idx) -> previous index (-1 when idx is
 * "no device": nothing is selected then). */
TD_MASQ_O(q_exchange_device)
{
    long index;
    if (td_masq_device_index(m, arg, 0, &index) < 0) {
        return NULL;
    }
    if (index < 0) {
        return PyLong_FromLong(-1);
    }
    return PyLong_FromLong(exchange_index(m, index));
}

/* ---- properties ------------------------------------------------------- */

/* Borrowed from m, which the caller holds. */
static PyObject *
props_for(td_masq *m, PyObject *device)
{
    long index;
    if (td_masq_device_index(m, device, 1, &index) < 0) {
        return NULL;
    }
    if (index < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid device id");
        return NULL;
    }
    PyObject *props = td_masq_props(m);   /* borrowed */
    if (props == NULL) {
        return NULL;
    }
    mark_initialized(m);
    return props;
}

TD_MASQ_FASTKW(q_get_device_properties)
{
    PyObject *device;
    if (one_device_arg("get_device_properties", args, nargs, kwnames,
                       &device) < 0)
    {
        return NULL;
    }
    PyObject *props = props_for(m, device);
    if (props == NULL
        || td_masq_record(st, m, "torch.cuda.get_device_properties") < 0)
    {
        return NULL;
    }
    return Py_NewRef(props);
}

TD_MASQ_FASTKW(q_get_device_name)
{
    PyObject *device;
    if (one_device_arg("get_device_name", args, nargs, kwnames, &device) < 0)
    {
        return NULL;
    }
    PyObject *props = props_for(m, device);
    if (props == NULL
        || td_masq_record(st, m, "torch.cuda.get_device_name") < 0)
    {
        return NULL;
    }
    return PyObject_GetAttr(props, m->str_pname);
}

TD_MASQ_FASTKW(q_get_device_capability)
{
    PyObject *device;
    if (one_device_arg("get_device_capability", args, nargs, kwnames,
                       &device) < 0
        || props_for(m, device) == NULL
        || td_masq_record(st, m, "torch.cuda.get_device_capability") < 0)
    {
        return NULL;
    }
    return Py_NewRef(m->capability);
}

TD_MASQ_FAST(q_can_device_access_peer)
{
    long a, b;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "can_device_access_peer(device, peer_device)");
        return NULL;
    }
    if (td_masq_device_index(m, args[0], 1, &a) < 0
        || td_masq_device_index(m, args[1], 0, &b) < 0)
    {
        return NULL;
    }
    if (a < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid device id");
        return NULL;
    }
    if (b < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid peer device id");
        return NULL;
    }
    /* One device: there is no peer to access. */
    Py_RETURN_FALSE;
}

TD_MASQ_FASTKW(q_is_bf16_supported)
{
    static const char *const names[] = {"including_emulation"};
    static const td_args_spec spec = {"is_bf16_supported", names, 1, 0, 1};
    PyObject *including_emulation;
    if (td_args_parse(&spec, args, nargs, kwnames, &including_emulation)
        < 0)
    {
        return NULL;
    }
    return PyBool_FromLong(m->bf16);
}

static PyObject *
q_is_tf32_supported(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    Py_RETURN_FALSE;
}

/* torch.backends.cuda.is_built(): what is_available() says, to the same
 * callers (a CUDA that is available was built). */
TD_MASQ_NOARGS(q_is_built)
{
    return td_masq_is_available_with(st, m,
                                     td_masq_original(m, "cuda.is_built"),
                                     NULL);
}

/* torch.distributed.is_nccl_available(): what is_available() says, to the
 * same callers.  NCCL comes with CUDA, and where CUDA is announced
 * init_process_group("nccl") runs on gloo (_distributed.py); code that
 * checks for NCCL before asking for it (ignite's idist) must see it. */
TD_MASQ_NOARGS(q_is_nccl_available)
{
    return td_masq_is_available_with(
        st, m, td_masq_original(m, "dist.is_nccl_available"), NULL);
}

/* torch.cuda.nccl.version(): NCCL's version to the callers is_nccl_available()
 * says yes to.  Programs gate features on it (torchtune's bf16 check asks
 * for 2.10) right after that question, and torch's own raises on a build
 * without NCCL.  The answer is the NCCL torch 2.13's CUDA wheels carry;
 * "nccl" runs on gloo here, which has what those gates ask for. */
TD_MASQ_NOARGS(q_nccl_version)
{
    if (m->truthful || caller_sees_truth(m, st)) {
        PyObject *truth = td_masq_original(m, "cuda.nccl.version");
        if (truth == NULL) {
            PyErr_SetString(PyExc_RuntimeError,
                            "torch.cuda.nccl.version: torch has none");
            return NULL;
        }
        return PyObject_CallNoArgs(truth);
    }
    if (td_masq_record(st, m, "torch.cuda.nccl.version") < 0) {
        return NULL;
    }
    return Py_BuildValue("(iii)", 2, 29, 7);
}

/* torch.cuda.get_arch_list(): the architecture of the capability shown
 * (["sm_80"]), so that it agrees with is_available() and
 * get_device_capability(), also for torch.cuda.get_gencode_flags(), which
 * calls it; the truth when cuda_truthful is on. */
TD_MASQ_NOARGS(q_get_arch_list)
{
    PyObject *truth = td_masq_original(m, "cuda.get_arch_list");
    if (truth != NULL && m->truthful) {
        return PyObject_CallNoArgs(truth);
    }
    if (m->capability == NULL || !PyTuple_Check(m->capability)
        || PyTuple_GET_SIZE(m->capability) != 2)
    {
        return PyList_New(0);
    }
    PyObject *arch = PyUnicode_FromFormat(
        "sm_%S%S", PyTuple_GET_ITEM(m->capability, 0),
        PyTuple_GET_ITEM(m->capability, 1));
    if (arch == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(arch);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, arch);
    return list;
}

/* torch.cuda.get_allocator_backend(): CUDA's default caching allocator;
 * the memory functions answer as it would. */
static PyObject *
q_get_allocator_backend(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    return PyUnicode_FromString("native");
}

/* ---- torch.accelerator and torch.get_device_module ---------------------- */

PyObject *
td_masq_original(td_masq *m, const char *name)
{
    return m->originals ? PyDict_GetItemString(m->originals, name) : NULL;
}

static PyObject *
original(td_masq *m, const char *name)
{
    PyObject *fn = td_masq_original(m, name);
    if (fn == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice: no original recorded for %s", name);
    }
    return fn;   /* borrowed */
}

/* torch.accelerator.current_accelerator(check_available=False): callers
 * that are shown the masquerade get the device "cuda" really runs on, so
 * that it agrees with is_available() and torch.device("cuda"). */
TD_MASQ_FASTKW(q_current_accelerator)
{
    if (m->truthful || caller_sees_truth(m, st) || m->target_device == NULL)
    {
        PyObject *fn = original(m, "current_accelerator");
        return fn ? PyObject_Vectorcall(fn, args, nargs, kwnames) : NULL;
    }
    if (record_query(st, m, TD_QUERY_ACCEL_CURRENT) < 0) {
        return NULL;
    }
    /* The object torch.device("cuda") gives user code, which says
     * "accelerator" to a move (moves.c). */
    td_profile profile = td_get_profile();
    td_target t = profile == TD_PROFILE_MPS ? TD_TARGET_MPS
                  : profile == TD_PROFILE_ACCEL ? TD_TARGET_ACCEL
                                                : TD_TARGET_CPU;
    td_install *inst = td_install_acquire();
    if (inst == NULL) {
        return Py_NewRef(m->target_device);
    }
    td_request req = {TD_REQ_CUDA, -1};
    PyObject *dev = td_request_device(inst, t, req, TD_INTENT_ACCEL);
    Py_DECREF(inst);
    return dev;
}

/* Whether `device` stands for torch.cuda to the program: no device
 * (torch's "the current accelerator", which current_accelerator() shows
 * as "cuda" above), a device it asked for as "cuda" (it reads so,
 * core/pose.c), and where the accelerator it was told of is the CPU, any
 * device it asked for as an accelerator.  torch would name the module of
 * the device really used (torch.cpu has none of the accelerator's
 * functions: manual_seed, memory_allocated, Event(enable_timing=...));
 * torch's own code and whoever is told the truth keep torch's answer. */
static int
means_announced_accelerator(td_masq *m, td_state *st, PyObject *device)
{
    if (m->truthful || caller_sees_truth(m, st) || m->target_device == NULL)
    {
        return 0;
    }
    if (device == NULL || device == Py_None) {
        return 1;
    }
    td_install *inst = td_install_acquire();
    if (inst == NULL) {
        return 0;
    }
    PyObject *name = td_pose_name(inst, device);
    int found = name != NULL && (td_get_profile() == TD_PROFILE_CPU
                                 || name == inst->str_cuda);
    Py_DECREF(inst);
    return found;
}

/* torch.get_device_module("cuda"): torch.cuda, whose functions answer for
 * the device really used (torch.device("cuda").type alone would name the
 * target's module, which lacks most of them). */
TD_MASQ_FASTKW(q_get_device_module)
{
    PyTypeObject *device_type = (PyTypeObject *)m->device_type;
    PyObject *device = NULL;
    if (nargs >= 1) {
        device = args[0];
    }
    else if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1
             && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0),
                                  st->str_device) == 0)
    {
        device = args[0];
    }
    if (device != NULL && m->cuda_module != NULL
        && (PyUnicode_Check(device)
            || (device_type != NULL && Py_TYPE(device) == device_type))
        && masq_request(m, device).kind == TD_REQ_CUDA)
    {
        return Py_NewRef(m->cuda_module);
    }
    if (m->cuda_module != NULL && means_announced_accelerator(m, st, device))
    {
        return Py_NewRef(m->cuda_module);
    }
    PyObject *fn = original(m, "get_device_module");
    return fn ? PyObject_Vectorcall(fn, args, nargs, kwnames) : NULL;
}

/* torch.accelerator.synchronize(device=None): whatever torch.cuda's
 * synchronize is (docs/streams.md: it waits for the target), so that the two
 * agree; torch's own needs a compiled-in accelerator. */
TD_MASQ_FASTKW(q_accel_synchronize)
{
    static const td_args_spec spec = {"synchronize", device_names, 1, 0, 1};
    PyObject *device;
    long index;
    if (td_args_parse(&spec, args, nargs, kwnames, &device) < 0
        || td_masq_device_index(m, device, 1, &index) < 0)
    {
        return NULL;
    }
    if (m->cuda_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(m->cuda_module, "synchronize");
    if (fn == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    return r;
}

PyMethodDef td_cuda_query_methods[] = {
    {"is_available", q_is_available, METH_NOARGS,
     "is_available() -> bool\n\nTrue under the masquerade; torch's own "
     "modules and the configured packages are told the truth."},
    {"device_count", q_cuda_device_count, METH_NOARGS,
     "device_count() -> int\n\n1, or the launch's LOCAL_WORLD_SIZE, or the "
     "configured count: all the one device really present."},
    {"is_initialized", q_is_initialized, METH_NOARGS,
     "is_initialized() -> bool"},
    {"init", q_init, METH_NOARGS, "init()\n\nNothing to initialise."},
    {"current_device", q_current_device, METH_NOARGS,
     "current_device() -> int"},
    {"current_device_index", q_current_device, METH_NOARGS,
     "current_device_index() -> int"},
    {"set_device", TD_FASTKW(q_set_device),
     "set_device(device)\n\nAccepts int, str and torch.device; every "
     "index names the one device."},
    {"set_device_index", TD_FASTKW(q_set_device),
     "set_device_index(device)"},
    {"_get_device_index", TD_FASTKW(q_get_device_index),
     "_get_device_index(device, optional=False, allow_cpu=False) -> int"},
    {"_exchange_device", q_exchange_device, METH_O,
     "_exchange_device(index) -> previous index"},
    {"_maybe_exchange_device", q_exchange_device, METH_O,
     "_maybe_exchange_device(index) -> previous index"},
    {"get_device_properties", TD_FASTKW(q_get_device_properties),
     "get_device_properties(device=None) -> DeviceProperties"},
    {"get_device_name", TD_FASTKW(q_get_device_name),
     "get_device_name(device=None) -> str"},
    {"get_device_capability", TD_FASTKW(q_get_device_capability),
     "get_device_capability(device=None) -> (major, minor)"},
    {"can_device_access_peer",
     (PyCFunction)(void (*)(void))q_can_device_access_peer, METH_FASTCALL,
     "can_device_access_peer(device, peer_device) -> False"},
    {"is_bf16_supported", TD_FASTKW(q_is_bf16_supported),
     "is_bf16_supported(including_emulation=True) -> bool"},
    {"is_tf32_supported", q_is_tf32_supported, METH_NOARGS,
     "is_tf32_supported() -> False"},
    {"is_built", q_is_built, METH_NOARGS,
     "is_built() -> bool\n\nAs is_available(), to the same callers."},
    {"is_nccl_available", q_is_nccl_available, METH_NOARGS,
     "is_nccl_available() -> bool\n\nAs is_available(), to the same "
     "callers."},
    {"version", q_nccl_version, METH_NOARGS,
     "version() -> (major, minor, patch)\n\nNCCL's, where "
     "is_nccl_available() answers True: \"nccl\" runs on gloo."},
    {"get_arch_list", q_get_arch_list, METH_NOARGS,
     "get_arch_list() -> list\n\nThe architecture of the capability shown "
     "(['sm_80'])."},
    {"get_allocator_backend", q_get_allocator_backend, METH_NOARGS,
     "get_allocator_backend() -> 'native'"},
    {"current_accelerator", TD_FASTKW(q_current_accelerator),
     "current_accelerator(check_available=False) -> torch.device"},
    {"synchronize", TD_FASTKW(q_accel_synchronize),
     "synchronize(device=None, /): torch.cuda.synchronize()"},
    {"get_device_module", TD_FASTKW(q_get_device_module),
     "get_device_module(device=None) -> module"},
    {NULL, NULL, 0, NULL},
};

/* torch.accelerator's own names for the queries above: the same answers,
 * recorded under torch.accelerator.* (masq_function picks these for that
 * module). */
PyMethodDef td_accel_query_methods[] = {
    {"is_available", q_accel_is_available, METH_NOARGS,
     "is_available() -> bool\n\nTrue under the masquerade; torch's own "
     "modules and the configured packages are told the truth."},
    {"device_count", q_accel_device_count, METH_NOARGS,
     "device_count() -> int\n\n1, or the launch's LOCAL_WORLD_SIZE, or the "
     "configured count: all the one device really present."},
    {"current_device_index", q_accel_current_device, METH_NOARGS,
     "current_device_index() -> int\n\nThe device the program selected; "
     "torch's own modules get the index of the accelerator really there."},
    {NULL, NULL, 0, NULL},
};
