//! Experience replay of past fakes (tip 8; Shrivastava et al. 2017): D also
//! sees images G made many steps ago, so G cannot win by hopping between
//! modes D has forgotten.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A fixed-size buffer of past generator outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    capacity: usize,
    image_len: usize,
    images: Vec<f32>,
    labels: Vec<u32>,
}

impl ReplayBuffer {
    /// An empty buffer of `capacity` images of `image_len` floats each.
    pub fn new(capacity: usize, image_len: usize) -> Self {
        Self { capacity, image_len, images: Vec::new(), labels: Vec::new() }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Adds a batch: appended while there is room, then each new image
    /// replaces a random old one.
    pub fn push(&mut self, rng: &mut ChaCha8Rng, images: &[f32], labels: &[u32]) {
        if self.capacity == 0 {
            return;
        }
        for (img, &label) in images.chunks_exact(self.image_len).zip(labels) {
            if self.len() < self.capacity {
                self.images.extend_from_slice(img);
                self.labels.push(label);
            } else {
                let slot = rng.random_range(0..self.capacity);
                self.images[slot * self.image_len..(slot + 1) * self.image_len].copy_from_slice(img);
                self.labels[slot] = label;
            }
        }
    }

    /// Overwrites the first `k` images of `batch` (and their labels) with
    /// random images from the buffer; returns how many were replaced.
    pub fn mix_into(&self, rng: &mut ChaCha8Rng, k: usize, batch: &mut [f32], labels: &mut [u32]) -> usize {
        let k = if self.is_empty() { 0 } else { k.min(labels.len()) };
        for i in 0..k {
            let j = rng.random_range(0..self.len());
            batch[i * self.image_len..(i + 1) * self.image_len]
                .copy_from_slice(&self.images[j * self.image_len..(j + 1) * self.image_len]);
            labels[i] = self.labels[j];
        }
        k
    }

    /// The raw contents, for checkpoints.
    pub fn contents(&self) -> (&[f32], &[u32]) {
        (&self.images, &self.labels)
    }

    /// Restores contents saved by [`Self::contents`].
    pub fn restore(&mut self, images: Vec<f32>, labels: Vec<u32>) -> Result<(), String> {
        if images.len() != labels.len() * self.image_len || labels.len() > self.capacity {
            return Err(format!("replay buffer of {} labels does not fit its images", labels.len()));
        }
        self.images = images;
        self.labels = labels;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn replayed_fakes_reach_the_batch() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut buf = ReplayBuffer::new(4, 2);
        buf.push(&mut rng, &[7.0; 8], &[3; 4]);
        buf.push(&mut rng, &[9.0; 8], &[5; 4]);
        assert_eq!(buf.len(), 4);
        let mut batch = vec![0.0; 10];
        let mut labels = vec![0; 5];
        assert_eq!(buf.mix_into(&mut rng, 2, &mut batch, &mut labels), 2);
        assert!(batch[..4].iter().all(|v| *v == 7.0 || *v == 9.0));
        assert!(batch[4..].iter().all(|v| *v == 0.0));
        assert!(labels[..2].iter().all(|l| *l == 3 || *l == 5));
    }
}
