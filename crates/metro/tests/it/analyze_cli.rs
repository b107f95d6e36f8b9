//! The rough edges a new user meets first, each tried as they would try it: `metro generate |
//! metro analyze -`, a file that is not there or not a capture, `--samples -` with and
//! without `-q`, standard output and standard error sharing a pipe or a terminal, `metro
//! generate` on a terminal, `.ci/run` without root. Terminals are real pseudo-terminals.

use crate::support::agent::{METRO, TempDir, metro};

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use metro_testkit::generator::{GenConfig, write_capture};
use serde_json::Value;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/scp-upload.pcap"
);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with standard output and standard error both on one new pseudo-terminal;
/// returns everything written to it and the exit code.
fn on_terminal(cmd: &mut Command) -> (Vec<u8>, i32) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the name, termios and size pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("running metro");
    // The parent's copies of the terminal's slave side are closed (moved into the Command
    // and dropped with it below): reading the master ends with EIO once the child exits.
    let reader = std::thread::spawn(move || {
        let mut f = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let status = child.wait().unwrap();
    drop(std::mem::replace(cmd, Command::new("true")));
    (reader.join().unwrap(), status.code().unwrap_or(-1))
}

fn small_capture(dir: &Path, packets: u64) -> PathBuf {
    let cfg = GenConfig {
        packets,
        connections: 200,
        servers: 20,
        ..GenConfig::default()
    };
    let mut bytes = Vec::new();
    write_capture(&cfg, &mut bytes).unwrap();
    let p = dir.join(format!("gen-{packets}.pcap"));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The responders of a JSON report, without the file names.
fn responders(json: &[u8]) -> Value {
    let doc: Value = serde_json::from_slice(json).unwrap();
    doc["responders"].clone()
}

#[test]
fn generate_piped_into_analyze_dash_reads_standard_input() {
    let dir = TempDir::new("cli-stdin");
    let file = dir.join("g.pcap");
    let out = metro(&[
        "generate",
        "-n",
        "5000",
        "-c",
        "50",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_file = metro(&["analyze", "-q", "--format", "json", file.to_str().unwrap()]);
    assert!(from_file.status.success());

    // The pipe a new user types.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{METRO}' generate -n 5000 -c 50 | '{METRO}' analyze --format json -"
        ))
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let r = responders(&piped.stdout);
    assert!(r.as_array().unwrap().len() > 5);
    assert_eq!(r, responders(&from_file.stdout));
    assert!(text(&piped.stderr).contains("summary: 1 files, 5000 records"));

    // Gzip through standard input too, and the sample lines name it `-`.
    let gz = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c '{}' | '{METRO}' analyze -q --samples - - | head -1",
            file.display()
        ))
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&gz.stdout).unwrap();
    assert_eq!(line["file"], "-");

    // Twice is refused rather than reading an empty second stream.
    let twice = metro(&["analyze", "-", "-"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(text(&twice.stderr).contains("can be read only once"));
}

#[test]
fn a_missing_or_foreign_file_prints_its_error_and_no_report() {
    let dir = TempDir::new("cli-missing");
    let junk = dir.join("notes.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let missing = dir.join("nope.pcap");
    for (f, says) in [
        (&missing, "cannot open: No such file"),
        (&junk, "not a pcap or pcapng file"),
    ] {
        for threads in ["1", "2"] {
            let out = metro(&["analyze", "--threads", threads, f.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1));
            let err = text(&out.stderr);
            assert!(
                err.contains(&format!("metro: {}: {says}", f.display())),
                "{err}"
            );
            assert!(!err.contains("summary"), "{err}");
            assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        }
    }
    // With a good file: the report and a summary counting only the file that was read.
    let out = metro(&["analyze", junk.to_str().unwrap(), EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("162.243.251.92"));
    let err = text(&out.stderr);
    assert!(err.contains("summary: 1 files, 657 records"), "{err}");
}

#[test]
fn samples_on_standard_output_move_the_report_and_say_so() {
    let out = metro(&["analyze", "--samples", "-", EXAMPLE]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 241);
    for l in stdout.lines() {
        serde_json::from_str::<Value>(l).expect("only sample lines on standard output");
    }
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "metro: the report follows on standard error (--samples - uses standard output"
        ),
        "{err}"
    );
    assert!(err.contains("162.243.251.92      198") && err.contains("summary:"));
    // --help says where the report goes.
    let help = text(&metro(&["analyze", "--help"]).stdout);
    assert!(
        help.contains("the report then goes to standard error"),
        "{help}"
    );

    // -q: the samples and nothing else.
    let out = metro(&["analyze", "-q", "--samples", "-", EXAMPLE]);
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 241);
    // -q without --samples -: the table only.
    let out = metro(&["analyze", "-q", EXAMPLE]);
    assert!(out.stderr.is_empty());
    assert!(text(&out.stdout).starts_with("RTT by responder"));
}

/// Both streams into one pipe: every line whole, and everything standard output had comes
/// before what standard error says after it.
#[test]
fn standard_output_and_error_in_one_pipe_never_share_a_line() {
    let dir = TempDir::new("cli-pipe");
    let cap = small_capture(&dir, 60_000);
    for extra in ["--samples -", "", "--samples - --threads 1"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{METRO}' analyze {extra} '{}' '{}' 2>&1",
                cap.display(),
                dir.join("missing.pcap").display()
            ))
            .output()
            .unwrap();
        let all = text(&out.stdout);
        let mut seen_stderr = false;
        let mut samples = 0;
        for l in all.lines() {
            if l.starts_with('{') {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(!seen_stderr, "a sample line after standard error's: {l}");
                samples += 1;
            } else if l.starts_with("metro: ") || l.starts_with("summary: ") {
                assert!(!l.contains('{'), "{l}");
                seen_stderr = true;
            }
        }
        if extra.is_empty() {
            // The table (stdout) before the summary (stderr), each on lines of their own.
            let table = all.find("RTT by responder").unwrap();
            let summary = all.find("\nsummary: ").unwrap();
            assert!(table < summary, "{all}");
            assert!(all.contains("missing.pcap: cannot open"));
            assert!(
                all.lines()
                    .any(|l| l.starts_with("summary: 1 files, 60000 records"))
            );
        } else {
            assert!(samples > 10_000, "{samples}");
        }
    }
}

/// On a terminal, the progress bar (which redraws a line of standard error) stays away
/// from sample lines streaming to the same terminal.
#[test]
fn no_progress_bar_in_the_middle_of_samples_on_a_terminal() {
    let dir = TempDir::new("cli-tty");
    // Long enough (in a debug build) for the bar's first half second to pass.
    let cap = small_capture(&dir, 400_000);
    let (out, code) =
        on_terminal(Command::new(METRO).args(["analyze", "--samples", "-", cap.to_str().unwrap()]));
    assert_eq!(code, 0, "{}", text(&out[out.len().saturating_sub(2000)..]));
    let all = text(&out);
    assert!(!all.contains("MB/s"), "a progress bar was drawn");
    assert!(
        !all.contains('\u{1b}'),
        "terminal control codes in the output"
    );
    let lines: Vec<&str> = all.lines().collect();
    let samples = lines.iter().filter(|l| l.starts_with('{')).count();
    assert!(samples > 100_000, "{samples}");
    for l in lines.iter().filter(|l| l.starts_with('{')) {
        let l = l.trim_end_matches('\r');
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    // With the table on the terminal the bar is allowed (standard error only), and the
    // table's lines are whole.
    let (out, code) = on_terminal(Command::new(METRO).args(["analyze", cap.to_str().unwrap()]));
    assert_eq!(code, 0);
    let all = text(&out);
    assert!(all.lines().any(|l| l.starts_with("responder ")), "{all}");
    assert!(
        all.lines().any(|l| l.starts_with("summary: 1 files")),
        "{all}"
    );
}

#[test]
fn generate_refuses_to_write_binary_to_a_terminal() {
    let (out, code) = on_terminal(Command::new(METRO).args(["generate", "-n", "100"]));
    assert_eq!(code, 1);
    let all = text(&out);
    assert!(
        all.contains("refusing to write a binary capture to a terminal"),
        "{all}"
    );
    // Not one byte of a pcap (its little-endian magic) reached the terminal.
    assert!(!out.windows(4).any(|w| w == [0xd4, 0xc3, 0xb2, 0xa1]));
    // A pipe or a file is fine.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("'{METRO}' generate -n 100 -c 5 | wc -c"))
        .output()
        .unwrap();
    let bytes: u64 = text(&out.stdout).trim().parse().unwrap();
    assert!(bytes > 24 + 100 * 16, "{bytes}");
}

/// `.ci/run` run by an unprivileged user stops at the root check, before it tries apt-get.
#[test]
fn ci_run_checks_for_root_before_installing() {
    let dir = TempDir::new("cli-ci");
    std::fs::create_dir_all(dir.join(".ci")).unwrap();
    let script = dir.join(".ci/run");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run"),
        &script,
    )
    .unwrap();
    // A copy the unprivileged user can reach (the worktree may not be).
    Command::new("chmod")
        .args(["-R", "a+rX", dir.to_str().unwrap()])
        .status()
        .unwrap();
    Command::new("chmod")
        .args(["a+rx", std::env::temp_dir().to_str().unwrap()])
        .status()
        .unwrap();
    // As root, drop to nobody; as anyone else, the test itself is unprivileged.
    // SAFETY: geteuid takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "bash",
                script.to_str().unwrap(),
            ])
            .output()
            .expect("setpriv (util-linux)")
    } else {
        Command::new("bash").arg(&script).output().unwrap()
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("CI must run as root"));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("== system packages"), "{stdout}");
    assert!(!text(&out.stderr).contains("apt-get"));
}

#[test]
fn generate_refuses_options_its_mode_would_ignore() {
    let dir = TempDir::new("cli-gen-modes");
    let out = dir.join("x.pcap");
    let out = out.to_str().unwrap();
    let truth = dir.join("truth.csv");
    // The flood writes no truth file and takes none of the simulation's options.
    for extra in [
        &["--truth", truth.to_str().unwrap()][..],
        &["--loss", "0.1"],
        &["-n", "1000"],
    ] {
        let mut args = vec!["generate", "--attack", "syn-flood", "-o", out];
        args.extend_from_slice(extra);
        let o = metro(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot be used with") && err.contains("--attack"),
            "{args:?}: {err}"
        );
    }
    assert!(!truth.exists());
    // The flood's own options need `--attack`.
    let o = metro(&["generate", "--syn-rate", "10", "-o", out]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--attack"), "{err}");
    // Each mode with its own options still works.
    let o = metro(&[
        "generate",
        "--attack",
        "syn-flood",
        "--syn-rate",
        "1000",
        "-o",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = metro(&[
        "generate",
        "-n",
        "1000",
        "--truth",
        truth.to_str().unwrap(),
        "-o",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(truth.exists());
}

/// Issue 19: a pcapng custom block is a frame to tshark (so metro numbers it) but not a
/// packet: `analyze` skipped it only in the agent and reported it as link type 4294967295,
/// "not decoded". Now every path skips it, and the summary says what it was.
#[test]
fn a_pcapng_custom_block_is_numbered_not_reported_as_an_unknown_link_type() {
    use metro_testkit::frame::{TcpFrame, flags};
    use metro_testkit::pcap::{Interface, PcapNgWriter};
    let dir = TempDir::new("cli-custom-block");
    let (c, s) = ([10, 0, 0, 2], [10, 0, 0, 1]);
    let mut w = PcapNgWriter::new(Vec::new(), false).unwrap();
    let i = w.add_interface(Interface::new(1, 0)).unwrap();
    let t0 = 1_700_000_000_000_000_000i64;
    let syn = TcpFrame::v4(c, 40000, s, 443)
        .flags(flags::SYN)
        .seq(1000)
        .to_vec();
    let synack = TcpFrame::v4(s, 443, c, 40000)
        .flags(flags::SYN | flags::ACK)
        .seq(5000)
        .ack(1001)
        .to_vec();
    let ack = TcpFrame::v4(c, 40000, s, 443).seq(1001).ack(5001).to_vec();
    w.write_packet(i, t0, &syn, syn.len() as u32).unwrap();
    // Frame 2: a custom block (its Private Enterprise Number, then data).
    w.write_block(0xbad, &[0, 0, 0x7e, 0xd9, 1, 2, 3, 4])
        .unwrap();
    w.write_packet(i, t0 + 20_000_000, &synack, synack.len() as u32)
        .unwrap();
    w.write_packet(i, t0 + 50_000_000, &ack, ack.len() as u32)
        .unwrap();
    let path = dir.join("custom.pcapng");
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
    for threads in ["1", "2"] {
        let out = metro(&[
            "analyze",
            "--threads",
            threads,
            "--format",
            "json",
            path.to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("link type"), "threads {threads}: {err}");
        assert!(
            err.contains("summary: 1 files, 4 records, 3 TCP packets, 0 undecodable"),
            "threads {threads}: {err}"
        );
        assert!(
            err.contains("not packets (pcapng custom or journal blocks, numbered as frames): 1"),
            "{err}"
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let summary = &doc["summary"];
        assert_eq!(summary["records"], 4, "{summary}");
        assert_eq!(summary["undecodable"], serde_json::json!({}), "{summary}");
        assert_eq!(
            summary["unsupported_linktypes"],
            serde_json::json!({}),
            "{summary}"
        );
        // The handshake's two samples (the SYN/ACK 20 ms from the capture point to the
        // client and back... the server side; the ACK 30 ms on the client side).
        assert_eq!(summary["samples"]["handshake"], 2, "{summary}");
    }
}

/// Issue 22 item 5: memory bounded by `--max-responders`. Beyond the cap, responders share
/// one `other` row: the rows are bounded, the totals kept, the same with 1 and 2 threads,
/// and the tracked rows are exactly what the uncapped run says of them.
#[test]
fn responders_beyond_the_cap_share_the_other_row_and_keep_the_totals() {
    let dir = TempDir::new("cli-max-responders");
    let cap = small_capture(&dir, 20_000);
    let cap = cap.to_str().unwrap();
    let total = |doc: &Value| -> u64 {
        let k = &doc["summary"]["samples"];
        ["seq", "handshake", "ts"]
            .iter()
            .map(|n| k[n].as_u64().unwrap())
            .sum()
    };
    let full = metro(&["analyze", "--threads", "1", "--format", "json", cap]);
    assert!(full.status.success(), "{}", text(&full.stderr));
    let full: Value = serde_json::from_slice(&full.stdout).unwrap();
    let all = full["responders"].as_array().unwrap();
    assert!(all.len() > 20, "the capture has {} responders", all.len());
    assert!(full.get("other_responders").is_none());
    let mut capped_docs = Vec::new();
    for threads in ["1", "2"] {
        let out = metro(&[
            "analyze",
            "--threads",
            threads,
            "--max-responders",
            "5",
            "--format",
            "json",
            cap,
        ]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("the first 5 have rows of their own (--max-responders)"),
            "{err}"
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = doc["responders"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(doc["summary"]["max_responders"], 5);
        // Each tracked row is the uncapped run's row for that responder.
        for r in rows {
            let same = all
                .iter()
                .find(|a| a["responder"] == r["responder"])
                .unwrap();
            assert_eq!(same, r);
        }
        let tracked: u64 = rows.iter().map(|r| r["samples"].as_u64().unwrap()).sum();
        let other = &doc["other_responders"];
        assert_eq!(other["samples"].as_u64().unwrap(), total(&full) - tracked);
        for k in ["seq", "handshake", "ts"] {
            let in_rows: u64 = rows.iter().map(|r| r["kinds"][k].as_u64().unwrap()).sum();
            let everywhere: u64 = all.iter().map(|r| r["kinds"][k].as_u64().unwrap()).sum();
            assert_eq!(
                other["kinds"][k].as_u64().unwrap(),
                everywhere - in_rows,
                "{k}"
            );
        }
        assert_eq!(total(&doc), total(&full));
        capped_docs.push(doc);
    }
    assert_eq!(capped_docs[0], capped_docs[1], "1 and 2 threads");
    // With per-connection rows the shards send whole samples: the same rows.
    let out = metro(&[
        "analyze",
        "--threads",
        "2",
        "--flows",
        "--max-responders",
        "5",
        "--format",
        "json",
        cap,
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["responders"], capped_docs[0]["responders"]);
    assert_eq!(doc["other_responders"], capped_docs[0]["other_responders"]);
    // The table: 5 rows and the `other` row.
    let table = metro(&["analyze", "-q", "--max-responders", "5", cap]);
    let table = text(&table.stdout);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("other ")).count(),
        1,
        "{table}"
    );
    assert_eq!(table.lines().count(), 2 + 5 + 1, "{table}");
    // The picture groups them with the others, and says there were more.
    let svg = dir.join("p.svg");
    let out = metro(&[
        "plot",
        "--max-responders",
        "5",
        "-o",
        svg.to_str().unwrap(),
        cap,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("5+ responders"), "the key");
}

/// Issue 19: `--plot` and `--report` no longer run the engine again over the files, so they
/// work on standard input too, and draw what they draw from the file.
#[test]
fn plot_and_report_from_standard_input_match_the_file() {
    let dir = TempDir::new("cli-plot-stdin");
    let svg = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let from_file = metro(&["analyze", "-q", "--plot", &svg("f.svg"), EXAMPLE]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let piped = Command::new(METRO)
        .args([
            "analyze",
            "-q",
            "--plot",
            &svg("s.svg"),
            "--report",
            &svg("s.html"),
            "-",
        ])
        .stdin(File::open(EXAMPLE).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert_eq!(piped.stdout, from_file.stdout);
    let f = std::fs::read_to_string(dir.join("f.svg")).unwrap();
    let s = std::fs::read_to_string(dir.join("s.svg")).unwrap();
    // The title names the input; everything else is the same picture.
    assert_eq!(f.replace("scp-upload.pcap", "-"), s);
    assert!(s.contains("<svg"));
    let html = std::fs::read_to_string(dir.join("s.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("RTT by responder"));
}
