//! Mutated `.pth` archives and safetensors files (byte flips, truncation, length fields set to
//! huge values): opening and reading every tensor gives an error or values, never a panic, and
//! never a host allocation sized by a corrupt length field: a counting global allocator
//! records the largest single allocation while a mutated file is read, which must stay within
//! [`bound`] of the file's size. (The zip crate reads 16-bit name / extra-field lengths into
//! buffers of up to 64 KiB, and sizes its entry table from the central directory's length,
//! which is inside the file: a few times the directory's bytes.)

use jenga_models::{PthWeights, SafetensorsWeights, WeightSource};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

#[path = "support/count_alloc.rs"]
mod count_alloc;
use count_alloc::{largest_alloc, Counting, Scope};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The largest allocation reading a file of `len` bytes may make.
fn bound(len: usize) -> usize {
    16 * len + (80 << 10)
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pth")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bits: u8,
    },
    Truncate {
        keep: usize,
    },
    /// A little-endian u32 / u64 length field overwritten with a huge value.
    Len32 {
        at: usize,
        value: u32,
    },
    Len64 {
        at: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(0x7fff_ffff), any::<u32>()]
        )
            .prop_map(|(at, value)| Mutation::Len32 { at, value }),
        (
            any::<usize>(),
            prop_oneof![Just(u64::MAX), Just(1u64 << 40), any::<u64>()]
        )
            .prop_map(|(at, value)| Mutation::Len64 { at, value }),
    ];
    proptest::collection::vec(one, 1..4)
}

fn apply(mut b: Vec<u8>, ms: &[Mutation], region: usize) -> Vec<u8> {
    for m in ms {
        if b.is_empty() {
            break;
        }
        let span = region.min(b.len()).max(1);
        match *m {
            Mutation::Flip { at, bits } => {
                let i = at % span;
                b[i] ^= bits;
            }
            Mutation::Truncate { keep } => b.truncate(keep % (b.len() + 1)),
            Mutation::Len32 { at, value } => {
                let i = at % span;
                for (k, x) in value.to_le_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(i + k) {
                        *y = *x;
                    }
                }
            }
            Mutation::Len64 { at, value } => {
                let i = at % span;
                for (k, x) in value.to_le_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(i + k) {
                        *y = *x;
                    }
                }
            }
        }
    }
    b
}

/// Opens `bytes` as a file with `open` and reads every tensor; returns the largest allocation.
fn read_all(
    dir: &Path,
    bytes: &[u8],
    open: fn(&Path) -> jenga_models::Result<Box<dyn WeightSource>>,
) -> usize {
    let p: PathBuf = dir.join("mutated");
    std::fs::write(&p, bytes).unwrap();
    let (largest, ()) = largest_alloc(Scope::ThisThread, || {
        if let Ok(w) = open(&p) {
            for n in w.names() {
                let Some(i) = w.info(&n) else { continue };
                let _ = w.stored_any(&n).map(|(_, b)| b.len());
                let _ = w.raw(&n, &i.shape).map(|r| r.shape.len());
            }
        }
    });
    largest
}

fn open_pth(p: &Path) -> jenga_models::Result<Box<dyn WeightSource>> {
    Ok(Box::new(PthWeights::open(p)?))
}

fn open_st(p: &Path) -> jenga_models::Result<Box<dyn WeightSource>> {
    Ok(Box::new(SafetensorsWeights::open(p)?))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pth_archives_never_panic_nor_over_allocate(
        which in 0usize..4,
        ms in mutation(),
        anywhere in any::<bool>(),
    ) {
        let name = ["bf16.pth", "strided.pth", "nested.pth", "params.pth"][which];
        let base = fixture(name);
        // half the cases aim at the pickle and the zip headers at the start, half anywhere
        // (the central directory is at the end)
        let region = if anywhere { base.len() } else { 1024 };
        let bytes = apply(base, &ms, region);
        let t = tempfile::tempdir().unwrap();
        let largest = read_all(t.path(), &bytes, open_pth);
        prop_assert!(largest <= bound(bytes.len()), "largest allocation {largest} for a file of {}", bytes.len());
    }

    #[test]
    fn mutated_safetensors_headers_never_panic_nor_over_allocate(
        which in 0usize..3,
        ms in mutation(),
    ) {
        let name = ["bf16.safetensors", "strided.safetensors", "scaled_fp8.safetensors"][which];
        let base = fixture(name);
        let header = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let bytes = apply(base, &ms, header);
        let t = tempfile::tempdir().unwrap();
        let largest = read_all(t.path(), &bytes, open_st);
        prop_assert!(largest <= bound(bytes.len()), "largest allocation {largest} for a file of {}", bytes.len());
    }
}

/// The mutations reach the reader: a flipped pickle opcode is an error, not a silent success.
#[test]
fn a_broken_pickle_is_an_error() {
    let base = fixture("bf16.pth");
    // the pickle follows the first local header (30 bytes + the name + the extra field)
    let name_len = u16::from_le_bytes([base[26], base[27]]) as usize;
    let extra = u16::from_le_bytes([base[28], base[29]]) as usize;
    let start = 30 + name_len + extra;
    assert_eq!(base[start], 0x80, "PROTO opcode at the pickle's start");
    let mut b = base.clone();
    b[start + 2] = 0xff; // no such opcode
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("broken.pth");
    std::fs::write(&p, &b).unwrap();
    let msg = PthWeights::open(&p)
        .err()
        .expect("broken pickle")
        .to_string();
    assert!(msg.contains("opcode 0xff"), "{msg}");
}
