//! Raw TCP helpers: a backend that answers verbatim, and relays that count or cut connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// Listens on a loopback port and runs `on_connection` in a task of its own for every
/// connection accepted; returns the address.
pub(crate) async fn accept_each<F, Fut>(on_connection: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accepts a connection");
            tokio::spawn(on_connection(stream));
        }
    });
    addr
}

/// A backend that reads one request head, writes `response` verbatim and closes.
pub(crate) async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    accept_each(move |mut s| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(response).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A TCP relay in front of `target` that counts the connections made through it.
pub(crate) async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let addr = accept_each(move |mut inbound| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut outbound = TcpStream::connect(target).await.expect("connects");
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    })
    .await;
    (addr, count)
}

/// A TCP relay in front of `target` whose connections can all be cut at once (`sever`), and
/// which counts the connections made through it.
pub(crate) struct SeverableRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections made through it so far.
    pub count: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl SeverableRelay {
    /// Starts relaying to `target`.
    pub(crate) async fn start(target: SocketAddr) -> SeverableRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let count = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (counter, tasks) = (count.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.expect("accepts a connection");
                counter.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target)
                        .await
                        .expect("connects");
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                tasks
                    .lock()
                    .expect("the lock is not poisoned")
                    .push(task.abort_handle());
            }
        });
        SeverableRelay { addr, count, open }
    }

    /// Closes every connection made so far (both sides see the socket close).
    pub(crate) fn sever(&self) {
        for task in self
            .open
            .lock()
            .expect("the lock is not poisoned")
            .drain(..)
        {
            task.abort();
        }
    }
}
