//! Reload diffs on fixture pairs: every folder in tests/fixtures/diff/ holds `before.yaml`,
//! `after.yaml` and `summary.txt`, the one-line summary the reload log must show for that
//! change. The summary names what moves (and so lets a VIP go) and what is applied in
//! place, so these pairs pin down which edits may release a VIP.

use std::path::{Path, PathBuf};

use alive_proxy::config::diff::{InstanceChange, PlanDiff};
use alive_proxy::config::{self, Mode, Plan};

fn load(path: &Path) -> Plan {
    config::load(path, Mode::Check)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()))
        .plan
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

fn diff_of(case: &Path) -> PlanDiff {
    PlanDiff::between(
        &load(&case.join("before.yaml")),
        &load(&case.join("after.yaml")),
    )
}

#[test]
fn every_fixture_pair_summarises_as_written() {
    let cases = cases();
    assert!(cases.len() >= 8, "only {} diff fixtures", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(case.join("summary.txt")).expect("summary.txt");
        let got = diff_of(case).summary();
        if got != expected.trim() {
            wrong.push(format!(
                "{}:\n  expected {:?}\n  got      {got:?}",
                case.display(),
                expected.trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn timing_and_kubeconfig_edits_never_move_a_vip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff");
    let diff = diff_of(&dir.join("timing_and_kubeconfigs_retune_in_place"));
    assert!(
        diff.instances
            .values()
            .all(|c| matches!(c, InstanceChange::Retuned(_))),
        "{:?}",
        diff.instances
    );
    assert!(diff.listeners_added.is_empty() && diff.listeners_removed.is_empty());
}

#[test]
fn an_unchanged_file_is_an_empty_diff() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff");
    assert!(diff_of(&dir.join("unchanged")).is_empty());
}
