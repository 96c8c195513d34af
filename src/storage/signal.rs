//! An event whose notification costs one fence while nobody listens: the writer announces
//! every append, and readers seldom wait. `event_listener`'s own notify takes a lock and a
//! `SeqCst` fence each time (6 % of an appending thread's samples, benches/README.md).

use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener, Listener as _};

/// Wakes the threads and tasks waiting for a change that the notifier stores first.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    event: Event,
    /// Listeners registered and not yet dropped.
    listening: AtomicUsize,
}

impl Signal {
    /// Wakes every listener; call after storing the change they check for.
    pub(crate) fn notify_all(&self) {
        // Pairs with the fence in `listen`: either this load sees the listener, or the
        // listener's check after its fence sees the change stored before this one.
        fence(Ordering::SeqCst);
        if self.listening.load(Ordering::Relaxed) > 0 {
            self.event.notify(usize::MAX);
        }
    }

    /// Registers a listener. Check for the change after this and before waiting: a change
    /// stored before the check may have been announced before the listener counted.
    pub(crate) fn listen(&self) -> Listening<'_> {
        // Registered first, so that a notifier that counts it also finds it.
        let listener = self.event.listen();
        self.listening.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Listening {
            listener: Some(listener),
            signal: self,
        }
    }
}

/// One registered listener of a [`Signal`].
#[derive(Debug)]
pub(crate) struct Listening<'a> {
    /// `None` only once a wait consumed it.
    listener: Option<EventListener>,
    signal: &'a Signal,
}

impl Listening<'_> {
    /// Blocks until notified.
    pub(crate) fn wait(mut self) {
        if let Some(listener) = self.listener.take() {
            listener.wait();
        }
    }

    /// Blocks until notified or until `deadline`; `false` at the deadline.
    pub(crate) fn wait_deadline(mut self, deadline: Instant) -> bool {
        self.listener
            .take()
            .is_some_and(|listener| listener.wait_deadline(deadline).is_some())
    }

    /// Blocks until notified or for `timeout`; `false` after the timeout.
    pub(crate) fn wait_timeout(mut self, timeout: Duration) -> bool {
        self.listener
            .take()
            .is_some_and(|listener| listener.wait_timeout(timeout).is_some())
    }

    /// Waits until notified, for async code on any executor.
    pub(crate) async fn notified(mut self) {
        if let Some(listener) = self.listener.as_mut() {
            listener.await;
        }
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.signal.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// A notifier that stores a change while a waiter registers is never missed: every
    /// round the waiter either sees the change in its check or is woken.
    #[test]
    fn a_change_is_seen_or_announced() {
        let signal = Arc::new(Signal::default());
        let value = Arc::new(AtomicU64::new(0));
        let rounds = 20_000;
        let waiter = {
            let (signal, value) = (Arc::clone(&signal), Arc::clone(&value));
            std::thread::spawn(move || {
                for round in 1..=rounds {
                    loop {
                        if value.load(Ordering::Acquire) >= round {
                            break;
                        }
                        let listening = signal.listen();
                        if value.load(Ordering::Acquire) >= round {
                            break;
                        }
                        // A lost wake-up would show as a round that takes the whole second.
                        assert!(
                            listening.wait_timeout(Duration::from_secs(1)),
                            "round {round}: notified nothing"
                        );
                    }
                }
            })
        };
        for round in 1..=rounds {
            value.store(round, Ordering::Release);
            signal.notify_all();
            if round % 64 == 0 {
                std::thread::yield_now();
            }
        }
        waiter.join().unwrap();
        assert_eq!(signal.listening.load(Ordering::Relaxed), 0);
    }

    /// With nobody listening a notification does not touch the event; a listener that was
    /// registered is woken.
    #[test]
    fn listeners_are_counted_while_they_live() {
        let signal = Signal::default();
        signal.notify_all();
        let listening = signal.listen();
        assert_eq!(signal.listening.load(Ordering::Relaxed), 1);
        signal.notify_all();
        assert!(listening.wait_timeout(Duration::from_secs(1)));
        assert_eq!(signal.listening.load(Ordering::Relaxed), 0);
    }
}
