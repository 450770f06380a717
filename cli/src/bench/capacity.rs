//! `tickwire bench recv-capacity`: calibrates the load tool itself.
//!
//! A built-in sender thread (pinned to `--sender-cpu`, default 0) writes
//! pre-encoded `MESSAGE` frames as fast as it can to C loopback connections,
//! and the very receive loop the `fanout` and `topics` subscribers use
//! ([`super::load::receive`]) reads them on the calling thread (pin it with
//! `taskset -c 1`). No broker is involved. The report gives the messages
//! received per second and the receiving thread's CPU use, so the tool's
//! ceiling on one core is known: if a broker benchmark delivers far less
//! than this, the load side was not the bottleneck.

use crate::console::{stderrln, stdoutln};
use std::cell::RefCell;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tickwire_broker::config::{parse_count, parse_duration, parse_size};
use tickwire_protocol::message::{Position, encode_delivery_frame};
use tokio::task::LocalSet;

use super::load::{SubShared, now_ns, receive};
use super::raw_client::Conn;
use super::report::{self, CpuTime, si};
use super::{EXIT_CONNECT, EXIT_OK, usage};

/// Arguments of `tickwire bench recv-capacity`.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// Loopback connections to receive on.
    #[arg(long, default_value = "1000", value_parser = parse_count, value_name = "C")]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value = "128", value_parser = parse_size, value_name = "SIZE")]
    pub payload: usize,
    /// How long to measure.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// CPU the sender thread is pinned to.
    #[arg(long, default_value = "0", value_name = "CPU")]
    pub sender_cpu: usize,
    /// Receive buffer per connection.
    #[arg(long, default_value = "256KiB", value_parser = parse_size, value_name = "SIZE")]
    pub recv_buffer: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The calibration result.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// Always `recv-capacity`.
    pub bench: &'static str,
    /// Connections.
    pub connections: usize,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Frame bytes per message on the wire.
    pub frame_bytes: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Messages received.
    pub received: u64,
    /// Messages received per second.
    pub received_per_sec: f64,
    /// Receiving thread's CPU, percent of one core.
    pub receiver_cpu_percent: f64,
    /// Receiving thread's CPU nanoseconds per message.
    pub receiver_ns_per_message: f64,
    /// received_per_sec scaled to 100% of one core.
    pub capacity_per_core: f64,
}

/// Runs the calibration; returns the exit code.
pub fn run(args: CapacityArgs) -> u8 {
    if args.payload < 8 {
        return usage("--payload must be at least 8 bytes");
    }
    if args.connections > super::MAX_CONNECTIONS || args.duration > super::MAX_DURATION {
        return usage("--connections or --duration is too large");
    }
    let listener = match TcpListener::bind("127.0.0.1:0").and_then(|l| Ok((l.local_addr()?, l))) {
        Ok(pair) => pair,
        Err(e) => {
            stderrln!("tickwire bench: cannot listen on 127.0.0.1: {e}");
            return EXIT_CONNECT;
        }
    };
    let (addr, listener) = listener;
    let stop = Arc::new(AtomicBool::new(false));
    let frame = one_frame(args.payload);
    let sender = {
        let stop = stop.clone();
        let (count, cpu, frame) = (args.connections, args.sender_cpu, frame.clone());
        std::thread::spawn(move || send_loop(listener, count, cpu, &frame, &stop))
    };
    let rt = match super::small_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            stderrln!("tickwire bench: cannot start a runtime: {e}");
            return EXIT_CONNECT;
        }
    };
    let subs: Vec<SubShared> = (0..args.connections)
        .map(|_| SubShared::default())
        .collect();
    let histogram = RefCell::new(report::new_histogram());
    let local = LocalSet::new();
    let measured = local.block_on(&rt, async {
        let mut streams = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => streams.push(s),
                Err(e) => return Err(format!("connect to the built-in sender: {e}")),
            }
        }
        let receivers = streams.into_iter().zip(&subs).map(|(stream, shared)| {
            receive(
                Conn {
                    stream,
                    leftover: Vec::new(),
                    deflate: false,
                },
                args.recv_buffer,
                shared,
                &histogram,
            )
        });
        let all = futures_join(receivers);
        let total = || subs.iter().map(|s| s.received.load(Relaxed)).sum::<u64>();
        let measure = async {
            // Warm up, then measure.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (cpu0, t0, n0) = (CpuTime::thread_now(), Instant::now(), total());
            tokio::time::sleep(args.duration).await;
            let (cpu1, t1, n1) = (CpuTime::thread_now(), Instant::now(), total());
            (cpu1.since(cpu0), t1 - t0, n1 - n0)
        };
        tokio::select! {
            m = measure => Ok(m),
            _ = all => Err("the built-in sender stopped early".to_owned()),
        }
    });
    stop.store(true, Relaxed);
    drop(local);
    let _ = sender.join();
    let (cpu, wall, received) = match measured {
        Ok(m) => m,
        Err(e) => {
            stderrln!("tickwire bench: {e}");
            return EXIT_CONNECT;
        }
    };
    let secs = wall.as_secs_f64().max(1e-9);
    let cpu_s = cpu.user + cpu.sys;
    let rate = received as f64 / secs;
    let percent = 100.0 * cpu_s / secs;
    let report = CapacityReport {
        bench: "recv-capacity",
        connections: args.connections,
        payload_bytes: args.payload,
        frame_bytes: frame.len(),
        seconds: secs,
        received,
        received_per_sec: rate,
        receiver_cpu_percent: percent,
        receiver_ns_per_message: if received > 0 {
            cpu_s * 1e9 / received as f64
        } else {
            0.0
        },
        capacity_per_core: if percent > 0.0 {
            rate * 100.0 / percent
        } else {
            0.0
        },
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => {
                let _ = stdoutln!("{s}");
            }
            Err(e) => stderrln!("tickwire bench: cannot encode the report: {e}"),
        }
    } else {
        report::print_table(
            "tickwire bench recv-capacity (built-in sender, no broker)",
            &[
                (
                    "setup",
                    format!(
                        "{} connections, {} B payload ({} B frames), sender on CPU {}",
                        report.connections,
                        report.payload_bytes,
                        report.frame_bytes,
                        args.sender_cpu
                    ),
                ),
                (
                    "received",
                    format!("{} msgs in {:.2} s = {} msgs/s", received, secs, si(rate)),
                ),
                (
                    "receiver CPU",
                    format!(
                        "{:.2} s user + {:.2} s sys = {:.0}% of one core, {:.1} ns per message",
                        cpu.user, cpu.sys, percent, report.receiver_ns_per_message
                    ),
                ),
                (
                    "capacity",
                    format!("≈ {} msgs/s on one core", si(report.capacity_per_core)),
                ),
            ],
        );
    }
    EXIT_OK
}

/// Polls every receiver future concurrently on the current task.
async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::from_iter(futures.map(Box::pin));
    std::future::poll_fn(move |cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// One delivery frame as the broker would send it.
fn one_frame(payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; payload];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    encode_delivery_frame("bench.capacity", Position { epoch: 1, seq: 1 }, 0, &p).to_vec()
}

/// The built-in sender: accepts `count` connections and writes a cyclic
/// stream of whole frames to each, non-blocking, until `stop`.
fn send_loop(listener: TcpListener, count: usize, cpu: usize, frame: &[u8], stop: &AtomicBool) {
    pin_to(cpu);
    // 64 KiB of whole frames, written cyclically: offsets stay on frame
    // boundaries modulo the block.
    let per_block = (64 * 1024 / frame.len()).max(1);
    let block: Vec<u8> = frame.repeat(per_block);
    let mut conns: Vec<(TcpStream, usize)> = Vec::with_capacity(count);
    while conns.len() < count {
        match listener.accept() {
            Ok((s, _)) => {
                if s.set_nonblocking(true).is_err() {
                    return;
                }
                let _ = s.set_nodelay(true);
                conns.push((s, 0));
            }
            Err(_) => return,
        }
    }
    while !stop.load(Relaxed) {
        let mut progress = false;
        for (stream, offset) in conns.iter_mut() {
            match stream.write(&block[*offset..]) {
                Ok(n) => {
                    *offset = (*offset + n) % block.len();
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Pins the calling thread to `cpu` (best effort).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read/write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
