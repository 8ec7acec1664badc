// The simulated accelerator's kernels.  Creation, copies, resize_, set_ and
// the view operators are implemented for the device; every other operator
// goes through `host_fallback`, which runs torch's CPU kernel on CPU views
// of the device memory (no copies: the memory is host memory) and hands the
// results back as device tensors.
#include "simaccel.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/Resize.h>
#include <ATen/native/TensorFactories.h>
#include <ATen/ops/_local_scalar_dense_native.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/copy_native.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/resize_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_as_complex_native.h>
#include <ATen/ops/view_as_real_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace simaccel {
namespace {

constexpr c10::DispatchKeySet kDeviceKeys(c10::DispatchKey::PrivateUse1);

bool on_device(const at::Tensor& t) {
  return t.defined() && t.device().type() == kDeviceType;
}

// CPU views of device memory.  Each device storage a call touches gets one
// CPU storage over the same bytes (non-owning, CPU device), shared by every
// CPU view of it in that call, so that CPU kernels see arguments that
// overlap in memory as overlapping (is_alias_of, the overlap checks).  It is
// a distinct StorageImpl because views a CPU kernel makes take their device
// from the storage.
class AliasTable {
 public:
  const c10::Storage& host_storage(const c10::Storage& device) {
    for (const auto& [d, h] : entries_) {
      if (d.unsafeGetStorageImpl() == device.unsafeGetStorageImpl()) {
        return h;
      }
    }
    // Resizable through the CPU allocator: a CPU kernel that grows an out=
    // argument reallocates this storage; transplant() moves the new memory
    // into the device storage afterwards.
    c10::Storage host(c10::Storage::use_byte_size_t(), device.nbytes(),
                      c10::DataPtr(device.unsafeGetStorageImpl()->mutable_data(),
                                   c10::Device(c10::kCPU)),
                      c10::GetCPUAllocator(), /*resizable=*/true);
    entries_.emplace_back(device, std::move(host));
    return entries_.back().second;
  }

  // The device storage a CPU storage stands for, or nullptr.
  const c10::Storage* device_of(const c10::StorageImpl* host) const {
    for (const auto& [d, h] : entries_) {
      if (h.unsafeGetStorageImpl() == host) {
        return &d;
      }
    }
    return nullptr;
  }

  // Device storages whose CPU view a kernel reallocated (resize_ of an out=
  // argument) take over the new memory, so that every view sees it.
  void transplant() {
    for (auto& [d, h] : entries_) {
      if (h.data() != d.data() || h.nbytes() != d.nbytes()) {
        c10::StorageImpl* impl = d.unsafeGetStorageImpl();
        impl->set_data_ptr_noswap(adopt_host_memory(h, d.device().index()));
        impl->set_nbytes(h.nbytes());
      }
    }
  }

 private:
  c10::SmallVector<std::pair<c10::Storage, c10::Storage>, 4> entries_;
};

at::Tensor host_view(AliasTable& aliases, const at::Tensor& t) {
  auto out = at::detail::make_tensor<c10::TensorImpl>(
      c10::Storage(aliases.host_storage(t.storage())),
      c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
  auto* impl = out.unsafeGetTensorImpl();
  impl->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  impl->_set_conj(t.is_conj());
  impl->_set_neg(t.is_neg());
  return out;
}

// A device tensor over `storage` with the shape and flags of `like`.
at::Tensor device_tensor(c10::Storage storage, const at::Tensor& like) {
  auto keys = kDeviceKeys;
  if (like.key_set().has(c10::DispatchKey::ZeroTensor)) {
    keys = keys | c10::DispatchKeySet(c10::DispatchKey::ZeroTensor);
  }
  auto out = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), keys, like.dtype());
  auto* impl = out.unsafeGetTensorImpl();
  impl->set_sizes_and_strides(like.sizes(), like.strides(), like.storage_offset());
  impl->_set_conj(like.is_conj());
  impl->_set_neg(like.is_neg());
  return out;
}

// ------------------------------------------------------------ the fallback

// What one fallback call keeps between handing the operator CPU views and
// turning its results back into device tensors.
struct FallbackCall {
  struct Arg {
    size_t index;
    at::Tensor device;  // the caller's tensor
    at::Tensor host;    // the CPU view the kernel saw
  };
  struct ListArg {
    size_t index;
    c10::IValue device;            // the caller's list
    std::vector<at::Tensor> host;  // CPU views, undefined where not on the device
  };
  AliasTable aliases;
  c10::SmallVector<Arg, 4> args;
  c10::SmallVector<ListArg, 1> lists;
  c10::SmallVector<const c10::StorageImpl*, 2> host_inputs;  // CPU tensors passed in
  c10::SmallVector<std::pair<const c10::StorageImpl*, c10::Storage>, 2> adopted;
  std::optional<c10::Device> target;
};

[[noreturn]] void device_mismatch(const c10::OperatorName& method, const std::string& arg,
                                  const c10::Device& found, const c10::Device& others) {
  // torch's own words for this error (the device check of the generated
  // CUDA and MPS kernel wrappers), so that callers and tests recognise it.
  TORCH_CHECK(false, "Expected all tensors to be on the same device, but got ", arg,
              " is on ", found, ", different from other tensors on ", others,
              " (when checking argument in method ", method, ")");
}

// Records where the device tensors are.  CPU tensors of one or more
// dimensions may not meet them (0-dim CPU tensors are scalars, allowed as
// on CUDA); tensors in optional-tensor lists (the indices of index and
// index_put_) may be on the CPU, as on CUDA.
struct DeviceCheck {
  const c10::OperatorHandle& op;
  std::optional<c10::Device> device;
  std::string host_arg;
  std::optional<c10::Device> host_device;

  void see(const at::Tensor& t, const std::string& name) {
    if (!t.defined()) {
      return;
    }
    const c10::Device d = t.device();
    if (d.type() == kDeviceType) {
      if (!device) {
        device = d;
      } else if (*device != d) {
        device_mismatch(op.schema().operator_name(), name, d, *device);
      }
    } else if (t.dim() > 0 && !host_device) {
      host_arg = name;
      host_device = d;
    }
  }
  void finish() const {
    if (device && host_device) {
      device_mismatch(op.schema().operator_name(), host_arg, *host_device, *device);
    }
  }
};

bool is_generator_argument(const c10::Argument& arg) {
  const auto& type = arg.real_type();
  if (type->kind() == c10::TypeKind::GeneratorType) {
    return true;
  }
  const auto* optional = type->castRaw<c10::OptionalType>();
  return optional != nullptr &&
         optional->getElementType()->kind() == c10::TypeKind::GeneratorType;
}

// The device storage on `target` for the storage of a CPU result.
c10::Storage device_storage(FallbackCall& call, const at::Tensor& host, c10::Device target) {
  const c10::Storage& storage = host.storage();
  const c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
  if (const c10::Storage* device = call.aliases.device_of(impl)) {
    return *device;  // a view of a device argument stays a view
  }
  for (const auto& [seen, device] : call.adopted) {
    if (seen == impl) {
      return device;  // results over one new buffer stay together
    }
  }
  check_dtype(host.scalar_type());
  bool is_input = false;
  for (const c10::StorageImpl* input : call.host_inputs) {
    is_input = is_input || input == impl;
  }
  c10::Storage out;
  if (is_input) {
    // A CPU argument handed back: the device result must not share it.
    const size_t nbytes = storage.nbytes();
    const c10::DeviceGuard guard(target);
    out = c10::Storage(c10::Storage::use_byte_size_t(), nbytes,
                       device_allocator()->allocate(nbytes), device_allocator(), true);
    if (nbytes != 0) {
      std::memcpy(out.mutable_data(), storage.data(), nbytes);
    }
  } else {
    // Memory the kernel just allocated becomes device memory, uncopied.
    out = adopt_host_storage(storage, target.index());
  }
  call.adopted.emplace_back(impl, out);
  return out;
}

at::Tensor to_device(FallbackCall& call, const at::Tensor& host) {
  if (!host.defined() || !call.target || host.device().type() == kDeviceType) {
    return host;
  }
  return device_tensor(device_storage(call, host, *call.target), host);
}

// Carries what an in-place CPU kernel did to a view's shape or storage
// (resize_, set_, out= arguments resized) over to the caller's tensor.
void sync_back(FallbackCall& call, const at::Tensor& device, const at::Tensor& host) {
  auto* d = device.unsafeGetTensorImpl();
  const auto* h = host.unsafeGetTensorImpl();
  const c10::Storage* mapped = call.aliases.device_of(h->unsafe_storage().unsafeGetStorageImpl());
  if (mapped == nullptr) {
    d->set_storage_keep_dtype(device_storage(call, host, device.device()));
  } else if (mapped->unsafeGetStorageImpl() != d->unsafe_storage().unsafeGetStorageImpl()) {
    d->set_storage_keep_dtype(*mapped);
  }
  if (h->sizes() != d->sizes() || h->strides() != d->strides() ||
      h->storage_offset() != d->storage_offset()) {
    d->set_sizes_and_strides(h->sizes(), h->strides(), h->storage_offset());
  }
}

// For kernels written against at:: calls: CPU views of the device
// arguments in, device tensors out, with the fallback's device check.
class HostScope {
 public:
  HostScope(const c10::OperatorName& name,
            std::initializer_list<std::pair<at::Tensor, const char*>> args) {
    std::optional<c10::Device> device;
    for (const auto& [t, arg] : args) {
      if (!t.defined()) {
        continue;
      }
      if (on_device(t)) {
        if (!device) {
          device = t.device();
        } else if (*device != t.device()) {
          device_mismatch(name, arg, t.device(), *device);
        }
      }
    }
    for (const auto& [t, arg] : args) {
      if (device && t.defined() && !on_device(t) && t.dim() > 0) {
        device_mismatch(name, arg, t.device(), *device);
      }
    }
    call_.target = device;
  }
  at::Tensor host(const at::Tensor& t) {
    return on_device(t) ? host_view(call_.aliases, t) : t;
  }
  at::Tensor device(const at::Tensor& t) { return to_device(call_, t); }

 private:
  FallbackCall call_;
};

void host_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto& arguments = schema.arguments();
  const size_t nargs = arguments.size();
  const size_t begin = stack->size() - nargs;

  FallbackCall call;
  DeviceCheck check{op, std::nullopt, {}, std::nullopt};
  std::optional<c10::Device> generator_device;
  bool host_generator_given = false;
  c10::SmallVector<size_t, 1> default_generators;
  bool device_argument = false;

  for (size_t i = 0; i < nargs; ++i) {
    c10::IValue& value = (*stack)[begin + i];
    if (value.isTensor()) {
      at::Tensor t = value.toTensor();
      check.see(t, arguments[i].name());
      if (on_device(t) && C10_UNLIKELY(t.key_set().has(c10::DispatchKey::ZeroTensor))) {
        t = at::zeros(t.sizes(), t.options());  // no memory behind it to view
      }
      if (on_device(t)) {
        at::Tensor host = host_view(call.aliases, t);
        value = host;
        call.args.push_back({i, std::move(t), std::move(host)});
      } else if (t.defined()) {
        call.host_inputs.push_back(t.storage().unsafeGetStorageImpl());
      }
    } else if (value.isTensorList()) {
      const auto list = value.toTensorList();
      bool any = false;
      for (const at::Tensor& t : list) {
        check.see(t, arguments[i].name());
        any = any || on_device(t);
      }
      if (any) {
        std::vector<at::Tensor> host;
        host.reserve(list.size());
        c10::List<at::Tensor> replaced;
        replaced.reserve(list.size());
        for (const at::Tensor& t : list) {
          host.push_back(on_device(t) ? host_view(call.aliases, t) : at::Tensor());
          replaced.push_back(on_device(t) ? host.back() : t);
        }
        call.lists.push_back({i, value, std::move(host)});
        value = std::move(replaced);
      }
    } else if (value.isOptionalTensorList()) {
      const auto list = value.toOptionalTensorList();
      bool any = false;
      for (const std::optional<at::Tensor> t : list) {
        any = any || (t.has_value() && on_device(*t));
      }
      if (any) {
        c10::List<std::optional<at::Tensor>> replaced;
        replaced.reserve(list.size());
        for (const std::optional<at::Tensor> t : list) {
          if (t.has_value() && on_device(*t)) {
            check.see(*t, arguments[i].name());
            replaced.push_back(host_view(call.aliases, *t));
          } else {
            replaced.push_back(t);
          }
        }
        value = std::move(replaced);
      }
    } else if (value.isDevice()) {
      // An explicit device argument says where the results go.
      const c10::Device d = value.toDevice();
      device_argument = true;
      if (d.type() == kDeviceType) {
        call.target = c10::Device(kDeviceType, d.has_index() ? d.index() : current_device());
        value = c10::Device(c10::kCPU);
      }
    } else if (value.isGenerator()) {
      const at::Generator g = value.toGenerator();
      if (g.device().type() == kDeviceType) {
        generator_device = g.device();
        value = host_generator(g);
      } else {
        host_generator_given = true;
      }
    } else if (value.isNone() && is_generator_argument(arguments[i])) {
      default_generators.push_back(i);
    }
  }
  check.finish();
  if (!device_argument) {
    call.target = check.device;
  }
  const std::optional<c10::Device> random_device = call.target ? call.target : check.device;
  if (random_device) {
    // As torch's check_generator says it for CUDA.
    TORCH_CHECK(!host_generator_given, "Expected a '", random_device->type(),
                "' device type for generator but found 'cpu'");
    for (const size_t i : default_generators) {
      (*stack)[begin + i] = host_generator(default_generator(random_device->index()));
    }
  } else {
    TORCH_CHECK(!generator_device, "Expected a 'cpu' device type for generator but found '",
                generator_device->type(), "'");
  }

  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);

  call.aliases.transplant();
  for (const auto& arg : call.args) {
    const auto* alias = arguments[arg.index].alias_info();
    if (alias != nullptr && alias->isWrite()) {
      sync_back(call, arg.device, arg.host);
    }
  }
  for (const auto& list : call.lists) {
    const auto* alias = arguments[list.index].alias_info();
    if (alias != nullptr && alias->isWrite()) {
      const auto devices = list.device.toTensorList();
      for (size_t j = 0; j < list.host.size(); ++j) {
        if (list.host[j].defined()) {
          sync_back(call, devices.get(j), list.host[j]);
        }
      }
    }
  }

  const auto& returns = schema.returns();
  const size_t nret = returns.size();
  const size_t rbegin = stack->size() - nret;
  for (size_t r = 0; r < nret; ++r) {
    c10::IValue& value = (*stack)[rbegin + r];
    const auto* alias = returns[r].alias_info();
    if (alias != nullptr && alias->isWrite()) {
      // In-place and out= results are the caller's own arguments.
      for (const auto& arg : call.args) {
        const auto* in = arguments[arg.index].alias_info();
        if (in != nullptr && (in == alias || *in == *alias)) {
          value = arg.device;
        }
      }
      for (const auto& list : call.lists) {
        const auto* in = arguments[list.index].alias_info();
        if (in != nullptr && (in == alias || *in == *alias)) {
          value = list.device;
        }
      }
    } else if (value.isTensor()) {
      value = to_device(call, value.toTensor());
    } else if (value.isTensorList()) {
      auto list = value.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) {
        list.set(j, to_device(call, list.get(j)));
      }
    }
  }
}

// ---------------------------------------------- "behave like MPS" op lists

// The MPS backend's warning, with our device's name: the text is stable so
// that fallbacks can be counted per operator and call site.
void warn_fallback(const c10::OperatorHandle& op) {
  TORCH_WARN("The operator '", op.schema().operator_name(),
             "' is not currently supported on the simaccel backend and will fall back to "
             "run on the CPU. This may have performance implications.");
}

// Operators MPS lacks: NotImplementedError as on MPS, unless
// SIMACCEL_ENABLE_FALLBACK (our PYTORCH_ENABLE_MPS_FALLBACK) is on.
void unsupported_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  if (!fallback_enabled()) {
    TORCH_CHECK_NOT_IMPLEMENTED(
        false, "The operator '", op.schema().operator_name(),
        "' is not currently implemented for the simaccel device (the simulated "
        "accelerator lists it as missing on MPS). As a temporary fix, you can set the "
        "environment variable `SIMACCEL_ENABLE_FALLBACK=1` to use the CPU as a fallback "
        "for this op. WARNING: this will be slower than running natively on simaccel.");
  }
  warn_fallback(op);
  host_fallback(op, stack);
}

// Operators MPS always runs on the CPU, with its warning.
void cpu_only_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  warn_fallback(op);
  host_fallback(op, stack);
}

std::mutex g_lists_mu;
std::unique_ptr<torch::Library> g_lists_library;  // guarded by g_lists_mu

c10::OperatorName aten_name(const std::string& name) {
  const auto dot = name.find('.');
  if (dot == std::string::npos) {
    return {"aten::" + name, ""};
  }
  return {"aten::" + name.substr(0, dot), name.substr(dot + 1)};
}

// Registers the two lists (names "op" or "op.overload", without "aten::")
// as PrivateUse1 kernels of their operators, replacing the previous lists.
// A kernel at the backend key, as MPS has, also catches operators torch
// would otherwise decompose before they reach a backend.
void op_set_op_lists(std::vector<std::string> unsupported, std::vector<std::string> cpu_only) {
  for (const auto* names : {&unsupported, &cpu_only}) {
    for (const auto& name : *names) {
      TORCH_CHECK_VALUE(c10::Dispatcher::singleton().findSchema(aten_name(name)).has_value(),
                        "simaccel: no operator aten::", name);
    }
  }
  std::lock_guard<std::mutex> lock(g_lists_mu);
  g_lists_library.reset();  // deregisters the previous lists first
  if (unsupported.empty() && cpu_only.empty()) {
    return;
  }
  auto library = std::make_unique<torch::Library>(
      torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  for (const auto& name : unsupported) {
    library->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&unsupported_kernel>());
  }
  for (const auto& name : cpu_only) {
    library->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&cpu_only_kernel>());
  }
  g_lists_library = std::move(library);
}

// ------------------------------------------------- kernels of the device

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout,
                               std::optional<c10::Device> device,
                               std::optional<bool> pin_memory,
                               std::optional<c10::MemoryFormat> memory_format) {
  const auto scalar_type = c10::dtype_or_default(dtype);
  check_dtype(scalar_type);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided,
              "simaccel supports strided tensors only");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "Only dense CPU tensors can be pinned");
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_generic(size, device_allocator(), kDeviceKeys, scalar_type,
                                   memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride,
                         std::optional<c10::ScalarType> dtype, std::optional<c10::Layout> layout,
                         std::optional<c10::Device> device, std::optional<bool> pin_memory) {
  const auto scalar_type = c10::dtype_or_default(dtype);
  check_dtype(scalar_type);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided,
              "simaccel supports strided tensors only");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "Only dense CPU tensors can be pinned");
  const c10::DeviceGuard guard(c10::device_or_default(device));
  return at::detail::empty_strided_generic(size, stride, device_allocator(), kDeviceKeys,
                                           scalar_type);
}

// The all-zero tensors autograd uses for known-zero gradients: no memory,
// and torch's ZeroTensor key resolves operations on them.
at::Tensor efficient_zero_tensor(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                                 std::optional<c10::Layout> /*layout*/,
                                 std::optional<c10::Device> device,
                                 std::optional<bool> /*pin_memory*/) {
  c10::Device where = c10::device_or_default(device);
  if (!where.has_index()) {
    where.set_index(current_device());
  }
  at::native::ZeroTensorAllocator allocator(where);
  const auto keys = kDeviceKeys | c10::DispatchKeySet(c10::DispatchKey::ZeroTensor);
  return at::detail::empty_generic(size, &allocator, keys, c10::dtype_or_default(dtype),
                                   std::nullopt);
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  // Device memory is host memory: every direction is a host copy.
  AliasTable aliases;
  at::Tensor host_dst = on_device(dst) ? host_view(aliases, dst) : dst;
  const at::Tensor host_src = on_device(self) ? host_view(aliases, self) : self;
  at::native::copy_(host_dst, host_src, non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  at::native::resize_(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  AliasTable aliases;
  return at::native::_local_scalar_dense_cpu(host_view(aliases, self));
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  const c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), memory_format);
}

at::Tensor& set_storage_offset(at::Tensor& self, c10::Storage source, c10::SymInt offset,
                               c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  const c10::DeviceGuard guard(self.device());
  return at::native::set_storage_cpu_(self, std::move(source), offset.expect_int(),
                                      C10_AS_INTARRAYREF_SLOW(size),
                                      C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source) {
  return at::native::set_(self, std::move(source));
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) {
  if (source.device() != self.device()) {
    device_mismatch({"aten::set_", "source_Tensor"}, "source", source.device(), self.device());
  }
  return at::native::set_tensor_(self, source);
}

at::Tensor& set_empty(at::Tensor& self) {
  const c10::DeviceGuard guard(self.device());
  c10::Storage storage(c10::Storage::use_byte_size_t(), 0, device_allocator(), true);
  return self.set_(storage, 0, {0}, {});
}

// Convolution: torch sends backends it has no convolution for to these two
// "overrideable" operators; on the device they run torch's CPU convolution.
at::Tensor convolution(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, c10::SymIntArrayRef stride,
                       c10::SymIntArrayRef padding, c10::SymIntArrayRef dilation,
                       bool transposed, c10::SymIntArrayRef output_padding, c10::SymInt groups) {
  static const c10::OperatorName name("aten::convolution_overrideable", "");
  HostScope scope(name, {{input, "input"}, {weight, "weight"}, {bias.value_or(at::Tensor()), "bias"}});
  std::optional<at::Tensor> host_bias;
  if (bias.has_value() && bias->defined()) {
    host_bias = scope.host(*bias);
  }
  return scope.device(at::_ops::convolution::call(scope.host(input), scope.host(weight),
                                                   host_bias, stride, padding, dilation,
                                                   transposed, output_padding, std::move(groups)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    c10::SymIntArrayRef stride, c10::SymIntArrayRef padding, c10::SymIntArrayRef dilation,
    bool transposed, c10::SymIntArrayRef output_padding, c10::SymInt groups,
    std::array<bool, 3> output_mask) {
  static const c10::OperatorName name("aten::convolution_backward_overrideable", "");
  HostScope scope(name, {{grad_output, "grad_output"}, {input, "input"}, {weight, "weight"}});
  std::optional<c10::SymIntArrayRef> bias_sizes;
  const c10::SymInt channels = grad_output.sym_size(1);
  if (output_mask[2]) {
    bias_sizes = c10::SymIntArrayRef(&channels, 1);
  }
  auto [gi, gw, gb] = at::_ops::convolution_backward::call(
      scope.host(grad_output), scope.host(input), scope.host(weight), bias_sizes, stride,
      padding, dilation, transposed, output_padding, std::move(groups), output_mask);
  return {scope.device(gi), scope.device(gw), scope.device(gb)};
}

// Dropout: torch's CPU kernel draws its mask from the CPU generator; this is
// the same computation drawing from the device's generator (bernoulli_ on
// the device), so device dropout follows the device seed.
std::tuple<at::Tensor, at::Tensor> native_dropout(const at::Tensor& input, double p,
                                                  std::optional<bool> train) {
  if (input.numel() == 0) {
    return {input, at::empty_like(input)};
  }
  if (train.has_value() && !*train) {
    return {input.clone(), at::ones_like(input, input.options().dtype(c10::kBool))};
  }
  const double keep = 1.0 - p;
  const double scale = keep == 0.0 ? 0.0 : 1.0 / keep;
  at::Tensor mask = at::empty_like(input, c10::MemoryFormat::Contiguous);
  mask.bernoulli_(keep);
  at::Tensor output = input.mul(mask).mul_(scale);
  return {output, mask};
}

// Recurrent cells: torch's LSTM and GRU call these fused cells on CUDA and
// PrivateUse1 devices; here they are the CUDA kernels' formulas, computed
// on the host.  The workspace layouts are CUDA's: the activated LSTM gates
// [i, f, g, o]; for the GRU [r, z, n, hx, hn].
at::Tensor one_minus(const at::Tensor& t) { return t.neg().add_(1); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell(
    const at::Tensor& input_gates, const at::Tensor& hidden_gates, const at::Tensor& cx,
    const std::optional<at::Tensor>& input_bias, const std::optional<at::Tensor>& hidden_bias) {
  static const c10::OperatorName name("aten::_thnn_fused_lstm_cell", "");
  HostScope scope(name, {{input_gates, "input_gates"}, {hidden_gates, "hidden_gates"},
                         {cx, "cx"}});
  at::Tensor gates = scope.host(input_gates).add(scope.host(hidden_gates));
  for (const auto* bias : {&input_bias, &hidden_bias}) {
    if (bias->has_value() && (*bias)->defined()) {
      gates.add_(scope.host(**bias));
    }
  }
  auto chunks = gates.chunk(4, 1);
  const at::Tensor i = chunks[0].sigmoid();
  const at::Tensor f = chunks[1].sigmoid();
  const at::Tensor g = chunks[2].tanh();
  const at::Tensor o = chunks[3].sigmoid();
  const at::Tensor cy = f.mul(scope.host(cx)).add_(i.mul(g));
  const at::Tensor hy = o.mul(cy.tanh());
  return {scope.device(hy), scope.device(cy), scope.device(at::cat({i, f, g, o}, 1))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_backward(
    const std::optional<at::Tensor>& grad_hy, const std::optional<at::Tensor>& grad_cy,
    const at::Tensor& cx, const at::Tensor& cy, const at::Tensor& workspace, bool has_bias) {
  const bool have_hy = grad_hy.has_value() && grad_hy->defined();
  const bool have_cy = grad_cy.has_value() && grad_cy->defined();
  if (!have_hy && !have_cy) {
    return {};
  }
  static const c10::OperatorName name("aten::_thnn_fused_lstm_cell_backward_impl", "");
  HostScope scope(name, {{cx, "cx"}, {cy, "cy"}, {workspace, "workspace"}});
  auto gates = scope.host(workspace).chunk(4, 1);
  const at::Tensor &i = gates[0], &f = gates[1], &g = gates[2], &o = gates[3];
  const at::Tensor tanh_cy = scope.host(cy).tanh();
  at::Tensor grad_o;
  at::Tensor grad_c;
  if (have_hy) {
    const at::Tensor ghy = scope.host(*grad_hy);
    grad_o = ghy.mul(tanh_cy);
    grad_c = ghy.mul(o).mul_(one_minus(tanh_cy.mul(tanh_cy)));
  } else {
    grad_o = at::zeros_like(o);
    grad_c = at::zeros_like(tanh_cy);
  }
  if (have_cy) {
    grad_c = grad_c.add(scope.host(*grad_cy));
  }
  const at::Tensor grad_i = grad_c.mul(g).mul_(i.mul(one_minus(i)));
  const at::Tensor grad_f = grad_c.mul(scope.host(cx)).mul_(f.mul(one_minus(f)));
  const at::Tensor grad_g = grad_c.mul(i).mul_(one_minus(g.mul(g)));
  grad_o.mul_(o.mul(one_minus(o)));
  const at::Tensor grad_gates = at::cat({grad_i, grad_f, grad_g, grad_o}, 1);
  const at::Tensor grad_cx = grad_c.mul(f);
  const at::Tensor grad_bias = has_bias ? grad_gates.sum(0) : at::Tensor();
  return {scope.device(grad_gates), scope.device(grad_cx), scope.device(grad_bias)};
}

std::tuple<at::Tensor, at::Tensor> gru_cell(
    const at::Tensor& input_gates, const at::Tensor& hidden_gates, const at::Tensor& hx,
    const std::optional<at::Tensor>& input_bias, const std::optional<at::Tensor>& hidden_bias) {
  static const c10::OperatorName name("aten::_thnn_fused_gru_cell", "");
  HostScope scope(name, {{input_gates, "input_gates"}, {hidden_gates, "hidden_gates"},
                         {hx, "hx"}});
  at::Tensor in = scope.host(input_gates);
  at::Tensor hid = scope.host(hidden_gates);
  if (input_bias.has_value() && input_bias->defined()) {
    in = in.add(scope.host(*input_bias));
  }
  if (hidden_bias.has_value() && hidden_bias->defined()) {
    hid = hid.add(scope.host(*hidden_bias));
  }
  auto ic = in.chunk(3, 1);
  auto hc = hid.chunk(3, 1);
  const at::Tensor r = ic[0].add(hc[0]).sigmoid_();
  const at::Tensor z = ic[1].add(hc[1]).sigmoid_();
  const at::Tensor n = ic[2].add(r.mul(hc[2])).tanh_();
  const at::Tensor h = scope.host(hx);
  const at::Tensor hy = n.add(z.mul(h.sub(n)));
  return {scope.device(hy), scope.device(at::cat({r, z, n, h, hc[2]}, 1))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
    const at::Tensor& grad_hy, const at::Tensor& workspace, bool has_bias) {
  static const c10::OperatorName name("aten::_thnn_fused_gru_cell_backward", "");
  HostScope scope(name, {{grad_hy, "grad_hy"}, {workspace, "workspace"}});
  auto ws = scope.host(workspace).chunk(5, 1);
  const at::Tensor &r = ws[0], &z = ws[1], &n = ws[2], &h = ws[3], &hn = ws[4];
  const at::Tensor g = scope.host(grad_hy);
  const at::Tensor grad_z = g.mul(h.sub(n)).mul_(one_minus(z)).mul_(z);
  const at::Tensor grad_hx = g.mul(z);
  const at::Tensor grad_n = g.mul(one_minus(z)).mul_(one_minus(n.mul(n)));
  const at::Tensor grad_hn = grad_n.mul(r);
  const at::Tensor grad_r = grad_n.mul(hn).mul_(one_minus(r)).mul_(r);
  const at::Tensor grad_input = at::cat({grad_r, grad_z, grad_n}, 1);
  const at::Tensor grad_hidden = at::cat({grad_r, grad_z, grad_hn}, 1);
  at::Tensor grad_input_bias;
  at::Tensor grad_hidden_bias;
  if (has_bias) {
    grad_input_bias = grad_input.sum(0);
    grad_hidden_bias = grad_hidden.sum(0);
  }
  return {scope.device(grad_input), scope.device(grad_hidden), scope.device(grad_hx),
          scope.device(grad_input_bias), scope.device(grad_hidden_bias)};
}

// `param.data = tensor` and Module.to() keep a Parameter (and so weights
// tied between modules) when the new tensor's kind is compatible; torch
// counts dense CPU and CUDA tensors compatible, not PrivateUse1 ones, unless
// the backend says so, as here.
bool has_compatible_shallow_copy_type(const at::Tensor& self, const at::Tensor& from) {
  auto dense = [](const at::Tensor& t) {
    return t.layout() == c10::kStrided && (t.is_cpu() || on_device(t)) &&
           !t.unsafeGetTensorImpl()->is_python_dispatch();
  };
  if (dense(self) && dense(from)) {
    return true;
  }
  return self.unsafeGetTensorImpl()->has_compatible_shallow_copy_type(from.key_set());
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size,
                      c10::SymIntArrayRef stride, std::optional<c10::SymInt> offset) {
  std::optional<int64_t> plain_offset;
  if (offset.has_value()) {
    plain_offset = offset->expect_int();
  }
  return at::native::as_strided_tensorimpl(self, C10_AS_INTARRAYREF_SLOW(size),
                                           C10_AS_INTARRAYREF_SLOW(stride), plain_offset);
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size,
                         c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size),
                                    C10_AS_INTARRAYREF_SLOW(stride));
}

}  // namespace
}  // namespace simaccel

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", &simaccel::empty_memory_format);
  m.impl("empty_strided", &simaccel::empty_strided);
  m.impl("_copy_from", &simaccel::copy_from);
  m.impl("_copy_from_and_resize", &simaccel::copy_from_and_resize);
  m.impl("_local_scalar_dense", &simaccel::local_scalar_dense);
  m.impl("_efficientzerotensor", &simaccel::efficient_zero_tensor);
  m.impl("resize_", &simaccel::resize_);
  m.impl("set_.source_Storage_storage_offset", &simaccel::set_storage_offset);
  m.impl("set_.source_Storage", &simaccel::set_storage);
  m.impl("set_.source_Tensor", &simaccel::set_tensor);
  m.impl("set_", &simaccel::set_empty);
  m.impl("convolution_overrideable", &simaccel::convolution);
  m.impl("convolution_backward_overrideable", &simaccel::convolution_backward);
  m.impl("native_dropout", &simaccel::native_dropout);
  m.impl("_thnn_fused_lstm_cell", &simaccel::lstm_cell);
  m.impl("_thnn_fused_lstm_cell_backward_impl", &simaccel::lstm_cell_backward);
  m.impl("_thnn_fused_gru_cell", &simaccel::gru_cell);
  m.impl("_thnn_fused_gru_cell_backward", &simaccel::gru_cell_backward);
  m.impl("_has_compatible_shallow_copy_type", &simaccel::has_compatible_shallow_copy_type);
  // Views share the device storage.  The fallback would also map a CPU
  // view back onto the device storage; these are just the frequent ones.
  m.impl("as_strided", &simaccel::as_strided);
  m.impl("view", &simaccel::view);
  m.impl("_reshape_alias", &simaccel::reshape_alias);
  m.impl("unfold", &at::native::unfold);
  m.impl("view_as_real", &at::native::view_as_real);
  m.impl("view_as_complex", &at::native::view_as_complex);
}

// Conjugate and negative views: torch resolves them, for an operator without
// its own handling, by cloning the input, and a clone copies through
// _copy_from, which would come back here without end.  The device's
// _copy_from handles both bits itself (the CPU copy does), as CUDA's does.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

// Operators with both a CPU kernel and a generic (composite) one: a backend
// without its own kernel would get the generic one, which rounds
// differently (or cannot run at all: kaiser_window); the device runs the
// CPU kernel, as for every other operator.
TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  for (const char* name : {"addr", "addr.out", "all.dims_out", "any.dims_out",
                           "native_group_norm", "native_layer_norm", "narrow_copy",
                           "pixel_shuffle", "pixel_unshuffle", "_stack", "_stack.out",
                           "linalg__powsum",
                           // the generic one calls the CPU's out= kernel,
                           // which resizes its reduced output with torch's
                           // deprecation warning at every call
                           "mse_loss", "smooth_l1_loss",
                           // composite, but it calls a DispatchStub with the
                           // device's type, which only CPU and CUDA fill
                           "kaiser_window", "kaiser_window.periodic",
                           "kaiser_window.beta"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&simaccel::host_fallback>());
  }
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&simaccel::host_fallback>());
}

TORCH_LIBRARY_FRAGMENT(simaccel, m) {
  m.def("set_op_lists(str[] unsupported, str[] cpu_only) -> ()", &simaccel::op_set_op_lists);
}
