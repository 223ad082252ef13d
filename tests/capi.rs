//! The C API from C: the checked-in header is what cbindgen makes of src/ffi/, it compiles as
//! C11 and C++17 with every warning an error, and the C test program (tests/c/capi_test.c),
//! linked against the libwv.so that cargo built for this test run, exercises every function
//! and every error path on a fixture model, with no Rust panic message on its output, under
//! valgrind too when valgrind is installed (`WV_VALGRIND=0` skips it, `WV_VALGRIND=1` makes a
//! missing valgrind an error).
//!
//! `WV_UPDATE_HEADER=1 cargo test --test capi header` rewrites include/wv.h.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The model the C program runs on (relative to the crate root).
const MODEL_DIR: &str = "tests/fixtures/models/gptq4-g128-asym-spm";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The header as cbindgen generates it from cbindgen.toml and src/ffi/.
fn generate_header() -> Vec<u8> {
    let config =
        cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen can parse src/ffi/");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn header_is_current() {
    let want = generate_header();
    let path = root().join("include/wv.h");
    if std::env::var("WV_UPDATE_HEADER").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let have = std::fs::read(&path).unwrap_or_default();
    if have != want {
        let (have, want) = (
            String::from_utf8_lossy(&have),
            String::from_utf8_lossy(&want),
        );
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "include/wv.h is not what cbindgen generates from src/ffi/ (first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}).\n\
             Regenerate it with: WV_UPDATE_HEADER=1 cargo test --test capi header",
            line + 1,
            have.lines().nth(line).unwrap_or("<end of file>"),
            want.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

/// target/<profile>/, where cargo puts libwv.so (this test runs from target/<profile>/deps/).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

/// The folder holding the libwv.so built for this test run. Cargo builds every crate type of
/// the library for an integration test, into target/<profile>/deps/ (it is copied up to
/// target/<profile>/ only by `cargo build`); if it is missing there, `cargo build --lib` makes it.
fn libwv_dir() -> PathBuf {
    let name = format!(
        "{}wv{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let dir = profile_dir();
    if dir.join("deps").join(&name).exists() {
        return dir.join("deps");
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args(["build", "--lib"]);
    if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("run cargo build --lib").success(),
        "cargo build --lib failed"
    );
    assert!(
        dir.join(&name).exists(),
        "{} was not built",
        dir.join(&name).display()
    );
    dir
}

/// Where this test builds its programs.
fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

const STRICT: &[&str] = &["-Wall", "-Wextra", "-Werror", "-pedantic"];

/// Compile and link a C or C++ program against include/wv.h and libwv.
fn build(compiler: &str, std: &str, source: &str, exe: &str) -> PathBuf {
    let lib = libwv_dir();
    let out = out_dir().join(exe);
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(STRICT)
        .arg("-g")
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(source))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lwv")
        .arg("-lpthread");
    run(&mut cmd);
    out
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn cxx() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// A command for a program linked with libwv: cargo runs tests with LD_LIBRARY_PATH naming
/// target/<profile>/ (where an older libwv.so may lie) ahead of the rpath, so name the fresh
/// library's folder first.
fn program(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    let mut paths = vec![libwv_dir()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    cmd.env("LD_LIBRARY_PATH", std::env::join_paths(paths).unwrap());
    cmd
}

#[test]
fn header_compiles_as_c11_and_cxx17() {
    let c = build(&cc(), "c11", "tests/c/header_check.c", "header_check_c");
    let cpp = build(
        &cxx(),
        "c++17",
        "tests/c/header_check.cpp",
        "header_check_cpp",
    );
    for exe in [c, cpp] {
        let out = run(&mut program(&exe));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("header ok"), "{}: {text}", exe.display());
    }
}

/// The model: `MODEL_DIR`, or the folder in `WV_CAPI_TEST_MODEL`.
fn model_dir() -> PathBuf {
    let dir = std::env::var_os("WV_CAPI_TEST_MODEL")
        .map_or_else(|| root().join(MODEL_DIR), PathBuf::from);
    assert!(
        dir.join("config.json").exists(),
        "{} is missing (run tools/make_fixtures.py)",
        dir.display()
    );
    dir
}

/// A copy of the model whose config differs (so its fingerprint does): saved sessions of one
/// must be refused by the other.
fn other_model_dir(tag: &str) -> PathBuf {
    let src = model_dir();
    let dst = out_dir().join(format!("other-model-{tag}"));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let cfg_path = dst.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let ctx = cfg["max_position_embeddings"]
        .as_u64()
        .expect("max_position_embeddings");
    cfg["max_position_embeddings"] = serde_json::json!(ctx / 2);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    dst
}

/// Check the C program's output: its own summary line, and no trace of a Rust panic.
fn check_output(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{all}",
        out.status
    );
    assert!(
        !all.contains("panicked"),
        "{what}: a Rust panic was printed:\n{all}"
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{what}: no summary line:\n{all}"
    );
    eprintln!(
        "{what}: {}",
        stdout
            .lines()
            .rev()
            .find(|l| l.contains("passed"))
            .unwrap_or("")
    );
}

fn c_test_program(tag: &str) -> PathBuf {
    build(
        &cc(),
        "c11",
        "tests/c/capi_test.c",
        &format!("capi_test_{tag}"),
    )
}

#[test]
fn c_program_exercises_the_api() {
    let exe = c_test_program("native");
    let tmp = out_dir().join("native");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = program(&exe)
        .arg(model_dir())
        .arg(&tmp)
        .arg(other_model_dir("native"))
        .output()
        .unwrap();
    check_output("capi_test", &out);
}

#[test]
fn c_program_under_valgrind() {
    let want = std::env::var("WV_VALGRIND").ok();
    if want.as_deref() == Some("0") {
        eprintln!("WV_VALGRIND=0: skipped");
        return;
    }
    let have = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            want.as_deref() != Some("1"),
            "WV_VALGRIND=1 but valgrind is not installed"
        );
        eprintln!("valgrind is not installed: skipped (apt-get install valgrind)");
        return;
    }
    let exe = c_test_program("valgrind");
    let tmp = out_dir().join("valgrind");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = program(Path::new("valgrind"));
    let out = cmd
        .args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(&exe)
        .arg(model_dir())
        .arg(&tmp)
        .arg(other_model_dir("valgrind"))
        .env("WV_CAPI_TEST_VALGRIND", "1")
        .output()
        .unwrap();
    check_output("capi_test under valgrind", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind reported errors:\n{stderr}"
    );
}
