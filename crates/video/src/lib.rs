//! jenga-video: write generated videos as MP4 (H.264), GIF or PNG frames, and frame strips
//! for documentation. Writes are atomic: a temporary sibling is renamed into place, so a failed
//! run never leaves a half-written output.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error(
        "{path}: unknown output format `{ext}` (use .mp4, .gif, or a directory for PNG frames)"
    )]
    UnknownFormat { path: PathBuf, ext: String },
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Encode { path: PathBuf, detail: String },
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

/// Validate an output path before any compute: known format, and a parent directory that
/// exists and accepts a file.
pub fn check_output(path: &Path) -> Result<Format> {
    let fmt = Format::from_path(path)?;
    check_parent_writable(path)?;
    Ok(fmt)
}

/// The directory that will hold `path` exists and accepts a new file.
pub fn check_parent_writable(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |what, source| VideoError::Io {
        path: parent.clone(),
        what,
        source,
    };
    let meta = fs::metadata(&parent).map_err(|e| io("output directory", e))?;
    if !meta.is_dir() {
        return Err(io(
            "output directory",
            std::io::Error::other("not a directory"),
        ));
    }
    let probe = parent.join(format!(".jenga-write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| io("output directory is not writable", e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Write `video` (upscaled by `upscale`) to `path` in the format its name says.
pub fn write(path: &Path, video: &Video, upscale: u32) -> Result<()> {
    video.check()?;
    let fmt = Format::from_path(path)?;
    let v = video.upscaled(upscale);
    let tmp = temp_sibling(path);
    let res = match fmt {
        Format::Gif => write_gif(&tmp, &v),
        Format::Mp4 => write_mp4(&tmp, &v),
        Format::PngDir => write_png_dir(&tmp, &v),
    };
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_dir_all(&tmp);
        return Err(retarget(e, path));
    }
    if fmt == Format::PngDir && path.exists() {
        // replace an earlier run's frames as a whole
        fs::remove_dir_all(path).map_err(|source| VideoError::Io {
            path: path.into(),
            what: "replacing old frames",
            source,
        })?;
    }
    fs::rename(&tmp, path).map_err(|source| VideoError::Io {
        path: path.into(),
        what: "renaming into place",
        source,
    })
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
    path.with_file_name(format!(".{name}.partial-{}{ext}", std::process::id()))
}

/// Errors name the user's path, not the temporary one.
fn retarget(e: VideoError, path: &Path) -> VideoError {
    match e {
        VideoError::Io { what, source, .. } => VideoError::Io {
            path: path.into(),
            what,
            source,
        },
        VideoError::Encode { detail, .. } => VideoError::Encode {
            path: path.into(),
            detail,
        },
        other => other,
    }
}

fn write_gif(path: &Path, v: &Video) -> Result<()> {
    let enc = |detail: String| VideoError::Encode {
        path: path.into(),
        detail,
    };
    let file = fs::File::create(path).map_err(|source| VideoError::Io {
        path: path.into(),
        what: "creating",
        source,
    })?;
    let (w, h) = (
        u16::try_from(v.width).map_err(|_| enc("too wide for GIF".into()))?,
        u16::try_from(v.height).map_err(|_| enc("too tall for GIF".into()))?,
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
    Ok(())
}

fn write_png_dir(dir: &Path, v: &Video) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| VideoError::Io {
        path: dir.into(),
        what: "creating directory",
        source,
    })?;
    for i in 0..v.frames {
        write_png(
            &dir.join(format!("frame_{i:04}.png")),
            v.width,
            v.height,
            v.frame(i),
        )?;
    }
    Ok(())
}

/// Write one RGB image as PNG.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    image::save_buffer(
        path,
        rgb,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| VideoError::Encode {
        path: path.into(),
        detail: e.to_string(),
    })
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
    let file = fs::File::create(path).map_err(|source| VideoError::Io {
        path: path.into(),
        what: "creating",
        source,
    })?;
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
