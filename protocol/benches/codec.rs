//! Micro-benchmarks of the wire format's hot paths: the broker's per-publish
//! encode, the decode of a publish and of a delivery, and frame decoding of
//! a batch of masked client frames, and permessage-deflate: compressing a
//! JSON delivery at levels 1, 6 and 9 (the ratio is printed) and inflating
//! it.
//!
//! Run with `cargo bench -p tickwire-protocol --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_protocol::message::{Position, encode_delivery_frame};

/// A realistic position: epochs are random 64-bit numbers.
const AT: Position = Position {
    epoch: 0x8a3f_0c2e_5b7d_1946,
    seq: 123_456,
};
use tickwire_protocol::deflate;
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, MessageKind, OpCode, Role};
use tickwire_protocol::{ClientMessage, ServerMessage};

const TOPIC: &str = "stocks.AAPL";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn payload() -> Bytes {
    Bytes::from((0..128u32).map(|i| i as u8).collect::<Vec<u8>>())
}

fn publish_body() -> Vec<u8> {
    let mut body = Vec::new();
    ClientMessage::Publish {
        id: None,
        topic: TOPIC,
        payload: payload(),
        retain: false,
    }
    .encode(&mut body);
    body
}

fn codec(c: &mut Criterion) {
    let payload = payload();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_delivery_frame/128B", |b| {
        b.iter(|| {
            encode_delivery_frame(
                black_box(TOPIC),
                black_box(AT),
                black_box(1_700_000_000_000_000),
                black_box(&payload),
            )
        })
    });

    let publish = Bytes::from(publish_body());
    g.bench_function("ClientMessage::decode/publish 128B", |b| {
        b.iter(|| match ClientMessage::decode(black_box(&publish)) {
            Ok(ClientMessage::Publish { payload, .. }) => payload.len(),
            _ => 0,
        })
    });

    let frame = encode_delivery_frame(TOPIC, AT, 1_700_000_000_000_000, &payload);
    let header = ws::server_header_len(frame.len() - 2);
    let delivery = frame.slice(header..);
    g.bench_function("ServerMessage::decode/delivery 128B", |b| {
        b.iter(|| match ServerMessage::decode(black_box(&delivery)) {
            Ok(ServerMessage::Message(d)) => d.seq,
            _ => 0,
        })
    });
    g.finish();

    // 1000 masked publish frames in one buffer, as a busy publisher's
    // connection delivers them to the broker's reader.
    const FRAMES: usize = 1000;
    let body = publish_body();
    let mut batch = Vec::new();
    for _ in 0..FRAMES {
        ws::write_client_frame(&mut batch, OpCode::Binary, &body, MASK);
    }
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("FrameDecoder/1000 masked publish frames", |b| {
        b.iter_batched(
            || BytesMut::from(&batch[..]),
            |mut buf| {
                let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
                let mut n = 0;
                while let Ok(Some(Incoming::Message(MessageKind::Binary, m))) =
                    decoder.decode(&mut buf)
                {
                    n += m.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A JSON ticker update of about `n` bytes: an array of quotes, the kind of
/// payload compression is for.
fn ticker_json(n: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0u64;
    while out.len() < n {
        let quote = format!(
            "{{\"symbol\":\"SYM{}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"volume\":{},\"venue\":\"XNAS\"}},",
            i % 50,
            100 + i % 7,
            (i * 31) % 100,
            101 + i % 7,
            (i * 17) % 100,
            1000 + i * 13
        );
        out.extend_from_slice(quote.as_bytes());
        i += 1;
    }
    out.push(b']');
    out
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("deflate");
    for size in [300, 1000, 8000] {
        let json = ticker_json(size);
        g.throughput(Throughput::Bytes(json.len() as u64));
        for level in [1, 6, 9] {
            let squeezed = deflate::compress(&json, level);
            println!(
                "deflate level {level}: {} -> {} bytes ({:.1}x)",
                json.len(),
                squeezed.len(),
                json.len() as f64 / squeezed.len() as f64
            );
            g.bench_function(format!("compress/{}B/level {level}", json.len()), |b| {
                b.iter(|| deflate::compress(black_box(&json), level))
            });
        }
        let squeezed = deflate::compress(&json, 1);
        g.bench_function(format!("inflate/{}B", json.len()), |b| {
            b.iter(|| deflate::Inflater::new().inflate(black_box(&squeezed), 1 << 20))
        });
    }
    g.finish();
}

criterion_group!(benches, codec, compression);
criterion_main!(benches);
