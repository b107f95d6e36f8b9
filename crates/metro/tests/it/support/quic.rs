//! aioquic's server and client (tests/it/support/quic_echo.py; PyPI, pinned in .ci/run's venv,
//! found through `METRO_PYTHON`) for tests across the delay line.

#![allow(dead_code)]

use std::process::{Command, Stdio};

use super::dns::{Kill, run};
use super::netns::Netns;

/// The Python that can import aioquic: `METRO_PYTHON`, else `python3`; panics saying how to
/// get one when it cannot.
pub fn python() -> String {
    let py = std::env::var("METRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&py).args(["-c", "import aioquic"]).status();
    assert!(
        check.is_ok_and(|s| s.success()),
        "{py} cannot import aioquic: `pip install aioquic==1.2.0` (or set METRO_PYTHON to a \
         Python that can; .ci/run does)"
    );
    py
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/quic_echo.py");

/// The echo server in `ns` on `addr`:`port`, once it listens.
pub fn server(ns: &Netns, py: &str, addr: &str, port: u16) -> Kill {
    let mut srv = ns.command(py);
    srv.args([SCRIPT, "server", addr, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut srv = Kill(srv.spawn().expect("aioquic server"));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(srv.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "listening");
    srv
}

/// The client from `ns`: `exchanges` echoes one after another, `gap_s` seconds apart. Its
/// connect time and each exchange's time (send to echo), in ms.
pub fn client(
    ns: &Netns,
    py: &str,
    addr: &str,
    port: u16,
    exchanges: u32,
    gap_s: f64,
) -> (f64, Vec<f64>) {
    let mut cli = ns.command(py);
    cli.args([
        SCRIPT,
        "client",
        addr,
        &port.to_string(),
        &exchanges.to_string(),
        &gap_s.to_string(),
    ]);
    let out = run(cli, "aioquic client");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let connect = v["connect"].as_f64().unwrap() * 1e3;
    let rtts = v["rtts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() * 1e3)
        .collect();
    (connect, rtts)
}
