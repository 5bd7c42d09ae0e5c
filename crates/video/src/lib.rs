//! jenga-video: write generated videos as MP4 (H.264), GIF or PNG frames, and frame strips
//! for documentation. Writes are atomic: a temporary sibling is renamed into place, so a failed
//! run never leaves a half-written output.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// What can go wrong writing a video.
///
/// Messages never repeat the output path the caller passed (`check_output`, `write`,
/// `check_video_size`): the caller names it with its flag (`--out PATH: …`). Paths the
/// library derived (the parent directory, a file found inside an output directory) are named.
/// An I/O failure is the error's `source()`, not part of its message, so a caller printing the
/// chain (`a: b: c`) shows the OS error once.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error(
        "unknown output format `.{ext}` (use .mp4, .gif, or a name without extension for a directory of PNG frames)"
    )]
    UnknownFormat { path: PathBuf, ext: String },
    /// The output would overwrite or delete files this tool did not write.
    #[error("{reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{what}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{detail}")]
    Encode { path: PathBuf, detail: String },
    /// The encoder cannot take a video of this size (checked before any compute).
    #[error("{width}x{height} px, {frames} frames: {reason}")]
    Unsupported {
        format: Format,
        width: usize,
        height: usize,
        frames: usize,
        reason: String,
    },
    #[error("video has {got} bytes, expected {frames}x{height}x{width}x3")]
    Size {
        got: usize,
        frames: usize,
        height: usize,
        width: usize,
    },
}

pub type Result<T> = std::result::Result<T, VideoError>;

/// RGB frames, `[frames, height, width, 3]`.
#[derive(Clone, Debug)]
pub struct Video {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub rgb: Vec<u8>,
    pub fps: u32,
}

impl Video {
    fn check(&self) -> Result<()> {
        if self.rgb.len() != self.frames * self.height * self.width * 3 || self.frames == 0 {
            return Err(VideoError::Size {
                got: self.rgb.len(),
                frames: self.frames,
                height: self.height,
                width: self.width,
            });
        }
        Ok(())
    }

    fn frame(&self, i: usize) -> &[u8] {
        let n = self.height * self.width * 3;
        &self.rgb[i * n..(i + 1) * n]
    }

    /// Nearest-neighbour integer upscale (tiny-wan's 32 px frames are too small to view).
    pub fn upscaled(&self, k: u32) -> Video {
        let k = k.max(1) as usize;
        if k == 1 {
            return self.clone();
        }
        let (h, w) = (self.height * k, self.width * k);
        let mut rgb = vec![0u8; self.frames * h * w * 3];
        for f in 0..self.frames {
            let src = self.frame(f);
            for y in 0..h {
                for x in 0..w {
                    let s = ((y / k) * self.width + x / k) * 3;
                    let d = ((f * h + y) * w + x) * 3;
                    rgb[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
        Video {
            frames: self.frames,
            height: h,
            width: w,
            rgb,
            fps: self.fps,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mp4,
    Gif,
    PngDir,
}

impl Format {
    /// `.mp4`, `.gif`; a path without extension (or ending in `/`) is a PNG-frame directory.
    pub fn from_path(p: &Path) -> Result<Format> {
        if p.as_os_str().to_string_lossy().ends_with('/') {
            return Ok(Format::PngDir);
        }
        match p.extension().map(|e| e.to_string_lossy().to_lowercase()) {
            None => Ok(Format::PngDir),
            Some(e) if e == "mp4" => Ok(Format::Mp4),
            Some(e) if e == "gif" => Ok(Format::Gif),
            Some(e) => Err(VideoError::UnknownFormat {
                path: p.into(),
                ext: e,
            }),
        }
    }
}

/// Largest frame openh264 encodes (level 5.2): 3840x2160 landscape or 2160x3840 portrait.
pub const H264_MAX: (usize, usize) = (3840, 2160);
/// Smallest frame side openh264 encodes (one macroblock).
pub const H264_MIN_SIDE: usize = 16;

/// Whether `format` can hold `frames` frames of `width`x`height` pixels (the size written, i.e.
/// after upscaling). Call before any compute: the encoders would otherwise fail after the run.
pub fn check_video_size(format: Format, width: usize, height: usize, frames: usize) -> Result<()> {
    let fail = |reason: String| {
        Err(VideoError::Unsupported {
            format,
            width,
            height,
            frames,
            reason,
        })
    };
    if width == 0 || height == 0 || frames == 0 {
        return fail("an empty video cannot be written".into());
    }
    match format {
        Format::Mp4 => {
            // H.264 frames are padded to even sizes.
            let (w, h) = (width.div_ceil(2) * 2, height.div_ceil(2) * 2);
            let (big, small) = (w.max(h), w.min(h));
            if big > H264_MAX.0 || small > H264_MAX.1 {
                return fail(format!(
                    "too large for the H.264 encoder (at most {}x{} or {}x{}); use a smaller --upscale, .gif or a PNG directory",
                    H264_MAX.0, H264_MAX.1, H264_MAX.1, H264_MAX.0
                ));
            }
            if small < H264_MIN_SIDE {
                return fail(format!(
                    "too small for the H.264 encoder (each side at least {H264_MIN_SIDE} px); use --upscale, .gif or a PNG directory"
                ));
            }
        }
        Format::Gif => {
            if width > u16::MAX as usize || height > u16::MAX as usize {
                return fail(format!("too large for GIF (at most {0}x{0})", u16::MAX));
            }
        }
        Format::PngDir => {
            if width > u32::MAX as usize || height > u32::MAX as usize {
                return fail("too large for PNG".into());
            }
        }
    }
    Ok(())
}

/// `frame_NNNN.png` (at least 4 digits): a frame this tool writes into a PNG directory.
fn frame_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("frame_")?.strip_suffix(".png")?;
    if digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// `.frame_NNNN.png.partial-PID`: a frame being written (left over only if a run was killed).
fn is_frame_temp(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.split_once(".partial-"))
        .is_some_and(|(f, pid)| {
            frame_index(f).is_some() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// `path` without `./` segments or a trailing `/` (so `frames/` and `frames` are one name).
fn normalized(path: &Path) -> PathBuf {
    path.components().collect()
}

fn refuse(path: &Path, reason: impl Into<String>) -> VideoError {
    VideoError::Refused {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Validate an output path before any compute: a known format, a parent directory that exists
/// and accepts a file, and nothing of the user's that writing would overwrite or delete.
///
/// A PNG-frame directory must be new, empty, or hold only an earlier run's `frame_NNNN.png`
/// files (which `write` replaces). Refused: `.`, `..`, `/`, a directory holding any other file,
/// an existing file or symbolic link where the directory would go, and a directory where an
/// `.mp4`/`.gif` file would go.
pub fn check_output(path: &Path) -> Result<Format> {
    let fmt = Format::from_path(path)?;
    let shown = path.to_string_lossy();
    let trimmed = shown.trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed == "."
        || trimmed == ".."
        || trimmed.ends_with("/.")
        || trimmed.ends_with("/..")
        || path.file_name().is_none()
    {
        return Err(refuse(
            path,
            format!("refusing to write into `{shown}` itself; name a new or empty directory (e.g. `frames`) or a .mp4/.gif file"),
        ));
    }
    let path = &normalized(path);
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(VideoError::Io {
                path: path.clone(),
                what: "cannot read the output path".into(),
                source,
            })
        }
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refuse(
                path,
                "is a symbolic link; name the file or directory itself",
            ))
        }
        Ok(m) => match fmt {
            Format::PngDir if !m.is_dir() => {
                return Err(refuse(
                    path,
                    "exists and is not a directory; PNG frames go into a new or empty directory (name a video file with .mp4 or .gif)",
                ))
            }
            Format::PngDir => {
                if let Some(name) = foreign_entry(path)? {
                    return Err(refuse(
                        path,
                        format!("the directory holds `{name}`, which jenga did not write; PNG frames go into a new or empty directory, or one holding only an earlier run's frame_NNNN.png files"),
                    ));
                }
            }
            _ if m.is_dir() => {
                return Err(refuse(path, "is a directory, not a video file"));
            }
            _ => {}
        },
    }
    check_parent_writable(path)?;
    Ok(fmt)
}

/// The first entry of `dir` that is not one of this tool's frames (or their temporaries).
fn foreign_entry(dir: &Path) -> Result<Option<String>> {
    let io = |source| VideoError::Io {
        path: dir.into(),
        what: "cannot list the output directory".into(),
        source,
    };
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = (frame_index(&name).is_some() || is_frame_temp(&name))
            && e.file_type().map_err(io)?.is_file();
        if !ours {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().next())
}

/// The directory that will hold `path` exists and accepts a new file.
pub fn check_parent_writable(path: &Path) -> Result<()> {
    let path = normalized(path);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |what: &str, source| VideoError::Io {
        path: parent.clone(),
        what: format!("{what} `{}`", parent.display()),
        source,
    };
    let meta = fs::metadata(&parent).map_err(|e| io("cannot use the output's directory", e))?;
    if !meta.is_dir() {
        return Err(refuse(
            &parent,
            format!("`{}` is not a directory", parent.display()),
        ));
    }
    let probe = parent.join(format!(".jenga-write-test-{}", unique()));
    fs::write(&probe, b"").map_err(|e| io("cannot write into the output's directory", e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// `PID-N`, unique within this process.
fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the temporaries it holds when dropped (every error path), unless they were renamed
/// into place first.
#[derive(Default)]
struct Temps {
    files: Vec<PathBuf>,
    dir: Option<PathBuf>,
}

impl Drop for Temps {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        if let Some(d) = &self.dir {
            // a directory this call created: it holds only the frames written into it
            let _ = fs::remove_dir_all(d);
        }
    }
}

fn io_err(path: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VideoError {
    let (path, what) = (path.to_path_buf(), what.into());
    move |source| VideoError::Io { path, what, source }
}

/// Write `video` (upscaled by `upscale`) to `path` in the format its name says.
///
/// Checks `path` again (`check_output`) and the encoder's size limits (`check_video_size`)
/// before writing. Nothing the tool did not write is overwritten or deleted; on any error
/// nothing is left behind. An `.mp4`/`.gif` is written to a temporary sibling and renamed into
/// place. PNG frames go into a temporary sibling directory renamed into place when `path` does
/// not exist; into an existing directory (empty, or an earlier run's frames) each frame is
/// written to a temporary and renamed over `frame_NNNN.png` once all are encoded, and an earlier
/// run's frames beyond this video's length are removed.
pub fn write(path: &Path, video: &Video, upscale: u32) -> Result<()> {
    video.check()?;
    let fmt = check_output(path)?;
    let path = &normalized(path);
    let k = upscale.max(1) as usize;
    check_video_size(fmt, video.width * k, video.height * k, video.frames)?;
    let v = video.upscaled(upscale);
    match fmt {
        Format::Gif | Format::Mp4 => {
            let tmp = temp_sibling(path);
            let mut temps = Temps {
                files: vec![tmp.clone()],
                dir: None,
            };
            if fmt == Format::Gif {
                write_gif(&tmp, &v)?;
            } else {
                write_mp4(&tmp, &v)?;
            }
            fs::rename(&tmp, path).map_err(io_err(path, "cannot rename the video into place"))?;
            temps.files.clear();
            Ok(())
        }
        Format::PngDir if path.exists() => replace_frames(path, &v),
        Format::PngDir => {
            let tmp = temp_sibling(path);
            fs::create_dir(&tmp).map_err(io_err(
                path,
                format!("cannot create a temporary directory `{}`", tmp.display()),
            ))?;
            let mut temps = Temps {
                files: Vec::new(),
                dir: Some(tmp.clone()),
            };
            for i in 0..v.frames {
                encode_png(&tmp.join(frame_name(i)), v.width, v.height, v.frame(i))
                    .map_err(|e| png_error(i, e))?;
            }
            fs::rename(&tmp, path)
                .map_err(io_err(path, "cannot rename the frame directory into place"))?;
            temps.dir = None;
            Ok(())
        }
    }
}

fn frame_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

fn png_error(i: usize, e: image::ImageError) -> VideoError {
    match e {
        image::ImageError::IoError(source) => VideoError::Io {
            path: frame_name(i).into(),
            what: format!("writing {}", frame_name(i)),
            source,
        },
        e => VideoError::Encode {
            path: frame_name(i).into(),
            detail: format!("encoding {}: {e}", frame_name(i)),
        },
    }
}

/// Replace the frame set in `dir` (checked by `check_output`: it holds only frames).
fn replace_frames(dir: &Path, v: &Video) -> Result<()> {
    let mut temps = Temps::default();
    let tag = unique();
    for i in 0..v.frames {
        let tmp = dir.join(format!(".{}.partial-{tag}", frame_name(i)));
        temps.files.push(tmp.clone());
        encode_png(&tmp, v.width, v.height, v.frame(i)).map_err(|e| png_error(i, e))?;
    }
    let written = std::mem::take(&mut temps.files);
    for (i, tmp) in written.iter().enumerate() {
        // keep the not-yet-renamed ones for cleanup on failure
        temps.files = written[i..].to_vec();
        fs::rename(tmp, dir.join(frame_name(i))).map_err(io_err(
            dir,
            format!("cannot rename {} into place", frame_name(i)),
        ))?;
    }
    temps.files.clear();
    // An earlier, longer run's frames (and temporaries of a killed run) are ours: remove them.
    let entries = fs::read_dir(dir).map_err(io_err(dir, "cannot list the output directory"))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = frame_index(&name).is_some_and(|i| i >= v.frames) || is_frame_temp(&name);
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}{ext}", unique()))
}

fn write_gif(path: &Path, v: &Video) -> Result<()> {
    let enc = |detail: String| VideoError::Encode {
        path: path.into(),
        detail: format!("GIF: {detail}"),
    };
    let file = fs::File::create(path).map_err(io_err(path, "cannot create the GIF file"))?;
    let (w, h) = (
        u16::try_from(v.width).map_err(|_| enc("too wide".into()))?,
        u16::try_from(v.height).map_err(|_| enc("too tall".into()))?,
    );
    let mut e =
        gif::Encoder::new(BufWriter::new(file), w, h, &[]).map_err(|x| enc(x.to_string()))?;
    e.set_repeat(gif::Repeat::Infinite)
        .map_err(|x| enc(x.to_string()))?;
    for i in 0..v.frames {
        let mut frame = gif::Frame::from_rgb_speed(w, h, v.frame(i), 10);
        frame.delay = (100 / v.fps.max(1)) as u16;
        e.write_frame(&frame).map_err(|x| enc(x.to_string()))?;
    }
    e.into_inner()
        .map_err(io_err(path, "cannot write the GIF file"))?
        .into_inner()
        .map_err(|e| io_err(path, "cannot write the GIF file")(e.into_error()))?;
    Ok(())
}

fn encode_png(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
) -> std::result::Result<(), image::ImageError> {
    image::save_buffer_with_format(
        path,
        rgb,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
}

/// Write one RGB image as PNG (atomic: temporary sibling + rename). Errors name `path` (it is
/// often derived, e.g. one mask image of many).
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let mut temps = Temps {
        files: vec![tmp.clone()],
        dir: None,
    };
    encode_png(&tmp, width, height, rgb).map_err(|e| match e {
        image::ImageError::IoError(source) => VideoError::Io {
            path: path.into(),
            what: format!("cannot write {}", path.display()),
            source,
        },
        e => VideoError::Encode {
            path: path.into(),
            detail: format!("{}: {e}", path.display()),
        },
    })?;
    fs::rename(&tmp, path).map_err(io_err(
        path,
        format!("cannot rename {} into place", path.display()),
    ))?;
    temps.files.clear();
    Ok(())
}

/// H.264 needs even dimensions: pad by edge replication to the next even size.
fn even_padded(v: &Video) -> Video {
    let (h, w) = (v.height.div_ceil(2) * 2, v.width.div_ceil(2) * 2);
    if (h, w) == (v.height, v.width) {
        return v.clone();
    }
    let mut rgb = vec![0u8; v.frames * h * w * 3];
    for f in 0..v.frames {
        let src = v.frame(f);
        for y in 0..h {
            for x in 0..w {
                let s = (y.min(v.height - 1) * v.width + x.min(v.width - 1)) * 3;
                let d = ((f * h + y) * w + x) * 3;
                rgb[d..d + 3].copy_from_slice(&src[s..s + 3]);
            }
        }
    }
    Video {
        frames: v.frames,
        height: h,
        width: w,
        rgb,
        fps: v.fps,
    }
}

/// Split an Annex-B stream into NAL units (without start codes).
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = if k + 1 < starts.len() {
            starts[k + 1] - 3
        } else {
            stream.len()
        };
        // a 4-byte start code leaves one extra zero before the next unit
        while e > s && stream[e - 1] == 0 && k + 1 < starts.len() {
            e -= 1;
        }
        out.push(&stream[s..e]);
    }
    out
}

fn write_mp4(path: &Path, v: &Video) -> Result<()> {
    use openh264::encoder::{Encoder, EncoderConfig};
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let enc_err = |detail: String| VideoError::Encode {
        path: path.into(),
        detail,
    };
    let v = even_padded(v);
    // ~4 bits per pixel per second keeps flat-colour tiny videos crisp
    let bitrate = ((v.width * v.height * v.fps as usize * 4) as u32).max(200_000);
    // Rate control off: constant quality, and no frame is ever skipped (one sample per frame).
    let config = EncoderConfig::new()
        .set_bitrate_bps(bitrate)
        .max_frame_rate(v.fps as f32)
        .enable_skip_frame(false)
        .rate_control_mode(openh264::encoder::RateControlMode::Off);
    let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config)
        .map_err(|e| enc_err(format!("H.264 encoder: {e}")))?;
    let (mut sps, mut pps) = (None, None);
    let mut samples: Vec<(Vec<u8>, bool)> = Vec::new();
    for i in 0..v.frames {
        let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(v.frame(i), (v.width, v.height)));
        let bs = encoder
            .encode(&yuv)
            .map_err(|e| enc_err(format!("H.264 encoding frame {i}: {e}")))?;
        let annexb = bs.to_vec();
        let mut sample = Vec::new();
        let mut sync = false;
        for nal in nal_units(&annexb) {
            match nal.first().map(|b| b & 0x1f) {
                Some(7) => sps = Some(nal.to_vec()),
                Some(8) => pps = Some(nal.to_vec()),
                Some(t) => {
                    sync |= t == 5;
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
                None => {}
            }
        }
        samples.push((sample, sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(enc_err("H.264 encoder produced no SPS/PPS".into()));
    };
    let file = fs::File::create(path).map_err(io_err(path, "cannot create the MP4 file"))?;
    let mp4e = |e: mp4::Error| enc_err(format!("MP4: {e}"));
    let config = mp4::Mp4Config {
        major_brand: str::parse("isom").expect("fourcc"),
        minor_version: 512,
        compatible_brands: ["isom", "iso2", "avc1", "mp41"]
            .iter()
            .map(|b| str::parse(b).expect("fourcc"))
            .collect(),
        timescale: 1000,
    };
    let mut w = mp4::Mp4Writer::write_start(BufWriter::new(file), &config).map_err(mp4e)?;
    let timescale = v.fps.max(1) * 1000;
    w.add_track(&mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
            width: v.width as u16,
            height: v.height as u16,
            seq_param_set: sps,
            pic_param_set: pps,
        }),
    })
    .map_err(mp4e)?;
    for (i, (bytes, sync)) in samples.into_iter().enumerate() {
        let sample = mp4::Mp4Sample {
            start_time: i as u64 * 1000,
            duration: 1000,
            rendering_offset: 0,
            is_sync: sync,
            bytes: mp4::Bytes::from(bytes),
        };
        w.write_sample(1, &sample).map_err(mp4e)?;
    }
    w.write_end().map_err(mp4e)?;
    w.into_writer()
        .into_inner()
        .map_err(|e| io_err(path, "cannot write the MP4 file")(e.into_error()))?;
    Ok(())
}

/// A horizontal strip of up to `max_frames` evenly spaced frames (upscaled), as RGB.
pub fn frame_strip(v: &Video, max_frames: usize, upscale: u32) -> (usize, usize, Vec<u8>) {
    let v = v.upscaled(upscale);
    let n = max_frames.clamp(1, v.frames);
    let picks: Vec<usize> = (0..n)
        .map(|i| {
            if n == 1 {
                0
            } else {
                i * (v.frames - 1) / (n - 1)
            }
        })
        .collect();
    let gap = 2;
    let w = n * v.width + (n - 1) * gap;
    let mut rgb = vec![255u8; w * v.height * 3];
    for (k, &f) in picks.iter().enumerate() {
        let src = v.frame(f);
        for y in 0..v.height {
            let d = (y * w + k * (v.width + gap)) * 3;
            rgb[d..d + v.width * 3].copy_from_slice(&src[y * v.width * 3..(y + 1) * v.width * 3]);
        }
    }
    (w, v.height, rgb)
}

/// Strips of several videos stacked vertically (e.g. dense above each preset), as one PNG.
pub fn write_strip_grid(
    path: &Path,
    videos: &[&Video],
    max_frames: usize,
    upscale: u32,
) -> Result<()> {
    let strips: Vec<_> = videos
        .iter()
        .map(|v| frame_strip(v, max_frames, upscale))
        .collect();
    let w = strips.iter().map(|s| s.0).max().unwrap_or(1);
    let gap = 4;
    let h: usize = strips.iter().map(|s| s.1).sum::<usize>() + gap * strips.len().saturating_sub(1);
    let mut rgb = vec![255u8; w * h * 3];
    let mut y0 = 0;
    for (sw, sh, s) in &strips {
        for y in 0..*sh {
            let d = ((y0 + y) * w) * 3;
            rgb[d..d + sw * 3].copy_from_slice(&s[y * sw * 3..(y + 1) * sw * 3]);
        }
        y0 += sh + gap;
    }
    write_png(path, w, h, &rgb)
}
