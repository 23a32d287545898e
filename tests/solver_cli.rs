//! The solver through the command line: --method, --iters, --damp, --report, metadata.

mod common;

use common::{run, tiny_model};
use quantease_gguf::gguf::GgufFile;

#[test]
fn every_method_writes_a_valid_file_report_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let mut rel = Vec::new();
    for method in ["rtn", "gptq", "quantease"] {
        let out = dir.path().join(format!("{method}.gguf"));
        let report = dir.path().join(format!("{method}.json"));
        let o = run(&[
            "convert",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "Q4_0",
            "--pure",
            "--method",
            method,
            "--iters",
            "3",
            "--damp",
            "0.01",
            "--report",
            report.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.get("quantease.method").and_then(|v| v.as_str()),
            Some(method)
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["method"], method);
        let tensors = json["summary"]["tensors"].as_array().unwrap();
        assert!(!tensors.is_empty());
        for t in tensors {
            assert_eq!(t["ty"], "Q4_0");
            assert_eq!(t["bpw"], 4.5);
            assert_eq!(t["sigma"], "identity");
            let (r, base) = (
                t["rel_error"].as_f64().unwrap(),
                t["rtn_rel_error"].as_f64().unwrap(),
            );
            assert!(r > 0.0 && r <= base * (1.0 + 1e-9), "{t}");
            assert!(t["sweeps"].as_u64().unwrap() <= 3);
        }
        rel.push(tensors.len());
    }
    assert!(rel.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn bad_solver_flags_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    tiny_model(&input, false);
    let out = dir.path().join("o.gguf");
    for args in [["--method", "magic"], ["--damp", "-1"]] {
        let mut a = vec![
            "convert",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "Q4_0",
        ];
        a.extend(args);
        let o = run(&a);
        assert!(!o.status.success(), "{args:?}");
        assert!(!out.exists());
    }
}
