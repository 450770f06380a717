//! One load thread: a single-threaded runtime that opens its share of the
//! connections (a bounded number at a time), then runs their subscriber and
//! publisher tasks until the run ends. The subscriber receive loop is here.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{JoinSet, LocalSet};

use super::super::inflate::inflate;
use super::super::raw_client::{self, Conn, ConnectError};
use super::super::report;
use super::super::walker::{Control, Walker};
use super::publish::publisher;
use super::shared::{Ctx, EOF, FAILED, SubShared, now_ns};

/// connections. Returns the latency histogram of its subscribers.
pub(super) fn worker(
    w: usize,
    ctx: &Arc<Ctx>,
    setup: mpsc::Sender<Result<(), ConnectError>>,
) -> Histogram<u64> {
    let histogram = Rc::new(RefCell::new(report::new_histogram()));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = setup.send(Err(ConnectError::Closed(format!(
                "cannot start a runtime: {e}"
            ))));
            return histogram.replace(report::new_histogram());
        }
    };
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let threads = ctx.load.threads;
        let subs: Vec<usize> = (w..ctx.subs.len()).step_by(threads).collect();
        let pubs: Vec<usize> = (w..ctx.plan.publishers).step_by(threads).collect();
        let opened = tokio::select! {
            _ = ctx.finish.cancelled() => return,
            opened = open_all(ctx, &subs, &pubs) => opened,
        };
        let (sub_conns, pub_conns) = match opened {
            Ok(conns) => conns,
            Err(e) => {
                let _ = setup.send(Err(e));
                return;
            }
        };
        let _ = setup.send(Ok(()));
        for (i, conn) in sub_conns {
            tokio::task::spawn_local(subscriber(i, conn, ctx.clone(), histogram.clone()));
        }
        for (p, conn) in pub_conns {
            tokio::task::spawn_local(publisher(p, conn, ctx.clone()));
        }
        ctx.finish.cancelled().await;
    });
    drop(local);
    histogram.replace(report::new_histogram())
}

type Opened = (Vec<(usize, Conn)>, Vec<(usize, Conn)>);

/// Opens (and subscribes) this thread's connections, a bounded number at
/// a time.
async fn open_all(ctx: &Arc<Ctx>, subs: &[usize], pubs: &[usize]) -> Result<Opened, ConnectError> {
    let limit = (ctx.common.connect.connect_concurrency / ctx.load.threads).max(1);
    // Jobs: (is_publisher, index).
    let mut jobs = subs
        .iter()
        .map(|&i| (false, i))
        .chain(pubs.iter().map(|&p| (true, p)));
    let mut set = JoinSet::new();
    let mut sub_conns = Vec::with_capacity(subs.len());
    let mut pub_conns = Vec::with_capacity(pubs.len());
    loop {
        while set.len() < limit {
            let Some((is_pub, i)) = jobs.next() else {
                break;
            };
            let ctx = ctx.clone();
            set.spawn_local(async move {
                let n = if is_pub { ctx.subs.len() + i } else { i };
                let target = if is_pub {
                    ctx.nodes.publisher(i)
                } else {
                    ctx.nodes.subscriber(i)
                };
                let source = target.source_for(n, ctx.common.connect.source_addrs);
                let mut conn = raw_client::open(
                    target,
                    source,
                    ctx.common.broker.token.as_deref(),
                    ctx.load.compression && !is_pub,
                    ctx.common.connect.connect_timeout,
                )
                .await?;
                if !is_pub {
                    let topic = &ctx.topics[ctx.plan.topic_of(i)].name;
                    tokio::time::timeout(
                        ctx.common.connect.connect_timeout,
                        raw_client::subscribe(&mut conn, 1, topic),
                    )
                    .await
                    .map_err(|_| ConnectError::Timeout(target.addr))??;
                }
                Ok::<_, ConnectError>((is_pub, i, conn))
            });
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok((false, i, conn)))) => sub_conns.push((i, conn)),
            Some(Ok(Ok((true, p, conn)))) => pub_conns.push((p, conn)),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(ConnectError::Closed(format!("setup task failed: {e}"))),
        }
    }
    Ok((sub_conns, pub_conns))
}

/// Receives on one subscriber connection until it closes or the run ends
/// (the task is then dropped).
async fn subscriber(i: usize, conn: Conn, ctx: Arc<Ctx>, histogram: Rc<RefCell<Histogram<u64>>>) {
    receive(conn, ctx.load.recv_buffer, &ctx.subs[i], &histogram).await;
}

/// The subscriber receive loop: read a big chunk, walk its frames in place,
/// publish the counters, answer pings; until the broker closes the
/// connection (the code is stored in `shared.close_code`) or the task is
/// dropped. One clock reading per read; no allocation per message, but for
/// compressed ones (inflated by the thread's inflater, then walked).
pub(crate) async fn receive(
    conn: Conn,
    recv_buffer: usize,
    shared: &SubShared,
    histogram: &RefCell<Histogram<u64>>,
) {
    let Conn {
        mut stream,
        leftover,
        deflate,
    } = conn;
    let mut buf = vec![0u8; recv_buffer.max(leftover.len() + 4096)];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut filled = leftover.len();
    let mut wire_bytes = filled as u64;
    let mut walker = Walker::with_deflate(deflate);
    let mut now = now_ns();
    let code = loop {
        let walked = {
            let mut h = histogram.borrow_mut();
            let mut record = |sent: u64| {
                if sent != 0 {
                    h.saturating_record(now.saturating_sub(sent).max(1));
                }
            };
            match walker.walk(&buf[..filled], &mut record) {
                Ok(walked) => match &walked.control {
                    Some(Control::Compressed(body)) => inflate(&buf[body.clone()])
                        .map(|body| {
                            walker.binary(&body, &mut record);
                            walked
                        })
                        .map_err(|_| ()),
                    _ => Ok(walked),
                },
                Err(_) => Err(()),
            }
        };
        shared.received.store(walker.messages, Relaxed);
        shared.seq_gaps.store(walker.seq_gaps, Relaxed);
        shared
            .seq_regressions
            .store(walker.seq_regressions, Relaxed);
        shared.errors.store(walker.errors, Relaxed);
        let walked = match walked {
            Ok(w) => w,
            Err(_) => break FAILED,
        };
        buf.copy_within(walked.consumed..filled, 0);
        filled -= walked.consumed;
        match walked.control {
            Some(Control::Ping(payload)) => {
                if stream
                    .write_all(&raw_client::pong_frame(&payload))
                    .await
                    .is_err()
                {
                    break FAILED;
                }
                continue;
            }
            Some(Control::Close(code)) => {
                let _ = stream.write_all(&raw_client::close_frame()).await;
                break u32::from(code);
            }
            Some(Control::Compressed(_)) => {
                shared.compressed.store(walker.compressed, Relaxed);
                continue;
            }
            None => {}
        }
        if walked.need > buf.len() {
            buf.resize(walked.need, 0);
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => break EOF,
            Ok(n) => {
                filled += n;
                wire_bytes += n as u64;
                shared.wire_bytes.store(wire_bytes, Relaxed);
                now = now_ns();
            }
            Err(_) => break FAILED,
        }
    };
    // A close (or failure) after the run ended is not counted as loss: by
    // then the task is dropped. Anything recorded here happened during it.
    shared.close_code.store(code, Relaxed);
}
