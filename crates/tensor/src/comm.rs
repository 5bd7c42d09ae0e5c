//! Collectives between the ranks of one parallel run (sequence and CFG parallelism).
//!
//! One trait, two implementations: NCCL over the GPUs (`jenga_cuda::NcclComm`, one rank per
//! GPU and process) and [`LocalComm`], ranks as threads of one process exchanging host
//! copies, so the parallel code runs in CI on the CPU. Every rank calls the same collectives
//! in the same order (the parallel wrappers guarantee it: their decisions depend only on
//! shapes and the step, never on data). A rank that fails calls [`Communicator::abort`], and
//! every collective pending or later on any rank fails with its reason instead of waiting.

use crate::{Backend, Error, Result, TensorMeta};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub trait Communicator<B: Backend>: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// The personalised exchange every other collective here is made of: `send[j]` goes to
    /// rank `j` (`None`: nothing), and the result's entry `j` is what rank `j` sent here,
    /// shaped `recv[j]` (`None` where rank `j` sends nothing). Sizes may differ per peer, so a
    /// group of ranks talks within the world communicator by leaving the others `None`.
    fn exchange(
        &self,
        be: &B,
        send: &[Option<B::Tensor>],
        recv: &[Option<Vec<usize>>],
    ) -> Result<Vec<Option<B::Tensor>>>;
    /// Element-wise sum of `x` over all ranks (same shape everywhere).
    fn all_reduce_sum(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor>;
    /// `root`'s `x` on every rank; the others pass a tensor of the same shape (its values are
    /// not read).
    fn broadcast(&self, be: &B, x: &B::Tensor, root: usize) -> Result<B::Tensor>;
    /// Make every pending and later collective, on every rank, fail with `why`.
    fn abort(&self, why: &str);

    /// All-to-all: `send[j]` to rank `j`, rank `j`'s part (shaped `recv[j]`) back.
    fn all_to_all(
        &self,
        be: &B,
        send: &[B::Tensor],
        recv: &[Vec<usize>],
    ) -> Result<Vec<B::Tensor>> {
        let send: Vec<_> = send.iter().cloned().map(Some).collect();
        let recv: Vec<_> = recv.iter().cloned().map(Some).collect();
        let got = self.exchange(be, &send, &recv)?;
        got.into_iter()
            .map(|t| t.ok_or_else(|| Error::invalid("all_to_all", "a part went missing")))
            .collect()
    }
    /// All-gather over `group` (world ranks, this one among them): every member's `x`, in
    /// the group's order, member `g` shaped `shapes[g]`. Ranks outside the group take no part.
    fn all_gather(
        &self,
        be: &B,
        x: &B::Tensor,
        group: &[usize],
        shapes: &[Vec<usize>],
    ) -> Result<Vec<B::Tensor>> {
        let (n, me) = (self.world(), self.rank());
        let mine = group.iter().position(|&r| r == me).ok_or_else(|| {
            Error::invalid("all_gather", format!("rank {me} is not in group {group:?}"))
        })?;
        if group.len() != shapes.len() || x.shape() != shapes[mine].as_slice() {
            return Err(Error::shape(
                "all_gather",
                format!(
                    "{} members with {} shapes; this rank's part is {:?}, expected {:?}",
                    group.len(),
                    shapes.len(),
                    x.shape(),
                    shapes.get(mine)
                ),
            ));
        }
        let mut send = vec![None; n];
        let mut recv = vec![None; n];
        for (g, &r) in group.iter().enumerate() {
            if r != me {
                send[r] = Some(x.clone());
                recv[r] = Some(shapes[g].clone());
            }
        }
        let mut got = self.exchange(be, &send, &recv)?;
        group
            .iter()
            .map(|&r| {
                if r == me {
                    Ok(x.clone())
                } else {
                    got[r]
                        .take()
                        .ok_or_else(|| Error::invalid("all_gather", "a part went missing"))
                }
            })
            .collect()
    }
}

/// Calls [`Communicator::abort`] when dropped unless disarmed: a rank that returns early with
/// an error, or panics, releases the others instead of leaving them in a collective.
pub struct AbortOnDrop<'c, B: Backend> {
    comm: &'c dyn Communicator<B>,
    armed: bool,
    why: String,
}

impl<'c, B: Backend> AbortOnDrop<'c, B> {
    pub fn new(comm: &'c dyn Communicator<B>) -> Self {
        AbortOnDrop {
            comm,
            armed: true,
            why: format!("rank {} stopped", comm.rank()),
        }
    }
    /// The reason the other ranks will see.
    pub fn reason(&mut self, why: impl Into<String>) {
        self.why = why.into();
    }
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl<B: Backend> Drop for AbortOnDrop<'_, B> {
    fn drop(&mut self) {
        if self.armed {
            self.comm.abort(&self.why);
        }
    }
}

/// Ranks as threads of one process: collectives meet in shared memory (host copies through
/// `download`/`upload`). Made for tests and for the CPU; a wait longer than the timeout fails
/// rather than hanging.
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
    /// Collectives this rank has entered (every rank enters them in the same order).
    seq: Mutex<u64>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    rounds: HashMap<u64, Round>,
    aborted: Option<String>,
}

/// A host copy of one part: values and shape.
type HostPart = Option<(Vec<f32>, Vec<usize>)>;

/// One collective in flight: `parts[src][dst]`, who has deposited and who has collected.
struct Round {
    parts: Vec<Vec<HostPart>>,
    deposited: usize,
    collected: usize,
}

impl LocalComm {
    /// `world` communicators, one per rank, waiting at most `timeout` in a collective.
    pub fn group(world: usize, timeout: Duration) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        (0..world)
            .map(|rank| LocalComm {
                rank,
                shared: shared.clone(),
                seq: Mutex::new(0),
            })
            .collect()
    }

    /// Deposit this rank's host parts for the next collective, wait for every rank's, and
    /// return the parts addressed here (indexed by source rank).
    fn meet(&self, op: &'static str, mine: Vec<HostPart>) -> Result<Vec<HostPart>> {
        let n = self.shared.world;
        let seq = {
            let mut s = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            *s += 1;
            *s
        };
        let deadline = Instant::now() + self.shared.timeout;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &st.aborted {
            return Err(aborted(op, why));
        }
        {
            let round = st.rounds.entry(seq).or_insert_with(|| Round {
                parts: vec![vec![None; n]; n],
                deposited: 0,
                collected: 0,
            });
            round.parts[self.rank] = mine;
            round.deposited += 1;
        }
        self.shared.cv.notify_all();
        loop {
            if let Some(why) = &st.aborted {
                return Err(aborted(op, why));
            }
            if st.rounds.get(&seq).is_some_and(|r| r.deposited == n) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = format!(
                    "rank {} waited {:?} in {op} #{seq} for the other ranks",
                    self.rank, self.shared.timeout
                );
                st.aborted = Some(why.clone());
                self.shared.cv.notify_all();
                return Err(Error::Device(why));
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let round = st
            .rounds
            .get_mut(&seq)
            .expect("round present until collected");
        let got: Vec<_> = (0..n)
            .map(|src| round.parts[src][self.rank].take())
            .collect();
        round.collected += 1;
        if round.collected == n {
            st.rounds.remove(&seq);
        }
        Ok(got)
    }
}

fn aborted(op: &str, why: &str) -> Error {
    Error::Device(format!("{op} abandoned: {why}"))
}

impl<B: Backend> Communicator<B> for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn exchange(
        &self,
        be: &B,
        send: &[Option<B::Tensor>],
        recv: &[Option<Vec<usize>>],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let n = self.shared.world;
        if send.len() != n || recv.len() != n {
            return Err(Error::invalid(
                "exchange",
                format!(
                    "{} send and {} receive entries for {n} ranks",
                    send.len(),
                    recv.len()
                ),
            ));
        }
        let mine = send
            .iter()
            .map(|t| {
                t.as_ref()
                    .map(|t| Ok((be.download(t)?, t.shape().to_vec())))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let got = self.meet("exchange", mine)?;
        got.into_iter()
            .zip(recv)
            .enumerate()
            .map(|(src, (part, want))| match (part, want) {
                (None, None) => Ok(None),
                (Some((data, shape)), Some(want)) if &shape == want => {
                    Ok(Some(be.upload(&data, &shape)?))
                }
                (part, want) => Err(Error::shape(
                    "exchange",
                    format!(
                        "rank {} expected {want:?} from rank {src}, got {:?}",
                        self.rank,
                        part.map(|p| p.1)
                    ),
                )),
            })
            .collect()
    }
    fn all_reduce_sum(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let n = self.shared.world;
        let part = (be.download(x)?, x.shape().to_vec());
        let got = self.meet("all_reduce", vec![Some(part); n])?;
        let mut acc = vec![0f32; x.numel()];
        // sum in rank order on every rank: the same result everywhere
        for (src, p) in got.into_iter().enumerate() {
            let (data, shape) = p.ok_or_else(|| Error::invalid("all_reduce", "missing part"))?;
            if shape != x.shape() {
                return Err(Error::shape(
                    "all_reduce",
                    format!("rank {src} reduces {shape:?}, this rank {:?}", x.shape()),
                ));
            }
            acc.iter_mut().zip(&data).for_each(|(a, v)| *a += v);
        }
        be.upload(&acc, x.shape())
    }
    fn broadcast(&self, be: &B, x: &B::Tensor, root: usize) -> Result<B::Tensor> {
        let n = self.shared.world;
        if root >= n {
            return Err(Error::invalid(
                "broadcast",
                format!("root {root} of {n} ranks"),
            ));
        }
        let mine = if self.rank == root {
            vec![Some((be.download(x)?, x.shape().to_vec())); n]
        } else {
            vec![None; n]
        };
        let got = self.meet("broadcast", mine)?;
        let (data, shape) = got[root]
            .clone()
            .ok_or_else(|| Error::invalid("broadcast", "root sent nothing"))?;
        if shape != x.shape() {
            return Err(Error::shape(
                "broadcast",
                format!(
                    "root sends {shape:?}, rank {} expects {:?}",
                    self.rank,
                    x.shape()
                ),
            ));
        }
        be.upload(&data, &shape)
    }
    fn abort(&self, why: &str) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.aborted.is_none() {
            st.aborted = Some(format!("rank {}: {why}", self.rank));
        }
        self.shared.cv.notify_all();
    }
}

/// Run `f(rank, comm)` on `world` threads with a [`LocalComm`] group, each rank guarded by
/// [`AbortOnDrop`]. Returns every rank's result, or the first failure (by rank) naming it;
/// the others, released by the abort, are not reported on their own.
pub fn run_local<B, T, E, F>(world: usize, timeout: Duration, f: F) -> Result<Vec<T>>
where
    B: Backend,
    T: Send,
    E: std::fmt::Display + Send,
    F: Fn(usize, &LocalComm) -> std::result::Result<T, E> + Sync,
{
    let comms = LocalComm::group(world, timeout);
    let results: Vec<std::thread::Result<std::result::Result<T, E>>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || {
                    let mut guard = AbortOnDrop::<B>::new(c);
                    let r = f(c.rank, c);
                    match &r {
                        Ok(_) => guard.disarm(),
                        Err(e) => guard.reason(e.to_string()),
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    // The first rank that failed on its own (not by another's abort) names the cause.
    let mut first: Option<Error> = None;
    let mut out = Vec::with_capacity(world);
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                let own = !e.to_string().contains(" abandoned: ");
                if first.is_none() || (own && is_abandon(first.as_ref())) {
                    first = Some(Error::Device(format!("rank {rank}: {e}")));
                }
            }
            Err(_) => {
                if first.is_none() || is_abandon(first.as_ref()) {
                    first = Some(Error::Device(format!("rank {rank} panicked")));
                }
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn is_abandon(e: Option<&Error>) -> bool {
    e.is_some_and(|e| e.to_string().contains(" abandoned: "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn all_to_all_delivers_each_part_to_its_rank_with_uneven_sizes() {
        let be = CpuBackend::new();
        let out = run_local::<CpuBackend, _, Error, _>(3, T, |r, c| {
            // rank r sends (r + 1) values to each peer j, valued 10r + j
            let send: Vec<_> = (0..3)
                .map(|j| be.upload(&vec![(10 * r + j) as f32; r + 1], &[r + 1]))
                .collect::<Result<_>>()?;
            let recv: Vec<_> = (0..3).map(|j| vec![j + 1]).collect();
            let got = Communicator::<CpuBackend>::all_to_all(c, &be, &send, &recv)?;
            got.iter()
                .map(|t| be.download(t))
                .collect::<Result<Vec<_>>>()
        })
        .unwrap();
        for (r, got) in out.iter().enumerate() {
            for (j, part) in got.iter().enumerate() {
                assert_eq!(part, &vec![(10 * j + r) as f32; j + 1], "rank {r} from {j}");
            }
        }
    }

    #[test]
    fn gather_reduce_and_broadcast_agree_on_every_rank() {
        let be = CpuBackend::new();
        let out = run_local::<CpuBackend, _, Error, _>(4, T, |r, c| {
            let x = be.upload(&[r as f32, 1.0], &[2])?;
            // groups {0, 2} and {1, 3} gather at the same time
            let group = if r % 2 == 0 { [0, 2] } else { [1, 3] };
            let g =
                Communicator::<CpuBackend>::all_gather(c, &be, &x, &group, &[vec![2], vec![2]])?;
            let s = Communicator::<CpuBackend>::all_reduce_sum(c, &be, &x)?;
            let b = Communicator::<CpuBackend>::broadcast(c, &be, &x, 3)?;
            Ok((
                g.iter()
                    .map(|t| be.download(t).unwrap()[0])
                    .collect::<Vec<_>>(),
                be.download(&s)?,
                be.download(&b)?,
            ))
        })
        .unwrap();
        for (r, (g, s, b)) in out.iter().enumerate() {
            let want = if r % 2 == 0 {
                vec![0.0, 2.0]
            } else {
                vec![1.0, 3.0]
            };
            assert_eq!(g, &want);
            assert_eq!(s, &vec![6.0, 4.0]);
            assert_eq!(b, &vec![3.0, 1.0]);
        }
    }

    #[test]
    fn a_failing_rank_releases_the_others_and_is_named() {
        let be = CpuBackend::new();
        let t0 = Instant::now();
        let err = run_local::<CpuBackend, (), Error, _>(3, Duration::from_secs(60), |r, c| {
            if r == 1 {
                return Err(Error::invalid("load", "weights missing on rank 1"));
            }
            let x = be.upload(&[1.0], &[1])?;
            Communicator::<CpuBackend>::all_reduce_sum(c, &be, &x)?;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rank 1") && err.contains("weights missing"),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10), "the others waited");
    }

    #[test]
    fn a_rank_that_never_comes_times_out_instead_of_hanging() {
        let be = CpuBackend::new();
        let err = run_local::<CpuBackend, (), Error, _>(2, Duration::from_millis(300), |r, c| {
            if r == 0 {
                let x = be.upload(&[1.0], &[1])?;
                Communicator::<CpuBackend>::all_reduce_sum(c, &be, &x)?;
                return Ok(());
            }
            // rank 1 skips the collective: rank 0 must give up, and rank 1 sees the abort
            std::thread::sleep(Duration::from_millis(800));
            let x = be.upload(&[1.0], &[1])?;
            Communicator::<CpuBackend>::all_reduce_sum(c, &be, &x)?;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("waited"), "{err}");
    }
}
