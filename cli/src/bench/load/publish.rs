//! The publisher side of a load run: pre-built frames written in batches,
//! either as fast as the per-topic in-flight window allows or at a fixed
//! rate, and a reader that counts the broker's replies.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::super::raw_client::{Conn, PublishTemplate};
use super::super::walker::{Control, Walker};
use super::shared::{Ctx, EOF, FAILED, PubShared, now_ns};

/// Publishes on one connection from the start signal until the stop flag.
pub(super) async fn publisher(p: usize, conn: Conn, ctx: Arc<Ctx>) {
    let shared = &ctx.pubs[p];
    let topics = ctx.plan.publisher_topics(p);
    let templates: Vec<PublishTemplate> = topics
        .iter()
        .map(|&t| {
            PublishTemplate::new(&ctx.topics[t].name, ctx.load.payload, ctx.load.payload_kind)
        })
        .collect();
    let Conn {
        stream, leftover, ..
    } = conn;
    let (reader, mut writer) = stream.into_split();
    tokio::task::spawn_local(publisher_reader(p, reader, leftover, ctx.clone()));
    ctx.start.cancelled().await;
    let result = match ctx.load.rate {
        None => publish_windowed(&ctx, shared, &topics, &templates, &mut writer).await,
        Some(rate) => {
            let rate = rate / ctx.plan.publishers as f64;
            publish_paced(&ctx, shared, rate, &topics, &templates, &mut writer).await
        }
    };
    if let Err(e) = result {
        if let Ok(mut f) = shared.failure.lock() {
            f.get_or_insert(format!("publisher {p}: write failed: {e}"));
        }
    }
    shared.done.store(true, Relaxed);
    // Keep the connection open until the run ends, so the broker does not
    // see the publisher leave while messages are still draining.
    ctx.finish.cancelled().await;
}

/// Max-rate publishing under the per-topic in-flight window.
async fn publish_windowed(
    ctx: &Ctx,
    shared: &PubShared,
    topics: &[usize],
    templates: &[PublishTemplate],
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    // The window is a total over all topics: each topic may be its share
    // ahead of its slowest subscriber, so the broker's backlog stays bounded
    // however many topics there are.
    let window = (ctx.load.max_in_flight / ctx.topics.len().max(1)).max(1) as u64;
    let batch = ctx.load.batch;
    let per_topic = (batch / topics.len()).max(1) as u64;
    let frame_len = templates
        .iter()
        .map(PublishTemplate::len)
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(batch * frame_len);
    // Cached "slowest subscriber" per topic, refreshed when credit runs low.
    let mut floor: Vec<u64> = vec![0; topics.len()];
    let mut next = 0;
    while !ctx.stop.load(Relaxed) {
        out.clear();
        let stamp = now_ns();
        let mut count = 0u64;
        for k in 0..topics.len() {
            let j = (next + k) % topics.len();
            let topic = &ctx.topics[topics[j]];
            let published = topic.published.load(Relaxed);
            let mut credit = (floor[j] + window).saturating_sub(published);
            if credit < per_topic {
                floor[j] = ctx.min_received(topics[j]).unwrap_or(published);
                credit = (floor[j] + window).saturating_sub(published);
            }
            let n = credit.min(per_topic).min(batch as u64 - count);
            if n == 0 {
                continue;
            }
            for _ in 0..n {
                templates[j].append(&mut out, stamp);
            }
            topic.published.fetch_add(n, Relaxed);
            count += n;
            if count >= batch as u64 {
                next = j + 1;
                break;
            }
        }
        if count == 0 {
            // Every topic is a full window ahead: let subscribers catch up.
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        writer.write_all(&out).await?;
        shared.sent.fetch_add(count, Relaxed);
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Fixed-rate publishing: every millisecond, send what is due.
async fn publish_paced(
    ctx: &Ctx,
    shared: &PubShared,
    rate: f64,
    topics: &[usize],
    templates: &[PublishTemplate],
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let batch = ctx.load.batch as u64;
    let frame_len = templates
        .iter()
        .map(PublishTemplate::len)
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(batch as usize * frame_len);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0;
    while !ctx.stop.load(Relaxed) {
        ticker.tick().await;
        let due_total = (start.elapsed().as_secs_f64() * rate) as u64;
        let mut due = due_total.saturating_sub(sent);
        shared.max_lag_msgs.fetch_max(due, Relaxed);
        while due > 0 {
            out.clear();
            let stamp = now_ns();
            let n = due.min(batch);
            for _ in 0..n {
                templates[next].append(&mut out, stamp);
                ctx.topics[topics[next]].published.fetch_add(1, Relaxed);
                next = (next + 1) % topics.len();
            }
            writer.write_all(&out).await?;
            shared.sent.fetch_add(n, Relaxed);
            sent += n;
            due -= n;
        }
    }
    Ok(())
}

/// Reads a publisher connection: counts `ERROR` replies and notes a close.
async fn publisher_reader(p: usize, mut reader: OwnedReadHalf, leftover: Vec<u8>, ctx: Arc<Ctx>) {
    let shared = &ctx.pubs[p];
    let mut buf = vec![0u8; 64 * 1024];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut filled = leftover.len();
    let mut walker = Walker::new();
    let code = loop {
        let walked = match walker.walk(&buf[..filled], |_| {}) {
            Ok(w) => w,
            Err(_) => break FAILED,
        };
        shared.errors.store(walker.errors, Relaxed);
        buf.copy_within(walked.consumed..filled, 0);
        filled -= walked.consumed;
        match walked.control {
            // The broker only pings connections that stay silent.
            Some(Control::Ping(_)) => continue,
            Some(Control::Close(code)) => break u32::from(code),
            // Publishers do not offer permessage-deflate: their walker
            // refuses compressed frames instead of returning them.
            Some(Control::Compressed(_)) | None => {}
        }
        if walked.need > buf.len() {
            buf.resize(walked.need, 0);
        }
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break EOF,
            Ok(n) => filled += n,
            Err(_) => break FAILED,
        }
    };
    shared.close_code.store(code, Relaxed);
}
