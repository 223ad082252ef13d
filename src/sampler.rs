//! Choosing the next token from logits, with the semantics of transformers' `generate`.
//!
//! Order (as transformers applies its processors): repetition penalty over every token in the
//! session (a positive logit is divided by the penalty, a negative one multiplied), then
//! temperature, top-k (ties with the k-th value kept), top-p (the smallest set of most likely
//! tokens whose probability reaches `top_p`, at least one kept), then a draw from a seeded
//! generator. Temperature 0 means greedy (arg-max after the penalty).

use crate::backend::DeviceSampling;
use crate::error::{Error, Result};

/// Settings for one generation call. `Default` is the Wizard-Vicuna model card's.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = no top-k.
    pub top_k: usize,
    /// 1.0 = no top-p.
    pub top_p: f32,
    /// 1.0 = none.
    pub repetition_penalty: f32,
    /// `None`: seeded from the clock.
    pub seed: Option<u64>,
    /// Generation stops when one of these appears; it is never emitted, not even in part.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 512,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding with no penalty.
    pub fn greedy() -> Self {
        GenerateOptions {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            ..Default::default()
        }
    }
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature {} must be ≥ 0",
                self.temperature
            )));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::invalid(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            )));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::invalid("stop strings must not be empty"));
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (SplitMix64 seeding a xoshiro256**).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e3779b97f4a7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks tokens for one generation call.
pub struct Sampler {
    opts: GenerateOptions,
    rng: Rng,
    /// Scratch: (logit, id) pairs.
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(opts: &GenerateOptions) -> Sampler {
        let seed = opts.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (std::process::id() as u64).rotate_left(32)
        });
        Sampler {
            opts: opts.clone(),
            rng: Rng::new(seed),
            cand: Vec::new(),
        }
    }

    /// One token chosen where the logits are (a backend's `forward_sample`): `step` gets this
    /// generation's settings and a draw from a copy of the generator, which is kept only when
    /// the step chose a token — a step the backend declines (`None`) or fails leaves the
    /// generator where host sampling expects it, so a generation draws the same numbers
    /// wherever its tokens are chosen. `last`: the generation's last token.
    pub fn device_step<T>(
        &mut self,
        last: bool,
        step: impl FnOnce(&DeviceSampling) -> Option<Result<T>>,
    ) -> Option<Result<T>> {
        let mut rng = self.rng.clone();
        let r = step(&DeviceSampling::draw(&self.opts, &mut rng, last));
        if let Some(Ok(_)) = r {
            self.rng = rng;
        }
        r
    }

    /// Apply the repetition penalty over `history` to `logits` in place.
    pub fn apply_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
        if penalty == 1.0 {
            return;
        }
        let mut seen = vec![false; logits.len()];
        for &t in history {
            let i = t as usize;
            if i < logits.len() && !seen[i] {
                seen[i] = true;
                let l = logits[i];
                logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
            }
        }
    }

    /// Choose the next token from `logits` (modified in place).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        Self::apply_penalty(logits, history, self.opts.repetition_penalty);
        if self.opts.temperature == 0.0 {
            return argmax(logits);
        }
        let u = self.rng.uniform();
        choose(
            &mut self.cand,
            logits,
            self.opts.temperature,
            self.opts.top_k,
            self.opts.top_p,
            u,
        )
    }
}

/// Temperature (> 0), top-k (0 = none; ties with the k-th value kept), top-p and the draw with
/// the uniform `u` in [0, 1), over `logits` after the repetition penalty. `cand` is scratch.
/// (The CUDA backend's `sample_topk` kernel mirrors this, operation for operation.)
pub fn choose(
    cand: &mut Vec<(f32, u32)>,
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    u: f64,
) -> u32 {
    let inv_t = 1.0 / temperature;
    cand.clear();
    cand.extend(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (l * inv_t, i as u32)),
    );
    // Sort descending by logit; ties by id for determinism.
    let k = top_k;
    if k > 0 && k < cand.len() {
        cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let kth = cand[k - 1].0;
        // Keep everything ≥ the k-th value (transformers keeps ties).
        cand.retain(|c| c.0 >= kth);
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let max = cand[0].0;
    let mut probs: Vec<f64> = cand.iter().map(|c| ((c.0 - max) as f64).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if top_p < 1.0 {
        // transformers removes tokens whose ascending cumulative probability is ≤ 1 - top_p;
        // equivalently it keeps the descending prefix until the mass reaches top_p.
        let cut = 1.0 - top_p as f64;
        let mut acc = 0.0;
        let mut n_removed = 0;
        for p in probs.iter().rev() {
            acc += p;
            if acc <= cut {
                n_removed += 1;
            } else {
                break;
            }
        }
        let keep = (probs.len() - n_removed).max(1);
        probs.truncate(keep);
        cand.truncate(keep);
        let s: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= s);
    }
    let mut acc = 0.0;
    for (p, c) in probs.iter().zip(cand.iter()) {
        acc += p;
        if u < acc {
            return c.1;
        }
    }
    cand[probs.len() - 1].1
}

/// The index of the largest value (the first on ties, as torch.argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_semantics() {
        let mut l = vec![2.0, -2.0, 1.0];
        Sampler::apply_penalty(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn device_steps_keep_the_draw_only_when_they_choose() {
        let o = GenerateOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: Some(3),
            ..Default::default()
        };
        let host = |s: &mut Sampler| s.sample(&mut [0.0; 64], &[]);
        let mut reference = Sampler::new(&o);
        let first = host(&mut reference);
        let second = host(&mut reference);
        // Declined and failed steps: the host's next draw is the reference's first.
        let mut s = Sampler::new(&o);
        let mut seen = Vec::new();
        assert!(s
            .device_step(false, |d| {
                seen.push(d.uniform);
                None::<Result<u32>>
            })
            .is_none());
        let failed = s.device_step(true, |d| {
            seen.push(d.uniform);
            assert!(d.last && d.temperature == 1.0);
            Some(Err::<u32, _>(Error::invalid("device failure")))
        });
        assert!(matches!(failed, Some(Err(_))));
        assert_eq!(seen[0], seen[1], "each step draws from the same copy");
        assert!((0.0..1.0).contains(&seen[0]));
        assert_eq!(host(&mut s), first);
        // A step that chose: its draw is spent, and the host's next is the reference's second.
        let mut s = Sampler::new(&o);
        assert_eq!(
            s.device_step(false, |_| Some(Ok(7u32))).map(|r| r.ok()),
            Some(Some(7))
        );
        assert_eq!(host(&mut s), second);
        // Greedy steps draw nothing.
        let mut s = Sampler::new(&GenerateOptions::greedy());
        s.device_step(false, |d| {
            assert_eq!(d.uniform, 0.0);
            Some(Ok(0u32))
        });
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(&GenerateOptions::greedy());
        let mut l = vec![0.1, 3.0, 2.9];
        assert_eq!(s.sample(&mut l, &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproducible() {
        let o = GenerateOptions {
            top_k: 1,
            temperature: 1.0,
            seed: Some(5),
            ..Default::default()
        };
        let mut s = Sampler::new(&o);
        for _ in 0..20 {
            let mut l = vec![0.0, 1.0, 0.5, 0.99];
            assert_eq!(s.sample(&mut l, &[]), 1);
        }
        let o = GenerateOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: Some(9),
            ..Default::default()
        };
        let draw = || {
            let mut s = Sampler::new(&o);
            (0..50)
                .map(|_| s.sample(&mut [0.0; 10], &[]))
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(
            a.iter().any(|&x| x != a[0]),
            "uniform logits should give varied draws"
        );
    }

    #[test]
    fn top_p_keeps_smallest_set() {
        // probs ∝ e^[3, 2, 0, -5]: ~0.705, 0.259, 0.035, 0.0002. top_p 0.9 keeps the first two.
        let o = GenerateOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
            repetition_penalty: 1.0,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(&o);
        for _ in 0..300 {
            let t = s.sample(&mut [3.0, 2.0, 0.0, -5.0], &[]);
            assert!(t == 0 || t == 1, "token {t} should have been cut by top_p");
        }
    }

    #[test]
    fn distribution_matches_softmax() {
        let o = GenerateOptions {
            temperature: 0.5,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: Some(3),
            ..Default::default()
        };
        let mut s = Sampler::new(&o);
        let mut counts = [0usize; 3];
        let n = 20000;
        for _ in 0..n {
            counts[s.sample(&mut [0.0, 0.5, 1.0], &[]) as usize] += 1;
        }
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
        for (i, c) in counts.iter().enumerate() {
            let want = (i as f64).exp() / z;
            let got = *c as f64 / n as f64;
            assert!((got - want).abs() < 0.02, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn rejects_bad_options() {
        let o = GenerateOptions {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = GenerateOptions {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = GenerateOptions {
            stop: vec![String::new()],
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }

    /// The device's settings carry a generation's options, and its draw is the generator's
    /// next uniform — none when greedy (the generator left as it was).
    #[test]
    fn device_sampling_draws_as_the_host_would() {
        let mut rng = Rng::new(3);
        let d = crate::backend::DeviceSampling::draw(&GenerateOptions::default(), &mut rng, false);
        assert_eq!(d.uniform, Rng::new(3).uniform());
        assert_eq!(
            (
                d.temperature,
                d.top_k,
                d.top_p,
                d.repetition_penalty,
                d.last
            ),
            (0.7, 40, 0.95, 1.1, false)
        );
        // The copy advanced: its next draw is the generator's second.
        let mut two = Rng::new(3);
        two.uniform();
        assert_eq!(rng.uniform(), two.uniform());
        let mut rng = Rng::new(3);
        let g = crate::backend::DeviceSampling::draw(&GenerateOptions::greedy(), &mut rng, true);
        assert_eq!((g.uniform, g.temperature, g.last), (0.0, 0.0, true));
        assert_eq!(rng.uniform(), Rng::new(3).uniform(), "greedy draws nothing");
    }
}
