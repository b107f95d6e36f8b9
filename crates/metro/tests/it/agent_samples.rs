//! `metro run --samples PATH` when PATH cannot take the lines: a FIFO nobody reads (start-up
//! must not wait for a reader, SIGTERM must be obeyed, lines count as lost until a reader
//! comes) and a full file system (a tmpfs of 256 KiB mounted here, filled, given room back
//! and filled again: ENOSPC logged with the path each time it starts, writing resumed, the
//! lines counted as written exactly the lines in the file).
//!
//! Root: network namespaces, live capture and mount(8). Each test uses its own namespaces
//! and 10.200.N.0/24.

use crate::support;
use crate::support::agent;
use crate::support::netns;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::{Agent, Statsd, TempDir};
use netns::{Client, EchoServer, Pair};

const S: Duration = Duration::from_secs(1);

fn config(ips: &str) -> String {
    format!(
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\ninstances:\n  - interface: veth0\n    ips: [{ips}]\n"
    )
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The exit summary's counts: (written, lost).
fn summary(log: &str, path: &Path) -> (u64, u64) {
    let needle = format!(" lines written to {}, ", path.display());
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no summary naming {}:\n{log}", path.display()));
    let (head, tail) = line.split_once(&needle).unwrap();
    let written = head.rsplit(' ').next().unwrap().parse().unwrap();
    let lost = tail.split(' ').next().unwrap().parse().unwrap();
    (written, lost)
}

fn start(p: &Pair, dir: &TempDir, samples: &Path, stderr: &str) -> Agent {
    let cfg = dir.write(&format!("{stderr}.yaml"), &config("'10.200.41.2'"));
    Agent::run_samples(&p.c, &cfg, samples, &dir.path(stderr))
}

#[test]
fn a_fifo_without_reader_holds_nothing_and_its_reader_gets_every_line_counted() {
    if !netns::needs_root("network namespaces and live capture") {
        return;
    }
    let _load = support::timed();
    let p = Pair::new("smf", 41);
    let dir = TempDir::new("smfifo");
    let srv = EchoServer::start(&p.s, "10.200.41.2:7000");
    let _rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));

    // No reader, ever: start-up completes (capture runs) and SIGTERM ends it at once.
    let never = dir.path("never.fifo");
    mkfifo(&never);
    let t = Instant::now();
    let mut a = start(&p, &dir, &never, "never");
    a.wait_log("capture filter", 20 * S);
    assert!(
        a.log().contains("is a FIFO with no reader yet"),
        "{}",
        a.log()
    );
    eprintln!("capturing {:?} after start", t.elapsed());
    let t = Instant::now();
    a.terminate(5 * S);
    assert!(t.elapsed() < 3 * S, "SIGTERM took {:?}", t.elapsed());

    // A reader that comes late: the lines before it are lost (counted), the rest it reads.
    let fifo = dir.path("late.fifo");
    mkfifo(&fifo);
    let mut a = start(&p, &dir, &fifo, "late");
    a.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&p.c, srv.addr, 100, Duration::from_millis(1), 1000);
    std::thread::sleep(2 * S);
    let f = fifo.clone();
    // Blocks in open until the agent's writer opens its end (it retries every 200 ms).
    let reader = std::thread::spawn(move || {
        let r = BufReader::new(std::fs::File::open(&f).unwrap());
        let mut n = 0u64;
        for line in r.lines() {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["iface"], "veth0");
            n += 1;
        }
        n
    });
    a.wait_log("has a reader", 10 * S);
    std::thread::sleep(2 * S);
    client.stop();
    std::thread::sleep(S);
    a.terminate(10 * S);
    let read = reader.join().unwrap();
    let log = a.log();
    let (written, lost) = summary(&log, &fifo);
    eprintln!("{read} lines read, {written} written, {lost} lost");
    assert!(read > 100, "{read} lines");
    assert_eq!(read, written, "{log}");
    assert!(lost > 0, "{log}");
    assert!(
        log.contains(&format!(
            "{lost} lost ({lost} while the FIFO had no reader)"
        )),
        "{log}"
    );
    assert!(!log.contains("slower than the traffic"), "{log}");
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_named_and_the_counts_match_the_file() {
    if !netns::needs_root("network namespaces, live capture and mounting a tmpfs") {
        return;
    }
    let p = Pair::new("smd", 42);
    let dir = TempDir::new("smdisk");
    let srv = EchoServer::start(&p.s, "10.200.42.2:7000");
    let _rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let mnt = dir.path("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "metro-test",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _m = Mount(mnt.clone());
    // Room that comes back while the agent runs: writing resumes, still whole lines.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 160 << 10]).unwrap();
    let out = mnt.join("samples.jsonl");
    let cfg = dir.write("metro.yaml", &config("'10.200.42.2'"));
    let mut a = Agent::run_samples(&p.c, &cfg, &out, &dir.path("stderr"));
    a.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&p.c, srv.addr, 100, Duration::from_millis(1), 1000);
    a.wait_log("ENOSPC", 30 * S);
    std::fs::remove_file(&filler).unwrap();
    a.wait_log("--samples: writing", 10 * S);
    // It fills again at once: more lines lost, counted, logged again.
    std::thread::sleep(2 * S);
    client.stop();
    a.terminate(10 * S);
    let log = a.log();
    let text = std::fs::read_to_string(&out).unwrap();
    let in_file = text.lines().count() as u64;
    let (written, lost) = summary(&log, &out);
    eprintln!(
        "{} bytes, {in_file} lines in the file; {written} written, {lost} lost",
        text.len()
    );
    // Whole lines only, each one a sample.
    assert!(text.ends_with('\n'), "a partial line at the end");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(in_file > 100, "{in_file}");
    assert_eq!(written, in_file, "{log}");
    assert!(lost > 0);
    let named = format!(
        "cannot write {}: No space left on device (os error 28) (ENOSPC)",
        out.display()
    );
    // Logged when the disk filled, again when it filled after the room came back (not once
    // per lost buffer), and in the summary.
    assert_eq!(log.matches(&named).count(), 3, "{log}");
    assert_eq!(
        log.matches(&format!("--samples: writing {} again", out.display()))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&format!("{lost} lost ({lost} not written: {named})")),
        "{log}"
    );
    assert!(!log.contains("slower than the traffic"), "{log}");
}
