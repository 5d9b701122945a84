//! The in-tree test Kubernetes API server (tests/support/kube_api.rs) as a standalone
//! process, for network-namespace tests and manual use with kubectl.
//!
//! ```text
//! cargo build --example fake_kube_api
//! fake_kube_api [--bind ADDR:PORT]... [--dir DIR] [--user NAME]...
//! ```
//! Prints one line per endpoint and user, `kubeconfig <endpoint> <user> <path>`, then
//! `ready`, and serves until killed (stdin EOF is ignored so it can run in the
//! background). Fault switches are lines on stdin:
//! `down N`, `up N`, `slow N MILLIS`, `error N STATUS|off`, `conflicts N COUNT`,
//! `access USER all|none|VERB,VERB...`.
//!
//! In a network namespace lab, run it inside the namespace that owns the API server's
//! address, e.g. `ip netns exec lab-api fake_kube_api --bind 192.0.2.1:6443 --dir DIR
//! --user lb1 --user lb2`: the server certificate names every bound address, and the
//! kubeconfigs point at it. Keep its stdin open (a pipe) to flip faults during the test.

#[path = "../tests/support/kube_api/mod.rs"]
mod kube_api;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube_api::{Access, ClientSpec, KubeApi};

fn main() -> anyhow::Result<()> {
    let mut builder = KubeApi::builder();
    let mut users = vec!["kubernetes-admin".to_string()];
    let mut args = std::env::args().skip(1);
    let mut bound = false;
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--bind" => {
                let addr: SocketAddr = value()?.parse()?;
                builder = builder.bind(addr);
                bound = true;
            }
            "--dir" => builder = builder.dir(&PathBuf::from(value()?)),
            "--user" => users.push(value()?),
            "-h" | "--help" => {
                println!("usage: fake_kube_api [--bind ADDR:PORT]... [--dir DIR] [--user NAME]...");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !bound {
        builder = builder.loopback_endpoints(1);
    }
    let api = builder.start()?;
    let mut out = std::io::stdout().lock();
    for (i, endpoint) in api.endpoints().iter().enumerate() {
        writeln!(out, "endpoint {i} {}", endpoint.url())?;
        for user in &users {
            let path = api.kubeconfig(i, &ClientSpec::user(user));
            writeln!(out, "kubeconfig {i} {user} {}", path.display())?;
        }
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match apply_command(&api, &line) {
            Ok(()) => println!("ok {line}"),
            Err(e) => println!("error {line}: {e}"),
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn apply_command(api: &KubeApi, line: &str) -> anyhow::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let endpoint = |s: &str| -> anyhow::Result<usize> {
        let i: usize = s.parse()?;
        anyhow::ensure!(i < api.endpoints().len(), "no endpoint {i}");
        Ok(i)
    };
    match words.as_slice() {
        [] => {}
        ["down", n] => api.faults(endpoint(n)?).set_down(true),
        ["up", n] => api.faults(endpoint(n)?).set_down(false),
        ["slow", n, ms] => api
            .faults(endpoint(n)?)
            .set_slow(Duration::from_millis(ms.parse()?)),
        ["error", n, "off"] => api.faults(endpoint(n)?).set_error_status(None),
        ["error", n, code] => api
            .faults(endpoint(n)?)
            .set_error_status(Some(code.parse()?)),
        ["conflicts", n, count] => api
            .faults(endpoint(n)?)
            .conflict_next_writes(count.parse()?),
        ["access", user, "all"] => api.set_access(user, Access::All),
        ["access", user, "none"] => api.set_access(user, Access::Nothing),
        ["access", user, verbs] => {
            let verbs: Vec<&str> = verbs.split(',').collect();
            api.set_access(user, Access::verbs(&verbs));
        }
        _ => anyhow::bail!("unknown command"),
    }
    Ok(())
}
