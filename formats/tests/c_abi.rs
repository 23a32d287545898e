//! Builds `tests/c/test_quantease.c` against the static library (`libquantease_formats.a`) and
//! `include/quantease.h` with the system C compiler (`$CC`, else `cc`), and runs it. The same C
//! test also runs against `ggml-patch/testdouble/quantease_testdouble.c` (the C stand-in used to
//! build the ggml patch without Rust), so both implementations are checked against the spec's
//! formulas written out in the test.
//!
//! Skipped (with a message) only when no C compiler exists. The static library is the one cargo
//! built for this test run (found next to the test binary); if it is missing it is built with
//! `cargo build -p quantease-formats --lib` in the same profile and target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(cc)
}

/// Newest `libquantease_formats*.a` in `dir`.
fn newest_lib(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("libquantease_formats") && n.ends_with(".a")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn static_lib() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps.
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    let profile_dir = deps.parent().expect("profile dir").to_path_buf();
    if let Some(p) = newest_lib(&profile_dir).or_else(|| newest_lib(&deps)) {
        return p;
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "quantease-formats", "--lib"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd
        .status()
        .expect("run cargo build for the static library");
    assert!(status.success(), "cargo build of the static library failed");
    newest_lib(&profile_dir)
        .or_else(|| newest_lib(&deps))
        .expect("libquantease_formats.a after cargo build")
}

/// Compile `tests/c/test_quantease.c` with `extra` (a library or C source) and run it.
fn build_and_run(cc: &str, extra: &Path, what: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile_dir();
    let exe = out_dir.join("test_quantease");
    let output = Command::new(cc)
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-O1")
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/test_quantease.c"))
        .arg(extra)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil"])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler");
    assert!(
        output.status.success(),
        "compiling/linking the C test against {} ({what}) failed:\n{}",
        extra.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        !warnings.contains("warning"),
        "C compiler warnings ({what}):\n{warnings}"
    );
    let run = Command::new(&exe).output().expect("run the C test");
    println!("{what}:\n{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        run.status.success(),
        "C test against {what} failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn c_program_links_the_static_library_and_matches_the_spec() {
    let Some(cc) = compiler() else {
        eprintln!(
            "SKIPPED: no C compiler found (set CC or install cc/gcc/clang) — C ABI not tested"
        );
        return;
    };
    build_and_run(&cc, &static_lib(), "libquantease_formats");
}

#[test]
fn c_test_double_of_the_ggml_patch_matches_the_spec() {
    let Some(cc) = compiler() else {
        eprintln!("SKIPPED: no C compiler found — the C test double is not tested");
        return;
    };
    let td = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ggml-patch/testdouble/quantease_testdouble.c");
    assert!(td.exists(), "{} is missing", td.display());
    build_and_run(&cc, &td, "the ggml-patch C test double");
}

/// A fresh directory under the system temp dir (no dev-dependency needed).
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "quantease-c-abi-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
