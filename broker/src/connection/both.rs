//! Runs a connection's reader and writer in one task, each polled only
//! when something it waits for happened.
//!
//! A WebSocket connection used to be two tasks, its reader and its writer.
//! One task saves the second task's cell and lets both futures live in one
//! allocation, but a naive join polls both on every wake-up: each delivery
//! woken by the queue would then also poll the reader's whole `select!`
//! (its sleeps, its socket readiness, its cancellation futures; the
//! broker-wide shutdown token among them takes a shared lock per poll).
//! [`Wakers`] gives each side a waker of its own that records which side
//! was woken before it wakes the task, and [`Both`] polls only that side.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// One side's waker: marks the side woken, then wakes the task.
#[derive(Debug, Default)]
struct Side {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Side {
    fn new() -> Arc<Side> {
        let side = Side::default();
        // Both sides start woken: their first poll is due.
        side.woken.store(true, Ordering::Relaxed);
        Arc::new(side)
    }

    /// Whether the side was woken since its last poll (clears the mark).
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }
}

/// The two wakers of a connection task: made once per connection.
pub struct Wakers {
    main: Arc<Side>,
    main_waker: Waker,
    other: Arc<Side>,
    other_waker: Waker,
}

impl Wakers {
    /// Two fresh wakers, both sides due for a first poll.
    pub fn new() -> Wakers {
        let main = Side::new();
        let other = Side::new();
        Wakers {
            main_waker: Waker::from(main.clone()),
            main,
            other_waker: Waker::from(other.clone()),
            other,
        }
    }

    /// Polls `main` to completion while also driving `other`, each only when
    /// its own waker fired. `other_done` is set once `other` completed (it is
    /// not polled again); `other` is left as it is when `main` completes.
    pub fn both<'a, M, O>(
        &'a self,
        main: Pin<&'a mut M>,
        other: Pin<&'a mut O>,
        other_done: &'a mut bool,
    ) -> Both<'a, M, O>
    where
        M: Future,
        O: Future<Output = ()>,
    {
        // A new pairing polls both once: either may have been polled by
        // someone else since (or never).
        self.main.woken.store(true, Ordering::Relaxed);
        self.other.woken.store(true, Ordering::Relaxed);
        Both {
            wakers: self,
            main,
            other,
            other_done,
        }
    }
}

impl Default for Wakers {
    fn default() -> Self {
        Wakers::new()
    }
}

/// The future of [`Wakers::both`].
pub struct Both<'a, M, O> {
    wakers: &'a Wakers,
    main: Pin<&'a mut M>,
    other: Pin<&'a mut O>,
    other_done: &'a mut bool,
}

impl<M, O> Future for Both<'_, M, O>
where
    M: Future,
    O: Future<Output = ()>,
{
    type Output = M::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<M::Output> {
        // Every field is a reference or a pinned reference: `Both` is Unpin.
        let this = self.get_mut();
        let wakers = this.wakers;
        wakers.main.task.register(cx.waker());
        wakers.other.task.register(cx.waker());
        if !*this.other_done && wakers.other.take() {
            let mut side = Context::from_waker(&wakers.other_waker);
            if this.other.as_mut().poll(&mut side).is_ready() {
                *this.other_done = true;
            }
        }
        if wakers.main.take() {
            let mut side = Context::from_waker(&wakers.main_waker);
            return this.main.as_mut().poll(&mut side);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    /// Polls `f`, counting its polls.
    async fn counted<F: Future>(polls: &AtomicUsize, f: F) -> F::Output {
        let mut f = pin!(f);
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            f.as_mut().poll(cx)
        })
        .await
    }

    /// Counts the wake-ups of the task.
    #[derive(Default)]
    struct TaskWakes(AtomicUsize);

    impl Wake for TaskWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn only_the_woken_side_is_polled() {
        let wakers = Wakers::new();
        let (main_polls, other_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (main_wake, other_wake) = (Notify::new(), Notify::new());
        let main = pin!(counted(&main_polls, async {
            main_wake.notified().await;
            "main"
        }));
        let other = pin!(counted(&other_polls, async {
            for _ in 0..5 {
                other_wake.notified().await;
            }
        }));
        let mut other_done = false;
        let task = Arc::new(TaskWakes::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut both = pin!(wakers.both(main, other, &mut other_done));
        assert!(both.as_mut().poll(&mut cx).is_pending(), "first poll: both");
        for round in 1..=5 {
            other_wake.notify_one();
            assert_eq!(task.0.load(Ordering::Relaxed), round, "the task is woken");
            assert!(both.as_mut().poll(&mut cx).is_pending());
            assert_eq!(other_polls.load(Ordering::Relaxed), round + 1);
            assert_eq!(main_polls.load(Ordering::Relaxed), 1, "main not polled");
        }
        // A wake-up of the task by someone else polls neither side.
        assert!(both.as_mut().poll(&mut cx).is_pending());
        assert_eq!(other_polls.load(Ordering::Relaxed), 6);
        main_wake.notify_one();
        assert_eq!(both.as_mut().poll(&mut cx), Poll::Ready("main"));
        assert_eq!(main_polls.load(Ordering::Relaxed), 2);
        assert!(other_done);
    }
}
