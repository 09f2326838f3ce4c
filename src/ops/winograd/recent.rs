//! Kernel transforms kept across the calls of a training step and from
//! one step to the next, for as long as their weights stay the same,
//! checked value by value.
//!
//! Why: each convolution call transforms its kernel afresh, yet a training
//! step repeats most with unchanged weights: G's layers in the D step
//! (which samples the fakes) and again in the G step, D's on the real batch
//! (unchanged since the previous G step) and on the fake one. In a 32 px
//! step that is 6 of its 10 transforms.
//!
//! Why compare the weights: nothing tells this module when weights change.
//! The optimizer writes them in place, and a freed tensor's memory goes to
//! the next one. So each entry keeps a copy of the weights it was made
//! from and serves only a call whose weights equal that copy bit for bit.
//! The comparison (a `memcmp`) reads the weights twice; the transform
//! writes 16 or 36 values per (c, o) pair where the weights hold 9 or 16.
//! Steps alternating with and without (BENCHMARKS.md, 2026-12-03): 32 px
//! training mostly 1-9% faster on one or two threads, 64 px 0-3%.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Kernel, Transformed};

/// The most the entries hold, weights, transforms and their panels
/// together: every kernel of a 64 px generator and discriminator (~170
/// MiB for the widest benchmark nets) with room to spare.
const BUDGET: usize = 256 << 20;

/// What a transform is of: the weights' address and length, how they are
/// stored, the channels and the positions (which coefficients made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    at: usize,
    len: usize,
    kernel: Kernel,
    c: usize,
    o: usize,
    positions: usize,
}

struct Entry {
    key: Key,
    weights: Arc<[f32]>,
    u: Transformed,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.weights.len() * size_of::<f32>() + self.u.bytes()
    }
}

/// Kernel transforms kept for the convolutions run inside [`Self::keeping`]
/// (a trainer's steps), least recently used first; they go with it.
///
/// Why scoped: elsewhere a layer with constant weights keeps its own
/// transform (`conv::KeptKernel`), and one-off calls (a test, an export)
/// would leave entries nobody uses again.
#[derive(Default)]
pub struct RecentTransforms(Mutex<Vec<Entry>>);

thread_local! {
    /// The cache the convolutions called on this thread use, if any.
    static CURRENT: RefCell<Option<Arc<RecentTransforms>>> = const { RefCell::new(None) };
}

/// Restores the cache that was current before [`RecentTransforms::keeping`].
struct Restore(Option<Arc<RecentTransforms>>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.set(self.0.take());
    }
}

impl RecentTransforms {
    /// Runs `f` with `this` as the cache of the convolutions it calls on
    /// this thread (ops make their transforms on the thread that calls them).
    pub fn keeping<R>(this: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let _restore = Restore(CURRENT.replace(Some(Arc::clone(this))));
        f()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transform of `wt` (see [`transform`]), kept here. The lock is
    /// not held while `make` runs: the transform is a parallel GEMM.
    fn transform(&self, wt: &[f32], key: Key, make: impl FnOnce() -> Transformed) -> Transformed {
        {
            let mut recent = self.entries();
            if let Some(i) = recent.iter().position(|e| e.key == key) {
                let e = recent.remove(i);
                if same_bits(&e.weights, wt) {
                    let u = e.u.clone();
                    recent.push(e);
                    return u;
                }
            }
        }
        let u = make();
        let mut recent = self.entries();
        recent.push(Entry { key, weights: wt.into(), u: u.clone() });
        let mut held: usize = recent.iter().map(Entry::bytes).sum();
        while held > BUDGET && !recent.is_empty() {
            held -= recent.remove(0).bytes();
        }
        u
    }
}

/// The transform of `wt`, a `kernel` from `c` to `o` channels at
/// `positions` positions: inside [`RecentTransforms::keeping`], a kept one
/// if made from the same weights, else `make()`'s, then kept; elsewhere
/// `make()`'s.
pub(super) fn transform(
    wt: &[f32],
    kernel: Kernel,
    (c, o, positions): (usize, usize, usize),
    make: impl FnOnce() -> Transformed,
) -> Transformed {
    match CURRENT.with_borrow(Option::clone) {
        Some(recent) => {
            let key = Key { at: wt.as_ptr() as usize, len: wt.len(), kernel, c, o, positions };
            recent.transform(wt, key, make)
        }
        None => make(),
    }
}

/// Whether `a` and `b` hold the same bits (so -0.0 differs from 0.0, and a
/// NaN equals itself): compared as integers, which the standard library
/// does by `memcmp`.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    bytemuck::cast_slice::<f32, u32>(a) == bytemuck::cast_slice::<f32, u32>(b)
}

#[cfg(test)]
mod tests {
    use super::super::Flip;
    use super::*;

    fn made(value: f32) -> Transformed {
        Transformed {
            u: vec![value; 16].into(),
            kernel: Kernel::Conv,
            c: 2,
            o: 2,
            flip: Flip::Reversed,
            flipped: false,
            packed: Arc::default(),
        }
    }

    #[test]
    fn serves_a_transform_only_while_its_weights_are_unchanged() {
        let recent = Arc::new(RecentTransforms::default());
        RecentTransforms::keeping(&recent, serves_while_unchanged);
        assert_eq!(recent.entries().len(), 2, "one entry per kind of kernel");
        let outside = transform(&[0.5; 36], Kernel::Conv, (2, 2, 4), || made(5.0));
        assert_eq!(outside.u[0], 5.0, "outside a scope nothing is kept");
    }

    fn serves_while_unchanged() {
        let mut w = vec![0.5f32; 4 * 9];
        let dims = (2, 2, 4);
        let first = transform(&w, Kernel::Conv, dims, || made(1.0));
        let again = transform(&w, Kernel::Conv, dims, || panic!("same weights: the kept transform serves"));
        assert!(Arc::ptr_eq(&first.u, &again.u));
        // The same weights, read as the other kind of kernel: its own transform.
        let other = transform(&w, Kernel::Transposed, dims, || made(2.0));
        assert!(!Arc::ptr_eq(&first.u, &other.u));
        // Written in place, as an optimizer does: made afresh.
        w[7] = -w[7];
        let fresh = transform(&w, Kernel::Conv, dims, || made(3.0));
        assert_eq!(fresh.u[0], 3.0);
        w[7] = -w[7];
        assert_eq!(transform(&w, Kernel::Conv, dims, || made(4.0)).u[0], 4.0, "the older entry was replaced");
    }

    #[test]
    fn tells_zero_from_negative_zero() {
        assert!(same_bits(&[1.0, f32::NAN], &[1.0, f32::NAN]));
        assert!(!same_bits(&[0.0], &[-0.0]));
        assert!(!same_bits(&[1.0, 2.0], &[1.0, 2.5]));
    }
}
