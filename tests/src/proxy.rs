//! A TCP proxy on 127.0.0.1:0 that the fault tests put between a client
//! and its server: a plain load balancer over several upstreams, and a
//! network that can fail on demand.
//!
//! Each accepted connection goes to the next upstream, round robin, that
//! accepts a TCP connection (an upstream that refuses, such as a killed
//! node, is skipped); there is no stickiness. The proxy copies bytes both
//! ways until either side closes, and can
//!
//! * **cut** every forwarded connection at once ([`Proxy::cut`]), as a
//!   crashed load balancer or a reset network does; new connections are
//!   accepted and forwarded as before;
//! * **blackhole** the traffic ([`Proxy::blackhole`], [`Proxy::restore`]):
//!   no byte passes in either direction, yet every socket stays open, as in
//!   a silent network partition where nobody sees a reset. New connections
//!   are accepted but not forwarded until the blackhole ends. Bytes already
//!   read are held and delivered at [`Proxy::restore`], as TCP retransmits
//!   them once a partition heals;
//! * **route** new connections to other upstreams ([`Proxy::set_upstreams`]),
//!   as a load balancer that takes a node out of rotation.
//!
//! Everything is bounded: at most [`MAX_CONNECTIONS`] connections at once
//! (more are closed as soon as they are accepted), one [`BUFFER`] per
//! direction, [`CONNECT_TIMEOUT`] per upstream attempt. Dropping the proxy
//! closes its port and every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Most connections forwarded at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Bytes one direction of one connection reads before writing them on.
pub const BUFFER: usize = 16 * 1024;
/// Time allowed to connect to one upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What every connection follows.
#[derive(Debug, Clone, Copy)]
struct Control {
    /// Bumped by every [`Proxy::cut`]: a connection accepted before ends.
    cuts: u64,
    /// Whether bytes pass (false while blackholed).
    flowing: bool,
}

/// The upstreams and counters, shared with the connection tasks.
#[derive(Debug, Default)]
struct Shared {
    /// Where new connections go; locked only to copy or replace it.
    upstreams: Mutex<Vec<SocketAddr>>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Connections forwarded to an upstream so far.
    forwarded: AtomicU64,
}

impl Shared {
    fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        *self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = upstreams.to_vec();
    }
}

/// A running proxy; see the module documentation.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    /// The accept loop; it owns every connection task.
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstreams` (round robin).
    pub async fn start(upstreams: &[SocketAddr]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared::default());
        shared.set_upstreams(upstreams);
        let (control, _) = watch::channel(Control {
            cuts: 0,
            flowing: true,
        });
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            control.subscribe(),
        ));
        Proxy {
            addr,
            shared,
            control,
            task,
        }
    }

    /// The WebSocket URL of whatever is behind the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The Redis URL of a Redis behind the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection accepted so far; later ones are forwarded.
    pub fn cut(&self) {
        self.control.send_modify(|c| c.cuts += 1);
    }

    /// Stops every byte in both directions, keeping the sockets open; new
    /// connections are accepted and held. Until [`Proxy::restore`].
    pub fn blackhole(&self) {
        self.control.send_modify(|c| c.flowing = false);
    }

    /// Ends a [`Proxy::blackhole`]: held bytes and connections go on.
    pub fn restore(&self) {
        self.control.send_modify(|c| c.flowing = true);
    }

    /// Sends new connections to `upstreams` from now on (connections
    /// already forwarded stay where they are).
    pub fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        self.shared.set_upstreams(upstreams);
    }

    /// Connections forwarded to an upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks: aborting it drops its
        // `JoinSet`, which aborts them and closes their sockets.
        self.task.abort();
    }
}

/// Accepts connections and runs one task per connection, at most
/// [`MAX_CONNECTIONS`] at once.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    control: watch::Receiver<Control>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if connections.len() >= MAX_CONNECTIONS {
                    continue;
                }
                let accepted_at = control.borrow().cuts;
                connections.spawn(connection(client, accepted_at, Arc::clone(&shared), control.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// One client connection, until either side closes or a cut after
/// `accepted_at` (the cut count when it was accepted).
async fn connection(
    client: TcpStream,
    accepted_at: u64,
    shared: Arc<Shared>,
    control: watch::Receiver<Control>,
) {
    let mut cut = control.clone();
    tokio::select! {
        _ = cut.wait_for(|c| c.cuts != accepted_at) => {}
        () = forward(client, &shared, control) => {}
    }
}

/// Connects `client` to an upstream once bytes flow, then copies both ways.
async fn forward(client: TcpStream, shared: &Shared, mut control: watch::Receiver<Control>) {
    wait_flowing(&mut control).await;
    let Some(server) = connect_any(shared).await else {
        return;
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction failing ends both: the other side then sees its
    // socket close, as with a real connection.
    let _ = tokio::try_join!(
        pump(client_read, server_write, control.clone()),
        pump(server_read, client_write, control),
    );
}

/// The next upstream, round robin, that accepts a connection.
async fn connect_any(shared: &Shared) -> Option<TcpStream> {
    let upstreams = shared.upstreams();
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..upstreams.len() {
        let upstream = upstreams[(first + i) % upstreams.len()];
        if let Ok(Ok(server)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
        {
            let _ = server.set_nodelay(true);
            return Some(server);
        }
    }
    None
}

/// Copies `from` to `to` while bytes flow; passes a half close on.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
) -> io::Result<()> {
    let mut buf = vec![0; BUFFER];
    loop {
        wait_flowing(&mut control).await;
        let n = from.read(&mut buf).await?;
        // Bytes read just before a blackhole wait for its end.
        wait_flowing(&mut control).await;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Returns once bytes may pass (at once if they may, or if the proxy is
/// gone: its connection tasks are then aborted anyway).
async fn wait_flowing(control: &mut watch::Receiver<Control>) {
    let _ = control.wait_for(|c| c.flowing).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::WAIT;

    /// A server that greets each connection with its one-byte `name`, then
    /// echoes what it reads.
    async fn upstream(name: u8) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                tasks.spawn(async move {
                    if socket.write_all(&[name]).await.is_err() {
                        return;
                    }
                    let mut buf = [0; 64];
                    while let Ok(n @ 1..) = socket.read(&mut buf).await {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// A loopback address where nothing listens.
    async fn refusing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    }

    /// Connects through `proxy` and returns the greeting's name.
    async fn connect(proxy: &Proxy) -> (TcpStream, u8) {
        let mut socket = TcpStream::connect(proxy.addr).await.expect("connect");
        let name = read_byte(&mut socket).await.expect("a greeting");
        (socket, name)
    }

    /// One byte, or `None` at EOF or reset; fails after [`WAIT`].
    async fn read_byte(socket: &mut TcpStream) -> Option<u8> {
        let mut byte = [0];
        match tokio::time::timeout(WAIT, socket.read(&mut byte)).await {
            Ok(Ok(1)) => Some(byte[0]),
            Ok(_) => None,
            Err(_) => panic!("nothing read within {WAIT:?}"),
        }
    }

    async fn echo(socket: &mut TcpStream, byte: u8) -> Option<u8> {
        socket.write_all(&[byte]).await.ok()?;
        read_byte(socket).await
    }

    /// Nothing arrives on `socket` for a while (a negative check, so it
    /// can only wait a fixed time).
    async fn silent(socket: &mut TcpStream) {
        let mut byte = [0];
        let read = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut byte)).await;
        assert!(read.is_err(), "something passed the blackhole: {read:?}");
    }

    #[tokio::test]
    async fn forwards_round_robin_skipping_refusing_upstreams_and_follows_the_list() {
        let ((a, _a), (b, _b)) = (upstream(b'a').await, upstream(b'b').await);
        let proxy = Proxy::start(&[a, refusing().await, b]).await;
        let mut names = Vec::new();
        for _ in 0..4 {
            let (mut socket, name) = connect(&proxy).await;
            assert_eq!(echo(&mut socket, b'x').await, Some(b'x'));
            names.push(name);
        }
        // a, the refusing one (so b), b, a.
        assert_eq!(names, b"abba");
        assert_eq!(proxy.forwarded(), 4);

        proxy.set_upstreams(&[b]);
        assert_eq!(connect(&proxy).await.1, b'b');
        // No upstream accepts: the client is closed.
        proxy.set_upstreams(&[refusing().await]);
        let mut socket = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(read_byte(&mut socket).await, None);
    }

    #[tokio::test]
    async fn a_cut_closes_every_connection_and_new_ones_are_forwarded() {
        let (a, _a) = upstream(b'a').await;
        let proxy = Proxy::start(&[a]).await;
        let (mut first, _) = connect(&proxy).await;
        let (mut second, _) = connect(&proxy).await;
        proxy.cut();
        assert_eq!(read_byte(&mut first).await, None);
        assert_eq!(read_byte(&mut second).await, None);
        let (mut third, name) = connect(&proxy).await;
        assert_eq!((name, echo(&mut third, b'y').await), (b'a', Some(b'y')));
    }

    #[tokio::test]
    async fn a_blackhole_holds_every_byte_with_the_sockets_open_until_restored() {
        let (a, _a) = upstream(b'a').await;
        let proxy = Proxy::start(&[a]).await;
        let (mut open, _) = connect(&proxy).await;
        proxy.blackhole();
        open.write_all(b"1").await.expect("write");
        silent(&mut open).await;
        // A new connection is accepted but gets nothing, not even closed.
        let mut new = TcpStream::connect(proxy.addr).await.expect("connect");
        silent(&mut new).await;
        proxy.restore();
        assert_eq!(read_byte(&mut open).await, Some(b'1'));
        assert_eq!(read_byte(&mut new).await, Some(b'a'));
        assert_eq!(echo(&mut new, b'2').await, Some(b'2'));
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_port_and_connections() {
        let (a, _a) = upstream(b'a').await;
        let proxy = Proxy::start(&[a]).await;
        let addr = proxy.addr;
        let (mut open, _) = connect(&proxy).await;
        drop(proxy);
        assert_eq!(read_byte(&mut open).await, None);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
