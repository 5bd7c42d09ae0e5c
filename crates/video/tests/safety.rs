//! `--out` never loses a user's files: refused targets, replacing only this tool's frames,
//! nothing left behind after a failure, the encoders' size limits checked up front, and
//! messages that print each OS error and path once.

use jenga_video::{check_output, check_video_size, write, Format, Video};
use std::error::Error;
use std::fs;
use std::path::Path;

fn video(frames: usize, h: usize, w: usize) -> Video {
    Video {
        frames,
        height: h,
        width: w,
        rgb: vec![77; frames * h * w * 3],
        fps: 8,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The error and its sources joined as the cli prints them.
fn chain(e: &dyn Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut s = e.source();
    while let Some(x) = s {
        parts.push(x.to_string());
        s = x.source();
    }
    parts.join(": ")
}

#[test]
fn png_dir_holding_a_foreign_file_is_refused_and_kept() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("results");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("thesis.txt"), b"four years").unwrap();
    fs::write(out.join("frame_0000.png"), b"old").unwrap();
    let e = check_output(&out).unwrap_err().to_string();
    assert!(
        e.contains("thesis.txt") && e.contains("did not write"),
        "{e}"
    );
    let e = write(&out, &video(2, 8, 8), 1).unwrap_err().to_string();
    assert!(e.contains("thesis.txt"), "{e}");
    assert_eq!(fs::read(out.join("thesis.txt")).unwrap(), b"four years");
    assert_eq!(names(&out), ["frame_0000.png", "thesis.txt"]);
    assert_eq!(names(t.path()), ["results"], "nothing left beside it");
    // a sub-directory, or a frame-like name that is not ours, is foreign too
    for other in ["frame_1.png", "frame_0001.jpg", "notes"] {
        let d = t.path().join(format!("d-{other}"));
        fs::create_dir(&d).unwrap();
        if other == "notes" {
            fs::create_dir(d.join(other)).unwrap();
        } else {
            fs::write(d.join(other), b"x").unwrap();
        }
        assert!(check_output(&d).is_err(), "{other}");
    }
}

#[test]
fn dot_dotdot_and_root_are_refused() {
    for p in [
        ".",
        "./",
        "..",
        "../",
        "/",
        "frames/..",
        "frames/.",
        "a/../..",
    ] {
        let e = check_output(Path::new(p)).unwrap_err().to_string();
        assert!(e.contains("refusing"), "{p}: {e}");
    }
}

#[test]
fn existing_file_without_extension_is_refused_and_nothing_is_left() {
    let t = tempfile::tempdir().unwrap();
    let mk = t.path().join("Makefile");
    fs::write(&mk, b"all:\n").unwrap();
    let e = check_output(&mk).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    assert!(write(&mk, &video(2, 8, 8), 1).is_err());
    assert_eq!(fs::read(&mk).unwrap(), b"all:\n");
    assert_eq!(names(t.path()), ["Makefile"], "no .Makefile.partial-* left");
}

#[test]
fn a_directory_where_a_video_file_goes_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("clip.mp4");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("keep"), b"x").unwrap();
    assert!(check_output(&d).is_err());
    assert!(write(&d, &video(2, 16, 16), 1).is_err());
    assert_eq!(names(&d), ["keep"]);
    assert_eq!(names(t.path()), ["clip.mp4"]);
}

#[cfg(unix)]
#[test]
fn a_symlink_as_output_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(check_output(&link).is_err());
}

#[test]
fn png_dir_replaces_only_its_own_frames() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("frames");
    // new directory
    write(&out, &video(4, 8, 8), 1).unwrap();
    assert_eq!(
        names(&out),
        [
            "frame_0000.png",
            "frame_0001.png",
            "frame_0002.png",
            "frame_0003.png"
        ]
    );
    // an earlier run's frames: replaced, the extra ones removed, no temporaries left
    write(&out, &video(2, 4, 4), 1).unwrap();
    assert_eq!(names(&out), ["frame_0000.png", "frame_0001.png"]);
    let img = image::open(out.join("frame_0001.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (4, 4));
    assert_eq!(names(t.path()), ["frames"]);
    // an existing empty directory, given with a trailing slash
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    write(
        Path::new(&format!("{}/", empty.display())),
        &video(1, 4, 4),
        1,
    )
    .unwrap();
    assert_eq!(names(&empty), ["frame_0000.png"]);
    assert_eq!(names(t.path()), ["empty", "frames"]);
}

#[test]
fn encoder_size_limits_are_checked_up_front() {
    use Format::*;
    assert!(check_video_size(Mp4, 3840, 2160, 81).is_ok());
    assert!(check_video_size(Mp4, 2160, 3840, 81).is_ok());
    assert!(check_video_size(Mp4, 16, 16, 1).is_ok());
    assert!(check_video_size(Mp4, 15, 15, 1).is_ok(), "padded to 16x16");
    for (w, h) in [
        (3842, 2160),
        (3841, 2160),
        (4096, 2160),
        (2162, 3840),
        (8, 64),
        (64, 14),
    ] {
        let e = check_video_size(Mp4, w, h, 1).unwrap_err().to_string();
        assert!(
            e.contains("H.264") && e.contains(&format!("{w}x{h}")),
            "{e}"
        );
    }
    assert!(check_video_size(Gif, 65535, 8, 1).is_ok());
    assert!(check_video_size(Gif, 65536, 8, 1).is_err());
    assert!(check_video_size(PngDir, 8192, 8192, 1).is_ok());
    assert!(check_video_size(PngDir, 8, 8, 0).is_err());
    // write applies it before creating anything: 16 px upscaled x241 = 3856 px
    let t = tempfile::tempdir().unwrap();
    let e = write(&t.path().join("big.mp4"), &video(1, 16, 16), 241)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3856x3856"), "{e}");
    assert!(names(t.path()).is_empty());
}

#[test]
fn messages_print_each_os_error_and_path_once() {
    let t = tempfile::tempdir().unwrap();
    let e = check_output(&t.path().join("missing/x.mp4")).unwrap_err();
    let c = chain(&e);
    assert_eq!(c.matches("os error 2").count(), 1, "{c}");
    assert_eq!(c.matches("missing").count(), 1, "{c}");
    assert!(
        !e.to_string().contains("os error"),
        "OS error only as source: {e}"
    );
    // the output path itself is named by the caller (`--out foo.avi: …`), not repeated
    let e = check_output(Path::new("foo.avi")).unwrap_err().to_string();
    assert!(!e.contains("foo") && e.contains("`.avi`"), "{e}");
    let e = write(Path::new("foo.avi"), &video(1, 4, 4), 1).unwrap_err();
    assert!(!chain(&e).contains("foo"), "{}", chain(&e));
}
