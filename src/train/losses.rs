//! Adversarial losses (tip 2) on D's logits, and the AC-GAN class loss.

use candle_core::{D, Result, Tensor};

use super::config::LossKind;

/// Binary cross-entropy with logits against (soft) targets `t`:
/// `softplus(l) - l * t`, stable for any logit.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (softplus(logits)? - (logits * targets)?)?.mean_all()
}

/// `log(1 + exp(x))` without overflow: `max(x, 0) + log(1 + exp(-|x|))`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// D's loss on an all-real batch (`targets` used by the BCE losses only).
pub fn d_real(kind: LossKind, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match kind {
        LossKind::Nonsaturating | LossKind::Minimax => bce_with_logits(logits, targets),
        LossKind::Hinge => (1.0 - logits)?.relu()?.mean_all(),
        LossKind::Wasserstein => logits.mean_all()?.neg(),
    }
}

/// D's loss on an all-fake batch.
pub fn d_fake(kind: LossKind, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match kind {
        LossKind::Nonsaturating | LossKind::Minimax => bce_with_logits(logits, targets),
        LossKind::Hinge => (logits + 1.0)?.relu()?.mean_all(),
        LossKind::Wasserstein => logits.mean_all(),
    }
}

/// G's loss on D's logits for its fakes.
pub fn g_loss(kind: LossKind, logits: &Tensor) -> Result<Tensor> {
    match kind {
        // -log D(G(z)) = BCE against target 1: fakes labelled real.
        LossKind::Nonsaturating => softplus(&logits.neg()?)?.mean_all(),
        // log(1 - D(G(z))) = -softplus(l).
        LossKind::Minimax => softplus(logits)?.mean_all()?.neg(),
        LossKind::Hinge | LossKind::Wasserstein => logits.mean_all()?.neg(),
    }
}

/// Mean cross-entropy of class logits (N, K) against labels (N, u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_p.gather(&labels.unsqueeze(1)?, 1)?.mean_all()?.neg()
}

/// Mean of sigmoid(logits): D's average belief that the batch is real.
pub fn mean_prob(logits: &Tensor) -> Result<f32> {
    candle_nn::ops::sigmoid(logits)?.mean_all()?.to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_the_textbook_formula() -> Result<()> {
        let dev = Device::Cpu;
        let l = Tensor::new(&[-3.0f32, 0.0, 2.5, 40.0], &dev)?;
        let t = Tensor::new(&[0.0f32, 0.9, 1.0, 1.0], &dev)?;
        let got = bce_with_logits(&l, &t)?.to_scalar::<f32>()?;
        let want: f32 = [(-3.0f32, 0.0f32), (0.0, 0.9), (2.5, 1.0), (40.0, 1.0)]
            .iter()
            .map(|(l, t)| {
                let p = 1.0 / (1.0 + (-l).exp());
                -(t * p.max(1e-30).ln() + (1.0 - t) * (1.0 - p).max(1e-30).ln())
            })
            .sum::<f32>()
            / 4.0;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        Ok(())
    }

    #[test]
    fn cross_entropy_is_low_for_confident_right_answers() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[10.0f32, 0.0, 0.0], [0.0, 0.0, 10.0]], &dev)?;
        let right = Tensor::new(&[0u32, 2], &dev)?;
        let wrong = Tensor::new(&[1u32, 1], &dev)?;
        assert!(cross_entropy(&logits, &right)?.to_scalar::<f32>()? < 1e-3);
        assert!(cross_entropy(&logits, &wrong)?.to_scalar::<f32>()? > 9.0);
        Ok(())
    }
}
