//! Which rank does what: `world = cfg × ring × ulysses`, and each rank's share of a stage's
//! tokens. Rank `r` = `(cfg_index · ring + ring_index) · ulysses + ulysses_index`: the
//! Ulysses group (ranks that trade heads for tokens) is innermost, so its members are
//! neighbours (on one host, on NVLink), then the ring, then the two CFG halves.

use std::ops::Range;

/// Token shards are whole blocks of this many tokens (the attention plans' block): each
/// rank's query rows are then whole rows of a plan made for the whole sequence, and the block
/// means of q/k each rank computes are those of the whole sequence.
pub const SHARD_ALIGN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParallelLayout {
    /// 1, or 2: the conditional and unconditional rows of classifier-free guidance on
    /// different ranks.
    pub cfg: usize,
    /// Ranks that gather keys and values (for head counts Ulysses does not divide).
    pub ring: usize,
    /// Ranks that exchange tokens for heads (all-to-all) around each attention.
    pub ulysses: usize,
}

/// Where one rank sits in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coords {
    pub cfg: usize,
    pub ring: usize,
    pub ulysses: usize,
}

impl Default for ParallelLayout {
    fn default() -> Self {
        ParallelLayout::SINGLE
    }
}

impl ParallelLayout {
    pub const SINGLE: ParallelLayout = ParallelLayout {
        cfg: 1,
        ring: 1,
        ulysses: 1,
    };

    pub fn world(&self) -> usize {
        self.cfg * self.ring * self.ulysses
    }
    /// Ranks that share one video's tokens.
    pub fn seq(&self) -> usize {
        self.ring * self.ulysses
    }

    /// The layout for `world` ranks when only the count is given: CFG halves first (the
    /// cheapest split: one gather of the outputs per step), then Ulysses over the largest
    /// divisor of the heads, then a ring for what is left (Wan-1.3B, 12 heads, on 8 ranks:
    /// CFG 2 × Ulysses 4).
    pub fn auto(world: usize, heads: usize, cfg_rows: usize) -> ParallelLayout {
        let cfg = if cfg_rows == 2 && world.is_multiple_of(2) {
            2
        } else {
            1
        };
        let seq = world / cfg;
        let ulysses = (1..=seq)
            .rev()
            .find(|u| seq.is_multiple_of(*u) && heads.is_multiple_of(*u))
            .unwrap_or(1);
        ParallelLayout {
            cfg,
            ring: seq / ulysses,
            ulysses,
        }
    }

    pub fn coords(&self, rank: usize) -> Coords {
        Coords {
            cfg: rank / self.seq(),
            ring: (rank / self.ulysses) % self.ring,
            ulysses: rank % self.ulysses,
        }
    }
    pub fn rank_of(&self, c: Coords) -> usize {
        (c.cfg * self.ring + c.ring) * self.ulysses + c.ulysses
    }
    /// Index among the ranks sharing one video's tokens (the order of the token shards).
    pub fn seq_index(&self, rank: usize) -> usize {
        rank % self.seq()
    }
    /// World ranks of `rank`'s Ulysses group, in group order.
    pub fn ulysses_group(&self, rank: usize) -> Vec<usize> {
        let c = self.coords(rank);
        (0..self.ulysses)
            .map(|u| self.rank_of(Coords { ulysses: u, ..c }))
            .collect()
    }
    pub fn ring_group(&self, rank: usize) -> Vec<usize> {
        let c = self.coords(rank);
        (0..self.ring)
            .map(|r| self.rank_of(Coords { ring: r, ..c }))
            .collect()
    }
    /// All ranks sharing `rank`'s video tokens, in shard order.
    pub fn seq_group(&self, rank: usize) -> Vec<usize> {
        let base = (rank / self.seq()) * self.seq();
        (base..base + self.seq()).collect()
    }
    pub fn cfg_group(&self, rank: usize) -> Vec<usize> {
        let s = self.seq_index(rank);
        (0..self.cfg).map(|c| c * self.seq() + s).collect()
    }

    /// Refuse a layout before any compute: heads Ulysses does not divide, CFG halves without
    /// guidance, policies that cannot run in a ring.
    pub fn check(&self, heads: usize, cfg_rows: usize, per_head_order: bool) -> Result<(), String> {
        if self.cfg == 0 || self.ring == 0 || self.ulysses == 0 {
            return Err(format!("parallel layout {self}: every degree must be ≥ 1"));
        }
        if self.cfg > 2 {
            return Err(format!(
                "--cfg-parallel splits the 2 rows of classifier-free guidance: cfg degree {} asked",
                self.cfg
            ));
        }
        if self.cfg == 2 && cfg_rows != 2 {
            return Err(
                "--cfg-parallel needs classifier-free guidance (guidance > 1 and a negative prompt row)"
                    .into(),
            );
        }
        if !heads.is_multiple_of(self.ulysses) {
            return Err(format!(
                "--ulysses {}: the model's {heads} heads do not divide among {} ranks; use --ring for the rest (e.g. --ulysses {} --ring {})",
                self.ulysses,
                self.ulysses,
                gcd(heads, self.ulysses),
                self.ulysses / gcd(heads, self.ulysses)
            ));
        }
        if self.ring > 1 && per_head_order {
            return Err(
                "--ring: this policy lays tokens out per head (SVG); a ring needs plans in the shared token order: use --ulysses or --cfg-parallel"
                    .into(),
            );
        }
        Ok(())
    }

    /// Each sequence rank's tokens of a stage of `tokens`: contiguous, in whole blocks of
    /// `align`, as even as whole blocks allow (the last may end on a partial block).
    pub fn token_shards(&self, tokens: usize, align: usize) -> Result<Vec<Range<usize>>, String> {
        shards(tokens, self.seq(), align)
    }
}

impl std::fmt::Display for ParallelLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cfg {} × ring {} × ulysses {}",
            self.cfg, self.ring, self.ulysses
        )
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `tokens` split over `n` ranks in whole blocks of `align`.
pub fn shards(tokens: usize, n: usize, align: usize) -> Result<Vec<Range<usize>>, String> {
    let blocks = tokens.div_ceil(align.max(1));
    if n == 0 || blocks < n {
        return Err(format!(
            "{n} ranks share a stage of {tokens} tokens: fewer than one block of {align} tokens per rank (use fewer ranks or a larger video)"
        ));
    }
    let (base, extra) = (blocks / n, blocks % n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let b = base + usize::from(i < extra);
        let end = ((start / align + b) * align).min(tokens);
        out.push(start..end);
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_coords_and_groups_round_trip() {
        let l = ParallelLayout {
            cfg: 2,
            ring: 2,
            ulysses: 3,
        };
        assert_eq!(l.world(), 12);
        for r in 0..12 {
            assert_eq!(l.rank_of(l.coords(r)), r);
            assert!(l.ulysses_group(r).contains(&r) && l.ring_group(r).contains(&r));
            assert!(l.cfg_group(r).contains(&r) && l.seq_group(r).contains(&r));
        }
        assert_eq!(l.ulysses_group(4), vec![3, 4, 5]);
        assert_eq!(l.ring_group(4), vec![1, 4]);
        assert_eq!(l.cfg_group(4), vec![4, 10]);
        assert_eq!(l.seq_group(7), (6..12).collect::<Vec<_>>());
    }

    #[test]
    fn shards_are_whole_blocks_covering_the_sequence() {
        let s = shards(1000, 3, 128).unwrap();
        assert_eq!(s, vec![0..384, 384..768, 768..1000]);
        let s = shards(32760, 8, 128).unwrap();
        assert_eq!(s.last().unwrap().end, 32760);
        assert!(s.iter().all(|r| r.start % 128 == 0 && !r.is_empty()));
        assert!(shards(300, 4, 128).is_err());
    }

    #[test]
    fn auto_layout_and_checks() {
        let a = ParallelLayout::auto(8, 12, 2);
        assert_eq!((a.cfg, a.ring, a.ulysses), (2, 1, 4));
        let a = ParallelLayout::auto(8, 12, 1);
        assert_eq!((a.cfg, a.ring, a.ulysses), (1, 2, 4));
        let a = ParallelLayout::auto(3, 2, 1);
        assert_eq!((a.cfg, a.ring, a.ulysses), (1, 3, 1));
        let bad = ParallelLayout {
            cfg: 1,
            ring: 1,
            ulysses: 8,
        };
        let e = bad.check(12, 2, false).unwrap_err();
        assert!(e.contains("--ulysses 4 --ring 2"), "{e}");
        let cfg = ParallelLayout {
            cfg: 2,
            ..ParallelLayout::SINGLE
        };
        assert!(cfg.check(12, 1, false).unwrap_err().contains("guidance"));
        let ring = ParallelLayout {
            ring: 2,
            ..ParallelLayout::SINGLE
        };
        assert!(ring.check(12, 2, true).unwrap_err().contains("SVG"));
        assert!(ring.check(12, 2, false).is_ok());
    }
}
