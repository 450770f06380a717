//! The connection task between connections: failing what depended on the
//! lost one, waiting and reconnecting per the policy while serving
//! commands, and shutting down for good.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use super::Driver;
use crate::command::{Command, PublishReply};
use crate::error::Error;
use crate::event::EndReason;
use crate::registry::Registry;
use crate::session::Session;
use crate::state::{ConnectionState, Disconnect};
use crate::transport::Connection;

impl Driver {
    pub(super) fn connection_lost(&mut self) {
        self.shared.connected.store(false, Ordering::Release);
        for kind in self.pending.drain() {
            kind.fail(|| Error::ConnectionLost);
        }
        self.registry.disconnected();
    }

    /// Waits and reconnects per the policy, serving commands meanwhile.
    /// `None` means stop: the client is closing or the policy gave up.
    pub(super) async fn reconnect(
        &mut self,
        attempt: &mut u32,
        mut cause: Disconnect,
    ) -> Option<Connection> {
        let policy = self.shared.config.reconnect.clone();
        loop {
            if policy.max_attempts.is_some_and(|max| *attempt >= max) {
                if policy.is_enabled() {
                    tracing::warn!("giving up after {attempt} reconnect attempts");
                }
                self.final_cause = Some(cause);
                return None;
            }
            *attempt += 1;
            self.set_state(ConnectionState::Reconnecting {
                attempt: *attempt,
                cause: cause.clone(),
            });
            let delay = policy.delay(*attempt);
            tracing::info!("reconnecting in {delay:?} (attempt {attempt})");
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    flow = self.serve_offline() => if flow.is_break() {
                        return None;
                    },
                }
            }
            self.set_state(ConnectionState::Connecting);
            let target = self.target.clone();
            let connect = async move { target.connect().await };
            tokio::pin!(connect);
            let result = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    flow = self.serve_offline() => if flow.is_break() {
                        return None;
                    },
                }
            };
            match result {
                Ok(conn) => {
                    tracing::info!(url = %self.shared.url, "reconnected");
                    return Some(conn);
                }
                Err(e) => {
                    tracing::warn!("reconnect attempt {attempt} failed: {e}");
                    cause = Disconnect::ConnectFailed(e.to_string());
                }
            }
        }
    }

    /// Serves one command or drop notice while disconnected. Cancel-safe.
    pub(super) async fn serve_offline(&mut self) -> ControlFlow<()> {
        tokio::select! {
            id = self.drop_rx.recv(), if self.drop_open => {
                match id {
                    Some(id) => self.on_sub_dropped(id, None),
                    None => self.drop_open = false,
                }
                ControlFlow::Continue(())
            }
            cmd = self.cmd_rx.recv() => {
                self.drain_drop_notices(None);
                self.on_command(cmd, None)
            }
        }
    }

    /// Handles every drop notice already sent.
    pub(super) fn drain_drop_notices(&mut self, mut s: Option<&mut Session>) {
        while let Ok(id) = self.drop_rx.try_recv() {
            self.on_sub_dropped(id, s.as_deref_mut());
        }
    }

    /// Fails everything still waiting and marks the client closed.
    pub(super) fn shutdown(&mut self) {
        self.shared.connected.store(false, Ordering::Release);
        for kind in self.pending.drain() {
            kind.fail(|| Error::Closed);
        }
        while let Some(item) = self.offline.pop() {
            if let Some(ack) = item.ack {
                let _ = ack.send(Err(Error::Closed));
            }
        }
        for (_, entry) in self.registry.entries.drain() {
            for waiter in entry.waiters {
                let _ = waiter.reply.send(Err(Error::Closed));
            }
            for sub in entry.subs {
                sub.shared.finish(EndReason::Closed);
            }
        }
        self.registry = Registry::default();
        let cause = self.final_cause.take();
        match &cause {
            Some(cause) => tracing::warn!(url = %self.shared.url, "client closed: {cause}"),
            None => tracing::info!(url = %self.shared.url, "client closed"),
        }
        self.set_state(ConnectionState::Closed { cause });
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Publish { reply, .. } => match reply {
                    PublishReply::None => {}
                    PublishReply::Accepted(tx) => {
                        let _ = tx.send(Err(Error::Closed));
                    }
                    PublishReply::Acked(tx) => {
                        let _ = tx.send(Err(Error::Closed));
                    }
                },
                Command::Ping { reply } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Presence { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Command::Close { reply } => self.close_replies.push(reply),
            }
        }
        for reply in self.close_replies.drain(..) {
            let _ = reply.send(());
        }
    }
}
