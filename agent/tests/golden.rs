//! Golden files: each `golden/*.yaml` is a bad policy; its `.expected` holds
//! exactly what `reflex check` must report for it. `UPDATE_GOLDEN=1`
//! rewrites the expectations (review the diff before committing).
use std::{fs, path::Path};

use reflex::policy::check_source;

#[test]
fn every_bad_policy_reports_what_its_golden_file_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .expect("golden directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "at least 20 bad policies, found {}",
        cases.len()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("file name");
        let text = fs::read_to_string(case).expect("readable case");
        let mut errors = check_source(Path::new(name), &text);
        errors.sort_by_key(|e| e.position);
        assert!(
            !errors.is_empty(),
            "{}: a bad policy passed the check",
            case.display()
        );
        let got: String = errors.iter().map(|e| format!("{e}\n")).collect();
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &got).expect("write expectation");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_shipped_policies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in fs::read_dir(&dir).expect("policies directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let text = fs::read_to_string(&path).expect("readable");
            let errors = check_source(&path, &text);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        }
    }
}
