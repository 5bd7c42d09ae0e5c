//! `NcclComm` against the values every collective must deliver. One GPU: every collective of a
//! world of one is a bit-exact copy. Two or more GPUs (one thread and backend per GPU): uneven
//! all-to-all, exchange with absent and empty parts, group all-gather, all-reduce, broadcast on
//! every rank; size disagreements and a rank's abort fail everywhere within seconds. Skips
//! without a CUDA driver or without libnccl.

use half::bf16;
use jenga_cuda::{CudaBackend, CudaTensor, NcclComm, NcclId};
use jenga_tensor::{Backend, Communicator, Result, TensorMeta};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A fresh id, or `None` (with the reason) when there is no GPU or no NCCL.
fn nccl_id(test: &str) -> Option<NcclId> {
    if !jenga_cuda::cuda_available() {
        eprintln!("skipped: no CUDA driver ({test})");
        return None;
    }
    match NcclId::new() {
        Ok(id) => Some(id),
        Err(e) => {
            eprintln!("skipped: no NCCL ({test}): {e}");
            None
        }
    }
}

fn gpus(test: &str, at_least: usize) -> Option<(usize, NcclId)> {
    let id = nccl_id(test)?;
    let n = jenga_cuda::device_count().unwrap_or(0);
    if n < at_least {
        eprintln!("skipped: {n} GPU(s), needs {at_least} ({test})");
        return None;
    }
    Some((n, id))
}

fn bits(be: &CudaBackend, t: &CudaTensor) -> Vec<u16> {
    be.download_bf16(t)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Run `f(rank, backend, comm)` on one thread per GPU; every rank's result, in rank order.
/// One such run at a time: communicators used concurrently on the same GPUs may deadlock.
fn on_every_gpu<T: Send>(
    n: usize,
    id: &NcclId,
    f: impl Fn(usize, &CudaBackend, &NcclComm) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|s| {
        let ranks: Vec<_> = (0..n)
            .map(|r| {
                let f = &f;
                s.spawn(move || {
                    let be = CudaBackend::new(r)?;
                    let comm = NcclComm::new(&be, r, n, id)?.with_timeout(Duration::from_secs(60));
                    f(r, &be, &comm)
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

#[test]
fn ids_round_trip_through_hex_and_bad_hex_is_refused() {
    let hex: String = (0..128u32)
        .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
        .collect();
    assert_eq!(NcclId::from_hex(&hex).unwrap().to_hex(), hex);
    assert_eq!(NcclId::from_hex(&hex.to_uppercase()).unwrap().to_hex(), hex);
    let plus = format!("+f{}", &hex[2..]); // `from_str_radix` alone would take "+f"
    for bad in [
        &hex[..254],
        "zz",
        &format!("{}g", &hex[..255]),
        &format!("{hex}00"),
        &plus,
    ] {
        let e = NcclId::from_hex(bad).unwrap_err().to_string();
        assert!(e.contains("256 hex digits"), "{e}");
    }
    // Without libnccl, making an id is an error that says so, never a panic.
    if let Err(e) = NcclId::new() {
        assert!(e.to_string().contains("NCCL"), "{e}");
    }
}

#[test]
fn world_of_one_collectives_are_exact_copies() {
    let Some(id) = nccl_id("world_of_one_collectives_are_exact_copies") else {
        return;
    };
    let be = CudaBackend::new(0).unwrap();
    let comm = NcclComm::new(&be, 0, 1, &id).unwrap();
    let c: &dyn Communicator<CudaBackend> = &comm;
    assert_eq!((c.rank(), c.world()), (0, 1));
    // every finite bf16 pattern class: signs, subnormals, large and tiny magnitudes
    let data: Vec<bf16> = (0..6000u32)
        .map(|i| bf16::from_bits((i.wrapping_mul(40503) % 0x7f80) as u16 | ((i as u16 & 1) << 15)))
        .collect();
    let x = be.upload_bf16(&data, &[2, 3000]).unwrap();
    let want = bits(&be, &x);

    let got = c
        .exchange(&be, &[Some(x.clone())], &[Some(vec![6000])])
        .unwrap();
    let y = got[0].as_ref().unwrap();
    assert_eq!(y.shape(), &[6000]);
    assert_eq!(bits(&be, y), want, "exchange");
    assert!(c.exchange(&be, &[None], &[None]).unwrap()[0].is_none());
    let a = c
        .all_to_all(&be, std::slice::from_ref(&x), &[vec![2, 3000]])
        .unwrap();
    assert_eq!(bits(&be, &a[0]), want, "all_to_all");
    let g = c.all_gather(&be, &x, &[0], &[vec![2, 3000]]).unwrap();
    assert_eq!(bits(&be, &g[0]), want, "all_gather");
    assert_eq!(
        bits(&be, &c.all_reduce_sum(&be, &x).unwrap()),
        want,
        "all_reduce_sum"
    );
    assert_eq!(
        bits(&be, &c.broadcast(&be, &x, 0).unwrap()),
        want,
        "broadcast"
    );
    // an empty tensor goes through too
    let e = be.upload_bf16(&[], &[0, 4]).unwrap();
    assert_eq!(c.all_reduce_sum(&be, &e).unwrap().shape(), &[0, 4]);

    // Mistakes are clear errors, and a failed collective aborts the communicator.
    let err = c
        .exchange(&be, &[Some(x.clone())], &[Some(vec![5999])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rank 0 sends 6000 values to rank 0, which expects 5999"),
        "{err}"
    );
    let err = c.all_reduce_sum(&be, &x).unwrap_err().to_string();
    assert!(err.contains("abandoned") && err.contains("5999"), "{err}");

    let comm = NcclComm::new(&be, 0, 1, &NcclId::new().unwrap()).unwrap();
    let err = comm.broadcast(&be, &x, 1).unwrap_err().to_string();
    assert!(err.contains("root 1 of 1"), "{err}");
    let comm = NcclComm::new(&be, 0, 1, &NcclId::new().unwrap()).unwrap();
    let err = comm.exchange(&be, &[], &[]).unwrap_err().to_string();
    assert!(
        err.contains("0 send and 0 receive entries for 1 ranks"),
        "{err}"
    );
    let comm = NcclComm::new(&be, 0, 1, &NcclId::new().unwrap()).unwrap();
    comm.abort("the test stops here");
    let err = comm.all_reduce_sum(&be, &x).unwrap_err().to_string();
    assert!(err.contains("the test stops here"), "{err}");
    assert!(NcclComm::new(&be, 1, 1, &id).is_err(), "rank 1 of 1");
}

#[test]
fn collectives_deliver_on_every_gpu() {
    let Some((n, id)) = gpus("collectives_deliver_on_every_gpu", 2) else {
        return;
    };
    let vals = |be: &CudaBackend, t: &CudaTensor| be.download(t).unwrap();
    let out = on_every_gpu(n, &id, |r, be, c| {
        // uneven all-to-all: rank r sends (r + 1)(j + 1) values valued 10r + j to rank j
        let send: Vec<_> = (0..n)
            .map(|j| {
                be.upload(
                    &vec![(10 * r + j) as f32; (r + 1) * (j + 1)],
                    &[(r + 1) * (j + 1)],
                )
            })
            .collect::<Result<_>>()?;
        let recv: Vec<_> = (0..n).map(|j| vec![(j + 1) * (r + 1)]).collect();
        let a2a: Vec<_> = c
            .all_to_all(be, &send, &recv)?
            .iter()
            .map(|t| vals(be, t))
            .collect();
        // a ring with absent parts, and an empty part to the rank after next
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        let mut send = vec![None; n];
        let mut recv = vec![None; n];
        send[next] = Some(be.upload(&[r as f32; 3], &[3])?);
        recv[prev] = Some(vec![3]);
        if n > 2 {
            send[(r + 2) % n] = Some(be.upload(&[], &[0])?);
            recv[(r + n - 2) % n] = Some(vec![0]);
        }
        let ring = c.exchange(be, &send, &recv)?;
        let ring: Vec<_> = ring
            .iter()
            .map(|t| t.as_ref().map(|t| vals(be, t)))
            .collect();
        // groups of even and odd ranks gather at the same time
        let group: Vec<usize> = (0..n).filter(|g| g % 2 == r % 2).collect();
        let shapes: Vec<_> = group.iter().map(|&g| vec![g + 1]).collect();
        let x = be.upload(&vec![r as f32; r + 1], &[r + 1])?;
        let gathered: Vec<_> = c
            .all_gather(be, &x, &group, &shapes)?
            .iter()
            .map(|t| vals(be, t))
            .collect();
        let x = be.upload(&[r as f32, 1.0, 0.5], &[3])?;
        let sum = vals(be, &c.all_reduce_sum(be, &x)?);
        let from_last = vals(be, &c.broadcast(be, &x, n - 1)?);
        Ok((a2a, ring, gathered, sum, from_last))
    });
    for (r, res) in out.into_iter().enumerate() {
        let (a2a, ring, gathered, sum, from_last) = res.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        for (j, part) in a2a.iter().enumerate() {
            assert_eq!(
                part,
                &vec![(10 * j + r) as f32; (j + 1) * (r + 1)],
                "rank {r} from {j}"
            );
        }
        let prev = (r + n - 1) % n;
        assert_eq!(ring[prev], Some(vec![prev as f32; 3]), "rank {r}: ring");
        if n > 2 {
            assert_eq!(ring[(r + n - 2) % n], Some(vec![]), "rank {r}: empty part");
        }
        let absent = (0..n).filter(|&j| j != prev && (n <= 2 || j != (r + n - 2) % n));
        assert!(
            absent.into_iter().all(|j| ring[j].is_none()),
            "rank {r}: absent parts"
        );
        let group: Vec<usize> = (0..n).filter(|g| g % 2 == r % 2).collect();
        for (k, &g) in group.iter().enumerate() {
            assert_eq!(
                gathered[k],
                vec![g as f32; g + 1],
                "rank {r}: gathered from {g}"
            );
        }
        let s = (n * (n - 1) / 2) as f32;
        assert_eq!(sum, vec![s, n as f32, n as f32 / 2.0], "rank {r}: sum");
        assert_eq!(
            from_last,
            vec![(n - 1) as f32, 1.0, 0.5],
            "rank {r}: broadcast"
        );
    }
}

#[test]
fn a_size_disagreement_fails_on_every_rank_at_once() {
    let Some((n, id)) = gpus("a_size_disagreement_fails_on_every_rank_at_once", 2) else {
        return;
    };
    let t0 = Instant::now();
    let out = on_every_gpu(n, &id, |r, be, c| {
        let send: Vec<_> = (0..n)
            .map(|_| be.upload(&[1.0; 4], &[4]))
            .collect::<Result<_>>()?;
        // rank 1 expects 5 values from rank 0, which sends 4
        let recv: Vec<_> = (0..n)
            .map(|j| vec![if r == 1 && j == 0 { 5 } else { 4 }])
            .collect();
        c.all_to_all(be, &send, &recv).map(|_| ())
    });
    for (r, res) in out.into_iter().enumerate() {
        let e = res.expect_err("a mismatch must fail").to_string();
        assert!(
            e.contains("rank 0 sends 4 values to rank 1, which expects 5"),
            "rank {r}: {e}"
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn an_abort_on_one_rank_releases_the_others_within_seconds() {
    let Some((n, id)) = gpus("an_abort_on_one_rank_releases_the_others_within_seconds", 2) else {
        return;
    };
    let out = on_every_gpu(n, &id, |r, be, c| {
        let x = be.upload(&[1.0; 8], &[8])?;
        c.all_reduce_sum(be, &x)?; // everyone is up
        if r == 0 {
            std::thread::sleep(Duration::from_millis(300));
            c.abort("rank 0 gave up");
        }
        // pending on the others: rank 0 never joins this one (the timeout is 60 s)
        let t0 = Instant::now();
        let e = c.all_reduce_sum(be, &x).err().map(|e| e.to_string());
        Ok((t0.elapsed(), e))
    });
    for (r, res) in out.into_iter().enumerate() {
        let (waited, e) = res.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        let e = e.unwrap_or_else(|| panic!("rank {r}: the collective after the abort succeeded"));
        assert!(
            e.contains("rank 0 gave up") && e.contains("abandoned"),
            "rank {r}: {e}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "rank {r} was released after {waited:?}"
        );
    }
}
