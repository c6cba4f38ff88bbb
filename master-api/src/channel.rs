//! Channels to masters: lazy connects with a connect bound and HTTP/2 keepalive.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Largest message of the master's client API, both ways.
pub const API_MESSAGE_MAX_BYTES: usize = 16 << 20;

/// How long a connection attempt to a master may take by default.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// HTTP/2 PING interval on master channels by default: a peer that vanished without a
/// FIN or RST (host down, packets dropped) is noticed within interval + timeout.
pub const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// How long a PING may go unanswered before the connection is dropped, by default.
pub const KEEPALIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// How channels to masters connect and keep alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Bound on a TCP connect.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive PING interval (also while idle).
    pub keepalive_interval: Duration,
    /// Unanswered PING bound before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            keepalive_timeout: KEEPALIVE_TIMEOUT_DEFAULT,
        }
    }
}

/// Connects lazily to one peer, with the default options.
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    channel_with(addr, &ChannelOptions::default())
}

/// Connects lazily to one peer.
pub fn channel_with(addr: &str, options: &ChannelOptions) -> Result<Channel, tonic::transport::Error> {
    let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
        .connect_lazy())
}
