//! Helpers shared by the message targets (`client_message`,
//! `server_message`).

use bytes::Bytes;
use tickwire_protocol::message::Position;

/// The bytes `write` appends to an empty buffer: a message's encoding.
pub fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::new();
    write(&mut out);
    Bytes::from(out)
}

/// Positions as `arbitrary` reads them, `(topic, epoch, seq)`, turned into
/// what the messages hold.
pub fn positions(raw: &[(String, u64, u64)]) -> Vec<(String, Position)> {
    raw.iter()
        .map(|(topic, epoch, seq)| {
            let at = Position {
                epoch: *epoch,
                seq: *seq,
            };
            (topic.clone(), at)
        })
        .collect()
}
