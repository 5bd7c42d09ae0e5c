//! Layout ops: token gather, narrow, cat (row copies), and the video ↔ patch-token layouts.

use super::Ops;
use crate::core::{elems_cfg, CudaTensor, KArg, BF16_BYTES};
use crate::error::alloc_err;
use cudarc::driver::DevicePtr;
use jenga_tensor::{check_order, Error, Result, TensorMeta};

impl Ops {
    pub(crate) fn copy_rows(
        &self,
        src: u64,
        dst: u64,
        rows: usize,
        width: usize,
        src_stride: usize,
        dst_stride: usize,
    ) -> Result<()> {
        if rows * width == 0 {
            return Ok(());
        }
        self.launch(
            &self.k.copy_rows,
            elems_cfg(rows * width, self.sm_count),
            "copy_rows",
            &[
                KArg::U64(src),
                KArg::U64(dst),
                KArg::I64(rows as i64),
                KArg::I64(width as i64),
                KArg::I64(src_stride as i64),
                KArg::I64(dst_stride as i64),
            ],
        )
    }

    pub(crate) fn gather_tokens(&self, x: &CudaTensor, idx: &[u32]) -> Result<CudaTensor> {
        if x.dims() < 2 {
            return Err(Error::shape("gather_tokens", format!("x {:?}", x.shape)));
        }
        let l = x.shape[1];
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= l) {
            return Err(Error::invalid(
                "gather_tokens",
                format!("index {bad} out of range for {l} tokens"),
            ));
        }
        let mut shape = x.shape.clone();
        shape[1] = idx.len();
        let out = self.empty(&shape)?;
        let n = out.numel();
        if n == 0 {
            return Ok(out);
        }
        let rest: usize = x.shape[2..].iter().product();
        let didx = self
            .stream
            .clone_htod(idx)
            .map_err(alloc_err(std::mem::size_of_val(idx)))?;
        let (ip, _) = didx.device_ptr(&self.stream);
        self.launch(
            &self.k.gather,
            elems_cfg(n, self.sm_count),
            "gather_tokens",
            &[
                KArg::U64(self.ptr(x)),
                KArg::U64(ip),
                KArg::U64(self.ptr(&out)),
                KArg::I64(n as i64),
                KArg::I32(l as i32),
                KArg::I32(idx.len() as i32),
                KArg::I64(rest as i64),
            ],
        )?;
        Ok(out)
    }

    pub(crate) fn narrow(
        &self,
        x: &CudaTensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> Result<CudaTensor> {
        if dim >= x.dims() || start + len > x.shape[dim] {
            return Err(Error::shape(
                "narrow",
                format!("x {:?}, dim {dim}, {start}..{}", x.shape, start + len),
            ));
        }
        let outer: usize = x.shape[..dim].iter().product();
        let inner: usize = x.shape[dim + 1..].iter().product();
        let mut shape = x.shape.clone();
        shape[dim] = len;
        if outer == 1 || len == x.shape[dim] {
            // Contiguous already: a view.
            return Ok(CudaTensor {
                buf: x.buf.clone(),
                offset: x.offset + start * inner,
                shape,
            });
        }
        let out = self.empty(&shape)?;
        self.copy_rows(
            self.ptr(x) + (start * inner) as u64 * BF16_BYTES,
            self.ptr(&out),
            outer,
            len * inner,
            x.shape[dim] * inner,
            len * inner,
        )?;
        Ok(out)
    }

    pub(crate) fn cat(&self, xs: &[&CudaTensor], dim: usize) -> Result<CudaTensor> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("cat", "no tensors"))?;
        if dim >= first.dims() {
            return Err(Error::shape(
                "cat",
                format!("dim {dim} of {:?}", first.shape),
            ));
        }
        for x in xs {
            if x.dims() != first.dims()
                || x.shape[..dim] != first.shape[..dim]
                || x.shape[dim + 1..] != first.shape[dim + 1..]
            {
                return Err(Error::shape(
                    "cat",
                    format!("{:?} vs {:?} along dim {dim}", first.shape, x.shape),
                ));
            }
        }
        let total: usize = xs.iter().map(|x| x.shape[dim]).sum();
        let mut shape = first.shape.clone();
        shape[dim] = total;
        let outer: usize = first.shape[..dim].iter().product();
        let inner: usize = first.shape[dim + 1..].iter().product();
        let out = self.empty(&shape)?;
        let base = self.ptr(&out);
        let mut at = 0usize;
        for x in xs {
            let w = x.shape[dim] * inner;
            self.copy_rows(
                self.ptr(x),
                base + (at * inner) as u64 * BF16_BYTES,
                outer,
                w,
                w,
                total * inner,
            )?;
            at += x.shape[dim];
        }
        Ok(out)
    }

    pub(crate) fn patchify(
        &self,
        x: &CudaTensor,
        patch: [usize; 3],
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let [pt, ph, pw] = patch;
        if s.len() != 5
            || pt * ph * pw == 0
            || !s[2].is_multiple_of(pt)
            || !s[3].is_multiple_of(ph)
            || !s[4].is_multiple_of(pw)
        {
            return Err(Error::shape(
                "patchify",
                format!("{s:?} with patch {patch:?}"),
            ));
        }
        let (b, c, f, h, w) = (s[0], s[1], s[2], s[3], s[4]);
        let toks = (f / pt) * (h / ph) * (w / pw);
        check_order("patchify", order, toks)?;
        let out = self.empty(&[b, toks, c * pt * ph * pw])?;
        let n = out.numel();
        if n > 0 {
            let order = self.upload_u32(order)?;
            self.launch(
                &self.k.patchify,
                elems_cfg(n, self.sm_count),
                "patchify",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::U64(order.as_ref().map_or(0, |o| o.device_ptr(&self.stream).0)),
                    KArg::I64(n as i64),
                    KArg::I32(c as i32),
                    KArg::I32(f as i32),
                    KArg::I32(h as i32),
                    KArg::I32(w as i32),
                    KArg::I32(pt as i32),
                    KArg::I32(ph as i32),
                    KArg::I32(pw as i32),
                ],
            )?;
        }
        Ok(out)
    }

    pub(crate) fn unpatchify(
        &self,
        x: &CudaTensor,
        grid: (usize, usize, usize),
        patch: [usize; 3],
        channels: usize,
        order: Option<&[u32]>,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let [pt, ph, pw] = patch;
        let (gf, gh, gw) = grid;
        if s.len() != 3 || s[1] != gf * gh * gw || s[2] != pt * ph * pw * channels {
            return Err(Error::shape(
                "unpatchify",
                format!("{s:?} for grid {grid:?}, patch {patch:?}, {channels} channels"),
            ));
        }
        check_order("unpatchify", order, gf * gh * gw)?;
        let out = self.empty(&[s[0], channels, gf * pt, gh * ph, gw * pw])?;
        let n = out.numel();
        if n > 0 {
            // The kernel reads per output element, so it wants raster → row.
            let inv = order.map(|o| {
                let mut inv = vec![0u32; o.len()];
                for (k, &r) in o.iter().enumerate() {
                    inv[r as usize] = k as u32;
                }
                inv
            });
            let inv = self.upload_u32(inv.as_deref())?;
            self.launch(
                &self.k.unpatchify,
                elems_cfg(n, self.sm_count),
                "unpatchify",
                &[
                    KArg::U64(self.ptr(x)),
                    KArg::U64(self.ptr(&out)),
                    KArg::U64(inv.as_ref().map_or(0, |o| o.device_ptr(&self.stream).0)),
                    KArg::I64(n as i64),
                    KArg::I32(channels as i32),
                    KArg::I32(gf as i32),
                    KArg::I32(gh as i32),
                    KArg::I32(gw as i32),
                    KArg::I32(pt as i32),
                    KArg::I32(ph as i32),
                    KArg::I32(pw as i32),
                ],
            )?;
        }
        Ok(out)
    }
}
