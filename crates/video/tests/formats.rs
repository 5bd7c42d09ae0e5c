use jenga_video::{check_output, write, Format, Video};
use std::path::Path;

/// Flat background with a moving square.
fn video(frames: usize, h: usize, w: usize) -> Video {
    let mut rgb = vec![0u8; frames * h * w * 3];
    for f in 0..frames {
        for y in 0..h {
            for x in 0..w {
                let inside = (y / 4 == 1) && (x / 4 == f % (w / 4));
                let c = if inside { [220, 40, 40] } else { [50, 90, 230] };
                rgb[((f * h + y) * w + x) * 3..][..3].copy_from_slice(&c);
            }
        }
    }
    Video {
        frames,
        height: h,
        width: w,
        rgb,
        fps: 8,
    }
}

#[test]
fn gif_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("a.gif");
    write(&p, &video(4, 16, 16), 2).unwrap();
    let mut d = gif::DecodeOptions::new();
    d.set_color_output(gif::ColorOutput::RGBA);
    let mut r = d.read_info(std::fs::File::open(&p).unwrap()).unwrap();
    assert_eq!((r.width(), r.height()), (32, 32));
    let mut n = 0;
    while let Some(f) = r.read_next_frame().unwrap() {
        // corner pixel is the background colour (GIF quantisation keeps flat colours close)
        let px = &f.buffer[..3];
        assert!(
            (px[0] as i32 - 50).abs() < 12 && (px[2] as i32 - 230).abs() < 12,
            "{px:?}"
        );
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn png_dir_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("frames");
    write(&p, &video(3, 8, 8), 1).unwrap();
    let img = image::open(p.join("frame_0002.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (8, 8));
    assert_eq!(img.get_pixel(7, 0).0, [50, 90, 230]);
    assert_eq!(img.get_pixel(1, 5).0, [220, 40, 40]);
    assert!(!p.join("frame_0003.png").exists());
}

#[test]
fn mp4_has_one_sample_per_frame_and_decodes_to_the_right_colour() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("a.mp4");
    // odd size on purpose: padded to even for H.264
    write(&p, &video(5, 16, 16), 3).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let size = f.metadata().unwrap().len();
    let mut r = mp4::Mp4Reader::read_header(std::io::BufReader::new(f), size).unwrap();
    let track = r.tracks().values().next().unwrap();
    assert_eq!((track.width(), track.height()), (48, 48));
    assert_eq!(track.sample_count(), 5);
    let id = track.track_id();
    // decode the first sample and check the background colour
    let s = r.read_sample(id, 1).unwrap().unwrap();
    let tr = &r.tracks()[&id];
    let avc = (
        tr.sequence_parameter_set().unwrap().to_vec(),
        tr.picture_parameter_set().unwrap().to_vec(),
    );
    let mut annexb = Vec::new();
    for nal in [&avc.0, &avc.1] {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(nal);
    }
    let mut i = 0;
    while i + 4 <= s.bytes.len() {
        let n = u32::from_be_bytes(s.bytes[i..i + 4].try_into().unwrap()) as usize;
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(&s.bytes[i + 4..i + 4 + n]);
        i += 4 + n;
    }
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let yuv = dec.decode(&annexb).unwrap().expect("a picture");
    use openh264::formats::YUVSource;
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    let corner = &rgb[..3];
    // RGB→YUV420→RGB (openh264's BT.601 converters) moves saturated blue by up to ~16 levels.
    assert!(
        corner
            .iter()
            .zip([50u8, 90, 230])
            .all(|(a, b)| (*a as i32 - b as i32).abs() <= 20),
        "{corner:?}"
    );
}

#[test]
fn bad_outputs_fail_cleanly() {
    assert!(Format::from_path(Path::new("x.avi"))
        .unwrap_err()
        .to_string()
        .contains("avi"));
    assert_eq!(
        Format::from_path(Path::new("frames/")).unwrap(),
        Format::PngDir
    );
    let t = tempfile::tempdir().unwrap();
    let e = check_output(&t.path().join("missing/x.mp4"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
    assert_eq!(check_output(&t.path().join("x.gif")).unwrap(), Format::Gif);
    // a wrong-sized buffer is refused before anything is created
    let bad = Video {
        frames: 2,
        height: 4,
        width: 4,
        rgb: vec![0; 10],
        fps: 8,
    };
    let p = t.path().join("bad.gif");
    assert!(write(&p, &bad, 1).is_err());
    assert!(
        std::fs::read_dir(t.path()).unwrap().next().is_none(),
        "nothing left behind"
    );
}

#[test]
fn strip_has_the_requested_frames() {
    let v = video(8, 8, 8);
    let (w, h, rgb) = jenga_video::frame_strip(&v, 4, 2);
    assert_eq!((w, h), (4 * 16 + 3 * 2, 16));
    assert_eq!(rgb.len(), w * h * 3);
}
