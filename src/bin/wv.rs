//! `wv`: the command-line program over the engine.
//!
//! ```text
//! wv info     --model DIR
//! wv tokenize --model DIR --text TEXT
//! wv logits   --model DIR --tokens 1,2,3 [--last N] [--device D]
//! wv generate --model DIR --prompt TEXT [sampling flags] [--chat] [--device D]
//! wv chat     --model DIR [sampling flags] [--device D]
//! wv bench    --model DIR [--prompt-tokens N] [--gen-tokens N] [--context N] [--device D]
//!             [--sample session|host|card] [--host-ms F]
//! ```
//! Without `--model`, the bundled demo model (`models/kjv-tiny`) is used. Errors print one line
//! on stderr and exit non-zero (2 for a bad command line, 1 otherwise).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use wv::{DeviceRequest, Error, GenerateOptions, LoadOptions, Model, Session, SessionOptions};

mod cli_args {
    include!("../cli/args.rs");
}
use cli_args::Args;

const USAGE: &str = "usage: wv <info|tokenize|logits|generate|chat|bench> [--model DIR] [options]
  info      --model DIR
  tokenize  --model DIR --text TEXT
  logits    --model DIR --tokens 1,2,3 [--last N] [--device auto|cpu|cuda|cuda:N]
  generate  --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
            [--repeat-penalty R] [--seed S] [--stop STR]... [--chat] [--device D] [--context N]
  chat      --model DIR [sampling flags] [--system TEXT] [--device D] [--context N]
  bench     --model DIR [--prompt-tokens N] [--gen-tokens N] [--context N] [--device D]
            [--sample session|host|card] [--host-ms F]
Without --model the bundled demo model is used.";

fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE action before any thread starts, so that
    // `wv ... | head` ends quietly like other Unix tools instead of failing on a closed pipe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("wv: internal error: {info}");
    }));
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("wv: {msg} (see wv --help)");
            ExitCode::from(2)
        }
        Err(CliError::Engine(e)) => {
            eprintln!("wv: error ({}): {}", e.kind.name(), e.message);
            ExitCode::from(1)
        }
    }
}

enum CliError {
    Usage(String),
    Engine(Error),
}
impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Engine(e)
    }
}

fn run(argv: Vec<String>) -> Result<(), CliError> {
    let Some(cmd) = argv.first().cloned() else {
        return Err(CliError::Usage("no command given".into()));
    };
    if cmd == "--help" || cmd == "-h" || cmd == "help" {
        println!("{USAGE}");
        return Ok(());
    }
    if cmd == "--version" {
        println!("wv {}", wv::VERSION);
        return Ok(());
    }
    // Flags shared by the commands that generate.
    const SAMPLING: &[&str] = &[
        "model",
        "max-tokens",
        "temperature",
        "top-k",
        "top-p",
        "repeat-penalty",
        "seed",
        "stop",
        "device",
        "context",
        "system",
    ];
    let allowed: Vec<&str> = match cmd.as_str() {
        "info" => vec!["model"],
        "tokenize" => vec!["model", "text"],
        "logits" => vec!["model", "tokens", "last", "device"],
        "generate" => [SAMPLING, &["prompt", "chat"]].concat(),
        "chat" => SAMPLING.to_vec(),
        "bench" => vec![
            "model",
            "prompt-tokens",
            "gen-tokens",
            "context",
            "device",
            "sample",
            "host-ms",
        ],
        other => return Err(CliError::Usage(format!("unknown command {other:?}"))),
    };
    let args = Args::parse(&argv[1..], &allowed, &["chat"]).map_err(CliError::Usage)?;
    let dir = model_dir(&args)?;
    if std::env::var_os("WV_LOG").is_some() {
        wv::log::set_sink(Some((
            wv::log::Level::Debug,
            Box::new(|_, m| eprintln!("wv: {m}")),
        )));
    } else {
        wv::log::set_sink(Some((
            wv::log::Level::Warn,
            Box::new(|_, m| eprintln!("wv: {m}")),
        )));
    }
    match cmd.as_str() {
        "info" => cmd_info(&dir),
        "tokenize" => {
            let text = args.required("text").map_err(CliError::Usage)?;
            let tk = wv::tokenizer::Tokenizer::from_dir(&dir)?;
            let ids = tk.encode(&text, true)?;
            println!("{}", serde_json::to_string(&ids).unwrap_or_default());
            Ok(())
        }
        "logits" => cmd_logits(&dir, &args),
        "generate" => cmd_generate(&dir, &args),
        "chat" => cmd_chat(&dir, &args),
        "bench" => cmd_bench(&dir, &args),
        _ => unreachable!("checked above"),
    }
}

fn model_dir(args: &Args) -> Result<PathBuf, CliError> {
    if let Some(m) = args.get("model") {
        return Ok(PathBuf::from(m));
    }
    let bundled = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/kjv-tiny");
    if bundled.is_dir() {
        Ok(bundled)
    } else {
        Err(CliError::Usage(
            "--model DIR is required (the bundled demo model was not found)".into(),
        ))
    }
}

fn device(args: &Args) -> Result<DeviceRequest, CliError> {
    Ok(DeviceRequest::parse(
        args.get("device").as_deref().unwrap_or("auto"),
    )?)
}

fn load(dir: &std::path::Path, args: &Args) -> Result<Arc<Model>, CliError> {
    let opts = LoadOptions {
        device: device(args)?,
        progress: None,
    };
    Ok(Model::load(dir, opts)?)
}

fn sampling(args: &Args) -> Result<GenerateOptions, CliError> {
    let mut o = GenerateOptions::default();
    let u = CliError::Usage;
    if let Some(v) = args.value::<usize>("max-tokens").map_err(u)? {
        o.max_tokens = v;
    }
    if let Some(v) = args.value::<f32>("temperature").map_err(CliError::Usage)? {
        o.temperature = v;
    }
    if let Some(v) = args.value::<usize>("top-k").map_err(CliError::Usage)? {
        o.top_k = v;
    }
    if let Some(v) = args.value::<f32>("top-p").map_err(CliError::Usage)? {
        o.top_p = v;
    }
    if let Some(v) = args
        .value::<f32>("repeat-penalty")
        .map_err(CliError::Usage)?
    {
        o.repetition_penalty = v;
    }
    if o.temperature == 0.0 && args.get("repeat-penalty").is_none() {
        // Greedy means plain arg-max unless a penalty is asked for explicitly.
        o.repetition_penalty = 1.0;
    }
    o.seed = args.value::<u64>("seed").map_err(CliError::Usage)?;
    o.stop = args.all("stop");
    o.validate().map_err(|e| CliError::Usage(e.message))?;
    Ok(o)
}

fn session_opts(args: &Args) -> Result<SessionOptions, CliError> {
    Ok(SessionOptions {
        context_length: args
            .value::<usize>("context")
            .map_err(CliError::Usage)?
            .unwrap_or(0),
        system_prompt: args.get("system"),
    })
}

fn cmd_info(dir: &std::path::Path) -> Result<(), CliError> {
    let info = wv::model::inspect(dir)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info).unwrap_or_default()
    );
    Ok(())
}

fn cmd_logits(dir: &std::path::Path, args: &Args) -> Result<(), CliError> {
    let tokens: Vec<u32> = args
        .required("tokens")
        .map_err(CliError::Usage)?
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| CliError::Usage(format!("--tokens: {s:?} is not a token id")))
        })
        .collect::<Result<_, _>>()?;
    let last = args
        .value::<usize>("last")
        .map_err(CliError::Usage)?
        .unwrap_or(1);
    if last == 0 || last > tokens.len() {
        return Err(CliError::Usage(format!(
            "--last {last}: must be between 1 and {}",
            tokens.len()
        )));
    }
    let model = load(dir, args)?;
    let logits = model.logits(&tokens, last)?;
    let v = model.config.vocab_size;
    let mut out = String::with_capacity(logits.len() * 12);
    out.push_str("{\"logits\": [");
    for (i, row) in logits.chunks(v).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        for (j, x) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            if x.is_finite() {
                out.push_str(&format!("{x:e}"));
            } else {
                out.push_str("null");
            }
        }
        out.push(']');
    }
    out.push_str("]}");
    println!("{out}");
    Ok(())
}

fn print_piece(text: &str) -> bool {
    let mut so = std::io::stdout().lock();
    so.write_all(text.as_bytes()).is_ok() && so.flush().is_ok()
}

fn cmd_generate(dir: &std::path::Path, args: &Args) -> Result<(), CliError> {
    let prompt = args.required("prompt").map_err(CliError::Usage)?;
    let opts = sampling(args)?;
    let sopts = session_opts(args)?;
    let model = load(dir, args)?;
    let mut s = Session::new(model, &sopts)?;
    let mut cb = |_t: u32, text: &str| print_piece(text);
    let stats = if args.flag("chat") {
        s.chat(&prompt, &opts, &mut cb)
    } else {
        s.generate(&prompt, &opts, &mut cb)
    };
    println!();
    let stats = stats?;
    eprintln!(
        "wv: {} prompt tokens, {} generated; prefill {:.1} ms, first token {:.1} ms, decode {:.2} tokens/s ({:?})",
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.prefill_time.as_secs_f64() * 1e3,
        stats.time_to_first_token.as_secs_f64() * 1e3,
        rate(stats.generated_tokens.saturating_sub(1), stats.decode_time.as_secs_f64()),
        stats.stop_reason
    );
    Ok(())
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn cmd_chat(dir: &std::path::Path, args: &Args) -> Result<(), CliError> {
    let opts = sampling(args)?;
    let sopts = session_opts(args)?;
    let model = load(dir, args)?;
    let mut s = Session::new(model, &sopts)?;
    let stdin = std::io::stdin();
    eprintln!("wv chat: type a message; /reset starts over, /quit or end of input leaves.");
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Error::new(wv::ErrorKind::Io, format!("stdin: {e}")).into()),
        }
        let msg = line.trim_end_matches(['\n', '\r']);
        match msg.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                s.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        let r = s.chat(msg, &opts, &mut |_t, text| print_piece(text));
        println!();
        match r {
            Ok(_) => {}
            Err(e) if e.kind == wv::ErrorKind::ContextFull => {
                eprintln!("wv: the context is full; starting a new conversation");
                s.reset();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn cmd_bench(dir: &std::path::Path, args: &Args) -> Result<(), CliError> {
    let n_prompt = args
        .value::<usize>("prompt-tokens")
        .map_err(CliError::Usage)?
        .unwrap_or(512);
    let n_gen = args
        .value::<usize>("gen-tokens")
        .map_err(CliError::Usage)?
        .unwrap_or(128);
    // The session's context length (positions its KV cache holds); 0: prompt + generated.
    let context = args
        .value::<usize>("context")
        .map_err(CliError::Usage)?
        .unwrap_or(0);
    if n_prompt == 0 {
        return Err(CliError::Usage("--prompt-tokens must be at least 1".into()));
    }
    // Where decode's greedy choice is made: as a session does (the device where it can), or
    // always on the host from the logits.
    let sampling = match args
        .value::<String>("sample")
        .map_err(CliError::Usage)?
        .as_deref()
    {
        None | Some("session") => wv::bench::Sampling::Session,
        Some("host") => wv::bench::Sampling::Host,
        Some("card") => wv::bench::Sampling::Card,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "--sample takes session, host or card, not {other:?}"
            )))
        }
    };
    // Host work per decoded token (ms), as an application's callback would add.
    let host_ms = args
        .value::<f64>("host-ms")
        .map_err(CliError::Usage)?
        .unwrap_or(0.0);
    // Checked before the model loads (bench::run checks it too, for library callers).
    if !(0.0..=wv::bench::MAX_HOST_MS).contains(&host_ms) {
        return Err(CliError::Usage(format!(
            "--host-ms takes 0 to {} (milliseconds), not {host_ms}",
            wv::bench::MAX_HOST_MS
        )));
    }
    let t_load = Instant::now();
    let model = load(dir, args)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let report = wv::bench::run(&model, n_prompt, n_gen, context, load_s, sampling, host_ms)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}
