//! The CUDA backend: the model on an NVIDIA GPU.
//!
//! - [`ffi`]: the driver, NVRTC and cuBLAS, loaded at run time with `dlopen` (no toolkit at
//!   build time; a missing library is a `Device` error naming it, never a panic).
//! - [`device`]: the context, stream, device memory (freed on drop, counted for the peak) and
//!   launches ([`args`]: kernel handles and their arguments). [`module`]: `kernels/*.cu`,
//!   compiled by NVRTC for the GPU and cached on disk.
//! - [`weights`]: the device-side weights, the decode plan and the upload ([`repack`]: the
//!   host-side repacking); [`kernels`]: launch wrappers (and which decode steps are fused:
//!   [`fusion`]; prefill's fused 4-bit products: [`gemm_q4`]); [`blas`]: cuBLAS for prefill;
//!   [`forward`]: the pass (and the decode graphs, one per session cache and attention bucket;
//!   its buffers: [`scratch`]); [`state`]: a session's f16 KV cache; [`persistent`]: the opt-in
//!   one-launch decode step; [`testing`]: op-level access for the GPU test suites.
//!
//! Decode with device sampling (`forward_sample`) runs one step ahead for a session decoding
//! consecutive tokens: before returning a token it enqueues the step that token feeds, so the
//! GPU works while the caller handles the token (`Scratch::ahead`; `WV_CUDA_AHEAD=0` or
//! [`CudaBackend::set_decode_ahead`] turns it off).
//!
//! See docs/cuda.md for the design and the measurements.

pub mod args;
pub mod blas;
pub mod decode_mma;
pub mod device;
pub mod ffi;
pub mod forward;
pub mod fusion;
pub mod gemm_q4;
pub mod gemv_mma;
pub mod kernels;
pub mod linear;
pub mod module;
pub mod persistent;
pub mod repack;
pub mod scratch;
pub mod state;
pub mod testing;
pub mod timeline;
pub mod weights;

use super::{Backend, BackendState, DeviceKind, DeviceSampling};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::HostWeights;
use blas::Blas;
use device::{fmt_bytes, Gpu};
use forward::{prefill_chunk, Ops, SMALL_T};
use kernels::Kernels;
use parking_lot::Mutex;
use scratch::Scratch;
use state::CudaState;
use std::sync::Arc;
use weights::DevWeights;

/// The model on one GPU. Passes are serialised on the GPU's one stream by `scratch`'s lock.
pub struct CudaBackend {
    // Field order is drop order: buffers and handles before the modules and the context.
    scratch: Mutex<Option<Scratch>>,
    weights: DevWeights,
    blas: Option<Blas>,
    /// The persistent decode kernel's plan, when asked for and this model can use it.
    persistent: Option<persistent::Persistent>,
    /// Whether decode uses it (`set_persistent`; `WV_CUDA_PERSIST=1`).
    persistent_on: bool,
    kernels: Kernels,
    config: ModelConfig,
    /// Capture decode steps as CUDA graphs (WV_CUDA_GRAPH=0 turns it off).
    graphs: bool,
    /// Enqueue each session's next decode step before returning the token that feeds it
    /// (`forward_sample`; `WV_CUDA_AHEAD=0` or `set_decode_ahead` turns it off).
    ahead: bool,
    /// The longest prefill pass (made at load: [`prefill_chunk`], capped at what the fused
    /// product takes where a matrix is held only in the unit-major layout).
    chunk: usize,
    /// Measurement only: the decode products' per-block timeline (`WV_CUDA_TIMELINE`).
    timeline: Option<timeline::Timeline>,
    gpu: Arc<Gpu>,
}

/// Make a CUDA backend on device `ordinal`, uploading the weights. Any failure to find or use
/// the GPU is a `Device` error (so `--device auto` falls back to the CPU).
pub fn new_backend(host: &HostWeights, ordinal: usize) -> Result<Box<dyn Backend>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        CudaBackend::new(host, ordinal)
    })) {
        Ok(r) => r.map(|b| Box::new(b) as Box<dyn Backend>),
        Err(_) => Err(Error::device(format!(
            "cuda:{ordinal}: the CUDA backend panicked while starting"
        ))),
    }
}

/// Check that the shapes are ones the kernels take.
fn check_config(c: &ModelConfig) -> Result<()> {
    let hd = c.head_dim();
    if hd % 4 != 0 || hd > 256 || hd == 0 {
        return Err(Error::device(format!("the CUDA backend needs a head dimension that is a multiple of 4, at most 256 (this model's is {hd})")));
    }
    if c.num_key_value_heads == 0 || c.num_attention_heads % c.num_key_value_heads != 0 {
        return Err(Error::device(
            "the CUDA backend needs the heads to be a multiple of the KV heads",
        ));
    }
    Ok(())
}

impl CudaBackend {
    /// Choose which decode steps are fused (tests compare the settings in one process; the
    /// default comes from `WV_CUDA_FUSE`). Drops the captured decode steps.
    pub fn set_fusion(&mut self, f: kernels::Fusion) {
        self.kernels.fusion = f;
        self.drop_decode_steps();
    }

    /// Whether decode layers on `gemv_q4m` run its fused variants (`WV_CUDA_MMA_FUSE=0` turns
    /// them off; tests compare both in one process). Drops the captured decode steps.
    pub fn set_mma_fuse(&mut self, on: bool) {
        self.kernels.mma_fuse = on;
        self.drop_decode_steps();
    }

    /// Whether fused decode layers run a short context's attention in q|k|v's epilogue
    /// (`WV_CUDA_MMA_ATTN`; tests compare both). Drops the captured decode steps.
    pub fn set_mma_attention(&mut self, on: bool) {
        self.kernels.mma_attn = on;
        self.drop_decode_steps();
    }

    /// How many layers decode runs on `gemv_q4m`'s fused variants (decode_mma.rs) as set now.
    pub fn fused_mma_layers(&self) -> usize {
        let (k, c) = (&self.kernels, &self.config);
        self.weights
            .layers
            .iter()
            .filter(|l| decode_mma::plan(k, c, l).is_some())
            .count()
    }

    /// After a change of decode settings: the captured decode steps, and a step enqueued ahead
    /// under the old settings, are dropped.
    fn drop_decode_steps(&mut self) {
        if let Some(sc) = self.scratch.get_mut().as_mut() {
            sc.graphs.clear();
            sc.forget_ahead();
        }
    }

    /// Decode every 4-bit product group on `kind` where its weights allow it (and the kernel is
    /// loaded), the others on the kernel chosen at upload: tests compare the decode kernels in
    /// one process (the default comes from `WV_CUDA_GEMV`). Returns how many groups run `kind`.
    /// The scratch is made again (the slabs may change) and the captured steps dropped.
    pub fn set_gemv(&mut self, kind: weights::GemvKind) -> usize {
        let (gpu, k) = (&self.gpu, &self.kernels);
        let mut n = 0;
        for l in &mut self.weights.layers {
            for g in [&mut l.qkv, &mut l.o, &mut l.gate_up, &mut l.down] {
                if g.allows(kind, gpu, k.gemv_q4m.is_some()) {
                    g.set_gemv(gpu, kind);
                    n += 1;
                }
            }
        }
        *self.scratch.get_mut() = None;
        n
    }

    /// Plan decode attention by the position's bucket of keys (the default) or by the whole
    /// cache (tests compare both in one process). Drops the captured decode steps.
    pub fn set_attention_buckets(&mut self, on: bool) {
        self.kernels.att_buckets = on;
        self.drop_decode_steps();
    }

    /// The attention keys each captured decode step was planned for, oldest first (one graph
    /// per session cache and bucket; see [`forward::attention_keys`]). Empty when graphs are
    /// off or nothing was decoded since the last change of plan.
    pub fn decode_graph_keys(&self) -> Vec<usize> {
        self.scratch
            .lock()
            .as_ref()
            .map_or_else(Vec::new, |sc| sc.graphs.iter().map(|(k, _)| k.3).collect())
    }

    /// Whether `forward_sample` enqueues the session's next decode step, fed the token it
    /// chose, before returning that token (on by default; tests compare both).
    pub fn set_decode_ahead(&mut self, on: bool) {
        self.ahead = on;
    }

    /// How many `forward_sample` calls so far found their decode step already enqueued by the
    /// previous call (decode ahead's hits; 0 before the scratch exists).
    pub fn decode_ahead_hits(&self) -> u64 {
        self.scratch.lock().as_ref().map_or(0, |sc| sc.ahead_hits)
    }

    /// Decode with the persistent kernel (when this model has a plan for it) or with one kernel
    /// per step (tests compare both in one process). Drops the captured decode steps.
    pub fn set_persistent(&mut self, on: bool) {
        if on && self.persistent.is_none() {
            // Planned on first use (the kernel is opt-in): the scratch, sized for the plan's
            // buffers, is made again.
            match persistent::Persistent::new(
                &self.gpu,
                self.kernels.decode_layers,
                &self.config,
                &self.weights,
            ) {
                Ok(p) => self.persistent = p,
                Err(e) => crate::log::log(
                    crate::log::Level::Warn,
                    &format!("persistent decode kernel not planned ({e}); one kernel per step"),
                ),
            }
            *self.scratch.get_mut() = None;
        }
        self.persistent_on = on;
        self.drop_decode_steps();
    }

    /// How many 4-bit matrices are held only in the unit-major layout (the default on sm_90;
    /// `WV_CUDA_MMA_LAYOUT=rows` keeps wv's rows), of how many 4-bit matrices.
    pub fn units_only_matrices(&self) -> (usize, usize) {
        self.weights.units_only()
    }

    /// Whether decode steps run the persistent kernel.
    pub fn persistent_active(&self) -> bool {
        self.persistent_on && self.persistent.as_ref().is_some_and(|p| p.usable())
    }

    /// The backend on GPU `ordinal`, decoding with the persistent kernel when
    /// `WV_CUDA_PERSIST=1` asks for it.
    pub fn new(host: &HostWeights, ordinal: usize) -> Result<CudaBackend> {
        let persist = std::env::var("WV_CUDA_PERSIST").is_ok_and(|v| v == "1");
        Self::open(host, ordinal, persist)
    }

    /// The backend with the persistent decode kernel planned and on (its weights kept in wv's
    /// row layout, the only one it reads), whatever the environment says (tests).
    pub fn new_persistent(host: &HostWeights, ordinal: usize) -> Result<CudaBackend> {
        Self::open(host, ordinal, true)
    }

    fn open(host: &HostWeights, ordinal: usize, persist: bool) -> Result<CudaBackend> {
        let c = &host.config;
        check_config(c)?;
        let gpu = Gpu::open(ordinal)?;
        let kernels = Kernels::load(&gpu)?;
        let blas = Blas::new(&gpu);
        let t0 = std::time::Instant::now();
        let mut loaded = weights::Loaded::of(&kernels);
        // The persistent kernel reads wv's row layout only: asked for, it keeps the rows.
        loaded.units &= !persist;
        let weights = DevWeights::upload(&gpu, host, loaded)?;
        crate::log::log(
            crate::log::Level::Debug,
            &format!(
                "cuda:{ordinal}: weights repacked and uploaded ({}) in {:.2}s",
                fmt_bytes(weights.bytes()),
                t0.elapsed().as_secs_f64()
            ),
        );
        let graphs = gpu.has_graphs() && std::env::var("WV_CUDA_GRAPH").map_or(true, |v| v != "0");
        // The persistent decode kernel is opt-in (slower than one kernel per step on an
        // H100 so far: persistent.rs), so it is planned only when asked for (here or by
        // set_persistent).
        let persistent = if persist {
            persistent::Persistent::new(&gpu, kernels.decode_layers, c, &weights)?
        } else {
            None
        };
        let persistent_on = persistent.is_some();
        if let (true, Some(p)) = (persistent_on, &persistent) {
            crate::log::log(
                crate::log::Level::Debug,
                &format!(
                    "cuda:{ordinal}: decode runs every layer in one persistent kernel ({} blocks)",
                    p.blocks
                ),
            );
        }
        let chunk = weights::Loaded::prefill_chunk(
            prefill_chunk(),
            weights.units_only().0 > 0,
            kernels.gemm_q4_max_t,
        );
        let timeline = timeline::Timeline::from_env(&gpu)?;
        Ok(CudaBackend {
            chunk,
            timeline,
            scratch: Mutex::new(None),
            persistent_on,
            persistent,
            weights,
            blas,
            kernels,
            config: c.clone(),
            graphs,
            ahead: std::env::var("WV_CUDA_AHEAD").map_or(true, |v| v != "0"),
            gpu,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// One decode step of `token` at `pos` for the session cache `st` (its logits left in
    /// `sc.logits`), with this backend's model and graph setting.
    fn decode_step(
        &self,
        ops: &Ops<'_>,
        sc: &mut Scratch,
        st: &CudaState,
        token: u32,
        pos: usize,
    ) -> Result<()> {
        forward::decode_step(
            ops,
            &self.config,
            &self.weights,
            sc,
            st,
            token,
            pos,
            self.graphs,
        )
    }

    fn ops(&self) -> Ops<'_> {
        Ops {
            gpu: &self.gpu,
            k: &self.kernels,
            qgemm: true,
            blas: self.blas.as_ref(),
            pd: if self.persistent_active() {
                self.persistent.as_ref()
            } else {
                None
            },
        }
    }

    fn state<'s>(&self, state: &'s mut dyn BackendState) -> Result<&'s mut CudaState> {
        super::state_as::<CudaState>(state, "CUDA")
    }

    fn check_call(
        &self,
        st: &CudaState,
        tokens: &[u32],
        pos: usize,
        n_logits: usize,
    ) -> Result<()> {
        super::check_forward(&self.config, st.capacity, st.filled, tokens, pos, n_logits)?;
        // A session's context is at most max_position_embeddings (Session::new), but a state
        // made through Backend::new_state may be larger: the RoPE table ends there.
        let end = pos + tokens.len();
        if end > self.weights.rope_positions {
            return Err(Error::new(
                crate::error::ErrorKind::ContextFull,
                format!(
                    "positions {pos}..{end} exceed the model's max_position_embeddings {}",
                    self.weights.rope_positions
                ),
            ));
        }
        Ok(())
    }

    /// The scratch for passes of `rows` tokens (grown when needed).
    fn scratch_for<'g>(
        &self,
        guard: &'g mut Option<Scratch>,
        rows: usize,
    ) -> Result<&'g mut Scratch> {
        if guard.as_ref().is_none_or(|s| s.rows < rows) {
            *guard = None; // free the old one first
            *guard = Some(Scratch::new(
                &self.gpu,
                &self.config,
                &self.weights,
                rows,
                self.persistent.as_ref(),
            )?);
        }
        Ok(guard.as_mut().expect("just made"))
    }

    fn forward_inner(
        &self,
        st: &mut CudaState,
        tokens: &[u32],
        pos: usize,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let t = tokens.len();
        let v = self.config.vocab_size;
        let mut guard = self.scratch.lock();
        self.gpu.bind()?;
        // Prefill scratch is made once for a full chunk (not per prompt length), so no later
        // prompt pays for allocations.
        let chunk = self.chunk;
        let rows = if t <= SMALL_T { 1 } else { chunk };
        let sc = self.scratch_for(&mut guard, rows)?;
        // A step enqueued ahead is superseded (its logits are overwritten here).
        sc.forget_ahead();
        let ops = self.ops();
        logits.clear();
        logits.reserve(n_logits * v);
        let first_logit = t - n_logits;
        let step = if t <= SMALL_T { 1 } else { chunk };
        let mut c0 = 0;
        while c0 < t {
            let c1 = (c0 + step).min(t);
            let rows_here = c1.saturating_sub(first_logit.max(c0));
            if c1 - c0 == 1 {
                self.decode_step(&ops, sc, st, tokens[c0], pos + c0)?;
            } else {
                forward::run_pass(
                    &ops,
                    &self.config,
                    &self.weights,
                    sc,
                    st,
                    &tokens[c0..c1],
                    pos + c0,
                    rows_here,
                )?;
            }
            st.filled = st.filled.max(pos + c1);
            if rows_here > 0 {
                let n0 = logits.len();
                logits.resize(n0 + rows_here * v, 0.0);
                self.gpu.download(sc.logits.ptr, &mut logits[n0..])?;
            }
            c0 = c1;
        }
        self.gpu.sync()
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn describe(&self) -> String {
        let g = &self.gpu;
        format!(
            "cuda:{} {} (sm_{}{}, {} SMs, {}; products: {}{})",
            g.ordinal,
            g.name,
            g.cc.0,
            g.cc.1,
            g.sms,
            fmt_bytes(g.total_mem),
            if self.blas.is_some() {
                "wv GEMV + cuBLAS"
            } else {
                "wv GEMV + wv GEMM"
            },
            match (&self.kernels.gemm_q4_tma, &self.kernels.gemm_q4) {
                (Some(_), _) => " + 4-bit wgmma (TMA) for prefill passes",
                (None, Some(_)) => " + 4-bit wgmma for prefill passes",
                _ => "",
            }
        )
    }

    fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    fn decode_weight_bytes(&self) -> usize {
        self.weights.decode_bytes()
    }

    fn new_state(&self, context_length: usize) -> Result<Box<dyn BackendState>> {
        let mut guard = self.scratch.lock();
        if let Some(sc) = guard.as_mut() {
            // The new cache may take a freed one's address.
            sc.forget_ahead();
        }
        Ok(Box::new(CudaState::new(
            &self.gpu,
            &self.config,
            context_length,
        )?))
    }

    fn forward(
        &self,
        state: &mut dyn BackendState,
        tokens: &[u32],
        pos: usize,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let st = self.state(state)?;
        self.check_call(st, tokens, pos, n_logits)?;
        // Positions from pos on are rewritten: until this call succeeds only 0..pos are valid.
        st.filled = pos;
        let r = self.forward_inner(st, tokens, pos, n_logits, logits);
        if r.is_err() {
            st.filled = pos;
        }
        r
    }

    fn peak_device_bytes(&self) -> Option<usize> {
        Some(self.gpu.peak_bytes())
    }

    fn prefill_chunk(&self) -> usize {
        self.chunk
    }

    fn profile_report(&self) -> Option<Vec<(String, usize, f64)>> {
        let _guard = self.scratch.lock();
        self.gpu.bind().ok()?;
        if let Some(t) = &self.timeline {
            if let Err(e) = t.dump() {
                crate::log::log(crate::log::Level::Warn, &e.to_string());
            }
        }
        self.gpu.profile_report().ok().flatten()
    }

    fn forward_sample(
        &self,
        state: &mut dyn BackendState,
        token: u32,
        pos: usize,
        history: &[u32],
        sampling: &DeviceSampling,
    ) -> Option<Result<u32>> {
        // Greedy, or temperature with top-k in 1..=SAMPLE_CAP (and top-p), after the repetition
        // penalty, on the device; other settings sample on the host.
        let greedy = sampling.temperature == 0.0;
        if !greedy && !(1..=kernels::SAMPLE_CAP).contains(&sampling.top_k) {
            return None;
        }
        Some((|| {
            let st = self.state(state)?;
            self.check_call(st, &[token], pos, 1)?;
            st.filled = pos;
            let mut guard = self.scratch.lock();
            self.gpu.bind()?;
            self.scratch_for(&mut guard, 1)?;
            if sampling.repetition_penalty != 1.0 {
                let g = guard.as_mut().expect("made above");
                if g.ids_cap < history.len() {
                    // Room for the history's ids.
                    let cap = history.len().next_power_of_two().max(256);
                    g.ids = None;
                    g.ids_held.clear();
                    g.ids = Some(self.gpu.alloc(cap * 4, "token history")?);
                    g.ids_cap = cap;
                }
            }
            let sc = guard.as_mut().expect("made above");
            let ops = self.ops();
            // The step may be in flight already: enqueued by the previous call, fed the token
            // it returned (the session took it).
            if sc.ahead.take() == Some((st.k.ptr, pos, token)) {
                sc.ahead_hits += 1;
            } else {
                self.decode_step(&ops, sc, st, token, pos)?;
            }
            let v = self.config.vocab_size;
            let logits = sc.logits.ptr;
            let mut src = logits;
            if sampling.repetition_penalty != 1.0 && !history.is_empty() {
                let ids = sc
                    .ids
                    .as_ref()
                    .ok_or_else(|| Error::internal("no id buffer"))?;
                // A history that grew from the one the buffer holds (a session decoding) gets
                // its new ids set on the stream, without waiting for the step in flight; any
                // other is written whole (synchronously).
                let held = sc.ids_held.len();
                if held > 0 && history.starts_with(&sc.ids_held) {
                    for (i, &id) in history.iter().enumerate().skip(held) {
                        self.gpu.memset_u32(ids.at(4 * i), id, 1)?;
                    }
                    sc.ids_held.extend_from_slice(&history[held..]);
                } else {
                    sc.ids_held.clear();
                    ids.write(history)?;
                    sc.ids_held.extend_from_slice(history);
                }
                self.gpu.copy_dtod(sc.logits2.ptr, logits, v * 4)?;
                self.kernels.penalty(
                    &self.gpu,
                    logits,
                    sc.logits2.ptr,
                    ids.ptr,
                    history.len(),
                    v,
                    sampling.repetition_penalty,
                )?;
                src = sc.logits2.ptr;
            }
            if greedy {
                self.kernels.argmax(&self.gpu, src, v, sc.out_id.ptr)?;
            } else {
                self.kernels.sample_topk(
                    &self.gpu,
                    src,
                    v,
                    1.0 / sampling.temperature,
                    sampling.top_k,
                    sampling.top_p,
                    sampling.uniform,
                    sc.out_id.ptr,
                )?;
            }
            let mut id = [0u32];
            self.gpu.download(sc.out_id.ptr, &mut id)?;
            if id[0] == u32::MAX {
                // More values tie at the k-th than the kernel sorts: the host's way.
                let mut logits = vec![0f32; v];
                self.gpu.download(src, &mut logits)?;
                id[0] = crate::sampler::choose(
                    &mut Vec::new(),
                    &logits,
                    sampling.temperature,
                    sampling.top_k,
                    sampling.top_p,
                    sampling.uniform,
                );
            }
            st.filled = pos + 1;
            // Decode ahead: the next step, fed this token, runs while the caller handles it
            // (callbacks, stop checks) instead of after; a different next call recomputes it
            // (its cache row at pos + 1 is simply written again).
            let consecutive = sc.last_decode == st.k.ptr;
            sc.last_decode = st.k.ptr;
            if self.ahead
                && self.graphs
                && consecutive
                && !sampling.last
                && id[0] != self.config.eos_token_id
                && self.check_call(st, &id, pos + 1, 1).is_ok()
            {
                self.decode_step(&ops, sc, st, id[0], pos + 1)?;
                sc.ahead = Some((st.k.ptr, pos + 1, id[0]));
            }
            Ok(id[0])
        })())
    }
}
