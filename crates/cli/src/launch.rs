//! The multi-process launcher: one child process per local GPU, each told its place by
//! environment variables ([`RankEnv`]), all sharing one NCCL id. Node 0 makes the id and, when
//! there are several nodes, hands it to the others over TCP; every launcher then starts its
//! node's ranks and watches them: the first rank that fails stops the rest at once, and the
//! launcher's own end (error, panic, Ctrl-C, `kill`, even `kill -9`) takes its children along.
//!
//! The id handoff is one short exchange per node on the master address:
//! - node → node 0: `JENGA-NCCL-ID 1 node=<r> nodes=<n> gpus=<g>\n`
//! - node 0 → node: `JENGA-NCCL-ID 1 OK\n`, a big-endian u32 length, the id; or
//!   `JENGA-NCCL-ID 1 ERR <why>\n` (a wrong peer, another layout, a node served twice).

// `generate` wires `launch` and `RankEnv::from_env` in; until then only the tests use them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// One rank's place in the run, as the launcher passes it to the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// Hex, for `jenga_cuda::NcclId::from_hex`.
    pub nccl_id: String,
}

impl RankEnv {
    /// `None` when `JENGA_RANK` is unset (not a launched rank); a malformed or missing value is
    /// an `Err` naming the variable.
    pub fn from_env() -> Option<Result<RankEnv, String>> {
        Self::parse(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    fn parse(get: impl Fn(&str) -> Option<String>) -> Option<Result<RankEnv, String>> {
        get("JENGA_RANK")?;
        let var = |k: &str| get(k).ok_or_else(|| format!("{k} is not set (JENGA_RANK is)"));
        let num = |k: &str| {
            let v = var(k)?;
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("{k}={v:?} is not a number"))
        };
        let env = || -> Result<RankEnv, String> {
            let (rank, world, local_rank) = (
                num("JENGA_RANK")?,
                num("JENGA_WORLD")?,
                num("JENGA_LOCAL_RANK")?,
            );
            if rank >= world {
                return Err(format!(
                    "JENGA_RANK={rank} is not below JENGA_WORLD={world}"
                ));
            }
            let nccl_id = var("JENGA_NCCL_ID")?;
            if nccl_id.len() != 256 || !nccl_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "JENGA_NCCL_ID is not 256 hex digits ({} characters)",
                    nccl_id.len()
                ));
            }
            Ok(RankEnv {
                rank,
                world,
                local_rank,
                nccl_id,
            })
        };
        Some(env())
    }
}

/// Start this node's `gpus_per_node` ranks (`std::env::current_exe()` with `args`) and watch
/// them until all have exited 0, or one fails (the rest are killed; its rank and status are
/// the `Err`). Node 0 makes the id with `make_id` (`NcclId::new()?.to_hex()`) and, with
/// `nodes > 1`, serves it on `master`; the other nodes fetch it there, trying for a minute.
pub fn launch(
    gpus_per_node: usize,
    nodes: usize,
    node_rank: usize,
    master: Option<SocketAddr>,
    make_id: impl FnOnce() -> Result<String, String>,
    args: &[OsString],
) -> Result<(), String> {
    if gpus_per_node == 0 || nodes == 0 || node_rank >= nodes {
        return Err(format!(
            "node {node_rank} of {nodes}, {gpus_per_node} GPUs per node: nothing to launch"
        ));
    }
    let master = match (nodes, master) {
        (1, _) => None,
        (_, Some(m)) => Some(m),
        (_, None) => {
            return Err(format!(
                "{nodes} nodes need the master address (node 0's host:port)"
            ))
        }
    };
    let id = match master {
        Some(addr) if node_rank > 0 => fetch_id(
            addr,
            node_rank,
            nodes,
            gpus_per_node,
            Duration::from_secs(60),
        )?,
        _ => make_id()?,
    };
    if let (Some(addr), 0) = (master, node_rank) {
        // Served from a thread while this node's ranks start; NCCL's set-up waits for them all.
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("serving the NCCL id on {addr}: {e}"))?;
        let served = id.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_id(listener, &served, nodes, gpus_per_node) {
                eprintln!("jenga launch: serving the NCCL id: {e}");
            }
        });
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let devices = (0..gpus_per_node)
        .map(|l| device_for(l, visible.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("finding this program to start the ranks: {e}"))?;
    if !cfg!(test) {
        catch_stop_signals(); // not in the test harness, whose Ctrl-C must still stop it
    }
    let mut started = Ranks(Vec::new());
    for (local, device) in devices.iter().enumerate() {
        let rank = node_rank * gpus_per_node + local;
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("JENGA_RANK", rank.to_string())
            .env("JENGA_WORLD", (nodes * gpus_per_node).to_string())
            .env("JENGA_LOCAL_RANK", local.to_string())
            .env("JENGA_NCCL_ID", &id)
            .env("CUDA_VISIBLE_DEVICES", device);
        die_with_parent(&mut cmd);
        // A failed start drops `started`, which kills the ranks already running.
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting rank {rank} ({}): {e}", exe.display()))?;
        started.0.push((rank, child));
    }
    supervise(std::mem::take(&mut started.0))
}

/// The `CUDA_VISIBLE_DEVICES` entry of local rank `local`: its index, or the list's own entry
/// when the launcher was itself given a list.
fn device_for(local: usize, visible: Option<&str>) -> Result<String, String> {
    match visible.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(local.to_string()),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .nth(local)
            .map(String::from)
            .ok_or_else(|| {
                format!(
                    "CUDA_VISIBLE_DEVICES={list:?} lists fewer than the {} GPUs asked for",
                    local + 1
                )
            }),
    }
}

/// Running ranks, killed (and reaped) when dropped: an early return, a panic or a stop signal
/// leaves no orphan behind.
struct Ranks(Vec<(usize, Child)>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
        }
        for (_, child) in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// The stop signal (SIGINT, SIGTERM) the launcher received, 0 for none.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst); // an atomic store: async-signal-safe
}

fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
    }
}

/// The child gets SIGKILL when the launcher dies, even by SIGKILL (no destructor runs then).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            match libc::getppid() == parent {
                true => Ok(()),
                false => Err(std::io::Error::other("the launcher is gone")),
            }
        })
    };
}

/// Watch `(rank, child)` until all exited 0 (`Ok`) or one did not: the others are killed at once
/// and the `Err` names it. A stop signal to the launcher stops every rank the same way.
fn supervise(children: Vec<(usize, Child)>) -> Result<(), String> {
    let mut running = Ranks(children);
    loop {
        match STOP.load(Ordering::SeqCst) {
            0 => {}
            sig => return Err(format!("stopped by signal {sig}; every rank was killed")),
        }
        let mut i = 0;
        while i < running.0.len() {
            let (rank, child) = &mut running.0[i];
            match child.try_wait() {
                Ok(None) => i += 1,
                Ok(Some(st)) if st.success() => drop(running.0.remove(i)),
                Ok(Some(st)) => {
                    use std::os::unix::process::ExitStatusExt;
                    return Err(match (st.code(), st.signal()) {
                        (Some(code), _) => format!("rank {rank} exited with status {code}"),
                        (None, Some(sig)) => format!(
                            "rank {rank} exited with status {} (killed by signal {sig})",
                            128 + sig
                        ),
                        _ => format!("rank {rank} exited with {st}"),
                    });
                }
                Err(e) => return Err(format!("rank {rank}: waiting for it: {e}")),
            }
        }
        if running.0.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const MAGIC: &str = "JENGA-NCCL-ID";
const VERSION: &str = "1";

/// One line (at most 512 bytes, the `\n` dropped).
fn read_line(s: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() < 512 {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    Err(format!("no line, got {:?}", String::from_utf8_lossy(&line)))
}

/// What follows `JENGA-NCCL-ID 1 ` on a line, or why the peer is not one of ours.
fn after_magic(line: &str) -> Result<&str, String> {
    match line
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .map(|r| r.split_once(' '))
    {
        Some(Some((VERSION, rest))) => Ok(rest),
        Some(Some((v, _))) => Err(format!(
            "the peer speaks id protocol {v}, this launcher {VERSION}"
        )),
        _ => Err(format!(
            "the peer is not a jenga launcher (it said {:?})",
            line.get(..80).unwrap_or(line)
        )),
    }
}

/// Node 0: hand `id` to nodes 1 … `nodes - 1`, once each, refusing (and reporting) any peer
/// that is not one of them; returns when every node has it.
fn serve_id(listener: TcpListener, id: &str, nodes: usize, gpus: usize) -> Result<(), String> {
    let mut served = vec![false; nodes];
    served[0] = true;
    while served.contains(&false) {
        let (mut s, peer) = listener.accept().map_err(|e| format!("accepting: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut answer = || -> Result<usize, String> {
            let hello = read_line(&mut s)?;
            let rest = after_magic(&hello)?;
            let field = |k: &str| {
                let v = rest
                    .split(' ')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='));
                v.and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| format!("no {k} in {hello:?}"))
            };
            let (node, n, g) = (field("node")?, field("nodes")?, field("gpus")?);
            if (n, g) != (nodes, gpus) {
                return Err(format!(
                    "node {node} runs {n} nodes × {g} GPUs, node 0 runs {nodes} × {gpus}"
                ));
            }
            if node == 0 || node >= nodes || served[node] {
                return Err(format!(
                    "node {node} is not an unserved node of 1 … {}",
                    nodes - 1
                ));
            }
            let mut msg = format!("{MAGIC} {VERSION} OK\n").into_bytes();
            msg.extend((id.len() as u32).to_be_bytes());
            msg.extend(id.as_bytes());
            s.write_all(&msg)
                .map_err(|e| format!("sending the id: {e}"))?;
            Ok(node)
        };
        match answer() {
            Ok(node) => served[node] = true,
            Err(why) => {
                let _ = s.write_all(format!("{MAGIC} {VERSION} ERR {why}\n").as_bytes());
                eprintln!("jenga launch: refused {peer}: {why}");
            }
        }
    }
    Ok(())
}

/// Node `node` (> 0): fetch the id from node 0 at `master`, trying to connect for `patience`.
fn fetch_id(
    master: SocketAddr,
    node: usize,
    nodes: usize,
    gpus: usize,
    patience: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + patience;
    let mut s = loop {
        match TcpStream::connect_timeout(&master, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                return Err(format!(
                    "node {node}: node 0 at {master} did not answer in {patience:?}: {e}"
                ))
            }
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let ctx = |e: String| format!("node {node}: fetching the NCCL id from {master}: {e}");
    let hello = format!("{MAGIC} {VERSION} node={node} nodes={nodes} gpus={gpus}\n");
    s.write_all(hello.as_bytes())
        .map_err(|e| ctx(format!("sending: {e}")))?;
    let reply = read_line(&mut s).map_err(ctx)?;
    let rest = after_magic(&reply).map_err(ctx)?;
    if let Some(why) = rest.strip_prefix("ERR ") {
        return Err(ctx(format!("node 0 refused: {why}")));
    }
    if rest != "OK" {
        return Err(ctx(format!("unexpected reply {reply:?}")));
    }
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| ctx(format!("reading: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 4096 {
        return Err(ctx(format!("an id of {len} bytes")));
    }
    let mut id = vec![0u8; len];
    s.read_exact(&mut id)
        .map_err(|e| ctx(format!("reading: {e}")))?;
    String::from_utf8(id).map_err(|_| ctx("the id is not text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ID: &str = "0123456789abcdef";

    fn local() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[test]
    fn the_id_goes_from_node_0_to_every_other_node() {
        let (listener, addr) = local();
        let server = std::thread::spawn(move || serve_id(listener, ID, 3, 4));
        let t = Duration::from_secs(5);
        let other = std::thread::spawn(move || fetch_id(addr, 2, 3, 4, t));
        assert_eq!(fetch_id(addr, 1, 3, 4, t).unwrap(), ID);
        assert_eq!(other.join().unwrap().unwrap(), ID);
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_wrong_peer_is_refused_on_both_sides() {
        let (listener, addr) = local();
        let server = std::thread::spawn(move || serve_id(listener, ID, 2, 8));
        // not one of ours: refused, and node 0 keeps serving
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\n").unwrap();
        let reply = read_line(&mut s).unwrap();
        assert!(
            reply.starts_with("JENGA-NCCL-ID 1 ERR") && reply.contains("not a jenga launcher"),
            "{reply}"
        );
        // another layout, another protocol version
        let t = Duration::from_secs(5);
        let e = fetch_id(addr, 1, 2, 4, t).unwrap_err();
        assert!(
            e.contains("node 0 refused") && e.contains("2 nodes × 4 GPUs"),
            "{e}"
        );
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"JENGA-NCCL-ID 2 node=1 nodes=2 gpus=8\n")
            .unwrap();
        assert!(read_line(&mut s).unwrap().contains("speaks id protocol 2"));
        assert_eq!(fetch_id(addr, 1, 2, 8, t).unwrap(), ID);
        server.join().unwrap().unwrap();

        // node 0's address answered by something else
        let (fake, addr) = local();
        let t = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
        });
        let e = fetch_id(addr, 1, 2, 8, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.contains("is not a jenga launcher") && e.contains("SSH-2.0"),
            "{e}"
        );
        t.join().unwrap();
    }

    #[test]
    fn fetching_gives_up_when_node_0_never_answers() {
        let (l, addr) = local();
        drop(l); // nothing listens there now
        let t0 = Instant::now();
        let e = fetch_id(addr, 1, 2, 8, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    fn sh(script: &str) -> Child {
        Command::new("sh").arg("-c").arg(script).spawn().unwrap()
    }

    fn gone(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) != 0 }
    }

    #[test]
    fn a_failing_rank_stops_the_others_at_once_and_is_named() {
        let sleeper = sh("exec sleep 30");
        let pid = sleeper.id();
        let t0 = Instant::now();
        let e = supervise(vec![(0, sleeper), (1, sh("sleep 0.1; exit 3"))]).unwrap_err();
        assert_eq!(e, "rank 1 exited with status 3");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(gone(pid), "the sleeping rank was left running");

        let e = supervise(vec![(2, sh("kill -9 $$")), (3, sh("exec sleep 30"))]).unwrap_err();
        assert_eq!(e, "rank 2 exited with status 137 (killed by signal 9)");
    }

    #[test]
    fn ranks_that_all_exit_0_are_a_success() {
        let ranks = (0..4)
            .map(|r| (r, sh(&format!("sleep 0.0{r}; exit 0"))))
            .collect();
        supervise(ranks).unwrap();
    }

    #[test]
    fn dropping_the_ranks_kills_them() {
        let child = sh("exec sleep 30");
        let pid = child.id();
        drop(Ranks(vec![(0, child)]));
        assert!(gone(pid));
    }

    /// What the test binary runs when `launch` starts it (a no-op otherwise): check the place
    /// it was given.
    #[test]
    fn launched_rank() {
        if !std::env::args().any(|a| a == "launched-by-test") {
            return;
        }
        let env = RankEnv::from_env().expect("JENGA_RANK is set").unwrap();
        assert_eq!((env.world, env.rank), (4, 2 + env.local_rank), "{env:?}");
        assert_eq!(env.nccl_id, "ab".repeat(128));
        assert!(std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.contains(',')));
        let fail = std::env::args().any(|a| a == "fail-rank-3");
        if fail && env.rank == 2 {
            std::thread::sleep(Duration::from_secs(30)); // until the launcher kills it
        }
        // Exit here, before the harness prints a `test result:` line of its own into CI's log.
        std::process::exit(if fail { 3 } else { 0 });
    }

    #[test]
    fn launch_starts_every_local_rank_of_its_node_and_reports_the_first_failure() {
        let id = "ab".repeat(128);
        let (listener, addr) = local();
        let served = id.clone();
        let node0 = std::thread::spawn(move || serve_id(listener, &served, 2, 2));
        let args = |extra: &[&str]| {
            let base = [
                "--exact",
                "launch::tests::launched_rank",
                "-q",
                "launched-by-test",
            ];
            base.iter()
                .chain(extra)
                .map(OsString::from)
                .collect::<Vec<_>>()
        };
        // node 1 of 2 nodes × 2 GPUs: ranks 2 and 3
        let no_id = || Err("node 1 must fetch the id".to_string());
        launch(2, 2, 1, Some(addr), no_id, &args(&[])).unwrap();
        node0.join().unwrap().unwrap();

        let (listener, addr) = local();
        let served = id.clone();
        std::thread::spawn(move || serve_id(listener, &served, 2, 2));
        let t0 = Instant::now();
        let e = launch(2, 2, 1, Some(addr), no_id, &args(&["fail-rank-3"])).unwrap_err();
        assert_eq!(e, "rank 3 exited with status 3");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "rank 2 was waited for"
        );
        let e = launch(2, 2, 1, None, no_id, &[]).unwrap_err();
        assert!(e.contains("master address"), "{e}");
    }

    #[test]
    fn each_rank_sees_one_gpu_of_the_visible_list() {
        assert_eq!(device_for(1, None).unwrap(), "1");
        assert_eq!(device_for(1, Some("")).unwrap(), "1");
        assert_eq!(device_for(1, Some("4, 5,6")).unwrap(), "5");
        let e = device_for(3, Some("4,5,6")).unwrap_err();
        assert!(
            e.contains("CUDA_VISIBLE_DEVICES") && e.contains("4 GPUs"),
            "{e}"
        );
    }

    #[test]
    fn rank_env_is_parsed_and_bad_values_are_named() {
        let id = "ab".repeat(128);
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            RankEnv::parse(|k| m.get(k).cloned())
        };
        assert!(
            env(&[("JENGA_WORLD", "2")]).is_none(),
            "not a launched rank"
        );
        let good = [
            ("JENGA_RANK", "3"),
            ("JENGA_WORLD", "8"),
            ("JENGA_LOCAL_RANK", "3"),
            ("JENGA_NCCL_ID", id.as_str()),
        ];
        let want = RankEnv {
            rank: 3,
            world: 8,
            local_rank: 3,
            nccl_id: id.clone(),
        };
        assert_eq!(env(&good).unwrap().unwrap(), want);
        let with = |k: &str, v: &str| {
            let pairs: Vec<_> = good
                .iter()
                .map(|&(gk, gv)| (gk, if gk == k { v } else { gv }))
                .collect();
            env(&pairs).unwrap().unwrap_err()
        };
        assert!(with("JENGA_WORLD", "two").contains("JENGA_WORLD=\"two\""));
        assert!(with("JENGA_RANK", "-1").contains("JENGA_RANK"));
        assert!(with("JENGA_LOCAL_RANK", "").contains("JENGA_LOCAL_RANK"));
        assert!(with("JENGA_RANK", "8").contains("not below JENGA_WORLD=8"));
        assert!(with("JENGA_NCCL_ID", "abc").contains("JENGA_NCCL_ID"));
        let e = env(&good[..3]).unwrap().unwrap_err();
        assert!(e.contains("JENGA_NCCL_ID is not set"), "{e}");
    }
}
