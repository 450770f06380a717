//! The [`Client`] handle.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use tickwire_protocol::ClientMessage;
use tickwire_protocol::message::MAX_SINCE_ENTRIES;
use tickwire_protocol::topic::{validate_pattern, validate_topic};

use crate::command::{
    BrokerOptions, ClientInner, Command, PublishReply, Shared, encode_bounded_frame,
};
use crate::config::{ClientBuilder, Config, OfflinePolicy, generate_client_id};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::SubShared;
use crate::presence::{Answer, Presence, PresenceStats};
use crate::state::ConnectionState;
use crate::subscription::{SubscribeOptions, Subscription};
use crate::transport::{Connection, Target};
use crate::url::BrokerUrl;

/// A connection to a tickwire broker.
///
/// `Client` is a cheap handle: clone it freely and share it between tasks.
/// One background task per client owns the socket, answers pings, renews
/// subscriptions after reconnects and routes deliveries to
/// [`Subscription`]s. The task (and the connection) lives until
/// [`Client::close`] is called or every `Client` clone *and* every
/// `Subscription` has been dropped; then it closes the connection
/// gracefully.
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use futures::StreamExt;
/// use tickwire_client::Client;
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug)]
/// struct Quote { symbol: String, price: f64 }
///
/// let client = Client::connect("ws://127.0.0.1:8080").await?;
///
/// let mut quotes = client.subscribe("stocks.*").await?;
/// client.publish("stocks.AAPL", &Quote { symbol: "AAPL".into(), price: 189.5 }).await?;
///
/// if let Some(msg) = quotes.next().await {
///     let quote: Quote = msg.decode()?;
///     println!("{} #{}: {quote:?}", msg.topic(), msg.seq());
/// }
/// client.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.shared.url)
            .field("state", &*self.inner.shared.state_rx.borrow())
            .finish()
    }
}

impl Client {
    /// Connects to the broker at `url` with default settings.
    ///
    /// `url` is `ws://host[:port][/path]` or `wss://...`; host may be a name,
    /// an IPv4 address or a bracketed IPv6 address (`ws://[::1]:8080`). An
    /// empty path means `/ws`, where the broker accepts WebSocket upgrades.
    ///
    /// # Errors
    ///
    /// See [`ClientBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Client> {
        Client::builder(url).connect().await
    }

    /// Starts configuring a client for `url`; finish with
    /// [`ClientBuilder::connect`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    async fn start(builder: ClientBuilder) -> Result<Client> {
        let ClientBuilder { url, mut config } = builder;
        config.validate()?;
        let client_id = config.client_id.get_or_insert_with(generate_client_id);
        let broker_url = BrokerUrl::parse(&url)?.with_query("client", client_id);
        let target = Arc::new(Target::new(broker_url, &config)?);
        let conn = if config.retry_initial_connect {
            connect_with_retry(&target, &config).await?
        } else {
            target.connect().await?
        };
        tracing::info!(url = %url, "connected to tickwire broker");
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity);
        let (drop_tx, drop_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config, url, state_rx));
        let driver = Driver::new(shared.clone(), target, state_tx, cmd_rx, drop_rx);
        tokio::spawn(driver.run(conn));
        Ok(Client {
            inner: Arc::new(ClientInner {
                cmd_tx,
                drop_tx,
                shared,
            }),
        })
    }

    /// The URL this client connects to, as given.
    pub fn url(&self) -> &str {
        &self.inner.shared.url
    }

    /// A watch on the connection state. `borrow()` reads the current state;
    /// `changed().await` waits for the next transition.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state_rx.clone()
    }

    /// This client's id: the one given to [`ClientBuilder::client_id`], or
    /// the one generated for it. It is sent (`client=`) on every connection,
    /// so the client's presence entries keep it across reconnects.
    pub fn client_id(&self) -> &str {
        self.config().client_id.as_deref().unwrap_or_default()
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Acquire)
    }

    fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// Runs `fut` under the request timeout.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let after = self.config().request_timeout;
        tokio::time::timeout(after, fut)
            .await
            .unwrap_or(Err(Error::Timeout { operation, after }))
    }

    /// Sends `cmd` to the connection task and waits for its reply, all under
    /// the request timeout.
    async fn request<T>(
        &self,
        operation: &'static str,
        cmd: Command,
        reply: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        self.bounded(operation, async {
            self.inner
                .cmd_tx
                .send(cmd)
                .await
                .map_err(|_| Error::Closed)?;
            reply.await.unwrap_or(Err(Error::Closed))
        })
        .await
    }

    /// Subscribes to a topic or wildcard pattern (`stocks.*`, `stocks.>`).
    ///
    /// Resolves once the broker has confirmed the subscription (`SUBSCRIBED`).
    /// Several local subscriptions may share a pattern: the broker sees one
    /// subscription per distinct pattern, and each delivered message is
    /// handed to every local subscription whose pattern matches its topic.
    /// If the client is reconnecting, this waits for the new connection
    /// (within the request timeout).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`] (checked locally), [`Error::Broker`] (for
    /// example [`ErrorCode::TooManySubscriptions`](crate::ErrorCode::TooManySubscriptions)),
    /// [`Error::Timeout`], [`Error::Closed`].
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    /// [`Client::subscribe`] with options: resume from known positions
    /// (`since`), a snapshot of retained values first (`last`), a rate
    /// limit (`max_rate`), resuming after reconnects (`resume`, on by
    /// default) and the local buffer size (`capacity`); see
    /// [`SubscribeOptions`]. The outcome of `since` and of every renewal
    /// after a reconnect is reported as [`SubscriptionEvent`](crate::SubscriptionEvent)s.
    ///
    /// ```no_run
    /// # async fn demo() -> tickwire_client::Result<()> {
    /// use tickwire_client::{Client, SubscribeOptions};
    ///
    /// let client = Client::connect("ws://127.0.0.1:8080").await?;
    /// client.publish_retained("stocks.AAPL", &189.5).await?;
    /// let mut prices = client
    ///     .subscribe_with("stocks.*", SubscribeOptions::new().last(true))
    ///     .await?;
    /// let latest = prices.recv().await; // the retained AAPL price, then live ones
    /// # let _ = latest;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`], plus [`Error::InvalidOptions`] for a `since`
    /// position whose topic is invalid, more than 65,536 positions, or
    /// options that conflict with this client's existing subscription of
    /// the same pattern.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        validate_pattern(pattern).map_err(|source| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        let invalid = |reason: String| Error::InvalidOptions {
            pattern: pattern.to_owned(),
            reason,
        };
        if let Some(since) = &options.since {
            if since.len() > MAX_SINCE_ENTRIES {
                return Err(invalid(format!(
                    "{} `since` positions, at most {MAX_SINCE_ENTRIES} are allowed",
                    since.len()
                )));
            }
            for (topic, _) in since {
                validate_topic(topic)
                    .map_err(|e| invalid(format!("`since` topic {topic:?}: {e}")))?;
            }
        }
        let capacity = options
            .capacity
            .unwrap_or(self.config().subscription_capacity)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::channel(capacity);
        let id = self.inner.shared.next_id();
        let pattern: Arc<str> = Arc::from(pattern);
        let shared = Arc::new(SubShared::default());
        // Built before the request so that cancelling this future (or an
        // error) drops it, which tells the connection task to forget it.
        let subscription = Subscription {
            id,
            pattern: pattern.clone(),
            rx,
            shared: shared.clone(),
            client: self.inner.clone(),
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let broker_options = BrokerOptions {
            last: options.last,
            max_rate: options.max_rate,
            resume: options.resume,
            join_leave: options.join_leave,
        };
        let cmd = Command::Subscribe {
            id,
            pattern,
            since: options.since,
            options: broker_options,
            tx,
            shared,
            reply: reply_tx,
        };
        self.request("subscribe", cmd, reply_rx).await?;
        Ok(subscription)
    }

    fn check_topic(topic: &str) -> Result<()> {
        validate_topic(topic).map_err(|source| Error::InvalidTopic {
            topic: topic.to_owned(),
            source,
        })
    }

    /// Whether a publish made now must be refused because the client is
    /// offline and the policy says so.
    fn offline_refusal(&self) -> Option<Error> {
        if self.inner.cmd_tx.is_closed() {
            return Some(Error::Closed);
        }
        if !self.is_connected() && self.config().offline == OfflinePolicy::Fail {
            return Some(Error::NotConnected);
        }
        None
    }

    /// Publishes `value`, serialized as MessagePack with field names
    /// (`rmp_serde::to_vec_named`), on `topic`. Fire-and-forget: returns once
    /// the message is queued in the connection's write buffer (or buffered
    /// while reconnecting, per the [`OfflinePolicy`]; docs/client.md says
    /// what a lost connection does to queued publishes); use
    /// [`Client::publish_acked`] to know the broker accepted it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`], [`Error::Encode`], [`Error::MessageTooLarge`]
    /// (larger than [`ClientBuilder::max_outgoing_message_size`]; nothing
    /// is sent), [`Error::NotConnected`], [`Error::OfflineBufferFull`],
    /// [`Error::Timeout`] (no queue space within the request timeout),
    /// [`Error::Closed`].
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        Self::check_topic(topic)?;
        let payload = rmp_serde::to_vec_named(value)?;
        self.publish_bytes(topic, payload).await
    }

    /// Publishes a raw payload on `topic`; otherwise as [`Client::publish`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`], except [`Error::Encode`].
    pub async fn publish_bytes(&self, topic: &str, payload: impl Into<Bytes>) -> Result<()> {
        Self::check_topic(topic)?;
        if let Some(err) = self.offline_refusal() {
            return Err(err);
        }
        let publish = ClientMessage::Publish {
            id: None,
            topic,
            payload: payload.into(),
            retain: false,
        };
        let frame = encode_bounded_frame(&publish, self.config().max_outgoing_message_size)?;
        if self.is_connected() {
            let cmd = Command::Publish {
                frame,
                id: None,
                reply: PublishReply::None,
            };
            self.bounded("publish", async {
                self.inner.cmd_tx.send(cmd).await.map_err(|_| Error::Closed)
            })
            .await
        } else {
            // Offline: the connection task decides (buffer or refuse) and
            // says so.
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Publish {
                frame,
                id: None,
                reply: PublishReply::Accepted(tx),
            };
            self.request("publish", cmd, rx).await
        }
    }

    /// Publishes `value` (as [`Client::publish`]) and waits for the broker's
    /// acknowledgement; returns the sequence number the message got on its
    /// topic.
    ///
    /// # Errors
    ///
    /// As [`Client::publish`], plus [`Error::Broker`] (for example
    /// [`ErrorCode::PayloadTooLarge`](crate::ErrorCode::PayloadTooLarge)) and
    /// [`Error::ConnectionLost`] (the connection dropped after the publish
    /// was written: it may or may not have been applied) and
    /// [`Error::NotSent`] (under [`OfflinePolicy::Fail`], the connection
    /// dropped before the publish was written whole: it was not applied).
    /// Under [`OfflinePolicy::Buffer`] a publish not written whole when the
    /// connection drops is sent on the next connection instead.
    pub async fn publish_acked<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<u64> {
        Self::check_topic(topic)?;
        let payload = rmp_serde::to_vec_named(value)?;
        self.publish_bytes_acked(topic, payload).await
    }

    /// Publishes a raw payload and waits for the acknowledgement; otherwise
    /// as [`Client::publish_acked`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish_acked`], except [`Error::Encode`].
    pub async fn publish_bytes_acked(&self, topic: &str, payload: impl Into<Bytes>) -> Result<u64> {
        self.publish_acked_frame(topic, payload.into(), false).await
    }

    /// Publishes `value` (as [`Client::publish`]) as the topic's **retained**
    /// last value and waits for the acknowledgement; returns the sequence
    /// number the message got.
    ///
    /// The broker keeps it (one per topic, until a newer retained publish
    /// replaces it) and hands it to later subscribers that ask for a
    /// snapshot with [`SubscribeOptions::last`], before live messages.
    /// Current subscribers receive it like any other message.
    ///
    /// ```no_run
    /// # async fn demo() -> tickwire_client::Result<()> {
    /// use tickwire_client::Client;
    ///
    /// let client = Client::connect("ws://127.0.0.1:8080").await?;
    /// let seq = client.publish_retained("config.feature-x", &true).await?;
    /// # let _ = seq;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::publish_acked`].
    pub async fn publish_retained<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<u64> {
        Self::check_topic(topic)?;
        let payload = rmp_serde::to_vec_named(value)?;
        self.publish_bytes_retained(topic, payload).await
    }

    /// Publishes a raw payload as the topic's retained last value and waits
    /// for the acknowledgement; otherwise as [`Client::publish_retained`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish_acked`], except [`Error::Encode`].
    pub async fn publish_bytes_retained(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<u64> {
        self.publish_acked_frame(topic, payload.into(), true).await
    }

    /// Sends an acknowledged `PUBLISH` and waits for its sequence number.
    async fn publish_acked_frame(&self, topic: &str, payload: Bytes, retain: bool) -> Result<u64> {
        Self::check_topic(topic)?;
        if let Some(err) = self.offline_refusal() {
            return Err(err);
        }
        let id = self.inner.shared.next_id();
        let publish = ClientMessage::Publish {
            id: Some(id),
            topic,
            payload,
            retain,
        };
        let frame = encode_bounded_frame(&publish, self.config().max_outgoing_message_size)?;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Publish {
            frame,
            id: Some(id),
            reply: PublishReply::Acked(tx),
        };
        self.request("publish", cmd, rx).await
    }

    /// The presence of `topic`: every client instance subscribed to it (an
    /// exact-topic subscription on a topic with presence), with counts.
    ///
    /// ```no_run
    /// # async fn demo() -> tickwire_client::Result<()> {
    /// let client = tickwire_client::Client::connect("ws://127.0.0.1:8080").await?;
    /// let room = client.presence("chat.room1").await?;
    /// for member in &room.members {
    ///     println!("{} ({:?})", member.client, member.user);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] (checked locally; a pattern is not a topic),
    /// [`Error::Broker`] with
    /// [`ErrorCode::PresenceDisabled`](crate::ErrorCode::PresenceDisabled)
    /// (the topic has no presence) or
    /// [`ErrorCode::Forbidden`](crate::ErrorCode::Forbidden) (the token may
    /// not subscribe to it), [`Error::NotConnected`] while reconnecting,
    /// [`Error::Timeout`], [`Error::ConnectionLost`], [`Error::Closed`].
    pub async fn presence(&self, topic: &str) -> Result<Presence> {
        let answer = self.ask_presence(topic, false).await?;
        Ok(Presence {
            clients: answer.clients,
            users: answer.users,
            members: answer.members,
        })
    }

    /// Only the counts of [`Client::presence`]: entries and distinct users.
    ///
    /// # Errors
    ///
    /// As [`Client::presence`].
    pub async fn presence_stats(&self, topic: &str) -> Result<PresenceStats> {
        let answer = self.ask_presence(topic, true).await?;
        Ok(PresenceStats {
            clients: answer.clients,
            users: answer.users,
        })
    }

    async fn ask_presence(&self, topic: &str, counts_only: bool) -> Result<Answer> {
        Self::check_topic(topic)?;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Presence {
            topic: topic.to_owned(),
            counts_only,
            reply: tx,
        };
        self.request("presence", cmd, rx).await
    }

    /// Measures the round trip to the broker with an application-level
    /// `PING`.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] while reconnecting, [`Error::Timeout`],
    /// [`Error::ConnectionLost`], [`Error::Closed`].
    pub async fn ping(&self) -> Result<Duration> {
        let (tx, rx) = oneshot::channel();
        self.request("ping", Command::Ping { reply: tx }, rx).await
    }

    /// Closes the connection in an orderly way and stops the client.
    ///
    /// Everything queued before the call is written first, then a close
    /// frame (code 1000); the call waits for the broker's close frame (within
    /// the request timeout). Acknowledged publishes still unanswered fail
    /// with [`Error::Closed`], publishes still in the offline buffer are
    /// discarded, and every [`Subscription`] stream ends. The state becomes
    /// [`ConnectionState::Closed`]. Closing a closed client does nothing.
    /// Affects every clone of this client.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the connection task did not finish in time.
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        // Queue space, then the close handshake, each bounded by the request
        // timeout.
        let after = self.config().request_timeout;
        let timeout = Error::Timeout {
            operation: "close",
            after,
        };
        match tokio::time::timeout(after, self.inner.cmd_tx.send(Command::Close { reply: tx }))
            .await
        {
            Err(_) => return Err(timeout),
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(())) => {}
        }
        // The task bounds the handshake by the request timeout itself; allow
        // a little more for the final flush.
        match tokio::time::timeout(after + Duration::from_secs(2), rx).await {
            Err(_) => Err(timeout),
            Ok(_) => Ok(()),
        }
    }
}

impl ClientBuilder {
    /// Connects to the broker and starts the client's background task.
    ///
    /// Returns once the WebSocket handshake has completed. Must be called
    /// within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], [`Error::Config`] for bad settings; otherwise
    /// the connection error ([`Error::ConnectionRefused`],
    /// [`Error::Connect`], [`Error::Tls`], [`Error::Handshake`],
    /// [`Error::Timeout`]).
    pub async fn connect(self) -> Result<Client> {
        Client::start(self).await
    }
}

/// The first connection, retried with the reconnect policy.
async fn connect_with_retry(target: &Target, config: &Config) -> Result<Connection> {
    let policy = &config.reconnect;
    let mut attempt = 0u32;
    loop {
        match target.connect().await {
            Ok(conn) => return Ok(conn),
            Err(err) => {
                attempt += 1;
                if policy.max_attempts.is_some_and(|max| attempt > max) {
                    return Err(err);
                }
                let delay = policy.delay(attempt);
                tracing::warn!("connecting failed ({err}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
