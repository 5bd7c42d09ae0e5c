//! [`Communicator`] over NCCL: one rank per GPU and process, collectives on the backend's stream.
//!
//! - We open libnccl ourselves (`JENGA_NCCL_LIB`, `libnccl.so.2`, `libnccl.so`, a pip
//!   `nvidia/nccl/lib`), only when an id or a communicator is made: cudarc's loader tries
//!   `libnccl.so.13` … `.so.1` (CUDA's major, never NCCL's `.so.2`) and panics when none loads.
//!   cudarc's `nccl::sys` gives the types; results come back as `c_int`, since its `ncclResult_t`
//!   differs between NCCL versions and an unknown enum value would be undefined behaviour.
//! - The communicator is non-blocking (`config.blocking = 0`) and each collective waits for its
//!   own completion in a poll loop, so a result returned `Ok` is final and any wait can be given
//!   up: on this rank's abort, an NCCL error, the timeout, or another rank's abort. NCCL does not
//!   tell a rank that a peer aborted, so `abort` also leaves a note in the temp dir, named by the
//!   id, that the ranks on this host poll (across hosts, the launcher and the timeout remain).
//! - Before its data, each collective all-gathers a small fixed-size header (op, sequence number,
//!   sizes): ranks in different collectives or disagreeing on a size all get the same clear error
//!   instead of a hang or mixed-up data. As with [`jenga_tensor::LocalComm`], every rank enters
//!   every collective. A collective that fails aborts the communicator (the others are waiting).

use crate::error::dev;
use crate::{CudaBackend, CudaTensor};
use cudarc::driver::sys::{cuEventQuery, CUresult};
use cudarc::driver::{result as cu, CudaContext, CudaEvent, CudaSlice, CudaStream, DriverError};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use cudarc::nccl::sys::{ncclComm_t as Raw, ncclDataType_t as Ty, ncclRedOp_t, ncclUniqueId};
use jenga_tensor::{Communicator, Error, Result, TensorMeta};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const OK: c_int = 0;
const IN_PROGRESS: c_int = 7;
const BF16: Ty = Ty::ncclBfloat16;
type Stream = *mut c_void;
type Ptr = *mut c_void;

macro_rules! nccl_lib {
    ($($f:ident = $sym:literal fn($($a:ty),*) -> $r:ty;)*) => {
        /// The entry points we use, resolved once.
        struct Lib { $($f: unsafe extern "C" fn($($a),*) -> $r,)* _lib: libloading::Library }
        fn resolve(lib: libloading::Library, at: &Path) -> std::result::Result<Lib, String> {
            let no = |s: &str, e| format!("{}: no {s} (NCCL older than 2.14?): {e}", at.display());
            Ok(Lib { $($f: *unsafe { lib.get($sym.as_bytes()) }.map_err(|e| no($sym, e))?,)* _lib: lib })
        }
    };
}
nccl_lib! {
    unique_id = "ncclGetUniqueId" fn(*mut ncclUniqueId) -> c_int;
    init = "ncclCommInitRankConfig" fn(*mut Raw, c_int, ncclUniqueId, c_int, *mut Config) -> c_int;
    async_error = "ncclCommGetAsyncError" fn(Raw, *mut c_int) -> c_int;
    abort = "ncclCommAbort" fn(Raw) -> c_int;
    destroy = "ncclCommDestroy" fn(Raw) -> c_int;
    error_string = "ncclGetErrorString" fn(c_int) -> *const c_char;
    last_error = "ncclGetLastError" fn(Raw) -> *const c_char;
    group_start = "ncclGroupStart" fn() -> c_int;
    group_end = "ncclGroupEnd" fn() -> c_int;
    send = "ncclSend" fn(Ptr, usize, Ty, c_int, Raw, Stream) -> c_int;
    recv = "ncclRecv" fn(Ptr, usize, Ty, c_int, Raw, Stream) -> c_int;
    all_gather = "ncclAllGather" fn(Ptr, Ptr, usize, Ty, Raw, Stream) -> c_int;
    all_reduce = "ncclAllReduce" fn(Ptr, Ptr, usize, Ty, ncclRedOp_t, Raw, Stream) -> c_int;
    broadcast = "ncclBroadcast" fn(Ptr, Ptr, usize, Ty, c_int, Raw, Stream) -> c_int;
}

/// `ncclConfig_t` up to `netName` (NCCL 2.17): NCCL reads `size` bytes, defaults the rest.
#[repr(C)]
struct Config {
    size: usize,
    magic: u32,
    version: u32,
    blocking: c_int,
    /// cgaClusterSize, minCTAs, maxCTAs: undefined (`INT_MIN`), NCCL's defaults.
    ctas: [c_int; 3],
    net_name: *const c_char,
}

fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| dev(e.clone()))
}

fn load() -> std::result::Result<Lib, String> {
    let mut names: Vec<PathBuf> = std::env::var_os("JENGA_NCCL_LIB")
        .into_iter()
        .map(PathBuf::from)
        .collect();
    names.extend(["libnccl.so.2", "libnccl.so"].map(PathBuf::from));
    // torch's wheels bring NCCL as a python package, outside the loader's search path
    let venv = std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("lib"));
    let roots = venv
        .into_iter()
        .chain(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    for py in roots.flat_map(std::fs::read_dir).flatten().flatten() {
        for pkgs in ["dist-packages", "site-packages"] {
            let p = py.path().join(pkgs).join("nvidia/nccl/lib/libnccl.so.2");
            if py.file_name().to_string_lossy().starts_with("python3") && p.is_file() {
                names.push(p);
            }
        }
    }
    let found = names
        .iter()
        .find_map(|n| unsafe { libloading::Library::new(n) }.ok().map(|l| (l, n)));
    let (lib, at) = found.ok_or_else(|| {
        format!("NCCL is not available: no libnccl could be loaded (tried {names:?}); install NCCL 2 or set JENGA_NCCL_LIB to its libnccl.so.2")
    })?;
    resolve(lib, at)
}

fn text(p: *const c_char) -> String {
    match p.is_null() {
        true => String::new(),
        false => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
    }
}

fn err(op: &str, msg: impl std::fmt::Display) -> Error {
    dev(format!("NCCL {op}: {msg}"))
}

fn fnv(values: impl IntoIterator<Item = u64>) -> u64 {
    let step = |h: u64, v: u64| (h ^ v).wrapping_mul(0x100_0000_01b3);
    values.into_iter().fold(0xcbf2_9ce4_8422_2325, step)
}

/// The 128-byte id all ranks of one communicator are made with (one process makes it, the
/// launcher hands it to the others as hex).
#[derive(Clone, PartialEq, Eq)]
pub struct NcclId([u8; 128]);

impl NcclId {
    /// A fresh id (`ncclGetUniqueId`, no GPU needed); `Err` when libnccl cannot be loaded. Its
    /// bootstrap root lives in this process, which must outlive the communicator's set-up.
    pub fn new() -> Result<Self> {
        let l = lib()?;
        let mut id = ncclUniqueId { internal: [0; 128] };
        match unsafe { (l.unique_id)(&mut id) } {
            OK => Ok(NcclId(id.internal.map(|c| c as u8))),
            r => Err(err("ncclGetUniqueId", text(unsafe { (l.error_string)(r) }))),
        }
    }
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut id = [0u8; 128];
        let digits = |i: usize| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok();
        let hex = s.len() == 256 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = hex && (0..128).all(|i| digits(i).map(|v| id[i] = v).is_some());
        match ok {
            true => Ok(NcclId(id)),
            false => Err(Error::invalid(
                "NCCL id",
                format!(
                    "expected 256 hex digits, got {} characters",
                    s.chars().count()
                ),
            )),
        }
    }
}

impl std::fmt::Debug for NcclId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclId({}…)", &self.to_hex()[..16])
    }
}

struct Handle(Raw);
// SAFETY: the handle is used only while `NcclComm::state` is held, and never after an abort.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

/// A collective's sequence number and header buffers (this rank's, everyone's).
struct Ops {
    seq: u64,
    mine: CudaSlice<u64>,
    all: CudaSlice<u64>,
}

/// One rank of an NCCL communicator on a [`CudaBackend`]'s stream.
pub struct NcclComm {
    rank: usize,
    world: usize,
    lib: &'static Lib,
    comm: Handle,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    done: CudaEvent,
    /// `Some(why)` once aborted (the handle is gone); held around every NCCL call.
    state: Mutex<Option<String>>,
    /// Held through each collective: one at a time.
    ops: Mutex<Ops>,
    /// The note `abort` leaves for the ranks on this host.
    board: PathBuf,
    timeout: Duration,
}

const OPS: [&str; 4] = ["init", "exchange", "all_reduce", "broadcast"];
const EXCHANGE: usize = 1;
const REDUCE: usize = 2;
const BROADCAST: usize = 3;
const NONE: u64 = u64::MAX;

/// Header length: `[op, seq]`, then room for an exchange's sizes or a one-tensor op's 3 values.
fn header_len(world: usize) -> usize {
    2 + (2 * world).max(3)
}

impl NcclComm {
    /// Rank `rank` of `world` (`ncclCommInitRankConfig`; waits for every rank to join). A wait
    /// gives up after `JENGA_NCCL_TIMEOUT` seconds (default 600; see [`Self::with_timeout`]).
    pub fn new(be: &CudaBackend, rank: usize, world: usize, id: &NcclId) -> Result<Self> {
        if rank >= world || world > i32::MAX as usize {
            return Err(Error::invalid(
                "NcclComm::new",
                format!("rank {rank} of {world}"),
            ));
        }
        let lib = lib()?;
        let (ctx, stream) = (be.context().clone(), be.stream().clone());
        let cu = |what| move |e: DriverError| err("init", format!("rank {rank}: {what}: {e:?}"));
        ctx.bind_to_thread().map_err(cu("binding the context"))?;
        let h = header_len(world);
        let mine = unsafe { stream.alloc::<u64>(h) }.map_err(cu("header"))?;
        let all = unsafe { stream.alloc::<u64>(h * world) }.map_err(cu("header"))?;
        let done = ctx.new_event(None).map_err(cu("event"))?;
        let mut cfg = Config {
            size: std::mem::size_of::<Config>(),
            magic: 0xcafe_beef,
            version: 21700,
            blocking: 0,
            ctas: [c_int::MIN; 3],
            net_name: std::ptr::null(),
        };
        let uid = ncclUniqueId {
            internal: id.0.map(|b| b as c_char),
        };
        let mut raw: Raw = std::ptr::null_mut();
        let r = unsafe { (lib.init)(&mut raw, world as c_int, uid, rank as c_int, &mut cfg) };
        if (r != OK && r != IN_PROGRESS) || raw.is_null() {
            let why = text(unsafe { (lib.error_string)(r) });
            return Err(err("init", format!("rank {rank} of {world}: {why}")));
        }
        let secs = std::env::var("JENGA_NCCL_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok());
        let note = format!("jenga-nccl-{:016x}.abort", fnv(id.0.map(u64::from)));
        let c = NcclComm {
            rank,
            world,
            lib,
            comm: Handle(raw),
            ctx,
            stream,
            done,
            state: Mutex::new(None),
            ops: Mutex::new(Ops { seq: 0, mine, all }),
            board: std::env::temp_dir().join(note),
            timeout: Duration::from_secs_f64(secs.unwrap_or(600.0)),
        };
        c.guarded(0, be, |_| c.finish("init", false))?;
        Ok(c)
    }

    /// The same communicator, giving up a wait after `t` instead.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn live(&self, op: &str) -> Result<MutexGuard<'_, Option<String>>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*st {
            Some(why) => Err(dev(format!("NCCL {op} abandoned: {why}"))),
            None => Ok(st),
        }
    }

    /// Run collective `op`; if it fails, abort: its NCCL state can't be trusted, the others wait.
    fn guarded<T>(
        &self,
        op: usize,
        be: &CudaBackend,
        f: impl FnOnce(&mut Ops) -> Result<T>,
    ) -> Result<T> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.live(OPS[op])?);
        let r = match Arc::ptr_eq(be.stream(), &self.stream) {
            false => Err(err(OPS[op], "the communicator was made on another backend")),
            true => self
                .ctx
                .bind_to_thread()
                .map_err(|e| err(OPS[op], format!("{e:?}"))),
        };
        let r = r.and_then(|_| f(&mut ops));
        r.inspect_err(|e| self.abort_as(format!("rank {}: {e}", self.rank), true))
    }

    /// An NCCL result as a `Result`, with what was being done and NCCL's last message.
    fn check(&self, op: &str, what: &str, r: c_int) -> Result<()> {
        if r == OK || r == IN_PROGRESS {
            return Ok(());
        }
        let (msg, last) = unsafe {
            (
                (self.lib.error_string)(r),
                (self.lib.last_error)(self.comm.0),
            )
        };
        Err(err(op, format!("{what}: {} ({})", text(msg), text(last))))
    }

    /// Make NCCL calls with the live handle and the stream, then wait until they have run.
    fn issue(&self, op: &str, f: impl FnOnce(Raw, Stream) -> Result<()>) -> Result<()> {
        let st = self.live(op)?;
        f(self.comm.0, self.stream.cu_stream() as _)?;
        drop(st);
        self.finish(op, true)
    }

    /// Wait until the calls just made are enqueued and, if `gpu`, have run on the stream.
    fn finish(&self, op: &str, gpu: bool) -> Result<()> {
        let t0 = Instant::now();
        let (mut queued, mut polls) = (false, 0u32);
        loop {
            let st = self.live(op)?;
            if !queued {
                let mut e = OK;
                let r = unsafe { (self.lib.async_error)(self.comm.0, &mut e) };
                self.check(op, "asynchronous error", if r == OK { e } else { r })?;
                if e == OK && !gpu {
                    return Ok(());
                } else if e == OK {
                    self.done
                        .record(&self.stream)
                        .map_err(|e| err(op, format!("{e:?}")))?;
                    queued = true;
                }
            } else {
                match unsafe { cuEventQuery(self.done.cu_event()) } {
                    CUresult::CUDA_SUCCESS => return Ok(()),
                    CUresult::CUDA_ERROR_NOT_READY => {}
                    e => return Err(err(op, format!("the stream failed: {e:?}"))),
                }
            }
            drop(st);
            polls += 1;
            if polls.is_multiple_of(64) {
                if let Ok(why) = std::fs::read_to_string(&self.board) {
                    self.abort_as(why, false);
                    drop(self.live(op)?); // fails now, naming the other rank's reason
                }
            }
            let waited = t0.elapsed();
            if waited > self.timeout {
                let (r, t) = (self.rank, self.timeout);
                return Err(err(
                    op,
                    format!("rank {r} waited {t:?} for the other ranks"),
                ));
            }
            // Spin briefly (a collective between busy GPUs ends in microseconds), then back off.
            match waited.as_micros() {
                0..2_000 => std::thread::yield_now(),
                2_000..50_000 => std::thread::sleep(Duration::from_micros(20)),
                _ => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    }

    /// Abort with `why`, the reason later calls name; `tell`: leave the note for the others.
    fn abort_as(&self, why: String, tell: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.is_some() {
            return;
        }
        // The note first: NCCL's abort may wait for the ranks on this node to abort theirs.
        if tell && !self.board.exists() {
            let tmp = self
                .board
                .with_extension(format!("{}.tmp", std::process::id()));
            if std::fs::write(&tmp, &why).is_ok() {
                let _ = std::fs::rename(&tmp, &self.board);
            }
        }
        // NCCL raises its abort flags (releasing this rank's kernels) at once, but the clean-up
        // after may block on peers that are gone: wait for it a while, then go on without it.
        let (lib, comm, ctx) = (self.lib, Handle(self.comm.0), self.ctx.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (_, comm) = (ctx.bind_to_thread(), comm); // the whole Handle moves here
            unsafe { (lib.abort)(comm.0) };
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(10));
        *st = Some(why);
    }

    /// All-gather this rank's header `[op, seq, args…]` (one size for every op, so ranks in
    /// different collectives still meet) and check that every rank is in the same collective.
    fn agree(&self, ops: &mut Ops, op: usize, args: &[u64]) -> Result<Vec<Vec<u64>>> {
        let (name, h) = (OPS[op], header_len(self.world));
        ops.seq += 1;
        let mut mine = vec![0u64; h];
        mine[..2].copy_from_slice(&[op as u64, ops.seq]);
        mine[2..2 + args.len()].copy_from_slice(args);
        if self.world == 1 {
            return Ok(vec![mine]);
        }
        let cu = |e: DriverError| err(name, format!("header: {e:?}"));
        self.stream
            .memcpy_htod(mine.as_slice(), &mut ops.mine)
            .map_err(cu)?;
        let (src, dst) = (
            ops.mine.device_ptr(&self.stream).0,
            ops.all.device_ptr_mut(&self.stream).0,
        );
        self.issue(name, |c, s| {
            let r = unsafe { (self.lib.all_gather)(src as _, dst as _, h, Ty::ncclUint64, c, s) };
            self.check(name, "all-gather of the headers", r)
        })?;
        let all = self.stream.clone_dtoh(&ops.all).map_err(cu)?;
        let rows: Vec<Vec<u64>> = all.chunks(h).map(<[u64]>::to_vec).collect();
        let Some(r) = rows.iter().position(|row| row[..2] != mine[..2]) else {
            return Ok(rows);
        };
        let other = OPS.get(rows[r][0] as usize).unwrap_or(&"?");
        let detail = format!(
            "rank {r} is in {other} #{}, rank {} in {name} #{}",
            rows[r][1], self.rank, ops.seq
        );
        Err(Error::invalid(name, detail))
    }

    /// A device copy (a rank's part for itself, a collective of one rank): bit-exact.
    fn copy(&self, be: &CudaBackend, x: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        let out = be.empty(shape)?;
        let (dst, src) = (out.device_ptr(&self.stream), x.device_ptr(&self.stream));
        if x.numel() > 0 {
            unsafe { cu::memcpy_dtod_async(dst, src, 2 * x.numel(), self.stream.cu_stream()) }
                .map_err(|e| err("copy to self", format!("{e:?}")))?;
        }
        Ok(out)
    }

    /// all_reduce / broadcast: every rank holds the same shape and root; `call(comm, stream,
    /// src, dst)` issues the NCCL collective.
    fn one_tensor(
        &self,
        be: &CudaBackend,
        op: usize,
        x: &CudaTensor,
        root: usize,
        call: impl FnOnce(Raw, Stream, Ptr, Ptr) -> c_int,
    ) -> Result<CudaTensor> {
        let name = OPS[op];
        self.guarded(op, be, |ops| {
            if root >= self.world {
                return Err(Error::invalid(
                    name,
                    format!("root {root} of {} ranks", self.world),
                ));
            }
            let mine = [
                x.numel() as u64,
                fnv(x.shape().iter().map(|&d| d as u64)),
                root as u64,
            ];
            for (r, row) in self.agree(ops, op, &mine)?.iter().enumerate() {
                if row[2..5] != mine {
                    let (n, root_r, shape) = (row[2], row[4], x.shape());
                    let detail = format!(
                        "rank {r} has {n} values (root {root_r}), rank {} {shape:?} (root {root})",
                        self.rank
                    );
                    return Err(Error::shape(name, detail));
                }
            }
            if self.world == 1 {
                return self.copy(be, x, x.shape());
            }
            let out = be.empty(x.shape())?;
            let (src, dst) = (x.device_ptr(&self.stream), out.device_ptr(&self.stream));
            let what = format!("{} values", x.numel());
            self.issue(name, |c, s| {
                self.check(name, &what, call(c, s, src as _, dst as _))
            })?;
            Ok(out)
        })
    }
}

impl Communicator<CudaBackend> for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn exchange(
        &self,
        be: &CudaBackend,
        send: &[Option<CudaTensor>],
        recv: &[Option<Vec<usize>>],
    ) -> Result<Vec<Option<CudaTensor>>> {
        self.guarded(EXCHANGE, be, |ops| {
            let (n, me) = (self.world, self.rank);
            if send.len() != n || recv.len() != n {
                let detail = format!(
                    "{} send and {} receive entries for {n} ranks",
                    send.len(),
                    recv.len()
                );
                return Err(Error::invalid("exchange", detail));
            }
            let numel = |t: &CudaTensor| t.numel() as u64;
            let mut args: Vec<u64> = send
                .iter()
                .map(|t| t.as_ref().map_or(NONE, numel))
                .collect();
            args.extend(recv.iter().map(|s| {
                s.as_ref()
                    .map_or(NONE, |s| s.iter().product::<usize>() as u64)
            }));
            let rows = self.agree(ops, EXCHANGE, &args)?;
            let says = |c: u64| {
                if c == NONE {
                    "nothing".into()
                } else {
                    format!("{c} values")
                }
            };
            for (i, j) in (0..n).flat_map(|i| (0..n).map(move |j| (i, j))) {
                let (sent, wanted) = (says(rows[i][2 + j]), says(rows[j][2 + n + i]));
                if sent != wanted {
                    let detail =
                        format!("rank {i} sends {sent} to rank {j}, which expects {wanted}");
                    return Err(Error::shape("exchange", detail));
                }
            }
            let mut out = Vec::with_capacity(n);
            for (j, shape) in recv.iter().enumerate() {
                out.push(match (shape, &send[j]) {
                    (Some(s), Some(x)) if j == me => Some(self.copy(be, x, s)?),
                    (Some(s), _) => Some(be.empty(s)?),
                    (None, _) => None,
                });
            }
            // (peer, send?, part); parts of no values move nothing (both sides agreed above)
            let part = |t: &Option<CudaTensor>| t.clone().filter(|t| t.numel() > 0);
            let p2p: Vec<(usize, bool, CudaTensor)> = (0..n)
                .filter(|&j| j != me)
                .flat_map(|j| {
                    [
                        part(&send[j]).map(|t| (j, true, t)),
                        part(&out[j]).map(|t| (j, false, t)),
                    ]
                })
                .flatten()
                .collect();
            if p2p.is_empty() {
                return Ok(out);
            }
            self.issue("exchange", |c, s| {
                self.check("exchange", "group start", unsafe {
                    (self.lib.group_start)()
                })?;
                // One group, so no order of the calls can deadlock; it is closed even on error.
                let mut issued = Ok(());
                for (j, tx, t) in &p2p {
                    let (p, k, peer) = (t.device_ptr(&self.stream) as Ptr, t.numel(), *j as c_int);
                    let (f, what) = match tx {
                        true => (self.lib.send, format!("send to rank {j}")),
                        false => (self.lib.recv, format!("receive from rank {j}")),
                    };
                    issued = self.check("exchange", &what, unsafe { f(p, k, BF16, peer, c, s) });
                    if issued.is_err() {
                        break;
                    }
                }
                let r = unsafe { (self.lib.group_end)() };
                issued.and_then(|_| self.check("exchange", "group end", r))
            })?;
            Ok(out)
        })
    }
    fn all_reduce_sum(&self, be: &CudaBackend, x: &CudaTensor) -> Result<CudaTensor> {
        let (f, sum) = (self.lib.all_reduce, ncclRedOp_t::ncclSum);
        self.one_tensor(be, REDUCE, x, 0, |c, s, src, dst| unsafe {
            f(src, dst, x.numel(), BF16, sum, c, s)
        })
    }
    fn broadcast(&self, be: &CudaBackend, x: &CudaTensor, root: usize) -> Result<CudaTensor> {
        let (f, r) = (self.lib.broadcast, root as c_int);
        self.one_tensor(be, BROADCAST, x, root, |c, s, src, dst| unsafe {
            f(src, dst, x.numel(), BF16, r, c, s)
        })
    }
    fn abort(&self, why: &str) {
        self.abort_as(format!("rank {}: {why}", self.rank), true);
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return; // aborted: nothing left to free
        }
        if std::thread::panicking() || self.board.exists() {
            self.abort_as(format!("rank {} stopped", self.rank), true);
        } else {
            // Nothing is in flight (each collective waits for its end): a local free.
            let _ = self.ctx.bind_to_thread();
            unsafe { (self.lib.destroy)(self.comm.0) };
        }
    }
}
