//! Loading and freeing models, and what a loaded model is: `wv_load`, `wv_model_free`,
//! `wv_model_get_info`.

use super::error::{wv_status, FfiError};
use super::ffi::{
    arg_opt_str, arg_str, check_out, clone_handle, free_handle, into_handle, read_options, u32_sat,
    write_sized_out, Handle, Magic, UserData,
};
use super::panic::{guard, guard_value};
use crate::model::{DeviceRequest, LoadOptions, Model};
use std::ffi::{c_char, c_void, CString};
use std::mem::size_of;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

/// A loaded model (opaque). Immutable and thread-safe: share one among any number of sessions
/// and threads. Free it with `wv_model_free`; sessions keep what they need alive, so freeing a
/// model while sessions made from it still exist is safe.
pub struct wv_model {
    magic: Magic,
    pub(crate) model: Arc<Model>,
    device: CString,
    device_description: CString,
}

impl Handle for wv_model {
    const MAGIC: u64 = 0x7776_5f6d_6f64_656c;
    const TYPE: &'static str = "wv_model";
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

/// Called during `wv_load` with the fraction of the weights loaded so far (0 to 1), on the
/// loading thread. Return 0 to go on; any other value aborts the load, which then returns
/// `WV_ERR_CANCELLED`.
pub type wv_progress_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, fraction: f32) -> i32>;

/// Options for `wv_load`. Initialise with `wv_load_options_init`, then change what you need.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wv_load_options {
    /// `sizeof(wv_load_options)`: set by `wv_load_options_init`; lets the struct grow.
    pub struct_size: u32,
    /// "auto" (the GPU when one is usable, else the CPU), "cpu", "cuda" (device 0) or
    /// "cuda:N". NULL means "auto".
    pub device: *const c_char,
    /// Load progress; NULL for none.
    pub progress: wv_progress_callback,
    /// Passed back to `progress` as is.
    pub progress_user_data: *mut c_void,
}

const LOAD_OPTIONS_V1: usize = size_of::<wv_load_options>();

impl wv_load_options {
    fn defaults() -> wv_load_options {
        wv_load_options {
            struct_size: LOAD_OPTIONS_V1 as u32,
            device: ptr::null(),
            progress: None,
            progress_user_data: ptr::null_mut(),
        }
    }
}

/// Fill `opts` with the defaults (device "auto", no progress callback) and set its
/// `struct_size`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wv_load_options_init(opts: *mut wv_load_options) {
    guard_value((), || {
        if !opts.is_null() {
            opts.write_unaligned(wv_load_options::defaults());
        }
    })
}

/// Load the GPTQ (or dense) LLaMA checkpoint in the folder `model_dir` (config.json,
/// quantize_config.json, *.safetensors, tokenizer.model or tokenizer.json). `opts` may be NULL
/// for the defaults. On success `*out_model` receives the model, to be freed with
/// `wv_model_free`.
///
/// Errors: `WV_ERR_INVALID_ARGUMENT` (NULL `model_dir` or `out_model`, bad UTF-8, a bad device
/// string, bad `struct_size`), `WV_ERR_IO` (a missing folder or file), `WV_ERR_MODEL_FORMAT`,
/// `WV_ERR_UNSUPPORTED`, `WV_ERR_OUT_OF_MEMORY`, `WV_ERR_DEVICE` (CUDA asked for but unusable;
/// "auto" falls back to the CPU instead), `WV_ERR_CANCELLED` (the progress callback said stop).
#[no_mangle]
pub unsafe extern "C" fn wv_load(
    model_dir: *const c_char,
    opts: *const wv_load_options,
    out_model: *mut *mut wv_model,
) -> wv_status {
    guard(|| {
        check_out(out_model, "out_model")?;
        let dir = arg_str(model_dir, "model_dir")?;
        if dir.is_empty() {
            return Err(FfiError::invalid("model_dir is empty"));
        }
        let o = if opts.is_null() {
            wv_load_options::defaults()
        } else {
            read_options(
                opts,
                LOAD_OPTIONS_V1,
                wv_load_options::defaults(),
                "wv_load_options",
            )?
        };
        let device = match arg_opt_str(o.device, "wv_load_options.device")? {
            None => DeviceRequest::Auto,
            Some(s) => DeviceRequest::parse(s)?,
        };
        let mut load_opts = LoadOptions {
            device,
            progress: None,
        };
        if let Some(cb) = o.progress {
            let ud = UserData(o.progress_user_data);
            // A non-zero return makes the loader stop with ErrorKind::Cancelled.
            load_opts.progress = Some(Box::new(move |fraction: f32| {
                cb(ud.get(), fraction.clamp(0.0, 1.0)) == 0
            }));
        }
        let model = Model::load(Path::new(dir), load_opts)?;
        let handle = new_handle(model);
        *out_model = into_handle(handle);
        Ok(())
    })
}

pub(crate) fn new_handle(model: Arc<Model>) -> wv_model {
    let kind = model.device_kind().name();
    let description = model.backend.describe().replace('\0', " ");
    wv_model {
        magic: Magic::new(wv_model::MAGIC),
        device: CString::new(kind).unwrap_or_default(),
        device_description: CString::new(description).unwrap_or_default(),
        model,
    }
}

/// Free a model. NULL is a no-op. Sessions made from it keep the weights alive until they are
/// freed too, so this is safe while sessions exist; the model handle itself must not be used
/// again.
#[no_mangle]
pub unsafe extern "C" fn wv_model_free(model: *mut wv_model) {
    guard_value((), || free_handle(model))
}

/// What a loaded model is. Set `struct_size` to `sizeof(wv_model_info)` and pass it to
/// `wv_model_get_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wv_model_info {
    /// Set by the caller to `sizeof(wv_model_info)`; lets the struct grow.
    pub struct_size: u32,
    /// The model's maximum context (`max_position_embeddings`), in tokens.
    pub context_length: u32,
    /// Rows of the embedding matrix (`vocab_size` in config.json).
    pub vocab_size: u32,
    /// Transformer layers.
    pub n_layers: u32,
    /// Width of the hidden state.
    pub hidden_size: u32,
    /// Attention heads.
    pub n_heads: u32,
    /// Key/value heads (less than `n_heads` for grouped-query attention).
    pub n_kv_heads: u32,
    /// GPTQ bits per weight (2, 3, 4 or 8); 0 for a dense (unquantised) checkpoint.
    pub quant_bits: u32,
    /// GPTQ group size in rows; -1 for one group per column (`group_size: -1`); 0 when dense.
    pub quant_group_size: i32,
    /// 1 when the checkpoint uses act-order (`desc_act`), else 0.
    pub quant_act_order: u32,
    /// The beginning-of-sequence token id.
    pub bos_token: i32,
    /// The end-of-sequence token id.
    pub eos_token: i32,
    /// Where the weights live: "cpu" or "cuda". Owned by the model; valid until
    /// `wv_model_free`.
    pub device: *const c_char,
    /// A line that says what the device is ("cpu (16 threads)", "cuda:0 NVIDIA H100 ...").
    /// Owned by the model; valid until `wv_model_free`.
    pub device_description: *const c_char,
    /// Bytes of weights held by the backend.
    pub weight_bytes: u64,
    /// Bytes of KV cache per token of context in a session.
    pub kv_bytes_per_token: u64,
}

const MODEL_INFO_V1: usize = size_of::<wv_model_info>();

/// Describe a model. `info->struct_size` must be set by the caller; the fields this library
/// knows are filled, any further bytes up to `struct_size` are zeroed.
#[no_mangle]
pub unsafe extern "C" fn wv_model_get_info(
    model: *const wv_model,
    info: *mut wv_model_info,
) -> wv_status {
    guard(|| {
        let h = clone_handle(model, "model")?;
        check_out(info, "info")?;
        let m = &h.model;
        let c = &m.config;
        let (bits, group, act_order) = match &c.quant {
            Some(q) => (
                q.bits,
                q.group_size
                    .map_or(-1, |g| i32::try_from(g).unwrap_or(i32::MAX)),
                q.desc_act as u32,
            ),
            None => (0, 0, 0),
        };
        let value = wv_model_info {
            struct_size: MODEL_INFO_V1 as u32,
            context_length: u32_sat(c.max_position_embeddings),
            vocab_size: u32_sat(c.vocab_size),
            n_layers: u32_sat(c.num_hidden_layers),
            hidden_size: u32_sat(c.hidden_size),
            n_heads: u32_sat(c.num_attention_heads),
            n_kv_heads: u32_sat(c.num_key_value_heads),
            quant_bits: bits,
            quant_group_size: group,
            quant_act_order: act_order,
            bos_token: super::ffi::token_to_c(m.tokenizer.bos_id()),
            eos_token: super::ffi::token_to_c(m.tokenizer.eos_id()),
            // The strings live in the handle, which outlives this call's reference `h` as long
            // as the caller has not freed it (the documented lifetime).
            device: h.device.as_ptr(),
            device_description: h.device_description.as_ptr(),
            weight_bytes: m.backend.weight_bytes() as u64,
            kv_bytes_per_token: m.kv_bytes_per_token() as u64,
        };
        write_sized_out(info, &value, MODEL_INFO_V1, "wv_model_info")
    })
}
