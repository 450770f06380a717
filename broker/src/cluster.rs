//! The cluster backplane: several broker nodes acting as one through Redis
//! (`--cluster redis://HOST:PORT[/DB]`); docs/cluster.md has the design.
//!
//! Without `--cluster` none of this runs: the registry and the publish
//! paths see no backplane and the broker is the single-node broker.
//!
//! * [`wire`]: Redis key and channel names, the publish script, the
//!   message header on the channels.
//! * [`interest`]: which channels and patterns this node needs, counted
//!   from its local subscriptions (the registry keeps it).
//! * [`health`]: whether Redis is reachable, for `/readyz`.
//! * [`publisher`]: the task that sends publishes to Redis in order,
//!   pipelined in batches.
//! * [`subscriber`]: the task that keeps this node's Redis subscriptions
//!   equal to its interest and fans received messages out locally.
//! * [`read`]: reading a topic's position, history and retained value.
//! * [`catch_up`]: how a new subscription starts: wait for Redis to confirm
//!   the subscription, read the topic, reply and replay.
//! * [`backplane`]: the handle the broker's state holds; [`url`]: the
//!   `--cluster` URL; [`target`]: where Redis is (one server or the master
//!   Sentinel names) and how to connect to it.

pub mod backplane;
pub mod catch_up;
pub mod health;
pub mod interest;
pub mod presence;
pub mod publisher;
pub mod read;
pub mod subscriber;
pub mod target;
pub mod url;
pub mod wire;
