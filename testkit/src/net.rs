//! Loopback ports: one that is free, and waiting until a server listens on one.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port on loopback that was free a moment ago (for a server that must come back on the same
/// address after a restart, or an address nothing listens on).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binds a loopback port")
        .port()
}

/// Waits until something accepts TCP connections at `address`; panics after `timeout`.
pub fn wait_for_port(address: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {address} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
