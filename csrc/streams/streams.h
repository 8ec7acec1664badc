/* Private declarations of streams and events (stream.c, event.c,
 * stream_api.c, stream_generic.c) and of their backends (backend_cpu.c,
 * backend_metal.c, backend_cuda.c).
 *
 * A stream or event carries a pointer to the backend it was made for and
 * strong references to the torch objects that backend needs, so that it keeps
 * working whatever happens to the installation later (disable(), another
 * profile).  The module-wide part (types, names) is one GC object owned by
 * the module state (td_state.streams); what streams_setup() hands over
 * (td_backends) belongs to the installation.
 */
#ifndef TD_STREAMS_H
#define TD_STREAMS_H

#include "core/tdcore.h"

#include <stdatomic.h>
#include <stdint.h>

typedef enum {
    TD_BACKEND_CPU = 0,     /* synchronous work, host monotonic clock */
    TD_BACKEND_METAL = 1,   /* torch.mps.Event / torch.mps.synchronize */
    TD_BACKEND_CUDA = 2,    /* native torch.cuda.Event (profile cuda) */
    TD_BACKEND_DEVICE = 3,  /* native torch.Event of the generic accelerator
                               (profile accelerator) */
    TD_BACKEND_COUNT = 4,
} td_backend_id;

/* Positions in a backend's ops tuple, handed over by streams_setup(): the
 * event class, the device-wide synchronize, and the event class's methods
 * taken unbound, so a call needs no attribute lookup. */
#define TD_OPS_EVENT 0          /* callable(enable_timing, ...) -> event */
#define TD_OPS_SYNCHRONIZE 1    /* callable() waiting for the whole device */
#define TD_OPS_RECORD 2         /* (event[, stream]) */
#define TD_OPS_WAIT 3           /* (event[, stream]) */
#define TD_OPS_QUERY 4          /* (event) -> bool */
#define TD_OPS_EV_SYNCHRONIZE 5 /* (event) */
#define TD_OPS_ELAPSED 6        /* (event, end) -> float ms */
#define TD_OPS_SIZE 7

typedef struct td_backend td_backend;

typedef struct {
    PyObject_HEAD
    const td_backend *backend;
    PyObject *device;       /* strong: the torch.device the work runs on */
    PyObject *ops;          /* strong: the backend's ops tuple, or NULL */
    PyObject *handle;       /* strong: a native stream, or NULL */
    PyObject *weakreflist;
    int64_t stream_id;      /* 0: the default stream; external: the pointer */
    int priority;
    int external;
} td_stream;

typedef struct {
    PyObject_HEAD
    const td_backend *backend;
    PyObject *device;       /* strong */
    PyObject *ops;          /* strong, or NULL (CPU) */
    PyObject *handle;       /* strong: the native event, or NULL (CPU) */
    PyObject *weakreflist;
    int64_t event_id;       /* unique in the process, never 0 */
    int64_t host_ns;        /* CPU backend: monotonic clock at record() */
    int recorded;
    int enable_timing;
    int blocking;
    int interprocess;
    int external;
} td_event;

/* Which streams that are not ours record/wait pass to the native event. */
typedef enum {
    TD_FOREIGN_NONE = 0,
    /* anything: the native event checks it (torch.cuda.Event raises
     * TypeError for what is not a CUDA stream) */
    TD_FOREIGN_ANY = 1,
    /* torch.Stream instances only: torch.Event's record/wait take other
     * values (an int) and fail later with another error */
    TD_FOREIGN_TORCH_STREAM = 2,
} td_foreign;

/* Every function returns 0 (or the boolean for the queries) on success and
 * -1 with an exception set.  `foreign` is a stream object that is not ours;
 * only the CUDA and device backends accept one (a native torch.cuda.Stream,
 * the accelerator's torch.Stream). */
struct td_backend {
    td_backend_id id;
    const char *name;
    td_foreign accepts_foreign;
    int (*event_create)(td_event *ev);
    int (*event_record)(td_event *ev, td_stream *s, PyObject *foreign);
    int (*event_wait)(td_event *ev, td_stream *s, PyObject *foreign);
    int (*event_query)(td_event *ev);
    int (*event_synchronize)(td_event *ev);
    /* Called after the CUDA checks (both recorded, both timed) passed. */
    int (*event_elapsed_ms)(td_event *start, td_event *end, double *ms);
    int (*stream_query)(td_stream *s);
    int (*stream_synchronize)(td_stream *s);
    int (*device_synchronize)(PyObject *ops);
};

extern const td_backend td_backend_cpu;
extern const td_backend td_backend_metal;
extern const td_backend td_backend_cuda;
extern const td_backend td_backend_device;

/* The module-wide part: types and names, made at module exec and never
 * changed after. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *stream_type;
    PyTypeObject *external_type;
    PyTypeObject *event_type;
    PyTypeObject *mps_event_type;   /* torch.mps.Event: event_type's */
    PyTypeObject *context_type;
    PyTypeObject *backends_type;

    /* Keys of the per-thread current stream in the thread-state dict, one
     * per backend, and of the stack that `with stream:` pushes. */
    PyObject *key_current[TD_BACKEND_COUNT];
    PyObject *key_with;

    /* For the report. */
    PyObject *api_stream[TD_BACKEND_COUNT];   /* "torch.cuda.Stream", ... */
    PyObject *api_event[TD_BACKEND_COUNT];
    PyObject *api_synchronize[TD_BACKEND_COUNT];
    PyObject *api_current[TD_BACKEND_COUNT];  /* current_stream */
    PyObject *api_default[TD_BACKEND_COUNT];  /* default_stream */
    PyObject *what_emulated;
    PyObject *api_mps_event;                  /* "torch.mps.Event" */
    PyObject *req_mps;                        /* "mps" */
    PyObject *req_name[TD_BACKEND_COUNT];     /* what the user asked for */
    PyObject *dev_name[TD_BACKEND_COUNT];     /* where it runs */
} td_streams;

/* What streams_setup() handed over, part of the installation (tdcore.h):
 * immutable, dropped by uninstall().  On profile accelerator the device's
 * capability record picks the backend: Metal (one queue, MPS's record) or
 * the native device backend; ops are handed to that one only. */
typedef struct {
    PyObject_HEAD
    PyObject *ops[TD_BACKEND_COUNT];          /* CPU's stays NULL */
    PyObject *device[TD_BACKEND_COUNT];
    PyObject *default_stream[TD_BACKEND_COUNT];
    PyObject *record_stream;                  /* TensorBase.record_stream */
} td_backends;

#define TD_STREAMS(st) ((td_streams *)(st)->streams)
/* NULL before streams_setup(); `st` is a td_install. */
#define TD_BACKENDS(st) ((td_backends *)(st)->backends)

/* stream_api.c: the module-wide state and the functions torch.cuda gets. */
extern PyType_Spec td_streams_state_spec;
/* The backend a new stream or event gets now; -1 with RuntimeError set when
 * TorchDevice is not installed (st NULL) or streams_setup() has not handed
 * it what it needs. */
int td_streams_active(td_install *st);
const td_backend *td_backend_of(td_backend_id id);
/* Borrowed: the calling thread's current stream of a backend (its default
 * stream when none was set).  Valid until the caller runs Python code. */
PyObject *td_current_stream(td_streams *ss, int backend);
int td_set_current_stream(td_streams *ss, int backend, PyObject *stream);
/* Records an "emulated" hit when recording is on: `api`, asked for the
 * device the backend stands in for (td_streams_report_as: for `request`). */
int td_streams_report(td_install *st, PyObject *api, int backend);
int td_streams_report_as(td_install *st, PyObject *api, PyObject *request,
                         int backend);
/* The streams types of the module that defined `cls` (METH_METHOD). */
td_streams *td_streams_of_class(PyTypeObject *defining_class);

/* stream.c */
extern PyType_Spec td_stream_spec;
extern PyType_Spec td_external_stream_spec;
extern PyType_Spec td_stream_context_spec;
/* The module state of the first base of `type` whose tp_dealloc is
 * `dealloc` (one of our types); NULL with TypeError set. */
td_state *td_state_of_type(PyTypeObject *type, destructor dealloc);
/* Its streams types. */
td_streams *td_streams_of_type(PyTypeObject *type, destructor dealloc);
/* __reduce__ of streams and events: a queue position means nothing in
 * another process, as for torch's own. */
PyObject *td_not_picklable(PyObject *self, PyObject *unused);
/* Checks a device argument of torch.cuda.Stream, current_stream, ... as
 * torch.cuda's _get_device_index does: ValueError when it names another
 * kind of device. */
int td_stream_check_device(td_install *st, int backend, PyObject *device,
                           const char *fname);
int td_stream_check(td_streams *ss, PyObject *obj);
/* A new stream on a backend (new reference). */
PyObject *td_stream_new(td_backends *bk, PyTypeObject *type, int backend,
                        int64_t stream_id, int priority, int external);
PyObject *td_stream_context_new(td_streams *ss, PyObject *stream);

/* event.c */
extern PyType_Spec td_event_spec;
extern PyType_Spec td_mps_event_spec;
int td_event_check(td_streams *ss, PyObject *obj);
PyObject *td_event_new(td_backends *bk, PyTypeObject *type, int backend,
                       int enable_timing, int blocking, int interprocess,
                       int external);
/* The same for a stream's own backend, device and ops (so that streams
 * keep working after the module state let go of them). */
PyObject *td_event_new_with(PyTypeObject *type, const td_backend *backend,
                            PyObject *device, PyObject *ops,
                            int enable_timing, int blocking,
                            int interprocess, int external);
/* Shared by Event.record/wait and Stream.record_event/wait_event. */
int td_event_record(td_streams *ss, td_event *ev, PyObject *stream);
int td_event_wait(td_streams *ss, td_event *ev, PyObject *stream);

/* stream_generic.c: torch.Stream / torch.Event constructors (two install
 * steps, undone by td_slots_unhook_all()). */
int td_generic_hooks_install(PyObject *stream_type, PyObject *event_type);
int td_generic_hooks_installed(void);

/* backend_metal.c, shared with backend_cuda.c: calls ops[index](a[, b])
 * and returns a new reference (NULL with the callee's exception); `a` and
 * `b` may be NULL to pass fewer arguments. */
PyObject *td_ops_call(PyObject *ops, int index, PyObject *a, PyObject *b);
/* The same, dropping the result: 0 or -1. */
int td_ops_do(PyObject *ops, int index, PyObject *a, PyObject *b);
/* Milliseconds between two events of an ops-backed backend (Metal, CUDA),
 * waiting for `end` rather than raising while it is pending: 0 or -1. */
int td_ops_elapsed_ms(td_event *start, td_event *end, double *ms);
/* Whether a marker event recorded now (ops[EVENT](event_arg), recorded on
 * the current stream) completes within a short grace: 1, 0 or -1. */
int td_marker_idle(PyObject *ops, PyObject *event_arg);

#endif /* TD_STREAMS_H */
