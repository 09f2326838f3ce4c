//! Adam and SGD over candle `Var`s (tip 9).
//!
//! candle-nn has AdamW, but its moment estimates are private, so a run could
//! not be checkpointed and resumed exactly. This one exposes its state.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use super::config::OptimizerKind;
use crate::ops::{self, adam};

/// An optimizer with checkpointable state.
pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    /// Learning rate (steerable mid-run).
    pub lr: f64,
    beta1: f64,
    beta2: f64,
}

const ADAM_EPS: f64 = 1e-8;

impl Optimizer {
    /// A fresh optimizer over `vars`.
    pub fn new(kind: OptimizerKind, vars: Vec<Var>, lr: f64, beta1: f64, beta2: f64) -> Result<Self> {
        let zeros = |vars: &[Var]| vars.iter().map(|v| v.zeros_like()).collect::<Result<Vec<_>>>();
        let (m, v) = match kind {
            OptimizerKind::Adam => (zeros(&vars)?, zeros(&vars)?),
            OptimizerKind::Sgd => (Vec::new(), Vec::new()),
        };
        Ok(Self { kind, vars, m, v, t: 0, lr, beta1, beta2 })
    }

    /// One update from `grads`; vars without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (i, var) in self.vars.iter().enumerate() {
            // Detached: gradients may carry a graph (double backprop), and
            // the moments would otherwise chain every step's history.
            let Some(g) = grads.get(var).map(|g| g.detach()) else { continue };
            let g = &g;
            match self.kind {
                OptimizerKind::Sgd => var.set(&(var.as_tensor().detach() - g.affine(self.lr, 0.0)?)?)?,
                OptimizerKind::Adam => {
                    let step = adam::Step { lr: self.lr, beta1: b1, beta2: b2, c1, c2, eps: ADAM_EPS };
                    if adam::update(var.as_tensor(), &self.m[i], &self.v[i], g, step)? {
                        continue;
                    }
                    let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
                    let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + ADAM_EPS)?)?;
                    var.set(&(var.as_tensor().detach() - (update * self.lr)?)?)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
            }
        }
        Ok(())
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The moment estimates (empty for SGD), for checkpoints.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores state saved by [`Self::moments`] and [`Self::steps`].
    pub fn restore(&mut self, t: u64, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            candle_core::bail!("optimizer state has {} moments, expected {}", m.len(), self.m.len());
        }
        // Own copies: the fast update writes the moments in place.
        let own = |ts: Vec<Tensor>| ts.iter().map(|t| t.contiguous()?.copy()).collect::<Result<Vec<_>>>();
        self.t = t;
        self.m = own(m)?;
        self.v = own(v)?;
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars` (one device sync).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f32> {
    let gs: Vec<&Tensor> = vars.iter().filter_map(|v| grads.get(v)).collect();
    if let Some(total) = ops::reduce::sum_of_squares(&gs)? {
        return Ok(total.sqrt() as f32);
    }
    if gs.is_empty() {
        return Ok(0.0);
    }
    let parts = gs.iter().map(|g| g.sqr()?.sum_all()).collect::<Result<Vec<_>>>()?;
    Tensor::stack(&parts, 0)?.sum_all()?.sqrt()?.to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_minimizes_a_quadratic() -> Result<()> {
        let x = Var::new(&[3.0f32, -2.0], &Device::Cpu)?;
        let mut opt = Optimizer::new(OptimizerKind::Adam, vec![x.clone()], 0.1, 0.9, 0.999)?;
        for _ in 0..300 {
            let loss = x.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let v: Vec<f32> = x.as_tensor().to_vec1()?;
        assert!(v.iter().all(|x| x.abs() < 0.05), "{v:?}");
        Ok(())
    }
}
