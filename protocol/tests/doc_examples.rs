use bytes::Bytes;
use tickwire_protocol::message::*;
use tickwire_protocol::ws;
use tickwire_protocol::*;

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn c(m: ClientMessage) -> Vec<u8> {
    let mut o = Vec::new();
    m.encode(&mut o);
    o
}
fn s(m: ServerMessage) -> Vec<u8> {
    let mut o = Vec::new();
    m.encode(&mut o);
    o
}

#[test]
fn generate() {
    println!(
        "SUB {}",
        hex(&c(ClientMessage::Subscribe {
            id: 1,
            pattern: "stocks.*",
            options: SubscribeOptions::default()
        }))
    );
    println!(
        "UNSUB {}",
        hex(&c(ClientMessage::Unsubscribe {
            id: 3,
            pattern: "stocks.*"
        }))
    );
    println!(
        "PUB {}",
        hex(&c(ClientMessage::Publish {
            id: Some(2),
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi")
        }))
    );
    println!(
        "PUBnil {}",
        hex(&c(ClientMessage::Publish {
            id: None,
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi")
        }))
    );
    println!("PING {}", hex(&c(ClientMessage::Ping { id: 4 })));
    println!("PING300 {}", hex(&c(ClientMessage::Ping { id: 300 })));
    println!("SUBD {}", hex(&s(ServerMessage::Subscribed { id: 1 })));
    println!("UNSUBD {}", hex(&s(ServerMessage::Unsubscribed { id: 3 })));
    println!(
        "PUBD {}",
        hex(&s(ServerMessage::Published { id: 2, seq: 1 }))
    );
    println!(
        "PUBD2 {}",
        hex(&s(ServerMessage::Published { id: 2, seq: 70000 }))
    );
    println!("PONG {}", hex(&s(ServerMessage::Pong { id: 4 })));
    println!(
        "ERR {}",
        hex(&s(ServerMessage::Error {
            id: Some(5),
            code: ErrorCode::InvalidTopic,
            message: "bad topic"
        }))
    );
    println!(
        "ERRnil {}",
        hex(&s(ServerMessage::Error {
            id: None,
            code: ErrorCode::Malformed,
            message: "malformed"
        }))
    );
    println!(
        "MSG {}",
        hex(&s(ServerMessage::Message(Delivery {
            topic: "stocks.AAPL",
            seq: 1,
            time_us: 1_700_000_000_000_000,
            payload: Bytes::from_static(b"hi")
        })))
    );
    println!(
        "MSGFRAME {}",
        hex(&encode_delivery_frame(
            "stocks.AAPL",
            1,
            1_700_000_000_000_000,
            b"hi"
        ))
    );
    let mut o = Vec::new();
    ws::write_client_frame(
        &mut o,
        ws::OpCode::Binary,
        &c(ClientMessage::Publish {
            id: Some(2),
            topic: "stocks.AAPL",
            payload: Bytes::from_static(b"hi"),
        }),
        [0x37, 0xfa, 0x21, 0x3d],
    );
    println!("CFRAME {}", hex(&o));
    println!(
        "CLOSE1001 {}",
        hex(&ws::server_close_frame(CloseCode::GoingAway))
    );
    println!(
        "CLOSE4001 {}",
        hex(&ws::server_close_frame(CloseCode::SlowConsumer))
    );
    for cc in [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::SlowConsumer,
        CloseCode::KeepaliveTimeout,
    ] {
        println!("{} {} {}", cc.as_u16(), cc.reason().len(), cc.reason());
    }
}
