/* Moves copy, as on CUDA (docs/policy.md, "Moves copy").
 *
 * On CUDA every move between host and device returns a new tensor.  Where
 * TorchDevice lands a host request and an accelerator request on the same
 * device (profile cpu; profiles cuda and mps in "accelerate" mode), torch
 * would return the tensor itself, and in-place edits of the "moved" tensor
 * would leak back.  So the wrappers force the copy where the program's
 * view of the move may cross devices:
 *
 *   - a request's *intent*: accelerator ("cuda", "mps", an ordinal,
 *     .cuda(), .mps(), a torch.device the program built for one of them),
 *     host ("cpu", .cpu(), a torch.device the program built for "cpu"), or
 *     none (a device read from a tensor, `x.to(y.device)`: where y is);
 *   - a tensor's place, as the program sees it: on the accelerator when
 *     its storage came from an accelerator request (a factory or a move),
 *     on the host when a host request's move made it, marked on the
 *     storage object, which views, detach(), state_dict() and .data
 *     share; for a result autograd recorded, the place of the first marked
 *     leaf of its history (place_of_history()); not known otherwise
 *     (other results of operations, host data).
 *
 * A host request copies unless the tensor is known to be on the host; an
 * accelerator request copies unless it is known to be on the accelerator.
 *
 * Python equivalent (MARK is True on the accelerator, False on the host,
 * absent where nothing says: results of operations, host data):
 *
 *     def move(t, intent, call):
 *         out = call()                  # torch's move, errors and all
 *         place = getattr(t.untyped_storage(), MARK, None)
 *         if place is None:
 *             place = first_marked_leaf_place(t.grad_fn)   # or None
 *         force = ((intent == HOST and place is not False)
 *                  or (intent == ACCEL and place is not True))
 *         if force and out is t:
 *             out = t.clone()           # what .to(copy=True) makes
 *         if intent != NONE and out is not t:
 *             out.untyped_storage().MARK = intent == ACCEL
 *         return out
 *
 * The torch.device objects the program builds carry their intent by
 * identity: the hook (devicehook.c) hands out one cached object per
 * (target, intent), td_intent_device() below.
 */
#include "tdcore.h"

#include <stdatomic.h>

static atomic_int td_move_copies_v = 1;
/* Set once any storage is marked as on the accelerator, never cleared.
 * Until then no tensor can be on it for the program, so a host request is
 * CUDA's no-op whatever the tensor: a program that never asks for "cuda"
 * keeps torch's identities (`m.to("cpu")` keeps its buffers). */
static atomic_int td_accel_seen_v = 0;

/* The intent of the Module.to/.cuda/.cpu call running in this thread:
 * torch re-parses the module's device argument into a new torch.device
 * before it reaches Tensor.to, so the intent travels beside it. */
static TD_THREAD_LOCAL int td_module_intent_v = TD_INTENT_NONE;
/* The tensor whose move a wrapper finished last in this thread, for
 * identity only (never dereferenced).  A tensor subclass whose
 * __torch_function__ calls torch's public Tensor.to/.cuda/.cpu reaches our
 * wrapper a second time, with the same object and torch function off for
 * it: that inner call applies the rule, where the tensor's storage can be
 * read (lazy parameters refuse untyped_storage() and clone() outside it),
 * and the outer one keeps its result. */
static TD_THREAD_LOCAL const void *td_moved_v = NULL;
/* torch.jit.trace running in this thread: a trace records torch's moves.
 * Its check re-traces with cloned inputs, which carry no mark, so a
 * forced copy would put an aten::clone in one graph and not the other
 * ("Graphs differed across invocations"); on CUDA both graphs hold the
 * plain aten::to. */
static TD_THREAD_LOCAL int td_moves_paused_v = 0;

int
td_get_move_copies(void)
{
    return atomic_load_explicit(&td_move_copies_v, memory_order_relaxed);
}

int
td_moves_active(void)
{
    if (!td_get_move_copies() || td_moves_paused_v) {
        return 0;
    }
    /* Elsewhere host and accelerator requests land on different devices
     * and torch copies by itself. */
    return td_get_profile() == TD_PROFILE_CPU
           || td_get_mode() == TD_MODE_ACCELERATE;
}

/* A new torch.device equal to `dev`, made by torch's own tp_new (the hook,
 * if a previous installation still has it, would hand back a cached one). */
int
td_new_device_like(td_install *st, PyObject *dev, PyObject **out)
{
    newfunc make = td_slot_type(TD_SLOT_DEVICE) != NULL
                   ? td_slot_original(TD_SLOT_DEVICE)
                   : st->device_type->tp_new;
    PyObject *args = PyTuple_Pack(1, dev);
    if (args == NULL) {
        return -1;
    }
    *out = make(st->device_type, args, NULL);
    Py_DECREF(args);
    return *out == NULL ? -1 : 0;
}

/* One of the devices the hook hands out for a (target, intent). */
static int
is_intent_device(td_install *st, PyObject *dev)
{
    for (int t = 0; t < TD_TARGET_COUNT; t++) {
        if (st->target[t] == dev) {
            return 1;
        }
    }
    return dev == st->intent_host_cuda || dev == st->intent_host_mps
           || dev == st->intent_host_accel;
}

/* What the move rule needs, made from what install() was handed (before
 * the torch.device hook is in place, so that the devices are new objects):
 * the tensor type with its untyped_storage and clone, and one more device
 * object per target that the hook hands out for the other intent. */
int
td_moves_setup(td_install *st)
{
    PyObject *owner = PyObject_GetAttrString(st->tensor_to, "__objclass__");
    if (owner == NULL) {
        return -1;
    }
    if (!PyType_Check(owner)) {
        Py_DECREF(owner);
        PyErr_SetString(PyExc_TypeError,
                        "install(): tensor_to must be a method of the tensor "
                        "type");
        return -1;
    }
    st->tensor_type = (PyTypeObject *)owner;
    st->tensor_storage = PyObject_GetAttrString(owner, "untyped_storage");
    st->tensor_clone = st->tensor_storage
                       ? PyObject_GetAttrString(owner, "clone") : NULL;
    if (st->tensor_clone == NULL
        || td_new_device_like(st, st->target[TD_TARGET_CUDA],
                           &st->intent_host_cuda) < 0
        || td_new_device_like(st, st->target[TD_TARGET_MPS],
                              &st->intent_host_mps) < 0
        || (st->target[TD_TARGET_ACCEL] != NULL
            && td_new_device_like(st, st->target[TD_TARGET_ACCEL],
                               &st->intent_host_accel) < 0))
    {
        return -1;
    }
    if (st->intent_host_cuda == st->target[TD_TARGET_CUDA]
        || st->intent_host_mps == st->target[TD_TARGET_MPS]
        || (st->intent_host_accel != NULL
            && st->intent_host_accel == st->target[TD_TARGET_ACCEL]))
    {
        PyErr_SetString(PyExc_RuntimeError,
                        "install(): torch.device is still hooked");
        return -1;
    }
    return 0;
}

td_intent
td_intent_of_kind(td_req_kind kind)
{
    switch (kind) {
    case TD_REQ_CUDA:
    case TD_REQ_MPS:
    case TD_REQ_ACCEL:
        return TD_INTENT_ACCEL;
    case TD_REQ_CPU:
    case TD_REQ_CPU_TOGGLE:
        return TD_INTENT_HOST;
    case TD_REQ_NONE:
    case TD_REQ_META:
    case TD_REQ_OTHER:
    case TD_REQ_HOST_PLACE:
        break;
    }
    return TD_INTENT_NONE;
}

int
td_device_handed_out(td_install *st, PyObject *dev)
{
    return is_intent_device(st, dev) || td_pose_name(st, dev) != NULL;
}

td_intent
td_intent_of_arg(td_install *st, PyObject *arg)
{
    if (arg == NULL || arg == Py_None) {
        return TD_INTENT_NONE;
    }
    if (Py_TYPE(arg) == st->device_type) {
        if (arg == st->target[TD_TARGET_MPS]
            || arg == st->target[TD_TARGET_CUDA]
            || arg == st->target[TD_TARGET_ACCEL]
            || td_pose_name(st, arg) != NULL)
        {
            return TD_INTENT_ACCEL;
        }
        if (arg == st->target[TD_TARGET_CPU] || arg == st->intent_host_mps
            || arg == st->intent_host_cuda
            || arg == st->intent_host_accel)
        {
            return TD_INTENT_HOST;
        }
        /* A device of a kind no tensor here is on was built for a request
         * (before TorchDevice was enabled, or by torch's own code), not
         * read off a tensor. */
        td_req_kind kind = td_request_from_device(arg, NULL).kind;
        td_profile profile = td_get_profile();
        if ((kind == TD_REQ_CUDA && profile != TD_PROFILE_CUDA)
            || (kind == TD_REQ_MPS && profile != TD_PROFILE_MPS))
        {
            return TD_INTENT_ACCEL;
        }
        return TD_INTENT_NONE;
    }
    return td_intent_of_kind(td_request_from_object(st, arg).kind);
}

PyObject *
td_intent_device(td_install *st, td_target target, td_intent intent)
{
    if (!td_moves_active()) {
        return td_target_device(st, target);
    }
    switch (target) {
    case TD_TARGET_CPU:
        return intent == TD_INTENT_ACCEL
               ? st->pose[TD_TARGET_CPU][TD_POSE_CUDA]
               : st->target[TD_TARGET_CPU];
    case TD_TARGET_MPS:
        return intent == TD_INTENT_HOST ? st->intent_host_mps
                                        : st->target[TD_TARGET_MPS];
    case TD_TARGET_CUDA:
        return intent == TD_INTENT_HOST ? st->intent_host_cuda
                                        : st->target[TD_TARGET_CUDA];
    case TD_TARGET_ACCEL:
        return intent == TD_INTENT_HOST ? st->intent_host_accel
                                        : st->target[TD_TARGET_ACCEL];
    case TD_TARGET_KEEP:
    case TD_TARGET_COUNT:
        break;
    }
    return NULL;
}

PyObject *
td_intent_cached(td_install *st, PyObject *dev)
{
    if (!td_moves_active()) {
        return NULL;
    }
    PyObject *cached[] = {st->target[TD_TARGET_CPU],
                          st->target[TD_TARGET_CUDA],
                          st->target[TD_TARGET_MPS],
                          st->target[TD_TARGET_ACCEL]};
    for (size_t i = 0; i < sizeof(cached) / sizeof(cached[0]); i++) {
        if (cached[i] != NULL && td_same_device(cached[i], dev)) {
            return cached[i];
        }
    }
    return NULL;
}

int
td_intent_kept(td_install *st, PyObject *dev)
{
    if (!td_moves_active() || !is_intent_device(st, dev)) {
        return 0;
    }
    td_accel_type accel = td_accel_of(st);
    td_resolution res = td_resolve(td_request_from_device(dev, &accel),
                                   td_get_profile(), td_get_mode(),
                                   td_get_cpu_override(), 0);
    return res.target == TD_TARGET_KEEP && !res.toggle_override;
}

int
td_module_intent(void)
{
    return td_module_intent_v;
}

int
td_swap_module_intent(int intent)
{
    int previous = td_module_intent_v;
    td_module_intent_v = intent;
    return previous;
}

/* The storage object of a tensor, or NULL (no exception) for tensors that
 * have none Python can see (sparse, functorch wrappers). */
static PyObject *
storage_of(td_install *st, PyObject *tensor)
{
    if (st->tensor_type == NULL
        || !PyObject_TypeCheck(tensor, st->tensor_type))
    {
        return NULL;
    }
    PyObject *storage = PyObject_CallOneArg(st->tensor_storage, tensor);
    if (storage == NULL) {
        PyErr_Clear();
    }
    return storage;
}

/* Where the program sees the tensor: TD_PLACE_ACCEL (its storage came from
 * an accelerator request), TD_PLACE_HOST (from a host request's copy), or
 * TD_PLACE_UNKNOWN (results of operations, host data, anything unmarked). */
typedef enum {
    TD_PLACE_UNKNOWN,
    TD_PLACE_HOST,
    TD_PLACE_ACCEL,
} td_place;

/* From the tensor's own storage. */
static td_place
place_of_storage(td_install *st, PyObject *tensor)
{
    PyObject *storage = storage_of(st, tensor);
    if (storage == NULL) {
        return TD_PLACE_UNKNOWN;
    }
    PyObject *value = NULL;
    int found = td_optional_attr(storage, st->str_accel_mark, &value);
    Py_DECREF(storage);
    if (found < 0) {
        PyErr_Clear();
        return TD_PLACE_UNKNOWN;
    }
    td_place place = found == 0 ? TD_PLACE_UNKNOWN
                     : value == Py_True ? TD_PLACE_ACCEL
                     : value == Py_False ? TD_PLACE_HOST : TD_PLACE_UNKNOWN;
    Py_XDECREF(value);
    return place;
}

/* A wrapper subclass (torch's __tensor_flatten__ protocol: EdgeIndex,
 * DTensor, TwoTensor) holds its data in inner tensors; its own storage is
 * a fresh placeholder, unmarked or unreadable.  Its place is theirs where
 * every inner tensor that says agrees (one level: the inner tensors' own
 * storage). */
static td_place
place_of_parts(td_install *st, PyObject *tensor)
{
    PyObject *flatten = NULL, *flat = NULL, *names = NULL;
    td_place place = TD_PLACE_UNKNOWN;
    int seen_accel = 0, seen_host = 0;
    if (td_optional_attr(tensor, st->str_tensor_flatten, &flatten) <= 0) {
        goto done;
    }
    flat = PyObject_CallNoArgs(flatten);
    if (flat == NULL || !PyTuple_Check(flat) || PyTuple_GET_SIZE(flat) < 1) {
        goto done;
    }
    /* (inner attribute names, context); the names a list or a tuple */
    names = PySequence_Fast(PyTuple_GET_ITEM(flat, 0), "names");
    if (names == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(names); i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(names, i);   /* borrowed */
        PyObject *inner = PyObject_GetAttr(tensor, name);
        if (inner == NULL) {
            goto done;
        }
        td_place p = place_of_storage(st, inner);
        Py_DECREF(inner);
        seen_accel |= p == TD_PLACE_ACCEL;
        seen_host |= p == TD_PLACE_HOST;
    }
    place = seen_accel && !seen_host ? TD_PLACE_ACCEL
            : seen_host && !seen_accel ? TD_PLACE_HOST : TD_PLACE_UNKNOWN;
done:
    PyErr_Clear();   /* a protocol that fails tells nothing */
    Py_XDECREF(names);
    Py_XDECREF(flat);
    Py_XDECREF(flatten);
    return place;
}

/* How many autograd nodes place_of_history() reads before it gives up.
 * The parameters a result was computed from sit a few nodes from it (a
 * layer's weight and bias feed its last operation); a search that finds
 * none adds this many reads to that result's move. */
#define TD_HISTORY_NODES 16

/* A result of operations carries no mark, but one autograd records knows
 * the leaves it came from: parameters, which a module's move or an
 * accelerator factory marked.  On CUDA a result is where those are (torch
 * refuses to mix devices), so the first leaf whose place is known, in
 * breadth-first order from the result, gives the result's.  Nothing found
 * (no history, only unmarked leaves, the budget spent) tells nothing. */
static td_place
place_of_history(td_install *st, PyObject *tensor)
{
    PyObject *fn = NULL, *queue = NULL;
    td_place place = TD_PLACE_UNKNOWN;
    if (td_optional_attr(tensor, st->str_grad_fn, &fn) <= 0
        || fn == Py_None || (queue = PyList_New(0)) == NULL
        || PyList_Append(queue, fn) < 0)
    {
        goto done;
    }
    for (Py_ssize_t i = 0;
         i < PyList_GET_SIZE(queue) && i < TD_HISTORY_NODES; i++)
    {
        PyObject *node = PyList_GET_ITEM(queue, i);   /* the list owns it */
        PyObject *attr = NULL;
        int found = td_optional_attr(node, st->str_variable, &attr);
        if (found < 0) {
            goto done;
        }
        if (found) {                        /* a leaf: AccumulateGrad */
            place = place_of_storage(st, attr);
            Py_DECREF(attr);
            if (place != TD_PLACE_UNKNOWN) {
                goto done;
            }
            continue;
        }
        if (td_optional_attr(node, st->str_next_functions, &attr) <= 0) {
            goto done;
        }
        /* ((node or None, input number), ...) */
        for (Py_ssize_t j = 0; PyTuple_Check(attr)
             && j < PyTuple_GET_SIZE(attr)
             && PyList_GET_SIZE(queue) < TD_HISTORY_NODES; j++)
        {
            PyObject *edge = PyTuple_GET_ITEM(attr, j);
            if (PyTuple_Check(edge) && PyTuple_GET_SIZE(edge) > 0
                && PyTuple_GET_ITEM(edge, 0) != Py_None
                && PyList_Append(queue, PyTuple_GET_ITEM(edge, 0)) < 0)
            {
                Py_DECREF(attr);
                goto done;
            }
        }
        Py_DECREF(attr);
    }
done:
    PyErr_Clear();   /* an unreadable history tells nothing */
    Py_XDECREF(queue);
    Py_XDECREF(fn);
    return place;
}

static td_place
place_of(td_install *st, PyObject *tensor)
{
    td_place place = place_of_storage(st, tensor);
    /* Only subclasses can be wrappers: torch.Tensor itself pays nothing. */
    if (place == TD_PLACE_UNKNOWN && st->tensor_type != NULL
        && Py_TYPE(tensor) != st->tensor_type)
    {
        place = place_of_parts(st, tensor);
    }
    /* Before anything was put on the accelerator no leaf is marked, so a
     * program that never asks for it pays nothing. */
    if (place == TD_PLACE_UNKNOWN
        && atomic_load_explicit(&td_accel_seen_v, memory_order_relaxed))
    {
        place = place_of_history(st, tensor);
    }
    return place;
}

td_intent
td_intent_of_tensor(td_install *st, PyObject *tensor)
{
    switch (place_of(st, tensor)) {
    case TD_PLACE_ACCEL:
        return TD_INTENT_ACCEL;
    case TD_PLACE_HOST:
        return TD_INTENT_HOST;
    case TD_PLACE_UNKNOWN:
        break;
    }
    return TD_INTENT_NONE;
}

int
td_on_accelerator(td_install *st, PyObject *tensor)
{
    return place_of(st, tensor) == TD_PLACE_ACCEL;
}

/* A mark on a storage object, which views, detach(), state_dict() and
 * .data share: the place (str_accel_mark: Py_True on the accelerator,
 * Py_False on the host) or a lowered dtype.  A storage without a __dict__
 * stays unmarked. */
static void
mark_storage(td_install *st, PyObject *storage, PyObject *name,
             PyObject *value)
{
    if (PyObject_SetAttr(storage, name, value) < 0) {
        PyErr_Clear();
        return;
    }
    if (name == st->str_accel_mark && value == Py_True
        && !atomic_load_explicit(&td_accel_seen_v, memory_order_relaxed))
    {
        atomic_store_explicit(&td_accel_seen_v, 1, memory_order_relaxed);
    }
}

static void
mark_tensor(td_install *st, PyObject *tensor, PyObject *name,
            PyObject *value)
{
    PyObject *storage = storage_of(st, tensor);
    if (storage != NULL) {
        mark_storage(st, storage, name, value);
        Py_DECREF(storage);
    }
}

void
td_mark_accelerator(td_install *st, PyObject *tensor)
{
    mark_tensor(st, tensor, st->str_accel_mark, Py_True);
}

/* A factory's float64 (complex128) request made float32 (complex64): its
 * storage says so, for Tensor.set_ (TorchDevice/_patches.py), which would
 * otherwise read another storage's float64 bytes as float32. */
void
td_mark_lowered(td_install *st, PyObject *tensor)
{
    mark_tensor(st, tensor, st->str_lowered_mark, Py_True);
}

/* Whether `result` of a constructor shares memory with `data` (1), or not
 * (0): the data tensor itself or its storage, or memory torch does not own
 * (numpy arrays, buffers: a storage it cannot resize). */
static int
aliases_data(td_install *st, PyObject *data, PyObject *result)
{
    if (result == data) {
        return 1;
    }
    if (PyList_Check(data) || PyTuple_Check(data) || PyFloat_Check(data)
        || PyLong_Check(data) || PyBool_Check(data))
    {
        return 0;       /* torch builds new memory from Python values */
    }
    PyObject *storage = storage_of(st, result);
    if (storage == NULL) {
        return 0;
    }
    int alias = 0;
    if (PyObject_TypeCheck(data, st->tensor_type)) {
        PyObject *other = storage_of(st, data);
        alias = other == storage;
        Py_XDECREF(other);
    }
    else {
        PyObject *resizable = PyObject_CallMethodNoArgs(storage,
                                                        st->str_resizable);
        if (resizable == NULL) {
            PyErr_Clear();
        }
        else {
            alias = resizable == Py_False;
            Py_DECREF(resizable);
        }
    }
    Py_DECREF(storage);
    return alias;
}

/* CUDA's as_tensor copies a tensor subclass inside torch, past its
 * __torch_function__, and hands back torch.Tensor: *result (a subclass
 * instance) becomes a torch.Tensor alias of it, made by TensorBase's
 * as_subclass, which no __torch_function__ sees.  torch.Tensor is the class
 * just before TensorBase in the subclass's MRO. */
static int
plain_tensor(td_install *st, PyObject **result)
{
    PyObject *mro = Py_TYPE(*result)->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro)) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(mro);
    PyObject *plain = NULL;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (PyTuple_GET_ITEM(mro, i) == (PyObject *)st->tensor_type) {
            plain = PyTuple_GET_ITEM(mro, i - 1);
            break;
        }
    }
    if (plain == NULL || plain == (PyObject *)Py_TYPE(*result)) {
        return 0;       /* already torch.Tensor (or TensorBase itself) */
    }
    PyObject *as_subclass = PyObject_GetAttrString(
        (PyObject *)st->tensor_type, "as_subclass");
    if (as_subclass == NULL) {
        return -1;
    }
    PyObject *args[] = {*result, plain};
    PyObject *alias = PyObject_Vectorcall(as_subclass, args, 2, NULL);
    Py_DECREF(as_subclass);
    if (alias == NULL) {
        return -1;
    }
    Py_SETREF(*result, alias);
    return 0;
}

PyObject *
td_constructed_on_accelerator(td_install *st, PyObject *data,
                              PyObject *result)
{
    if (result == NULL || !PyObject_TypeCheck(result, st->tensor_type)) {
        return result;
    }
    if (data != NULL && aliases_data(st, data, result)) {
        if (PyObject_TypeCheck(data, st->tensor_type)
            && td_on_accelerator(st, data))
        {
            return result;      /* already there: CUDA returns it too */
        }
        if (plain_tensor(st, &result) < 0) {
            return NULL;
        }
        Py_SETREF(result, PyObject_CallOneArg(st->tensor_clone, result));
        if (result == NULL) {
            return NULL;
        }
    }
    td_mark_accelerator(st, result);
    return result;
}

PyObject *
td_constructed_on_host(td_install *st, PyObject *data, PyObject *result)
{
    if (result == NULL || data == NULL
        || !PyObject_TypeCheck(data, st->tensor_type)
        || !PyObject_TypeCheck(result, st->tensor_type)
        || place_of(st, data) != TD_PLACE_ACCEL
        || !aliases_data(st, data, result))
    {
        return result;
    }
    if (plain_tensor(st, &result) < 0) {
        return NULL;
    }
    Py_SETREF(result, PyObject_CallOneArg(st->tensor_clone, result));
    if (result != NULL) {
        mark_tensor(st, result, st->str_accel_mark, Py_False);
    }
    return result;
}

PyObject *
td_numpy_source(td_install *st, PyObject *tensor)
{
    if (place_of(st, tensor) != TD_PLACE_ACCEL) {
        return Py_NewRef(tensor);
    }
    return PyObject_CallOneArg(st->tensor_clone, tensor);
}

PyObject *
td_pinned_copy(td_install *st, PyObject *tensor)
{
    if (place_of(st, tensor) == TD_PLACE_HOST) {
        return Py_NewRef(tensor);
    }
    PyObject *copy = PyObject_CallOneArg(st->tensor_clone, tensor);
    if (copy != NULL) {
        mark_tensor(st, copy, st->str_accel_mark, Py_False);
    }
    return copy;
}

/* Whether moving `tensor` with this intent must copy to be CUDA's move. */
static int
move_must_copy(td_install *st, PyObject *tensor, td_intent intent)
{
    if (intent == TD_INTENT_NONE) {
        return 0;
    }
    td_place place = place_of(st, tensor);
    if (intent == TD_INTENT_HOST) {
        /* Results of operations carry no mark (nothing cheap follows every
         * op), so `(w * 2).cpu()` cannot tell a result on the accelerator
         * from one on the host.  Code calls .cpu() to get a snapshot, which
         * it is on CUDA for the former; only a program writing through the
         * alias of a host tensor could see the copy CUDA does not make.
         * What a host request made is on the host: moving it there again
         * is CUDA's no-op (code that re-moves a growing list of results
         * each step would otherwise copy them all each time).  Before
         * anything was put on the accelerator, nothing is there. */
        return place == TD_PLACE_ACCEL
               || (place == TD_PLACE_UNKNOWN
                   && atomic_load_explicit(&td_accel_seen_v,
                                           memory_order_relaxed));
    }
    return place != TD_PLACE_ACCEL;
}

const void *
td_move_begin(void)
{
    const void *begun = td_moved_v;
    td_moved_v = NULL;
    return begun;
}

PyObject *
td_move_done(td_install *st, PyObject *self, td_intent intent,
             const void *begun, PyObject *result)
{
    int again = td_moved_v == (const void *)self;
    if (intent == TD_INTENT_NONE
        || !PyObject_TypeCheck(self, st->tensor_type))
    {
        td_moved_v = begun;
        return result;
    }
    td_moved_v = self;
    if (result == NULL || again) {
        return result;
    }
    if (result == self && move_must_copy(st, self, intent)) {
        /* Torch returned the tensor itself (same device, dtype and
         * layout): its copy=True would have cloned it. */
        Py_SETREF(result, PyObject_CallOneArg(st->tensor_clone, self));
        if (result == NULL) {
            return NULL;
        }
    }
    if (result != self) {
        mark_tensor(st, result, st->str_accel_mark,
                    intent == TD_INTENT_ACCEL ? Py_True : Py_False);
    }
    return result;
}

/* ---- Python entry points ------------------------------------------------ */

static PyObject *
moves_set(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    atomic_store(&td_move_copies_v, on);
    Py_RETURN_NONE;
}

static PyObject *
moves_get(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(td_get_move_copies());
}

static PyObject *
moves_on_accelerator(PyObject *Py_UNUSED(module), PyObject *tensor)
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        Py_RETURN_FALSE;
    }
    int on = td_on_accelerator(st, tensor);
    Py_DECREF(st);
    return PyBool_FromLong(on);
}

/* keep_place(src, dst) -> dst: a module's conversion that is not a move
 * (Module.half(), .to(dtype), ...) leaves its tensors where they were. */
static PyObject *
moves_keep_place(PyObject *Py_UNUSED(module), PyObject *const *args,
                 Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "keep_place(src, dst)");
        return NULL;
    }
    if (args[1] != args[0] && td_moves_active()
        && td_module_intent() == TD_INTENT_NONE)
    {
        td_install *st = td_install_acquire();
        if (st != NULL && td_on_accelerator(st, args[0])) {
            td_mark_accelerator(st, args[1]);
        }
        Py_XDECREF(st);
    }
    return Py_NewRef(args[1]);
}

/* mark_accelerator(obj) -> obj: a tensor (its storage) or a storage that
 * an accelerator request made outside the wrappers (torch's default-device
 * context, torch.load onto "cuda") is on the accelerator for the program. */
static PyObject *
moves_mark(PyObject *Py_UNUSED(module), PyObject *obj)
{
    if (td_moves_active()) {
        td_install *st = td_install_acquire();
        if (st != NULL) {
            if (PyObject_TypeCheck(obj, st->tensor_type)) {
                td_mark_accelerator(st, obj);
            }
            else {
                mark_storage(st, obj, st->str_accel_mark, Py_True);
            }
            Py_DECREF(st);
        }
    }
    return Py_NewRef(obj);
}

/* keeps_place() -> bool: whether a module conversion must carry the marks
 * over (moves copy, and no module move is under way: that one marks its
 * tensors itself). */
static PyObject *
moves_keeps_place(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(td_moves_active()
                           && td_module_intent() == TD_INTENT_NONE);
}

/* pause_move_copies(on) -> bool: this thread's pause, returning the
 * previous one (so that nested traces put it back). */
static PyObject *
moves_pause(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    int previous = td_moves_paused_v;
    td_moves_paused_v = on;
    return PyBool_FromLong(previous);
}

static PyObject *
moves_intent(PyObject *Py_UNUSED(module), PyObject *arg)
{
    static const char *const names[] = {"none", "host", "accelerator"};
    td_install *st = td_install_acquire();
    if (st == NULL) {
        return PyUnicode_FromString(names[TD_INTENT_NONE]);
    }
    td_intent intent = td_intent_of_arg(st, arg);
    Py_DECREF(st);
    return PyUnicode_FromString(names[intent]);
}

PyMethodDef td_moves_methods[] = {
    {"set_move_copies", moves_set, METH_O,
     "set_move_copies(on)\n\nWhether moves between host and accelerator "
     "copy where both land on one device (docs/policy.md)."},
    {"get_move_copies", moves_get, METH_NOARGS, "get_move_copies() -> bool"},
    {"pause_move_copies", moves_pause, METH_O,
     "pause_move_copies(on) -> bool\n\nIn this thread only, moves do what "
     "torch does (no forced copy) while on; returns the previous setting."},
    {"on_accelerator", moves_on_accelerator, METH_O,
     "on_accelerator(tensor) -> bool\n\nWhether the program sees the "
     "tensor on the accelerator (its storage came from an accelerator "
     "request)."},
    {"keep_place", (PyCFunction)(void (*)(void))moves_keep_place,
     METH_FASTCALL,
     "keep_place(src, dst) -> dst\n\nMarks dst on the accelerator when "
     "src is and no module move is under way (Module._apply)."},
    {"mark_accelerator", moves_mark, METH_O,
     "mark_accelerator(obj) -> obj\n\nMarks a tensor (its storage) or a "
     "storage on the accelerator for the program, where moves copy; "
     "nothing otherwise."},
    {"keeps_place", moves_keeps_place, METH_NOARGS,
     "keeps_place() -> bool\n\nWhether a module conversion running now "
     "must carry the accelerator mark over (Module._apply)."},
    {"device_intent", moves_intent, METH_O,
     "device_intent(device) -> 'none' | 'host' | 'accelerator'\n\nWhat a "
     "device argument asks for, as the move rule reads it."},
    {NULL, NULL, 0, NULL},
};
