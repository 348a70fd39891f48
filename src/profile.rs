//! A per-op profiler. With `VLK_PROFILE=trace.json` in the environment, or after [`enable`] (the
//! binary's `--profile FILE`), every op, backward step, optimiser step and kernel launch is
//! recorded with its input shapes, dtype, device and time. [`finish`] writes a Chrome trace (open
//! it in <https://ui.perfetto.dev> or chrome://tracing) and prints the time by op to stderr. The
//! binary calls it at exit; a library user calls `vlk::profile::finish()` when done.
//!
//! Ops nest (an op built from other ops, a backward step made of ops), so each op also gets a
//! self time, its children excluded: the shares of the table sum to 100%. On a GPU an op's host
//! time is only the time to launch its kernels, so kernels are timed with CUDA events and drawn
//! on a track of their own; the emulator runs kernels synchronously, and they are timed on the
//! host inside the op that launched them. Not profiling, a scope costs one relaxed atomic load.

use crate::backend::gpu::runtime::LaunchConfig;
use crate::{DType, Device, Error, Result, Tensor};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// UNREAD until VLK_PROFILE is first looked at; [`enable`] and [`finish`] switch it ON and OFF.
static MODE: AtomicU8 = AtomicU8::new(UNREAD);
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

/// Trace track ids of device timelines: this plus the GPU ordinal (host threads count from 1).
const GPU_TRACK: u64 = 1 << 20;

/// Whether ops are being recorded (looks at VLK_PROFILE the first time).
#[inline]
pub fn is_enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => enable_from_env(),
    }
}

#[cold]
fn enable_from_env() -> bool {
    let mut recorder = lock();
    if MODE.load(Ordering::Relaxed) == UNREAD {
        match std::env::var_os("VLK_PROFILE").filter(|p| !p.is_empty()) {
            Some(path) => {
                *recorder = Some(Recorder::new(path.into()));
                MODE.store(ON, Ordering::Relaxed);
            }
            None => MODE.store(OFF, Ordering::Relaxed),
        }
    }
    MODE.load(Ordering::Relaxed) == ON
}

/// Starts recording for a trace at `path` (replacing VLK_PROFILE's path if that already started).
pub fn enable(path: impl Into<PathBuf>) {
    let mut recorder = lock();
    match recorder.as_mut() {
        Some(r) => r.path = path.into(),
        None => *recorder = Some(Recorder::new(path.into())),
    }
    MODE.store(ON, Ordering::Relaxed);
}

/// Stops recording, writes the trace and prints the table by op to stderr. `None` when nothing
/// was being recorded.
pub fn finish() -> Result<Option<Summary>> {
    if !is_enabled() {
        return Ok(None);
    }
    let taken = {
        let mut recorder = lock();
        MODE.store(OFF, Ordering::Relaxed);
        recorder.take()
    };
    let Some(mut recorder) = taken else { return Ok(None) };
    let wall = recorder.epoch.elapsed();
    recorder.resolve_device_kernels()?;
    let bytes = serde_json::to_vec(&recorder.trace()).map_err(|e| Error::file(&recorder.path, e))?;
    crate::io::write_atomic(&recorder.path, &bytes)?;
    let summary = recorder.summary(wall);
    eprint!("{summary}");
    Ok(Some(summary))
}

/// Times op `name` on `inputs` until the scope is dropped; `None`, at no cost, when not profiling.
#[inline]
#[must_use = "the op is timed until the scope is dropped"]
pub fn op<'a>(name: &'static str, inputs: impl IntoIterator<Item = &'a Tensor>) -> Option<Scope> {
    if !is_enabled() {
        return None;
    }
    Some(Scope::open(Cow::Borrowed(name), TensorArgs::of(inputs)))
}

/// Times a stretch of work that is not one op on tensors (an optimiser step, a training step).
#[inline]
#[must_use = "the work is timed until the scope is dropped"]
pub fn scope(name: &'static str) -> Option<Scope> {
    if !is_enabled() {
        return None;
    }
    Some(Scope::open(Cow::Borrowed(name), None))
}

/// Times the backward of op `name` (recorded as `name.backward`) on the op's inputs.
#[inline]
pub(crate) fn backward<'a>(name: &'static str, inputs: impl IntoIterator<Item = &'a Tensor>) -> Option<Scope> {
    if !is_enabled() {
        return None;
    }
    Some(Scope::open(Cow::Owned(format!("{name}.backward")), TensorArgs::of(inputs)))
}

/// Times a copy of host data of `shape` to `device` (nothing on the CPU, where no copy is made).
#[inline]
pub(crate) fn upload(shape: &[usize], dtype: DType, device: Device) -> Option<Scope> {
    if device == Device::Cpu || !is_enabled() {
        return None;
    }
    let args = TensorArgs {
        shapes: vec![shape.to_vec()],
        dtype,
        device,
    };
    Some(Scope::open(Cow::Borrowed("upload"), Some(args)))
}

/// Times a kernel that runs while the host waits (the emulator) until the scope is dropped.
#[inline]
pub(crate) fn kernel(name: &str, cfg: LaunchConfig, device: Device) -> Option<KernelScope> {
    if !is_enabled() {
        return None;
    }
    Some(KernelScope {
        name: format!("kernel:{name}"),
        launch: Launch { cfg, device },
        start: Instant::now(),
    })
}

/// A kernel's time on a device, known once the device has run it.
pub(crate) trait DeviceTiming: Send {
    /// Start (since profiling began) and duration, waiting for the kernel if it has not run yet.
    fn resolve(&self) -> Result<(Duration, Duration)>;
}

/// Records a kernel queued on `device`, to be timed when the trace is written.
pub(crate) fn device_kernel(name: &str, cfg: LaunchConfig, device: Device, timing: Box<dyn DeviceTiming>) {
    if let Some(r) = lock().as_mut() {
        r.device_kernels.push(DeviceKernel {
            name: format!("kernel:{name}"),
            launch: Launch { cfg, device },
            timing,
        });
    }
}

/// Time since profiling began (zero when not profiling): where device timelines are anchored.
pub(crate) fn since_start() -> Duration {
    lock().as_ref().map_or(Duration::ZERO, |r| r.epoch.elapsed())
}

fn lock() -> MutexGuard<'static, Option<Recorder>> {
    RECORDER.lock().unwrap_or_else(|e| e.into_inner())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

static NEXT_TRACK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's track in the trace.
    static TRACK: u64 = NEXT_TRACK.fetch_add(1, Ordering::Relaxed);
    /// The ops open on this thread, innermost last.
    static OPEN: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

struct Frame {
    name: Cow<'static, str>,
    /// Time spent in ops nested directly inside this one.
    children: Duration,
}

/// Shapes of an op's inputs, and the first input's dtype and device.
struct TensorArgs {
    shapes: Vec<Vec<usize>>,
    dtype: DType,
    device: Device,
}

impl TensorArgs {
    fn of<'a>(inputs: impl IntoIterator<Item = &'a Tensor>) -> Option<TensorArgs> {
        let mut inputs = inputs.into_iter().peekable();
        let (dtype, device) = inputs.peek().map(|t| (t.dtype(), t.device()))?;
        Some(TensorArgs {
            shapes: inputs.map(|t| t.dims().to_vec()).collect(),
            dtype,
            device,
        })
    }
}

#[derive(Clone, Copy)]
struct Launch {
    cfg: LaunchConfig,
    device: Device,
}

enum Args {
    Tensors(Option<TensorArgs>),
    Launch(Launch),
}

impl Args {
    fn to_json(&self) -> Option<Value> {
        match self {
            Args::Tensors(None) => None,
            Args::Tensors(Some(a)) => Some(json!({"shapes": a.shapes, "dtype": a.dtype.name(), "device": a.device.to_string()})),
            Args::Launch(Launch { cfg, device }) => Some(json!({
                "grid": [cfg.grid.0, cfg.grid.1, cfg.grid.2],
                "block": [cfg.block.0, cfg.block.1, cfg.block.2],
                "shared_bytes": cfg.shared_mem_bytes,
                "device": device.to_string(),
            })),
        }
    }
}

/// One complete event of the trace.
struct Event {
    name: Cow<'static, str>,
    is_kernel: bool,
    track: u64,
    start_ns: u64,
    dur_ns: u64,
    /// Ops: time outside nested ops. Kernels: the duration.
    self_ns: u64,
    /// An op of the same name encloses this one, so its time is already in that one's total.
    recursive: bool,
    args: Args,
}

struct DeviceKernel {
    name: String,
    launch: Launch,
    timing: Box<dyn DeviceTiming>,
}

struct Recorder {
    path: PathBuf,
    epoch: Instant,
    events: Vec<Event>,
    device_kernels: Vec<DeviceKernel>,
    /// Track id to its name in the trace.
    tracks: BTreeMap<u64, String>,
}

impl Recorder {
    fn new(path: PathBuf) -> Recorder {
        Recorder {
            path,
            epoch: Instant::now(),
            events: Vec::new(),
            device_kernels: Vec::new(),
            tracks: BTreeMap::new(),
        }
    }

    /// Adds an event of this thread that began at `start`.
    fn push_host(&mut self, start: Instant, mut event: Event) {
        event.start_ns = nanos(start.saturating_duration_since(self.epoch));
        self.tracks.entry(event.track).or_insert_with(|| {
            let thread = std::thread::current();
            thread.name().map_or_else(|| format!("thread {}", event.track), str::to_string)
        });
        self.events.push(event);
    }

    fn resolve_device_kernels(&mut self) -> Result<()> {
        for k in std::mem::take(&mut self.device_kernels) {
            let (start, dur) = k
                .timing
                .resolve()
                .map_err(|e| Error::msg(format!("profile: cannot time {} on {}: {e}", k.name, k.launch.device)))?;
            let track = match k.launch.device {
                Device::Cuda(n) => GPU_TRACK + n as u64,
                _ => GPU_TRACK,
            };
            self.tracks.entry(track).or_insert_with(|| format!("gpu {}", k.launch.device));
            self.events.push(Event {
                name: Cow::Owned(k.name),
                is_kernel: true,
                track,
                start_ns: nanos(start),
                dur_ns: nanos(dur),
                self_ns: nanos(dur),
                recursive: false,
                args: Args::Launch(k.launch),
            });
        }
        Ok(())
    }

    fn trace(&mut self) -> Value {
        let pid = std::process::id();
        let micros = |ns: u64| ns as f64 / 1e3;
        let mut out = vec![json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": "vlk"}})];
        for (tid, name) in &self.tracks {
            out.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}));
        }
        self.events.sort_by_key(|e| (e.track, e.start_ns, std::cmp::Reverse(e.dur_ns)));
        for e in &self.events {
            let mut v = json!({
                "name": e.name,
                "cat": if e.is_kernel { "kernel" } else { "op" },
                "ph": "X",
                "ts": micros(e.start_ns),
                "dur": micros(e.dur_ns),
                "pid": pid,
                "tid": e.track,
            });
            if let Some(args) = e.args.to_json() {
                v["args"] = args;
            }
            out.push(v);
        }
        json!({"traceEvents": out, "displayTimeUnit": "ms"})
    }

    fn summary(&self, wall: Duration) -> Summary {
        let mut ops: HashMap<&str, OpTime> = HashMap::new();
        let mut kernels: HashMap<&str, OpTime> = HashMap::new();
        for e in &self.events {
            let table = if e.is_kernel { &mut kernels } else { &mut ops };
            let row = table.entry(e.name.as_ref()).or_insert_with(|| OpTime {
                name: e.name.to_string(),
                calls: 0,
                self_time: Duration::ZERO,
                total: Duration::ZERO,
            });
            row.calls += 1;
            row.self_time += Duration::from_nanos(e.self_ns);
            if !e.recursive {
                row.total += Duration::from_nanos(e.dur_ns);
            }
        }
        let by_time = |table: HashMap<&str, OpTime>| {
            let mut rows: Vec<OpTime> = table.into_values().collect();
            rows.sort_by(|a, b| b.self_time.cmp(&a.self_time).then_with(|| a.name.cmp(&b.name)));
            rows
        };
        Summary {
            path: self.path.clone(),
            wall,
            ops: by_time(ops),
            kernels: by_time(kernels),
        }
    }
}

/// An open op; records its event when dropped. Drop scopes in the reverse order of opening (as
/// locals are), on the thread that opened them.
#[must_use = "a scope times until it is dropped"]
pub struct Scope {
    start: Instant,
    args: Option<TensorArgs>,
    _same_thread: PhantomData<*const ()>,
}

impl Scope {
    fn open(name: Cow<'static, str>, args: Option<TensorArgs>) -> Scope {
        OPEN.with(|open| {
            open.borrow_mut().push(Frame {
                name,
                children: Duration::ZERO,
            })
        });
        Scope {
            start: Instant::now(),
            args,
            _same_thread: PhantomData,
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let closed = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let frame = open.pop()?;
            if let Some(parent) = open.last_mut() {
                parent.children += elapsed;
            }
            let recursive = open.iter().any(|f| f.name == frame.name);
            Some((frame, recursive))
        });
        let Some((frame, recursive)) = closed else { return };
        let event = Event {
            name: frame.name,
            is_kernel: false,
            track: TRACK.with(|t| *t),
            start_ns: 0,
            dur_ns: nanos(elapsed),
            self_ns: nanos(elapsed.saturating_sub(frame.children)),
            recursive,
            args: Args::Tensors(self.args.take()),
        };
        if let Some(r) = lock().as_mut() {
            r.push_host(self.start, event);
        }
    }
}

/// A kernel timed on the host; records its event when dropped.
pub(crate) struct KernelScope {
    name: String,
    launch: Launch,
    start: Instant,
}

impl Drop for KernelScope {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let event = Event {
            name: Cow::Owned(std::mem::take(&mut self.name)),
            is_kernel: true,
            track: TRACK.with(|t| *t),
            start_ns: 0,
            dur_ns: nanos(elapsed),
            self_ns: nanos(elapsed),
            recursive: false,
            args: Args::Launch(self.launch),
        };
        if let Some(r) = lock().as_mut() {
            r.push_host(self.start, event);
        }
    }
}

/// Where the time of a profiled run went, by op and by kernel.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The trace file written.
    pub path: PathBuf,
    /// From the start of profiling to [`finish`].
    pub wall: Duration,
    /// Ops (backward steps included), largest self time first.
    pub ops: Vec<OpTime>,
    /// Kernels (device time on a GPU, host time on the emulator), largest first.
    pub kernels: Vec<OpTime>,
}

#[derive(Debug, Clone)]
pub struct OpTime {
    pub name: String,
    pub calls: usize,
    /// Time in the op itself, the ops nested in it excluded.
    pub self_time: Duration,
    /// Time from entry to exit, nested ops included (an op nested in itself counted once).
    pub total: Duration,
}

impl Summary {
    /// Self time of all ops together: the total the shares are of.
    pub fn op_time(&self) -> Duration {
        self.ops.iter().map(|r| r.self_time).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let calls: usize = self.ops.iter().map(|r| r.calls).sum();
        let op_time = self.op_time();
        writeln!(
            f,
            "profile: {calls} op calls, {:.1} ms in ops of {:.1} ms profiled",
            ms(op_time),
            ms(self.wall)
        )?;
        let width = self.ops.iter().chain(&self.kernels).map(|r| r.name.len()).max().unwrap_or(0).max(6);
        let table = |f: &mut fmt::Formatter<'_>, title: &str, time: &str, rows: &[OpTime], inclusive: bool| -> fmt::Result {
            let all: Duration = rows.iter().map(|r| r.self_time).sum();
            write!(f, "{title:<width$} {:>7} {time:>10} {:>6} {:>10}", "calls", "share", "mean us")?;
            writeln!(f, "{}", if inclusive { format!(" {:>10}", "incl ms") } else { String::new() })?;
            for r in rows {
                let share = if all.is_zero() {
                    0.0
                } else {
                    100.0 * r.self_time.as_secs_f64() / all.as_secs_f64()
                };
                let mean_us = r.self_time.as_secs_f64() * 1e6 / r.calls.max(1) as f64;
                write!(
                    f,
                    "{:<width$} {:>7} {:>10.2} {share:>5.1}% {mean_us:>10.1}",
                    r.name,
                    r.calls,
                    ms(r.self_time)
                )?;
                writeln!(
                    f,
                    "{}",
                    if inclusive {
                        format!(" {:>10.2}", ms(r.total))
                    } else {
                        String::new()
                    }
                )?;
            }
            Ok(())
        };
        table(f, "op", "self ms", &self.ops, true)?;
        if !self.kernels.is_empty() {
            table(f, "kernel", "ms", &self.kernels, false)?;
        }
        writeln!(
            f,
            "trace: {} (open it in https://ui.perfetto.dev or chrome://tracing)",
            self.path.display()
        )
    }
}
