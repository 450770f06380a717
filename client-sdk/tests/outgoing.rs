//! What happens to publishes the client accepted: write stalls end the
//! connection, frames a lost connection did not write whole are sent on the
//! next one (or fail typed under `OfflinePolicy::Fail`), and publishes too
//! large for the broker fail before anything is sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use common::{FakeBroker, FakeReader, Req, barrier, connect, fast, wait_state, within};
use tickwire_client::{Client, ConnectionState, Disconnect, Error, Keepalive, OfflinePolicy};
use tickwire_protocol::ServerMessage;
use tickwire_protocol::ws::{self, OpCode};

/// Publishes per test: together far more than the socket buffers and the
/// client's write buffer hold.
const PUBLISHES: usize = 32;
const PAYLOAD: usize = 256 * 1024;

/// A payload that says which publish it is.
fn payload(index: usize) -> Vec<u8> {
    let mut payload = vec![0u8; PAYLOAD];
    payload[..4].copy_from_slice(&(index as u32).to_be_bytes());
    payload
}

fn index_of(payload: &[u8]) -> usize {
    u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize
}

/// A client connected to a fake broker that never reads but keeps pinging,
/// so that the client's reads stay alive and only its write stall (after
/// the 500 ms keepalive timeout) can end the connection.
struct Stalled {
    broker: FakeBroker,
    client: Client,
    _reader: FakeReader,
    pinger: JoinHandle<()>,
}

async fn stalled(offline: OfflinePolicy) -> Stalled {
    let broker = FakeBroker::bind_small_window().await;
    let builder = fast(&broker)
        .keepalive(Keepalive::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .offline_policy(offline);
    let (client, conn) = connect(&broker, builder).await;
    let (reader, mut writer) = conn.split();
    let pinger = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            if writer
                .write_all(&ws::server_frame(OpCode::Ping, b""))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Stalled {
        broker,
        client,
        _reader: reader,
        pinger,
    }
}

/// Publishes [`PUBLISHES`] acknowledged messages in order while the fake
/// broker stalls the connection; once the client gave up on it, serves the
/// next connection, answering each publish with its index + 1. Returns each
/// publish's outcome and the indices the new connection received, in order.
async fn publish_through_a_stall(stalled: &Stalled) -> (Vec<Result<u64, Error>>, Vec<usize>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut server: Option<JoinHandle<()>> = None;
    let publishes = futures::future::join_all(
        (0..PUBLISHES).map(|i| stalled.client.publish_bytes_acked("t", payload(i))),
    );
    let serve = async {
        // The client gives up on the stalled connection and comes back.
        let mut conn = stalled.broker.accept().await;
        let received = received.clone();
        server = Some(tokio::spawn(async move {
            while let Some(req) = conn.try_recv().await {
                if let Req::Publish {
                    id: Some(id),
                    payload,
                    ..
                } = req
                {
                    let index = index_of(&payload);
                    received.lock().unwrap().push(index);
                    let seq = index as u64 + 1;
                    conn.send(ServerMessage::Published { id, seq }).await;
                }
            }
        }));
    };
    let (results, ()) = within("publishes through a stall", async {
        tokio::join!(publishes, serve)
    })
    .await;
    stalled.pinger.abort();
    if let Some(server) = server {
        server.abort();
    }
    let received = received.lock().unwrap().clone();
    (results, received)
}

#[tokio::test]
async fn unwritten_publishes_are_sent_on_the_next_connection_under_buffer() {
    let policy = OfflinePolicy::Buffer {
        max_messages: 1000,
        max_bytes: 64 << 20,
    };
    let stalled = stalled(policy).await;
    let (results, received) = publish_through_a_stall(&stalled).await;

    // Publishes written whole to the stalled socket may or may not have
    // reached the broker: they fail with ConnectionLost and are not sent
    // again. Every other one reaches the new connection, in order, once.
    let lost = results
        .iter()
        .take_while(|r| matches!(r, Err(Error::ConnectionLost)))
        .count();
    assert!(lost < PUBLISHES, "{results:?}");
    for (i, result) in results.iter().enumerate().skip(lost) {
        assert_eq!(result.as_ref().ok(), Some(&(i as u64 + 1)), "publish {i}");
    }
    assert_eq!(received, (lost..PUBLISHES).collect::<Vec<_>>());
}

#[tokio::test]
async fn unwritten_publishes_fail_typed_under_fail() {
    let stalled = stalled(OfflinePolicy::Fail).await;
    let (results, received) = publish_through_a_stall(&stalled).await;

    let not_sent: Vec<usize> = (0..PUBLISHES)
        .filter(|&i| matches!(results[i], Err(Error::NotSent)))
        .collect();
    assert!(
        !not_sent.is_empty(),
        "the write buffer held publishes: {results:?}"
    );
    let mut acked = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result {
            // Written whole to the old connection, before the unsent ones.
            Err(Error::ConnectionLost) => assert!(i < not_sent[0], "publish {i}"),
            Err(Error::NotSent) => {}
            // Made while disconnected: refused by the policy.
            Err(Error::NotConnected) => assert!(i > not_sent[0], "publish {i}"),
            Ok(seq) => {
                assert_eq!(*seq, i as u64 + 1);
                acked.push(i);
            }
            Err(other) => panic!("publish {i}: {other:?}"),
        }
    }
    assert_eq!(received, acked, "only what was not refused, once, in order");
}

#[tokio::test]
async fn a_write_stall_reconnects_even_while_the_broker_sends() {
    let stalled = stalled(OfflinePolicy::default()).await;
    // Queue more than the socket takes; nothing reads it.
    let client = stalled.client.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..PUBLISHES {
            if client.publish_bytes("t", payload(i)).await.is_err() {
                break;
            }
        }
    });
    wait_state(&stalled.client, "a write stall to be detected", |s| {
        matches!(
            s,
            ConnectionState::Reconnecting {
                cause: Disconnect::KeepaliveTimeout,
                ..
            }
        )
    })
    .await;
    assert!(
        !stalled.pinger.is_finished(),
        "the broker kept sending: only the stalled write ended the connection"
    );
    stalled.pinger.abort();
    publisher.abort();
}

#[tokio::test]
async fn publishes_larger_than_the_limit_fail_before_sending() {
    let broker = FakeBroker::bind().await;
    let (client, mut conn) = connect(&broker, fast(&broker).max_outgoing_message_size(1024)).await;
    for result in [
        client.publish_bytes("t", vec![0u8; 1024]).await,
        client
            .publish_bytes_acked("t", vec![0u8; 1024])
            .await
            .map(drop),
    ] {
        match result {
            Err(Error::MessageTooLarge { size, limit: 1024 }) => assert!(size > 1024),
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
    }
    // The connection is untouched, and a message within the limit goes out.
    client.publish_bytes("t", vec![7u8; 900]).await.unwrap();
    match conn.recv().await {
        Req::Publish { payload, .. } => assert_eq!(payload.len(), 900),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    barrier(&client, &mut conn).await;
    assert!(client.is_connected());
}
