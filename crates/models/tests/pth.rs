//! `.pth` checkpoints written by `torch.save` (tests/fixtures/pth, made by
//! tools/make_pth_fixtures.py) read without Python: every tensor equals the companion
//! safetensors file the same script wrote; contiguous tensors are served from the mmap,
//! strided views made contiguous; a pickle that names any other global is refused.

use jenga_models::weights::{ScaledFp8, TensorData};
use jenga_models::{open_weights, ModelError, PthWeights, SafetensorsWeights, WeightSource};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pth")
        .join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

/// Every tensor of `NAME.pth` vs `NAME.safetensors` (keys of the reference: `strip` removed):
/// same names, dtypes, shapes, bytes. Returns the tensor count.
fn same_as_reference(name: &str, strip: &str) -> usize {
    let pth = PthWeights::open(&fixture(&format!("{name}.pth"))).unwrap();
    let st = SafetensorsWeights::open(&fixture(&format!("{name}.safetensors"))).unwrap();
    let mut want: Vec<String> = st
        .names()
        .into_iter()
        .map(|n| n.strip_prefix(strip).unwrap_or(&n).to_string())
        .collect();
    want.sort();
    assert_eq!(pth.names(), want, "{name}: tensor names");
    for n in &want {
        let (pi, pb) = pth.stored_any(n).unwrap();
        let (si, sb) = st.stored_any(&format!("{strip}{n}")).unwrap();
        assert_eq!(pi, si, "{name}: `{n}` dtype/shape");
        assert_eq!(pb, sb, "{name}: `{n}` bytes");
        if jenga_models::parse_dtype(&pi.dtype).is_some() {
            let a = pth.load(n, &pi.shape).unwrap();
            let b = st.load(&format!("{strip}{n}"), &si.shape).unwrap();
            assert_eq!(a, b, "{name}: `{n}` values");
        }
    }
    want.len()
}

#[test]
fn each_dtype_equals_what_torch_saved() {
    for (name, dtype) in [("bf16", "BF16"), ("f16", "F16"), ("f32", "F32")] {
        assert_eq!(same_as_reference(name, ""), 3);
        let w = PthWeights::open(&fixture(&format!("{name}.pth"))).unwrap();
        let i = w.info("conv.weight").unwrap();
        assert_eq!(
            (i.dtype.as_str(), i.shape.as_slice()),
            (dtype, &[4, 3, 1, 2, 2][..])
        );
        assert_eq!(w.param_count(), Some(8 * 6 + 6 + 48));
    }
}

#[test]
fn contiguous_tensors_are_borrowed_from_the_map_strided_views_made_contiguous() {
    assert_eq!(same_as_reference("strided", ""), 7);
    let w = PthWeights::open(&fixture("strided.pth")).unwrap();
    for (n, borrowed) in [
        ("whole", true),
        ("rows", true),
        ("scalar", true),
        ("empty", true),
        ("transposed", false),
        ("slice", false),
        ("step", false),
    ] {
        let shape = w.info(n).unwrap().shape;
        let raw = w.raw(n, &shape).unwrap();
        let is_borrowed = matches!(raw.data, TensorData::Stored { .. });
        assert_eq!(is_borrowed, borrowed, "`{n}`");
    }
    assert_eq!(w.info("transposed").unwrap().shape, vec![10, 6]);
    assert_eq!(w.info("scalar").unwrap().shape, Vec::<usize>::new());
}

#[test]
fn nested_ordered_dicts_parameters_and_fp8() {
    // {"state_dict": {...}, "epoch": 3, ...}: read from the state dict; sub-dicts dotted
    assert_eq!(same_as_reference("nested", "state_dict."), 2);
    let w = PthWeights::open(&fixture("nested.pth")).unwrap();
    assert_eq!(w.names(), ["a.weight", "sub.b"]);
    // Module.state_dict(): OrderedDict with `_metadata`
    assert_eq!(same_as_reference("ordered", ""), 4);
    // nn.Parameter (_rebuild_parameter) and float8_e4m3fn (_rebuild_tensor_v3, UntypedStorage)
    assert_eq!(same_as_reference("params", ""), 2);
    let w = PthWeights::open(&fixture("params.pth")).unwrap();
    assert_eq!(w.info("f8").unwrap().dtype, "F8_E4M3");
    let err = w.raw("f8", &[4, 2]).err().unwrap().to_string();
    assert!(err.contains("unsupported dtype F8_E4M3"), "{err}");
}

#[test]
fn a_pickle_that_calls_os_system_is_refused_naming_the_global() {
    let p = fixture("malicious.pth");
    let err = PthWeights::open(&p).err().expect("must be refused");
    let msg = err.to_string();
    assert!(msg.contains("`posix.system`"), "{msg}");
    assert!(msg.contains("refused"), "{msg}");
    assert!(msg.starts_with(&p.display().to_string()), "{msg}");
    assert!(!Path::new("/tmp/jenga-pwned").exists());
    assert_eq!(msg.lines().count(), 1);
}

#[test]
fn files_that_are_not_torch_archives_are_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "text.pth",
            b"hello, not a checkpoint",
            "not a PyTorch zip archive",
        ),
        (
            "legacy.pt",
            &[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc],
            "not a PyTorch zip archive",
        ),
        (
            "trunc.pth",
            b"PK\x03\x04\x14\x00\x00\x00",
            "not a PyTorch archive",
        ),
        ("empty.bin", b"", "not a PyTorch zip archive"),
    ];
    for (name, bytes, want) in cases {
        let p = t.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let msg = open_weights(&p).err().expect(name).to_string();
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(msg.contains(name), "{name}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
    // a zip without data.pkl
    let p = t.path().join("other.pth");
    let f = std::fs::File::create(&p).unwrap();
    let mut z = zip::ZipWriter::new(f);
    z.start_file(
        "x/readme.txt",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    std::io::Write::write_all(&mut z, b"hi").unwrap();
    z.finish().unwrap();
    let msg = open_weights(&p).err().unwrap().to_string();
    assert!(msg.contains("expected one `data.pkl`"), "{msg}");
}

#[test]
fn scaled_fp8_is_dequantised_like_torch_and_missing_scales_are_an_error() {
    let src = SafetensorsWeights::open(&fixture("scaled_fp8.safetensors")).unwrap();
    assert!(ScaledFp8::has_fp8(&src));
    let w = ScaledFp8::new(Box::new(src)).unwrap();
    let r = SafetensorsWeights::open(&fixture("scaled_fp8_ref.safetensors")).unwrap();
    assert_eq!(w.names(), r.names(), "scales and the marker are hidden");
    for n in r.names() {
        let shape = r.info(&n).unwrap().shape;
        let got = w.raw(&n, &shape).unwrap();
        assert_eq!(got.shape, shape);
        let want = r.raw(&n, &shape).unwrap();
        let (TensorData::Stored { bytes: b, .. }, g) = (want.data, &got.data) else {
            panic!("reference is stored")
        };
        let gb: &[u8] = match g {
            TensorData::Owned { bytes, .. } => bytes,
            TensorData::Stored { bytes, .. } => bytes,
            TensorData::F32(_) => panic!("bf16 expected"),
        };
        assert_eq!(gb, b, "`{n}` dequantised bytes");
    }
    let p = fixture("fp8_no_scales.safetensors");
    let src = SafetensorsWeights::open(&p).unwrap();
    let msg = ScaledFp8::new(Box::new(src)).err().unwrap().to_string();
    assert!(msg.contains("has no scale"), "{msg}");
    assert!(msg.contains("fp8_no_scales.safetensors"), "{msg}");
    assert!(msg.contains("encoder.block.0.layer"), "{msg}");
    let _ = ModelError::Invalid(String::new());
}
