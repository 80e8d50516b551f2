//! What one hand-off between two threads costs on this machine: the floor under any request
//! that crosses from the sessions' thread to a capsule's thread and back.
//!
//! Two threads pass a token back and forth `--rounds` times, the way a session hands a call
//! to a sleeping capsule thread (`Thread::unpark`, as `Runner::nudge` does) and the capsule's
//! reply wakes the session's event loop (a write to a socket it waits on with `epoll`, here a
//! Unix socket pair and a blocking read). It prints, per hand-off, the wall time and the CPU
//! time both threads spent (from `/proc/self/task/*/schedstat`), so the cost of a call that
//! crosses threads can be compared with a whole `Ping` (see the README's Performance section).
//!
//! ```text
//! cargo run --release --example handoff -- --rounds 200000
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// Round trips through `park`/`unpark`: each side sleeps until the other wakes it.
fn park_rounds(rounds: u64) {
    let turn = Arc::new(AtomicU64::new(0));
    let main = std::thread::current();
    let other = {
        let turn = Arc::clone(&turn);
        std::thread::spawn(move || {
            for round in 0..rounds {
                while turn.load(Ordering::Acquire) != 2 * round + 1 {
                    std::thread::park();
                }
                turn.store(2 * round + 2, Ordering::Release);
                main.unpark();
            }
        })
    };
    for round in 0..rounds {
        turn.store(2 * round + 1, Ordering::Release);
        other.thread().unpark();
        while turn.load(Ordering::Acquire) != 2 * round + 2 {
            std::thread::park();
        }
    }
    other.join().expect("the other thread");
}

/// Round trips through a Unix socket pair: each side blocks in `read` until the other writes.
fn socket_rounds(rounds: u64) {
    let (mut a, mut b) = UnixStream::pair().expect("a socket pair");
    let other = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        for _ in 0..rounds {
            b.read_exact(&mut byte).expect("read");
            b.write_all(&byte).expect("write");
        }
    });
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        a.write_all(&byte).expect("write");
        a.read_exact(&mut byte).expect("read");
    }
    other.join().expect("the other thread");
}

fn measure(name: &str, rounds: u64, run: fn(u64)) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    run(rounds);
    let (wall, cpu) = (wall.elapsed(), cpu_time().saturating_sub(cpu));
    // Two hand-offs per round trip (a count well under 2^52: exact as a float).
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (2 * rounds) as f64;
    println!(
        "{name:<28} {:>7.2} us wall, {:>7.2} us CPU per hand-off ({rounds} round trips)",
        per(wall),
        per(cpu)
    );
}

fn main() {
    let mut rounds = 100_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--rounds takes a positive number");
                        std::process::exit(2)
                    });
            }
            "-h" | "--help" => {
                println!("usage: handoff [--rounds N]   (default 100000)");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; see --help");
                std::process::exit(2);
            }
        }
    }
    measure("thread park/unpark", rounds, park_rounds);
    measure("unix socket pair", rounds, socket_rounds);
}
