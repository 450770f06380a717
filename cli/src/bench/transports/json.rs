//! The JSON the SSE and long-poll transports carry (docs/protocol.md): the
//! delivery object, the events, and the poll answer. Only the fields the
//! benchmark needs are read; the others are skipped.

use serde::Deserialize;

/// One delivery: `{"topic", "epoch", "seq", "time", "data" | "data_base64"}`.
#[derive(Debug, Deserialize)]
pub struct Delivery {
    /// The per-topic sequence number.
    pub seq: u64,
    /// The payload rendered as JSON; for the benchmark's payload
    /// (`super::payload`) a map with the send time under `t`.
    #[serde(default)]
    pub data: Option<Stamped>,
}

/// The part of the benchmark's payload the benchmark reads.
#[derive(Debug, Deserialize)]
pub struct Stamped {
    /// Send time, nanoseconds on `super::payload::now_ns`'s clock.
    #[serde(default)]
    pub t: Option<u64>,
}

impl Delivery {
    /// The send time, if the payload carried one.
    pub fn sent_ns(&self) -> Option<u64> {
        self.data.as_ref().and_then(|d| d.t)
    }
}

/// An event: SSE `subscribed`/`error`/`close` data, or one entry of a poll
/// answer's `events` (which names its kind in `type`).
#[derive(Debug, Deserialize)]
pub struct Event {
    /// The poll event kind (`subscribed`, `error`, `close`); absent in SSE
    /// event data, where the SSE event name says it.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The close code (a number) or error code (a string).
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    /// Why the stream or session closed.
    #[serde(default)]
    pub reason: Option<String>,
    /// The error message.
    #[serde(default)]
    pub message: Option<String>,
}

impl Event {
    /// `code reason` / `code: message`, for reports.
    pub fn describe(&self) -> String {
        let code = self.code.as_ref().map_or_else(String::new, |c| match c {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let text = self
            .reason
            .as_deref()
            .or(self.message.as_deref())
            .unwrap_or("");
        format!("{code} {text}").trim().to_owned()
    }
}

/// A `GET /v1/poll` answer.
#[derive(Debug, Deserialize)]
pub struct PollAnswer {
    /// The poll session to name in the next request.
    pub session: String,
    /// Positions of every topic delivered so far.
    pub cursor: String,
    /// The deliveries, in order.
    #[serde(default)]
    pub messages: Vec<Delivery>,
    /// Subscription and session events.
    #[serde(default)]
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_as_the_contract_writes_them() {
        let d: Delivery = serde_json::from_str(
            r#"{"topic":"b.t","epoch":"9961694294009780550","seq":12,"time":1700000000000000,"data":{"t":42,"p":"abc"}}"#,
        )
        .unwrap();
        assert_eq!((d.seq, d.sent_ns()), (12, Some(42)));
        let b: Delivery = serde_json::from_str(
            r#"{"topic":"b.t","epoch":"1","seq":13,"time":1,"data_base64":"AAE="}"#,
        )
        .unwrap();
        assert_eq!((b.seq, b.sent_ns()), (13, None));
    }

    #[test]
    fn poll_answers_and_events() {
        let a: PollAnswer = serde_json::from_str(
            r#"{"session":"9f2c","cursor":"gA","messages":[{"topic":"x","epoch":"1","seq":1,"time":5,"data":{"t":7,"p":""}}],
               "events":[{"type":"subscribed","sub":"x","recovered":true},{"type":"close","code":4001,"reason":"slow consumer"}]}"#,
        )
        .unwrap();
        assert_eq!((a.session.as_str(), a.cursor.as_str()), ("9f2c", "gA"));
        assert_eq!(a.messages.len(), 1);
        assert_eq!(a.events[0].kind.as_deref(), Some("subscribed"));
        assert_eq!(a.events[1].describe(), "4001 slow consumer");
        let e: Event =
            serde_json::from_str(r#"{"code":"too_many_topics","message":"m","sub":"x.y"}"#)
                .unwrap();
        assert_eq!(e.describe(), "too_many_topics m");
    }
}
