//! `stasis-ledger-app`: the reference application for exec-hooks scenarios (see
//! `stasis_scenarios::ledger` for the record format and the control protocol).
//!
//! ```text
//! stasis-ledger-app run --control SOCKET --seed N --volume DIR [--volume DIR ...]
//! stasis-ledger-app pause  [--timeout-ms T] [--lease-ms L] [--control SOCKET]
//! stasis-ledger-app resume [--timeout-ms T] [--control SOCKET]
//! stasis-ledger-app status [--timeout-ms T] [--control SOCKET]
//! stasis-ledger-app position [--timeout-ms T] [--control SOCKET]
//! ```
//! `pause`, `resume` and `status` are the hook commands: the socket comes from
//! `--control` or `$LEDGER_APP_CONTROL`. `position` prints the last complete record as a consistency
//! point without pausing (no quiesce: for negative controls). `pause` prints `stasis-consistency-point: record=k`
//! once the app stands still after record k; if the app does not answer within the timeout
//! it asks it to resume and exits with status 2. `run` exits when its stdin closes (its
//! parent is gone).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use stasis_scenarios::ledger;

const TIMEOUT_MS_DEFAULT: u64 = 5_000;
const LEASE_MS_DEFAULT: u64 = 10_000;

#[derive(Default)]
struct State {
    /// A pause was asked for and has not lapsed or been lifted.
    pause_until: Option<Instant>,
    /// The writer stands still between records.
    paused: bool,
    /// The last complete record.
    last: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: stasis-ledger-app run --control SOCKET --seed N --volume DIR [--volume DIR ...]\n       stasis-ledger-app pause|resume|status|position [--timeout-ms T] [--lease-ms L] [--control SOCKET]");
    ExitCode::from(64)
}

struct Args {
    control: Option<PathBuf>,
    seed: u64,
    volumes: Vec<PathBuf>,
    timeout: Duration,
    lease_ms: u64,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { control: std::env::var_os(ledger::CONTROL_ENV).map(PathBuf::from), seed: 0, volumes: Vec::new(), timeout: Duration::from_millis(TIMEOUT_MS_DEFAULT), lease_ms: LEASE_MS_DEFAULT };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{flag}: {value:?} is not a number"));
        match flag.as_str() {
            "--control" => a.control = Some(value.into()),
            "--seed" => a.seed = number()?,
            "--volume" => a.volumes.push(value.into()),
            "--timeout-ms" => a.timeout = Duration::from_millis(number()?),
            "--lease-ms" => a.lease_ms = number()?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else { return usage() };
    let a = match parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stasis-ledger-app: {e}");
            return usage();
        }
    };
    let Some(control) = a.control.clone() else {
        eprintln!("stasis-ledger-app: no control socket (--control or ${})", ledger::CONTROL_ENV);
        return ExitCode::from(64);
    };
    let result = match command.as_str() {
        "run" => run(&control, &a),
        "pause" => pause(&control, &a),
        "resume" => request(&control, "resume", a.timeout).map(|answer| println!("{answer}")),
        "status" => request(&control, "status", a.timeout).map(|answer| println!("{answer}")),
        "position" => position(&control, a.timeout),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stasis-ledger-app {command}: {e}");
            ExitCode::from(2)
        }
    }
}

/// One request line, one answer line, within `timeout`.
fn request(control: &Path, line: &str, timeout: Duration) -> Result<String, String> {
    let mut stream = UnixStream::connect(control).map_err(|e| format!("connecting to {}: {e}", control.display()))?;
    stream.set_read_timeout(Some(timeout)).and_then(|()| stream.set_write_timeout(Some(timeout))).map_err(|e| e.to_string())?;
    stream.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("sending {line:?}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|e| format!("no answer to {line:?} within {timeout:?}: {e}"))?;
    match answer.trim_end() {
        "" => Err(format!("the app closed the connection without answering {line:?}")),
        a if a.starts_with("error") => Err(a.to_string()),
        a => Ok(a.to_string()),
    }
}

/// The last complete record as a consistency point, without pausing: no quiesce at all
/// (what the negative control's hook does).
fn position(control: &Path, timeout: Duration) -> Result<(), String> {
    let answer = request(control, "status", timeout)?;
    let k: u64 = answer.split(' ').nth(1).and_then(|k| k.parse().ok()).ok_or_else(|| format!("unexpected answer {answer:?}"))?;
    println!("stasis-consistency-point: {}", ledger::point(k));
    Ok(())
}

fn pause(control: &Path, a: &Args) -> Result<(), String> {
    match request(control, &format!("pause {}", a.lease_ms), a.timeout) {
        Ok(answer) => {
            let k: u64 = answer.strip_prefix("paused ").and_then(|k| k.parse().ok()).ok_or_else(|| format!("unexpected answer {answer:?}"))?;
            println!("stasis-consistency-point: {}", ledger::point(k));
            Ok(())
        }
        Err(e) => {
            // Never leave a half-granted pause behind.
            let _ = request(control, "resume", a.timeout);
            Err(e)
        }
    }
}

fn run(control: &Path, a: &Args) -> Result<(), String> {
    let first = a.volumes.first().ok_or("run needs at least one --volume")?;
    std::fs::create_dir_all(first.join(ledger::OBJECTS)).map_err(|e| format!("creating {}: {e}", first.join(ledger::OBJECTS).display()))?;
    let mut journals = Vec::new();
    for v in &a.volumes {
        let path = v.join(ledger::JOURNAL);
        journals.push(std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?);
    }
    let _ = std::fs::remove_file(control);
    let listener = UnixListener::bind(control).map_err(|e| format!("listening on {}: {e}", control.display()))?;
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), changed: Condvar::new() });
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
    }
    // The parent closes our stdin when it goes: then so do we.
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
        std::process::exit(0);
    });
    let out = std::io::stdout();
    writeln!(out.lock(), "ready").map_err(|e| e.to_string())?;
    let mut n = 0u64;
    loop {
        wait_unless_paused(&shared);
        n += 1;
        let payload = ledger::payload(a.seed, n);
        let object = first.join(ledger::OBJECTS).join(ledger::object_name(n));
        std::fs::write(&object, &payload).map_err(|e| format!("writing {}: {e}", object.display()))?;
        let line = ledger::journal_line(n, &payload);
        for (i, journal) in journals.iter_mut().enumerate() {
            if i > 0 {
                std::thread::sleep(ledger::STEP_GAP);
            }
            journal.write_all(line.as_bytes()).map_err(|e| format!("appending to the journal on {}: {e}", a.volumes[i].display()))?;
        }
        shared.lock().last = n;
        shared.changed.notify_all();
        let mut out = out.lock();
        writeln!(out, "ack {n}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
        drop(out);
        std::thread::sleep(ledger::RECORD_PACE);
    }
}

/// Between records: stand still while a pause is in force (until resumed or its lease ends).
fn wait_unless_paused(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        match s.pause_until {
            Some(until) if Instant::now() < until => {
                if !s.paused {
                    s.paused = true;
                    shared.changed.notify_all();
                }
                let left = until.saturating_duration_since(Instant::now());
                s = shared.changed.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            Some(_) => {
                eprintln!("stasis-ledger-app: the pause lease ran out: resuming without a resume request");
                s.pause_until = None;
            }
            None => break,
        }
    }
    s.paused = false;
    shared.changed.notify_all();
}

fn serve(stream: UnixStream, shared: &Shared) {
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else { return };
    if BufReader::new(reader).read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let answer = match (words.next(), words.next()) {
        (Some("pause"), lease) => {
            let lease = Duration::from_millis(lease.and_then(|l| l.parse().ok()).unwrap_or(LEASE_MS_DEFAULT));
            let mut s = shared.lock();
            s.pause_until = Some(Instant::now() + lease);
            shared.changed.notify_all();
            // The writer finishes the record in progress, then stands still.
            while !s.paused && s.pause_until.is_some() {
                s = shared.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.paused {
                format!("paused {}", s.last)
            } else {
                "error: the pause was lifted before the app stood still".to_string()
            }
        }
        (Some("resume"), _) => {
            shared.lock().pause_until = None;
            shared.changed.notify_all();
            "resumed".to_string()
        }
        (Some("status"), _) => {
            let s = shared.lock();
            format!("{} {}", if s.paused { "paused" } else { "running" }, s.last)
        }
        _ => format!("error: unknown request {:?}", line.trim_end()),
    };
    let mut stream = stream;
    let _ = stream.write_all(format!("{answer}\n").as_bytes());
}
