//! Counting a listener's open connections against its `max_connections`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One of a listener's `max_connections` slots, given back when the connection ends (dropped).
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A slot if fewer than `max` of `count`'s are taken; `None` means the connection is to be
    /// closed at once, as Envoy's connection limit does.
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(count.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = ConnectionSlot::take(&count, 2);
        let second = ConnectionSlot::take(&count, 2);
        assert!(first.is_some() && second.is_some());
        assert!(ConnectionSlot::take(&count, 2).is_none());
        drop(first);
        assert!(ConnectionSlot::take(&count, 2).is_some());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
