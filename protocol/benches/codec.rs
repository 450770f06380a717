//! Micro-benchmarks of the wire format's hot paths: the broker's per-publish
//! encode, the decode of a publish and of a delivery, and frame decoding of
//! a batch of masked client frames.
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

criterion_group!(benches, codec);
criterion_main!(benches);
