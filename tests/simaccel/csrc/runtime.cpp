// The simulated accelerator's runtime: memory, device guard, streams and
// events, generators, PrivateUse1 hooks, AMP policy, and the settings the
// Python loader drives.  Kernels are in kernels.cpp.
#include "simaccel.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Operators.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/DeviceCapability.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_set>
#include <vector>

namespace simaccel {
namespace {

using c10::DeviceIndex;

// ---------------------------------------------------------------- devices

DeviceIndex read_device_count() {
  const char* env = std::getenv("SIMACCEL_DEVICE_COUNT");
  if (env == nullptr || *env == '\0') {
    return 1;
  }
  const long n = std::strtol(env, nullptr, 10);
  return static_cast<DeviceIndex>(n < 1 ? 1 : (n > kMaxDevices ? kMaxDevices : n));
}

// Read when the library is loaded, before any tensor exists.
const DeviceIndex g_device_count = read_device_count();

thread_local DeviceIndex t_device = 0;
thread_local c10::StreamId t_stream[kMaxDevices] = {};

void check_index(DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < g_device_count,
              "Invalid device index ", static_cast<int>(index),
              " for simaccel: there are ", static_cast<int>(g_device_count),
              " simulated device(s) (SIMACCEL_DEVICE_COUNT)");
}

// ------------------------------------------------------- memory statistics

struct Counter {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> allocated{0};
  std::atomic<int64_t> freed{0};
};

struct MemoryStats {
  Counter bytes;
  Counter blocks;
};

MemoryStats g_stats[kMaxDevices];

void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
  int64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen &&
         !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

void add(Counter& c, int64_t amount) {
  const int64_t now = c.current.fetch_add(amount, std::memory_order_relaxed) + amount;
  raise_peak(c.peak, now);
  c.allocated.fetch_add(amount, std::memory_order_relaxed);
}

void sub(Counter& c, int64_t amount) {
  c.current.fetch_sub(amount, std::memory_order_relaxed);
  c.freed.fetch_add(amount, std::memory_order_relaxed);
}

void count_alloc(DeviceIndex device, size_t nbytes) {
  add(g_stats[device].bytes, static_cast<int64_t>(nbytes));
  add(g_stats[device].blocks, 1);
}

void count_free(DeviceIndex device, size_t nbytes) {
  sub(g_stats[device].bytes, static_cast<int64_t>(nbytes));
  sub(g_stats[device].blocks, 1);
}

// ------------------------------------------------------------- allocators

// Each block starts with a header recording its size and device, so that
// freeing needs no lookup; 64 bytes keep the data 64-byte aligned, as the
// CPU allocator's are.
struct BlockHeader {
  size_t nbytes;
  DeviceIndex device;
};
constexpr size_t kHeaderBytes = 64;

void free_block(void* base) {
  const auto* header = static_cast<const BlockHeader*>(base);
  count_free(header->device, header->nbytes);
  c10::free_cpu(base);
}

void free_nothing(void* /*ctx*/) {}

// Host memory a CPU kernel allocated, now owned by a device storage.
struct AdoptedBlock {
  c10::Storage host;
  size_t nbytes;
  DeviceIndex device;
};

void free_adopted(void* ctx) {
  auto* block = static_cast<AdoptedBlock*>(ctx);
  count_free(block->device, block->nbytes);
  delete block;
}

c10::CachingDeviceAllocator::DeviceStats device_stats(DeviceIndex device) {
  using c10::CachingAllocator::StatType;
  c10::CachingDeviceAllocator::DeviceStats out;
  const auto all = static_cast<size_t>(StatType::AGGREGATE);
  auto fill = [all](c10::CachingAllocator::StatArray& array, const Counter& c) {
    array[all].current = c.current.load(std::memory_order_relaxed);
    array[all].peak = c.peak.load(std::memory_order_relaxed);
    array[all].allocated = c.allocated.load(std::memory_order_relaxed);
    array[all].freed = c.freed.load(std::memory_order_relaxed);
  };
  const MemoryStats& s = g_stats[device];
  // No caching: what is reserved, active and requested is what is allocated.
  fill(out.allocated_bytes, s.bytes);
  fill(out.reserved_bytes, s.bytes);
  fill(out.active_bytes, s.bytes);
  fill(out.requested_bytes, s.bytes);
  fill(out.allocation, s.blocks);
  fill(out.segment, s.blocks);
  fill(out.active, s.blocks);
  return out;
}

void reset_peak(DeviceIndex device) {
  for (Counter* c : {&g_stats[device].bytes, &g_stats[device].blocks}) {
    c->peak.store(c->current.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
}

void reset_accumulated(DeviceIndex device) {
  for (Counter* c : {&g_stats[device].bytes, &g_stats[device].blocks}) {
    c->allocated.store(0, std::memory_order_relaxed);
    c->freed.store(0, std::memory_order_relaxed);
  }
}

struct SimDeviceAllocator final : c10::DeviceAllocator {
  c10::DataPtr allocate(size_t nbytes) override {
    const DeviceIndex device = t_device;
    const c10::Device where(kDeviceType, device);
    if (nbytes == 0) {
      return {nullptr, nullptr, &free_nothing, where};
    }
    void* base = c10::alloc_cpu(nbytes + kHeaderBytes);
    new (base) BlockHeader{nbytes, device};
    count_alloc(device, nbytes);
    return {static_cast<char*>(base) + kHeaderBytes, base, &free_block, where};
  }

  // The context is the block header, not the data: no raw allocation.
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t /*pool*/) override {}
  void recordStream(const c10::DataPtr& /*ptr*/, c10::Stream /*stream*/) override {}

  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(DeviceIndex device) override {
    check_index(device);
    return device_stats(device);
  }
  void resetAccumulatedStats(DeviceIndex device) override {
    check_index(device);
    reset_accumulated(device);
  }
  void resetPeakStats(DeviceIndex device) override {
    check_index(device);
    reset_peak(device);
  }
  std::pair<size_t, size_t> getMemoryInfo(DeviceIndex device) override {
    check_index(device);
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const auto total = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * page;
    const auto free = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * page;
    return {free, total};
  }
};

SimDeviceAllocator g_device_allocator;
REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_device_allocator)

// Pinned host memory is ordinary host memory that remembers it was asked
// for, so that Tensor.is_pinned() answers as on a real device.  Never
// destroyed: pinned tensors may be freed during interpreter shutdown.
struct PinnedRegistry {
  std::mutex mu;
  std::unordered_set<const void*> blocks;
};
PinnedRegistry* const g_pinned = new PinnedRegistry();

void free_pinned(void* data) {
  if (data != nullptr) {
    std::lock_guard<std::mutex> lock(g_pinned->mu);
    g_pinned->blocks.erase(data);
  }
  c10::free_cpu(data);
}

// Also torch's host allocator for the device (torch.accelerator's
// empty_host_cache and graph capture ask it): nothing is cached, and a block
// is reused only once its tensor is freed, so no event needs recording.
struct PinnedAllocator final : at::HostAllocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* data = nbytes == 0 ? nullptr : c10::alloc_cpu(nbytes);
    if (data != nullptr) {
      std::lock_guard<std::mutex> lock(g_pinned->mu);
      g_pinned->blocks.insert(data);
    }
    return {data, data, &free_pinned, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_pinned; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
  bool record_event(void* /*ptr*/, void* /*ctx*/, c10::Stream /*stream*/) override {
    return true;
  }
  void empty_cache() override {}
  at::HostStats get_stats() override { return {}; }
  void reset_accumulated_stats() override {}
  void reset_peak_stats() override {}
};

PinnedAllocator g_pinned_allocator;
REGISTER_HOST_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_pinned_allocator)

// ------------------------------------------------------ streams and events

// Work runs synchronously on the host, so every stream is always idle and
// an event's time is the host clock when it was recorded.
struct SimEvent {
  c10::EventFlag flag;
  std::chrono::steady_clock::time_point when;
};

constexpr c10::StreamId kPoolSize = 32;
std::atomic<c10::StreamId> g_next_pool_stream{0};
std::atomic<c10::StreamId> g_next_new_stream{2 * kPoolSize + 1};

DeviceIndex stream_device(c10::Device d) {
  const DeviceIndex index = d.index() < 0 ? t_device : d.index();
  check_index(index);
  return index;
}

c10::Stream make_stream(DeviceIndex index, c10::StreamId id) {
  return c10::Stream(c10::Stream::UNSAFE, c10::Device(kDeviceType, index), id);
}

struct SimGuardImpl final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kDeviceType; }

  c10::Device exchangeDevice(c10::Device d) const override {
    const c10::Device old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return {kDeviceType, t_device}; }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kDeviceType, "simaccel guard got device ", d);
    if (d.index() >= 0) {
      check_index(d.index());
      t_device = d.index();
    }
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0 && d.index() < g_device_count) {
      t_device = d.index();
    }
  }

  c10::Stream getStream(c10::Device d) const override {
    const DeviceIndex index = stream_device(d);
    return make_stream(index, t_stream[index]);
  }
  c10::Stream getDefaultStream(c10::Device d) const override {
    return make_stream(stream_device(d), 0);
  }
  // Streams 1..32 form the low-priority pool, 33..64 the high-priority one,
  // handed out round robin as CUDA does; new streams get fresh ids.
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool high_priority) const override {
    const c10::StreamId slot = g_next_pool_stream.fetch_add(1) % kPoolSize;
    return make_stream(stream_device(d), 1 + slot + (high_priority ? kPoolSize : 0));
  }
  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override {
    return make_stream(stream_device(d), g_next_new_stream.fetch_add(1));
  }
  c10::Stream exchangeStream(c10::Stream s) const override {
    check_index(s.device_index());
    const c10::Stream old = getStream(s.device());
    t_stream[s.device_index()] = s.id();
    return old;
  }
  DeviceIndex deviceCount() const noexcept override { return g_device_count; }
  c10::DeviceCapability getDeviceCapability(c10::Device /*d*/) const override {
    c10::DeviceCapability capability;
    if (mps_rules()) {
      capability.capability_data.supported_scalar_types.has_Double = 0;
      capability.capability_data.supported_scalar_types.has_ComplexDouble = 0;
    }
    return capability;
  }

  void record(void** event, const c10::Stream& stream, const DeviceIndex device_index,
              const c10::EventFlag flag) const override {
    TORCH_CHECK(device_index == -1 || device_index == stream.device_index(),
                "Event device index ", static_cast<int>(device_index),
                " does not match recording stream's device index ",
                static_cast<int>(stream.device_index()), ".");
    auto* e = static_cast<SimEvent*>(*event);
    if (e == nullptr) {
      e = new SimEvent{flag, {}};
      *event = e;
    }
    e->when = std::chrono::steady_clock::now();
  }
  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {}
  bool queryEvent(void* /*event*/) const override { return true; }
  void destroyEvent(void* event, const DeviceIndex /*device_index*/) const noexcept override {
    delete static_cast<SimEvent*>(event);
  }
  void synchronizeEvent(void* /*event*/) const override {}
  double elapsedTime(void* start, void* end, const DeviceIndex /*device_index*/) const override {
    TORCH_CHECK(start != nullptr && end != nullptr,
                "Both events must be recorded before calculating elapsed time.");
    const auto* a = static_cast<const SimEvent*>(start);
    const auto* b = static_cast<const SimEvent*>(end);
    TORCH_CHECK(a->flag == c10::EventFlag::BACKEND_DEFAULT &&
                    b->flag == c10::EventFlag::BACKEND_DEFAULT,
                "Both events must be created with argument 'enable_timing=True'.");
    return std::chrono::duration<double, std::milli>(b->when - a->when).count();
  }

  bool queryStream(const c10::Stream& /*stream*/) const override { return true; }
  void synchronizeStream(const c10::Stream& /*stream*/) const override {}
  void synchronizeDevice(const DeviceIndex device_index) const override {
    if (device_index >= 0) {
      check_index(device_index);
    }
  }
  void recordDataPtrOnStream(const c10::DataPtr& /*ptr*/, const c10::Stream& /*s*/) const override {}
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, SimGuardImpl);

// -------------------------------------------------------------- generators

// A device generator whose state lives in a CPU generator, the one the CPU
// kernels are handed when they run for this device.
struct SimGenerator final : c10::GeneratorImpl {
  SimGenerator(DeviceIndex device, at::Generator host)
      : c10::GeneratorImpl(c10::Device(kDeviceType, device),
                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        host_(std::move(host)) {}

  void set_current_seed(uint64_t seed) override {
    std::lock_guard<std::mutex> lock(host_.mutex());
    host_.set_current_seed(seed);
  }
  void set_offset(uint64_t offset) override {
    std::lock_guard<std::mutex> lock(host_.mutex());
    host_.set_offset(offset);
  }
  uint64_t get_offset() const override { return host_.get_offset(); }
  uint64_t current_seed() const override { return host_.current_seed(); }
  uint64_t seed() override {
    std::lock_guard<std::mutex> lock(host_.mutex());
    return host_.seed();
  }
  void set_state(const c10::TensorImpl& state) override {
    std::lock_guard<std::mutex> lock(host_.mutex());
    host_.unsafeGetGeneratorImpl()->set_state(state);
  }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override {
    return host_.unsafeGetGeneratorImpl()->get_state();
  }

  at::Generator host_;

 private:
  SimGenerator* clone_impl() const override {
    return new SimGenerator(device().index(), host_.clone());
  }
};

at::Generator make_generator(DeviceIndex device) {
  return at::make_generator<SimGenerator>(
      device, at::make_generator<at::CPUGeneratorImpl>(c10::default_rng_seed_val));
}

// Created with the library, never destroyed (as torch's own defaults).
std::vector<at::Generator>* make_defaults() {
  auto* defaults = new std::vector<at::Generator>();
  for (DeviceIndex d = 0; d < g_device_count; ++d) {
    defaults->push_back(make_generator(d));
  }
  return defaults;
}
std::vector<at::Generator>* const g_default_generators = make_defaults();

// ------------------------------------------------------------------- hooks

struct SimHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return g_device_count > 0; }
  bool hasPrimaryContext(DeviceIndex /*device*/) const override { return true; }
  DeviceIndex deviceCount() const override { return g_device_count; }
  void setCurrentDevice(DeviceIndex device) const override {
    check_index(device);
    t_device = device;
  }
  DeviceIndex getCurrentDevice() const override { return t_device; }
  DeviceIndex exchangeDevice(DeviceIndex device) const override {
    const DeviceIndex old = t_device;
    setCurrentDevice(device);
    return old;
  }
  DeviceIndex maybeExchangeDevice(DeviceIndex device) const override {
    return exchangeDevice(device);
  }
  const at::Generator& getDefaultGenerator(DeviceIndex device) const override {
    return default_generator(device < 0 ? t_device : device);
  }
  at::Generator getNewGenerator(DeviceIndex device) const override {
    const DeviceIndex index = device < 0 ? t_device : device;
    check_index(index);
    return make_generator(index);
  }
  at::Device getDeviceFromPtr(void* /*data*/) const override {
    return {kDeviceType, t_device};
  }
  bool isPinnedPtr(const void* data) const override {
    std::lock_guard<std::mutex> lock(g_pinned->mu);
    return g_pinned->blocks.count(data) != 0;
  }
  at::Allocator* getPinnedMemoryAllocator() const override { return &g_pinned_allocator; }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t nbytes) const override {
    at::native::resize_bytes_cpu(storage.unsafeGetStorageImpl(), nbytes);
  }
};

const bool g_hooks_registered = [] {
  at::RegisterPrivateUse1HooksInterface(new SimHooks());
  return true;
}();

// -------------------------------------------------------------- settings

std::atomic<bool> g_mps_rules{false};
std::atomic<bool> g_fallback_enabled{false};

// The Python loader's entry points, as torch.ops.simaccel.*.
int64_t op_device_count() { return g_device_count; }

std::vector<int64_t> op_memory_stats(int64_t device) {
  check_index(static_cast<DeviceIndex>(device));
  const MemoryStats& s = g_stats[device];
  std::vector<int64_t> out;
  for (const Counter* c : {&s.bytes, &s.blocks}) {
    out.push_back(c->current.load(std::memory_order_relaxed));
    out.push_back(c->peak.load(std::memory_order_relaxed));
    out.push_back(c->allocated.load(std::memory_order_relaxed));
    out.push_back(c->freed.load(std::memory_order_relaxed));
  }
  return out;
}

void op_reset_peak(int64_t device) {
  check_index(static_cast<DeviceIndex>(device));
  reset_peak(static_cast<DeviceIndex>(device));
}

void op_reset_accumulated(int64_t device) {
  check_index(static_cast<DeviceIndex>(device));
  reset_accumulated(static_cast<DeviceIndex>(device));
}

at::Generator op_default_generator(int64_t device) {
  return default_generator(static_cast<DeviceIndex>(device));
}

void op_set_mps_rules(bool on) { g_mps_rules.store(on); }
bool op_mps_rules() { return g_mps_rules.load(); }
void op_set_fallback_enabled(bool on) { g_fallback_enabled.store(on); }
bool op_fallback_enabled() { return g_fallback_enabled.load(); }

}  // namespace

// ------------------------------------------------------------- shared API

c10::DeviceIndex device_count() noexcept { return g_device_count; }
c10::DeviceIndex current_device() noexcept { return t_device; }
c10::Allocator* device_allocator() { return &g_device_allocator; }

c10::DataPtr adopt_host_memory(const c10::Storage& host, c10::DeviceIndex device) {
  const size_t nbytes = host.nbytes();
  // mutable_data() first: a copy-on-write host buffer becomes our own.
  void* data = host.unsafeGetStorageImpl()->mutable_data();
  count_alloc(device, nbytes);
  auto* block = new AdoptedBlock{host, nbytes, device};
  return {data, block, &free_adopted, c10::Device(kDeviceType, device)};
}

c10::Storage adopt_host_storage(const c10::Storage& host, c10::DeviceIndex device) {
  const size_t nbytes = host.nbytes();
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, adopt_host_memory(host, device),
                      &g_device_allocator, /*resizable=*/true);
}

at::Generator host_generator(const at::Generator& device_generator) {
  return static_cast<SimGenerator*>(device_generator.unsafeGetGeneratorImpl())->host_;
}

const at::Generator& default_generator(c10::DeviceIndex device) {
  check_index(device);
  return (*g_default_generators)[device];
}

bool mps_rules() noexcept { return g_mps_rules.load(std::memory_order_relaxed); }
bool fallback_enabled() noexcept { return g_fallback_enabled.load(std::memory_order_relaxed); }

void check_dtype(c10::ScalarType dtype) {
  if (C10_UNLIKELY(dtype == c10::ScalarType::Double && mps_rules())) {
    // MPS's own words (aten/src/ATen/mps/EmptyTensor.cpp), so that code
    // matching them behaves here as on a Mac.
    TORCH_CHECK_TYPE(false,
                     "Cannot convert a MPS Tensor to float64 dtype as the MPS framework "
                     "doesn't support float64. Please use float32 instead.");
  }
  if (C10_UNLIKELY(dtype == c10::ScalarType::ComplexDouble && mps_rules())) {
    // MPS's words for complex128 (aten/src/ATen/native/mps/OperationUtils.mm).
    TORCH_CHECK_TYPE(false,
                     "Trying to convert ComplexDouble to the MPS backend but it does not "
                     "have support for that dtype.");
  }
}

}  // namespace simaccel

TORCH_LIBRARY(simaccel, m) {
  m.def("device_count() -> int", &simaccel::op_device_count);
  m.def("memory_stats(int device) -> int[]", &simaccel::op_memory_stats);
  m.def("reset_peak_memory_stats(int device) -> ()", &simaccel::op_reset_peak);
  m.def("reset_accumulated_memory_stats(int device) -> ()", &simaccel::op_reset_accumulated);
  m.def("default_generator(int device) -> Generator?", &simaccel::op_default_generator);
  m.def("set_mps_rules(bool enabled) -> ()", &simaccel::op_set_mps_rules);
  m.def("mps_rules() -> bool", &simaccel::op_mps_rules);
  m.def("set_fallback_enabled(bool enabled) -> ()", &simaccel::op_set_fallback_enabled);
  m.def("fallback_enabled() -> bool", &simaccel::op_fallback_enabled);
}

// Autocast on the device follows torch's CUDA policy lists: matrix products
// and convolutions in the lower precision, reductions and losses in float32.
// (In namespace at: the list macros name Tensor, Scalar... unqualified.)
namespace at {
TORCH_LIBRARY_IMPL(_, AutocastPrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
#define SIMACCEL_LOWER_PRECISION_FP(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, lower_precision_fp)
  AT_FORALL_LOWER_PRECISION_FP(SIMACCEL_LOWER_PRECISION_FP)
#define SIMACCEL_FP32(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32)
  AT_FORALL_FP32(SIMACCEL_FP32)
#define SIMACCEL_FP32_SET_OPT_DTYPE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32_set_opt_dtype)
  AT_FORALL_FP32_SET_OPT_DTYPE(SIMACCEL_FP32_SET_OPT_DTYPE)
  AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE(KERNEL_DIFFERENT_REDISPATCH_SIGNATURE_PRIVATEUSEONE)
#define SIMACCEL_PROMOTE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, promote)
  AT_FORALL_PROMOTE(SIMACCEL_PROMOTE)
#undef SIMACCEL_LOWER_PRECISION_FP
#undef SIMACCEL_FP32
#undef SIMACCEL_FP32_SET_OPT_DTYPE
#undef SIMACCEL_PROMOTE
}
}  // namespace at
